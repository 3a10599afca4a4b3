//! The operator's store on a real disk: append and read back, tampering,
//! snapshot files, torn tails, the writer lock, SIGKILL during writes (the
//! test binary re-executes itself as the writer), and `permdrift history`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use permdrift::snapshot::format::{self as snapshot_format};
use permdrift::snapshot::{Snapshot, SourceSnapshot};
use permdrift::store::{self, Store, StoreError};
use serde_json::{Value, json};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const AT: &str = "2026-11-19T11:40:02Z";

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A store at `dir/store` with `n` change records.
fn store_with(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("store");
    let (mut s, warnings) = Store::open(&path).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    for i in 1..=n {
        s.append(
            "change",
            Some("prod-eu"),
            json!({"object": format!("ClusterRoleBinding/b{i}"), "severity": "high", "i": i}),
            AT,
        )
        .unwrap();
    }
    path
}

fn journal_lines(store: &Path) -> Vec<String> {
    fs::read_to_string(store.join(store::JOURNAL))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(store: &Path, lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(store.join(store::JOURNAL), text).unwrap();
}

fn incident(side: &str) -> Snapshot {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/incident")
        .join(side);
    permdrift::input::load(&[path], Default::default())
        .unwrap()
        .0
}

fn kube_source(side: &str) -> SourceSnapshot {
    incident(side).sources.remove("kubernetes").unwrap()
}

#[test]
fn append_and_read_back() {
    let tmp = tempdir();
    let path = tmp.path().join("nested/store");
    let (mut s, _) = Store::open(&path).unwrap();
    assert_eq!(s.last_seq(), 0);
    assert_eq!(s.last_hash(), store::ZERO_HASH);
    let r1 = s
        .append("note", None, json!({"reason": "started"}), AT)
        .unwrap();
    let r2 = s
        .append(
            "change",
            Some("prod-eu"),
            json!({"b": 1, "a": [true, null]}),
            AT,
        )
        .unwrap();
    assert_eq!((r1.seq, r2.seq), (1, 2));
    assert_eq!(r1.prev, store::ZERO_HASH);
    assert_eq!(r2.prev, r1.hash);
    assert_eq!(s.last_hash(), r2.hash);
    assert_eq!(s.records().unwrap(), vec![r1.clone(), r2.clone()]);
    // Readers need no lock, even while the writer is open.
    assert_eq!(
        store::read_records(&path).unwrap(),
        vec![r1.clone(), r2.clone()]
    );
    // One compact line per record, keys of the body sorted.
    let lines = journal_lines(&path);
    assert_eq!(lines.len(), 2);
    assert!(lines[1].starts_with(r#"{"seq":2,"at":"2026-11-19T11:40:02Z","kind":"change","source":"prod-eu","body":{"a":[true,null],"b":1},"prev":""#), "{}", lines[1]);
    // Bad arguments are refused and leave nothing behind.
    let e = s.append("Bad Kind", None, json!({}), AT).unwrap_err();
    assert!(e.to_string().contains("record kind `Bad Kind`"), "{e}");
    assert!(s.append("note", None, json!("x"), AT).is_err());
    assert!(s.append("note", None, json!({}), "now").is_err());
    assert_eq!(s.last_seq(), 2);
    drop(s);
    // Reopening continues the chain.
    let (mut s, warnings) = Store::open(&path).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(s.last_seq(), 2);
    let r3 = s.append("close", Some("prod-eu"), json!({}), AT).unwrap();
    assert_eq!((r3.seq, r3.prev.as_str()), (3, r2.hash.as_str()));
    let report = store::verify(&path).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, 3);
    assert_eq!(report.head, r3.hash);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}

#[test]
fn tampering_is_found_at_its_seq_and_refused_by_open() {
    type Tamper = fn(&mut Vec<String>);
    let cases: [(&str, Tamper, u64, &str); 4] = [
        (
            "changed body",
            |l| l[2] = l[2].replace("\"high\"", "\"low\""),
            3,
            "hash mismatch (expected ",
        ),
        (
            "deleted line",
            |l| drop(l.remove(3)),
            4,
            "wrong seq (expected 4, found 5)",
        ),
        (
            "swapped lines",
            |l| l.swap(1, 2),
            2,
            "wrong seq (expected 2, found 3)",
        ),
        (
            "garbage line",
            |l| l.insert(4, "{\"seq\":5,".into()),
            5,
            "not JSON",
        ),
    ];
    for (name, tamper, line, reason) in cases {
        let tmp = tempdir();
        let path = store_with(tmp.path(), 6);
        let mut lines = journal_lines(&path);
        tamper(&mut lines);
        write_lines(&path, &lines);

        let report = store::verify(&path).unwrap();
        let broken = report
            .first_broken
            .clone()
            .unwrap_or_else(|| panic!("{name}: not found"));
        assert_eq!(broken.line, line, "{name}: {broken:?}");
        assert!(broken.reason.starts_with(reason), "{name}: {broken:?}");
        assert_eq!(report.records, line - 1, "{name}");

        let e = Store::open(&path).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{name}: {e}");
        let msg = e.to_string();
        let expected = format!(
            "store {}: journal.jsonl line {line}: {reason}",
            path.display()
        );
        assert!(msg.starts_with(&expected), "{name}: {msg}");
        assert!(store::read_records(&path).is_err(), "{name}");
        // Nothing was repaired.
        assert_eq!(journal_lines(&path), lines, "{name}");
    }
}

#[test]
fn snapshots_are_content_addressed_and_checked() {
    let tmp = tempdir();
    let path = tmp.path().join("store");
    let (mut s, _) = Store::open(&path).unwrap();
    let before = kube_source("before");
    let digest = s.put_snapshot(&before).unwrap();
    assert!(store::snapshots::is_digest(&digest));
    let file = path.join("snapshots").join(format!("{digest}.json"));
    let text = fs::read_to_string(&file).unwrap();
    // The file is the canonical text of a snapshot holding only this source.
    let mut one = Snapshot::new();
    one.sources.insert(before.name.clone(), before.clone());
    assert_eq!(
        text,
        snapshot_format::to_string(&one, snapshot_format::Format::Json).unwrap()
    );
    assert_eq!(store::snapshots::digest_of(&text), digest);
    // Round trip: byte-identical canonical text.
    let got = s.get_snapshot(&digest).unwrap();
    assert_eq!(got.name, "kubernetes");
    assert_eq!(got.object_count(), before.object_count());
    assert_eq!(store::snapshots::canonical_text(&got).unwrap(), text);
    assert_eq!(
        store::read_snapshot(&path, &digest).unwrap().object_count(),
        before.object_count()
    );
    // Same content, same digest, one file; different content, another.
    let modified = fs::metadata(&file).unwrap().modified().unwrap();
    assert_eq!(s.put_snapshot(&before).unwrap(), digest);
    assert_eq!(fs::metadata(&file).unwrap().modified().unwrap(), modified);
    let after = s.put_snapshot(&kube_source("after")).unwrap();
    assert_ne!(after, digest);
    assert_eq!(fs::read_dir(path.join("snapshots")).unwrap().count(), 2);
    s.append(
        "snapshot",
        Some("kubernetes"),
        json!({"digest": digest}),
        AT,
    )
    .unwrap();
    s.append(
        "baseline",
        Some("kubernetes"),
        json!({"digest": digest}),
        AT,
    )
    .unwrap();
    s.append("snapshot", Some("kubernetes"), json!({"digest": after}), AT)
        .unwrap();
    let report = store::verify(&path).unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!((report.records, report.snapshots_checked), (3, 2));

    // Not a digest: refused before any path is built from it.
    let e = s.get_snapshot("../journal").unwrap_err().to_string();
    assert!(e.contains("not a snapshot digest"), "{e}");

    // A tampered file (same length) is caught on read and by verify.
    let after_file = path.join("snapshots").join(format!("{after}.json"));
    let tampered =
        fs::read_to_string(&after_file)
            .unwrap()
            .replacen("engineering", "Engineering", 1);
    fs::write(&after_file, tampered).unwrap();
    let e = s.get_snapshot(&after).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "snapshots/{after}.json: content does not match its digest"
        )),
        "{e}"
    );
    let b = store::verify(&path).unwrap().first_broken.unwrap();
    assert_eq!((b.line, b.seq), (3, Some(3)));
    assert!(
        b.reason.contains("content does not match its digest"),
        "{}",
        b.reason
    );

    // A missing file is the first broken record too.
    fs::remove_file(&file).unwrap();
    let report = store::verify(&path).unwrap();
    let b = report.first_broken.unwrap();
    assert_eq!((b.line, b.seq, report.records), (1, Some(1), 0));
    assert!(b.reason.ends_with(": missing"), "{}", b.reason);
    // Writing the content again puts the file back.
    assert_eq!(s.put_snapshot(&before).unwrap(), digest);
    assert_eq!(fs::read_to_string(&file).unwrap(), text);
}

