//! Hostile input through the `permdrift` binary: looping directory trees,
//! endless streams, deep XML, huge globs, huge YAML and `-o` targets that are
//! not plain files. Each must end promptly with a clear error (exit 2) or a
//! correct result, never hang, abort or clobber.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ROLE: &str = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n\
                    metadata: {name: reader}\nrules:\n- apiGroups: ['']\n  resources: [pods]\n  verbs: [get]\n";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn incident(side: &str) -> String {
    root()
        .join("examples/incident")
        .join(side)
        .display()
        .to_string()
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_permdrift"));
    c.args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for `child`, killing it (and failing) if it runs past `limit`:
/// a hang must fail the test, not the suite.
fn finish(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("permdrift still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn run(args: &[&str]) -> Output {
    finish(
        command(args).spawn().expect("spawn"),
        Duration::from_secs(60),
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2 with a clean error message; returns the message.
fn trouble(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "expected exit 2: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("permdrift: error:"), "{err}");
    err
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn links_back_up_a_directory_are_walked_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("role.yaml"), ROLE).unwrap();
    // Two links to `.`: every path of links is another copy of the tree.
    std::os::unix::fs::symlink(".", d.join("again")).unwrap();
    std::os::unix::fs::symlink(".", d.join("more")).unwrap();
    let o = finish(
        command(&["snapshot", "--from", path_str(d)])
            .spawn()
            .unwrap(),
        Duration::from_secs(20),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    // One file read once: no "redefines"/"twice" warning, one file counted.
    assert!(err.contains(": 1 file, 1 object"), "{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn a_fifo_in_a_directory_is_passed_over_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("role.yaml"), ROLE).unwrap();
    let fifo = d.join("stuck.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let o = finish(
        command(&["snapshot", "--from", path_str(d)])
            .spawn()
            .unwrap(),
        Duration::from_secs(20),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("stuck.yaml: not a regular file") && err.contains("skipped"),
        "{err}"
    );
}

#[test]
fn an_endless_device_stops_at_the_size_limit() {
    let o = run(&[
        "snapshot",
        "--from",
        "/dev/zero",
        "--max-input-size",
        "1000000",
    ]);
    let err = trouble(&o);
    assert!(
        err.contains("/dev/zero: more than 1000000 bytes, over the 1000000-byte limit"),
        "{err}"
    );
}

/// Writes `x` forever into `writer` until the reader goes away.
fn endless(mut writer: impl Write) {
    let block = [b'x'; 64 * 1024];
    while writer.write_all(&block).is_ok() {}
}

#[test]
fn an_endless_fifo_or_stdin_stops_at_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("feed.yaml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let writer_path = fifo.clone();
    // Opening a FIFO for writing waits for its reader, permdrift.
    let writer = std::thread::spawn(move || {
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(writer_path) {
            endless(f);
        }
    });
    let o = run(&[
        "snapshot",
        "--from",
        path_str(&fifo),
        "--max-input-size",
        "100000",
    ]);
    let err = trouble(&o);
    assert!(err.contains("feed.yaml: more than 100000 bytes"), "{err}");
    writer.join().unwrap();

    let mut child = command(&["snapshot", "--from", "-", "--max-input-size", "100000"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || endless(stdin));
    let o = finish(child, Duration::from_secs(60));
    let err = trouble(&o);
    assert!(err.contains("<stdin>: more than 100000 bytes"), "{err}");
    writer.join().unwrap();
}

#[test]
fn deeply_nested_xml_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("deep.xml");
    std::fs::write(&f, "<a>".repeat(100_000)).unwrap();
    let err = trouble(&run(&["snapshot", "--from", path_str(&f)]));
    assert!(
        err.contains("deep.xml:1:") && err.contains("nested deeper than 64 levels"),
        "{err}"
    );
}

/// Authorization details with one role whose inline policy allows `s3:GetObject` on `resource`.
fn account_with_resource(resource: &str) -> String {
    let doc = serde_json::json!({
        "RoleDetailList": [{
            "RoleName": "r", "Arn": "arn:aws:iam::111122223333:role/r",
            "RolePolicyList": [{"PolicyName": "p", "PolicyDocument": {"Statement": [
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": resource}
            ]}}]
        }]
    });
    doc.to_string()
}

#[test]
fn a_megabyte_glob_is_refused_not_compared() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let huge = format!("arn:aws:s3:::{}", "a*".repeat(512 * 1024));
    let old = d.join("old.json");
    let new = d.join("new.json");
    std::fs::write(&old, account_with_resource(&huge)).unwrap();
    std::fs::write(&new, account_with_resource(&format!("{huge}?"))).unwrap();
    let err = trouble(&run(&["diff", path_str(&old), path_str(&new)]));
    assert!(
        err.contains("old.json")
            && err.contains("RolePolicyList[0].PolicyDocument: Statement[0].Resource")
            && err.contains("over the 10240-byte limit"),
        "{err}"
    );
}

#[test]
fn iam_sized_globs_are_compared_exactly() {
    // 6 KB patterns, within IAM's limits: NEW's pattern is strictly wider.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let narrow = format!("arn:aws:s3:::b/{}", "x?y".repeat(2_000));
    let wide = format!("arn:aws:s3:::b/{}", "x*y".repeat(2_000));
    let old = d.join("old.json");
    let new = d.join("new.json");
    std::fs::write(&old, account_with_resource(&narrow)).unwrap();
    std::fs::write(&new, account_with_resource(&wide)).unwrap();
    let o = run(&[
        "diff",
        path_str(&old),
        path_str(&new),
        "--format",
        "json",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["changes"][0]["direction"], "widening");
    // And back: narrowing, which only exact containment can tell.
    let o = run(&[
        "diff",
        path_str(&new),
        path_str(&old),
        "--format",
        "json",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["changes"][0]["direction"], "narrowing");
}

#[test]
fn yaml_over_its_memory_cap_is_refused_with_advice_to_use_json() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.yaml");
    let mut text = String::from("apiVersion: v1\nkind: List\nitems:\n");
    let item = "- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c, namespace: n}\n";
    while text.len() <= 64 * 1024 * 1024 {
        text.push_str(item);
    }
    std::fs::write(&f, &text).unwrap();
    let err = trouble(&run(&["snapshot", "--from", path_str(&f)]));
    assert!(
        err.contains("big.yaml: is ")
            && err.contains("over the 67108864-byte limit for YAML")
            && err.contains("-o json")
            && err.contains("-o FILE.json"),
        "{err}"
    );
}

/// Files in `dir` other than `keep`.
fn litter(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

#[test]
fn output_refuses_devices_and_fifos() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A null device of our own (root may make one); a FIFO otherwise.
    let dev = d.join("null");
    let device = Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "3"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let fifo = d.join("pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let mut targets = vec![(fifo, "a FIFO")];
    if device {
        targets.push((dev, "a character device"));
    }
    for (target, what) in targets {
        let err = trouble(&run(&[
            "snapshot",
            "--from",
            &incident("before"),
            "-o",
            path_str(&target),
        ]));
        assert!(
            err.contains(&format!("it is {what}")) && err.contains("regular files only"),
            "{err}"
        );
        let kind = std::fs::symlink_metadata(&target).unwrap().file_type();
        assert!(
            kind.is_fifo() || kind.is_char_device(),
            "{target:?} replaced"
        );
        let err = trouble(&run(&[
            "diff",
            &incident("before"),
            &incident("after"),
            "-o",
            path_str(&target),
        ]));
        assert!(err.contains(&format!("it is {what}")), "{err}");
    }
    assert!(litter(d, &["null", "pipe"]).is_empty());
}

#[test]
fn output_refuses_symbolic_links_and_leaves_their_target() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let victim = d.join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = d.join("out.yaml");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let err = trouble(&run(&[
        "snapshot",
        "--from",
        &incident("before"),
        "-o",
        path_str(&link),
    ]));
    assert!(err.contains("symbolic link"), "{err}");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

#[test]
fn output_keeps_an_existing_files_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for wanted in [0o600, 0o640, 0o664] {
        let out = d.join(format!("snap-{wanted:o}.yaml"));
        std::fs::write(&out, "old\n").unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(wanted)).unwrap();
        let o = run(&[
            "snapshot",
            "--from",
            &incident("before"),
            "-o",
            path_str(&out),
            "-q",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(mode(&out), wanted, "{out:?}");
        assert!(
            std::fs::read_to_string(&out)
                .unwrap()
                .starts_with("apiVersion: permdrift.dev/")
        );
    }
    // A new file is created as any program creates one: 0666 less the umask.
    let new = d.join("new.json");
    let o = run(&[
        "snapshot",
        "--from",
        &incident("before"),
        "-o",
        path_str(&new),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(mode(&new), 0o666 & !umask());
}

#[test]
fn output_temp_files_are_unpredictable_and_stale_ones_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let victim = d.join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    // Plant links where a temp file named after the next process ids would go.
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for pid in last + 1..last + 300 {
        std::os::unix::fs::symlink(&victim, d.join(format!(".out.json.tmp-{pid}"))).unwrap();
    }
    // Litter from an interrupted run an hour ago, and a live run's fresh file.
    let stale = d.join(".out.json.tmp-Ab12Cd");
    let fresh = d.join(".out.json.tmp-Ef34Gh");
    std::fs::write(&stale, "half").unwrap();
    std::fs::write(&fresh, "half").unwrap();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let out = d.join("out.json");
    let o = run(&[
        "snapshot",
        "--from",
        &incident("before"),
        "-o",
        path_str(&out),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let written = std::fs::symlink_metadata(&out).unwrap();
    assert!(written.file_type().is_file());
    assert!(!stale.exists(), "stale temp file left");
    assert!(fresh.exists(), "a live run's temp file removed");
}

#[test]
fn a_failed_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = d.join("bad.yaml");
    std::fs::write(&bad, "kind: Role\n").unwrap();
    let out = d.join("report.json");
    trouble(&run(&[
        "diff",
        &incident("before"),
        path_str(&bad),
        "-o",
        path_str(&out),
    ]));
    assert_eq!(litter(d, &["bad.yaml"]), Vec::<String>::new());
}