#[test]
fn torn_tail_is_cut_and_the_chain_continues() {
    let tmp = tempdir();
    let path = store_with(tmp.path(), 5);
    let lines = journal_lines(&path);
    let full = fs::read(path.join(store::JOURNAL)).unwrap();
    let four: usize = lines[..4].iter().map(|l| l.len() + 1).sum();
    // Chop record 5 in the middle.
    fs::write(
        path.join(store::JOURNAL),
        &full[..four + lines[4].len() / 2],
    )
    .unwrap();
    // Readers skip the incomplete line without touching it.
    assert_eq!(store::read_records(&path).unwrap().len(), 4);
    let report = store::verify(&path).unwrap();
    assert!(report.intact() && report.records == 4, "{report:?}");
    assert!(
        report.warnings[0].contains("line 5: incomplete last record"),
        "{report:?}"
    );

    let (mut s, warnings) = Store::open(&path).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("journal.jsonl line 5: dropped an incomplete last record"),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains("all 4 earlier records are intact"),
        "{warnings:?}"
    );
    assert_eq!(fs::read(path.join(store::JOURNAL)).unwrap(), &full[..four]);
    assert_eq!(s.last_seq(), 4);
    let r = s
        .append("note", None, json!({"reason": "after recovery"}), AT)
        .unwrap();
    assert_eq!(r.seq, 5);
    assert_eq!(r.prev, s.records().unwrap()[3].hash);
    drop(s);
    let report = store::verify(&path).unwrap();
    assert!(
        report.intact() && report.warnings.is_empty() && report.records == 5,
        "{report:?}"
    );

    // A last line that is not JSON (zeros from a crash), newline and all.
    let mut bytes = fs::read(path.join(store::JOURNAL)).unwrap();
    let good = bytes.len();
    bytes.extend_from_slice(b"\0\0\0\0\0\0\n");
    fs::write(path.join(store::JOURNAL), &bytes).unwrap();
    let (s, warnings) = Store::open(&path).unwrap();
    assert_eq!((warnings.len(), s.last_seq()), (1, 5), "{warnings:?}");
    assert_eq!(
        fs::metadata(path.join(store::JOURNAL)).unwrap().len(),
        good as u64
    );
}

#[test]
fn a_second_writer_is_refused_until_the_first_is_dropped() {
    let tmp = tempdir();
    let path = store_with(tmp.path(), 1);
    let (first, _) = Store::open(&path).unwrap();
    let e = Store::open(&path).unwrap_err();
    assert!(
        matches!(e, StoreError::Locked { pid: Some(p), .. } if p == std::process::id()),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "store {} is in use by another permdrift (pid {} from the lock file)",
            path.display(),
            std::process::id()
        )
    );
    // Waiting gives up when told to.
    let mut tries = 0;
    let e = Store::open_wait(&path, Duration::from_millis(5), || {
        tries += 1;
        tries > 3
    })
    .unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }) && tries == 4, "{e}");
    // And gets the store once the holder lets go.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        drop(first);
    });
    let started = Instant::now();
    let (mut second, _) = Store::open_wait(&path, Duration::from_millis(10), || false).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
    release.join().unwrap();
    assert_eq!(second.append("note", None, json!({}), AT).unwrap().seq, 2);
}

// ---- SIGKILL during writes ----

const CHILD_ENV: &str = "PERMDRIFT_STORE_CRASH_CHILD";

/// The writer killed by `sigkill_during_writes`: appends records (some large,
/// so a kill can land inside one write) and snapshots as fast as it can, and
/// prints `durable SEQ` once each append has returned. A no-op unless the
/// parent test runs it.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    use std::io::Write;
    let (mut s, _) = Store::open(Path::new(&dir)).unwrap();
    let mut out = std::io::stdout().lock();
    let big = "x".repeat(32 << 10);
    for i in 0u64.. {
        let seq = s.last_seq() + 1;
        let record = if seq % 4 == 0 {
            let source = snapshot_format::from_value(json!({
                "apiVersion": snapshot_format::API_VERSION, "kind": "Snapshot",
                "sources": [{"name": "crash", "platform": "kubernetes", "objects": [
                    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                     "metadata": {"name": format!("role-{seq}")}, "rules": []}]}]}))
            .unwrap()
            .sources
            .remove("crash")
            .unwrap();
            let digest = s.put_snapshot(&source).unwrap();
            s.append("snapshot", Some("crash"), json!({"digest": digest}), AT)
        } else if seq % 8 == 5 {
            s.append("note", None, json!({"pad": big, "i": i}), AT)
        } else {
            s.append("change", Some("crash"), json!({"i": i}), AT)
        };
        let record = record.unwrap();
        writeln!(out, "durable {}", record.seq).unwrap();
        out.flush().unwrap();
    }
}

/// xorshift64: a seeded, dependency-free source of kill delays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn sigkill_during_writes_loses_nothing_durable() {
    let seed = std::env::var("PERMDRIFT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("sigkill test: seed {seed} (rerun with PERMDRIFT_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let tmp = tempdir();
    let path = tmp.path().join("store");
    let exe = std::env::current_exe().unwrap();
    let mut durable = 0u64;
    let mut recovered = 0;
    const ROUNDS: usize = 16;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut max = 0u64;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(seq) = line.strip_prefix("durable ").and_then(|s| s.parse().ok()) {
                    max = seq;
                    let _ = tx.send(seq);
                }
            }
            max
        });
        // Most rounds kill mid-stream; some during start-up and recovery.
        if round % 4 != 3 {
            rx.recv_timeout(Duration::from_secs(60))
                .expect("child reported no durable record");
        }
        std::thread::sleep(Duration::from_millis(rng.below(60)));
        child.kill().unwrap();
        child.wait().unwrap();
        let reported = reader.join().unwrap();
        durable = durable.max(reported);

        let (s, warnings) =
            Store::open(&path).unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e}"));
        if !warnings.is_empty() {
            recovered += 1;
            eprintln!("round {round}: {}", warnings.join("; "));
        }
        assert!(
            s.last_seq() >= durable,
            "round {round} (seed {seed}): durable record {durable} lost, journal ends at {}",
            s.last_seq()
        );
        drop(s);
        let report = store::verify(&path).unwrap();
        assert!(report.intact(), "round {round} (seed {seed}): {report:?}");
    }
    let records = store::read_records(&path).unwrap();
    assert!(records.iter().zip(1..).all(|(r, seq)| r.seq == seq));
    eprintln!(
        "sigkill test: {ROUNDS} kills, {durable} records reported durable, {} in the journal, {recovered} recoveries",
        records.len()
    );
    // Each round that waited for the child saw at least one new record.
    assert!(
        durable >= (ROUNDS - ROUNDS / 4) as u64,
        "the child wrote too little"
    );
}

// ---- permdrift history ----

fn permdrift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("PERMDRIFT_STORE")
        .output()
        .expect("run permdrift")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

/// The incident as the operator would journal it: two snapshots of the
/// cluster, a baseline, the change and a note. Returns the store and digests.
fn incident_store(dir: &Path) -> (PathBuf, String, String) {
    let path = dir.join("store");
    let (mut s, _) = Store::open(&path).unwrap();
    let before = s.put_snapshot(&kube_source("before")).unwrap();
    let after = s.put_snapshot(&kube_source("after")).unwrap();
    s.append(
        "snapshot",
        Some("kubernetes"),
        json!({"digest": before}),
        "2026-11-19T09:00:00Z",
    )
    .unwrap();
    s.append(
        "baseline",
        Some("kubernetes"),
        json!({"digest": before, "reason": "first complete snapshot"}),
        "2026-11-19T09:00:01Z",
    )
    .unwrap();
    s.append(
        "snapshot",
        Some("kubernetes"),
        json!({"digest": after}),
        "2026-11-19T11:40:02Z",
    )
    .unwrap();
    s.append(
        "change",
        Some("kubernetes"),
        json!({"object": "ClusterRoleBinding/engineering-secrets", "change": "added",
               "direction": "widening", "severity": "high", "verdict": "alert",
               "fingerprint": "f00dfeedf00dfeedf00dfeed", "witness": {"subject": "Group:engineering"}}),
        "2026-11-19T11:40:02.250Z",
    )
    .unwrap();
    s.append(
        "note",
        None,
        json!({"reason": "operator restarted"}),
        "2026-11-19T12:00:00Z",
    )
    .unwrap();
    (path, before, after)
}

#[test]
fn history_list_show_and_verify() {
    let tmp = tempdir();
    let (path, before, _) = incident_store(tmp.path());
    let dir = path.display().to_string();

    let o = permdrift(&["history", "--store", &dir, "list"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(
        lines[0],
        format!(
            "1  2026-11-19T09:00:00Z      snapshot  kubernetes  digest={}",
            &before[..12]
        )
    );
    assert!(
        lines[1].ends_with("reason=\"first complete snapshot\""),
        "{out}"
    );
    assert_eq!(
        lines[3],
        "4  2026-11-19T11:40:02.250Z  change    kubernetes  object=ClusterRoleBinding/engineering-secrets change=added direction=widening severity=high verdict=alert fingerprint=f00dfeedf00d"
    );
    assert!(
        lines[4].starts_with("5  2026-11-19T12:00:00Z      note      -  "),
        "{out}"
    );

    // Filters; --store also works after the subcommand.
    let o = permdrift(&[
        "history", "list", "--kind", "snapshot", "--kind", "baseline", "--since", "2", "--store",
        &dir,
    ]);
    let out = stdout(&o);
    let seqs: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(seqs, ["2", "3"], "{out}");
    let o = permdrift(&[
        "history",
        "--store",
        &dir,
        "list",
        "--source",
        "kubernetes",
        "--last",
        "1",
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["seq"], 4);
    assert_eq!(v[0]["body"]["witness"]["subject"], "Group:engineering");

    let o = permdrift(&["history", "--store", &dir, "show", "4"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("seq     4\nat      2026-11-19T11:40:02.250Z\nkind    change\nsource  kubernetes\nprev    "), "{out}");
    assert!(
        out.contains("body\n  {\n    \"change\": \"added\",\n"),
        "{out}"
    );
    let o = permdrift(&["history", "--store", &dir, "show", "4", "--format", "json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["kind"], "change");
    assert_eq!(v["hash"].as_str().unwrap().len(), 64);
    let o = permdrift(&["history", "--store", &dir, "show", "9"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains(&format!("permdrift: error: store {dir}: no record 9")),
        "{}",
        stderr(&o)
    );

    let o = permdrift(&["history", "--store", &dir, "verify"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!(
            "store {dir}: intact: 5 records, 2 snapshots checked, head "
        )),
        "{}",
        stdout(&o)
    );

    // Tampering: verify exits 1 naming the record, list shows what precedes it and exits 2.
    let mut lines = journal_lines(&path);
    lines[3] = lines[3].replace("\"high\"", "\"low\"");
    write_lines(&path, &lines);
    let o = permdrift(&["history", "--store", &dir, "verify"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!(
            "store {dir}: broken: journal.jsonl line 4 (seq 4): hash mismatch (expected "
        )),
        "{}",
        stdout(&o)
    );
    let o = permdrift(&["history", "--store", &dir, "verify", "--format", "json"]);
    assert_eq!(code(&o), 1);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (
            v["intact"].clone(),
            v["records"].clone(),
            v["firstBroken"]["line"].clone()
        ),
        (json!(false), json!(3), json!(4))
    );
    let o = permdrift(&["history", "--store", &dir, "list"]);
    assert_eq!(code(&o), 2);
    assert_eq!(stdout(&o).lines().count(), 3);
    assert!(
        stderr(&o).contains("journal.jsonl line 4: hash mismatch"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn history_diff_of_stored_snapshots_shows_the_widening() {
    let tmp = tempdir();
    let (path, before, after) = incident_store(tmp.path());
    let dir = path.display().to_string();

    // By seq of the records naming the snapshots.
    let o = permdrift(&["history", "--store", &dir, "diff", "1", "3", "-q"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("widening"), "{out}");
    assert!(out.contains("Group:engineering"), "{out}");

    // By digest and unique prefix, as JSON: the same report as `permdrift diff`.
    let o = permdrift(&[
        "history",
        "--store",
        &dir,
        "diff",
        &before,
        &after[..10],
        "--format",
        "json",
        "-q",
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let binding = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["object"]["kind"] == "ClusterRoleBinding")
        .unwrap();
    assert_eq!(
        (binding["change"].as_str(), binding["direction"].as_str()),
        (Some("added"), Some("widening"))
    );
    assert_eq!(binding["witness"]["subject"], "Group:engineering");

    // The same snapshot twice: nothing, exit 0.
    let o = permdrift(&["history", "--store", &dir, "diff", "1", "2", "-q"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Reversed: narrowing only, exit 0 under the default --fail-on widening.
    let o = permdrift(&["history", "--store", &dir, "diff", "3", "1", "-q"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // Trouble: a record without a snapshot, an unknown digest.
    let o = permdrift(&["history", "--store", &dir, "diff", "4", "1"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("record 4 (change) names no snapshot"),
        "{}",
        stderr(&o)
    );
    let o = permdrift(&["history", "--store", &dir, "diff", "abcdef0123", "1"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("no snapshot digest starts with `abcdef0123`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn history_needs_an_existing_store() {
    let tmp = tempdir();
    let missing = tmp.path().join("nope").display().to_string();
    for sub in ["list", "verify"] {
        let o = permdrift(&["history", "--store", &missing, sub]);
        assert_eq!(code(&o), 2);
        assert!(
            stderr(&o).contains(&format!(
                "permdrift: error: store {missing}: no such directory"
            )),
            "{}",
            stderr(&o)
        );
    }
    // Reading never creates it.
    assert!(!tmp.path().join("nope").exists());
    let empty = tmp.path().display().to_string();
    let o = permdrift(&["history", "--store", &empty, "list"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("not a permdrift store (no journal.jsonl)"),
        "{}",
        stderr(&o)
    );
    let o = permdrift(&["history", "list"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("pass --store DIR"), "{}", stderr(&o));
}
