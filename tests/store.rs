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
    let (mut s, warnings) = Store::open(&path, None).unwrap();
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
    let (mut s, _) = Store::open(&path, None).unwrap();
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
    let (mut s, warnings) = Store::open(&path, None).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(s.last_seq(), 2);
    let r3 = s.append("close", Some("prod-eu"), json!({}), AT).unwrap();
    assert_eq!((r3.seq, r3.prev.as_str()), (3, r2.hash.as_str()));
    let report = store::verify(&path, None, None).unwrap();
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

        let report = store::verify(&path, None, None).unwrap();
        let broken = report
            .first_broken
            .clone()
            .unwrap_or_else(|| panic!("{name}: not found"));
        assert_eq!(broken.line, line, "{name}: {broken:?}");
        assert!(broken.reason.starts_with(reason), "{name}: {broken:?}");
        assert_eq!(report.records, line - 1, "{name}");

        let e = Store::open(&path, None).unwrap_err();
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
    let (mut s, _) = Store::open(&path, None).unwrap();
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
    let report = store::verify(&path, None, None).unwrap();
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
    let b = store::verify(&path, None, None)
        .unwrap()
        .first_broken
        .unwrap();
    assert_eq!((b.line, b.seq), (3, Some(3)));
    assert!(
        b.reason.contains("content does not match its digest"),
        "{}",
        b.reason
    );

    // A missing file is the first broken record too.
    fs::remove_file(&file).unwrap();
    let report = store::verify(&path, None, None).unwrap();
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
    let path = store_with(tmp.path(), 4);
    // The line record 5 would be: the same appends in a twin store.
    let twin = tempdir();
    let line5 = journal_lines(&store_with(twin.path(), 5)).remove(4);
    let full = fs::read(path.join(store::JOURNAL)).unwrap();
    let four = full.len();
    // A crash in the middle of appending record 5: half a line, no newline,
    // and the head file still at 4.
    let mut torn = full.clone();
    torn.extend_from_slice(&line5.as_bytes()[..line5.len() / 2]);
    fs::write(path.join(store::JOURNAL), &torn).unwrap();
    // Readers skip the incomplete line without touching it.
    assert_eq!(store::read_records(&path).unwrap().len(), 4);
    let report = store::verify(&path, None, None).unwrap();
    assert!(report.intact() && report.records == 4, "{report:?}");
    assert!(
        report.warnings[0].contains("line 5: incomplete last record"),
        "{report:?}"
    );

    let (mut s, warnings) = Store::open(&path, None).unwrap();
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
    let report = store::verify(&path, None, None).unwrap();
    assert!(
        report.intact() && report.warnings.is_empty() && report.records == 5,
        "{report:?}"
    );
}

#[test]
fn a_complete_garbage_line_is_corruption_even_last() {
    let tmp = tempdir();
    let path = store_with(tmp.path(), 5);
    let dir = path.display().to_string();
    // Zeros with a newline: the store writes a line and its newline in one
    // write, so no crash leaves a complete line that is not a record.
    let mut bytes = fs::read(path.join(store::JOURNAL)).unwrap();
    bytes.extend_from_slice(b"\0\0\0\0\0\0\n");
    fs::write(path.join(store::JOURNAL), &bytes).unwrap();
    let e = Store::open(&path, None).unwrap_err();
    assert!(
        matches!(&e, StoreError::Corrupt { line: 6, reason, .. } if reason.starts_with("not JSON")),
        "{e}"
    );
    assert_eq!(fs::read(path.join(store::JOURNAL)).unwrap(), bytes);
    let o = permdrift(&["history", "--store", &dir, "verify"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!(
            "store {dir}: broken: journal.jsonl line 6: not JSON"
        )),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_second_writer_is_refused_until_the_first_is_dropped() {
    let tmp = tempdir();
    let path = store_with(tmp.path(), 1);
    let (first, _) = Store::open(&path, None).unwrap();
    let e = Store::open(&path, None).unwrap_err();
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
    let e = Store::open_wait(&path, None, Duration::from_millis(5), || {
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
    let (mut second, _) =
        Store::open_wait(&path, None, Duration::from_millis(10), || false).unwrap();
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
    let (mut s, _) = Store::open(Path::new(&dir), None).unwrap();
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
            Store::open(&path, None).unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e}"));
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
        let report = store::verify(&path, None, None).unwrap();
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
        .env_remove("PERMDRIFT_JOURNAL_KEY_FILE")
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
    let (mut s, _) = Store::open(&path, None).unwrap();
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

// ---- a journal that cannot be laundered ----

/// `Store::open`, retried while the lock is held: a `permdrift` child that
/// another test thread is spawning holds a copy of every open descriptor,
/// the lock's included, until it execs.
fn open_store(
    path: &Path,
    key: Option<&store::JournalKey>,
) -> Result<(Store, Vec<String>), StoreError> {
    let started = Instant::now();
    Store::open_wait(path, key, Duration::from_millis(5), || {
        started.elapsed() > Duration::from_secs(5)
    })
}

/// A journal key file (hex text, as `openssl rand -hex 32` writes it).
fn key_file(dir: &Path, byte: u8) -> (PathBuf, store::JournalKey) {
    let path = dir.join(format!("journal-key-{byte}"));
    fs::write(&path, format!("{}\n", hex::encode([byte; 32]))).unwrap();
    let key = store::JournalKey::from_file(&path).unwrap();
    (path, key)
}

/// `store_with`, every record MACed under `key`.
fn keyed_store_with(dir: &Path, n: u64, key: &store::JournalKey) -> PathBuf {
    let path = dir.join("store");
    let (mut s, _) = open_store(&path, Some(key)).unwrap();
    for i in 1..=n {
        s.append(
            "change",
            Some("prod-eu"),
            json!({"severity": "high", "i": i}),
            AT,
        )
        .unwrap();
    }
    path
}

fn parse(lines: &[String]) -> Vec<store::Record> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// What a forger without the key does after changing records: renumber,
/// re-chain and re-hash from `from` on, and make the store's head file
/// agree. MACs stay as they were (the forger cannot make new ones).
fn forge(store_dir: &Path, mut records: Vec<store::Record>, from: usize) {
    for i in from..records.len() {
        records[i].seq = i as u64 + 1;
        records[i].prev = if i == 0 {
            store::ZERO_HASH.into()
        } else {
            records[i - 1].hash.clone()
        };
        records[i].hash = store::record::record_hash(&records[i]);
    }
    let lines: Vec<String> = records.iter().map(store::record::record_line).collect();
    write_lines(store_dir, &lines);
    let head = store::Head::of(&records);
    fs::write(store_dir.join(store::head::HEAD_FILE), format!("{head}\n")).unwrap();
}

#[test]
fn the_head_is_exposed_and_kept_after_every_append() {
    let tmp = tempdir();
    let path = tmp.path().join("store");
    let (mut s, _) = open_store(&path, None).unwrap();
    let head_file = || fs::read_to_string(path.join("head")).unwrap();
    assert_eq!(s.head().to_string(), format!("0:{}", store::ZERO_HASH));
    assert_eq!(head_file(), format!("0:{}\n", store::ZERO_HASH));
    for i in 1..=3u64 {
        let r = s.append("note", None, json!({"i": i}), AT).unwrap();
        assert_eq!((s.head().seq, s.head().hash.as_str()), (i, r.hash.as_str()));
        assert_eq!(head_file(), format!("{}:{}\n", i, r.hash));
    }
}

#[test]
fn an_emptied_journal_is_tampering_not_a_fresh_start() {
    let tmp = tempdir();
    let (path, _, _) = incident_store(tmp.path());
    let dir = path.display().to_string();
    fs::write(path.join(store::JOURNAL), "").unwrap();
    let e = open_store(&path, None).unwrap_err();
    assert!(matches!(e, StoreError::Tampered { .. }), "{e}");
    assert!(
        e.to_string().contains(
            "tampered: the journal ends at seq 0, but the store's head file says seq 5 was written"
        ),
        "{e}"
    );
    let o = permdrift(&["history", "--store", &dir, "verify"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!(
            "store {dir}: tampered: journal.jsonl line 1: the journal ends at seq 0"
        )),
        "{}",
        stdout(&o)
    );
    // With the head file gone too, the snapshot files still say records existed.
    fs::remove_file(path.join("head")).unwrap();
    let e = open_store(&path, None).unwrap_err().to_string();
    assert!(
        e.contains("journal.jsonl is empty, but snapshot files are stored"),
        "{e}"
    );
    assert_eq!(code(&permdrift(&["history", "--store", &dir, "verify"])), 1);
    // And a deleted journal is no new store either.
    fs::remove_file(path.join(store::JOURNAL)).unwrap();
    let e = open_store(&path, None).unwrap_err().to_string();
    assert!(
        e.contains("journal.jsonl is missing, but snapshot files are stored"),
        "{e}"
    );
    assert!(!path.join(store::JOURNAL).exists());
    let o = permdrift(&["history", "--store", &dir, "verify"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
}

#[test]
fn a_truncated_middle_is_refused_and_the_file_left_alone() {
    let tmp = tempdir();
    let path = store_with(tmp.path(), 6);
    let dir = path.display().to_string();
    let full = fs::read(path.join(store::JOURNAL)).unwrap();
    let lines = journal_lines(&path);
    let two: usize = lines[..2].iter().map(|l| l.len() + 1).sum();
    // Mid-line (looks like a torn write) and at a line boundary.
    for cut in [two + lines[2].len() / 2, two] {
        fs::write(path.join(store::JOURNAL), &full[..cut]).unwrap();
        let e = open_store(&path, None).unwrap_err();
        assert!(
            matches!(&e, StoreError::Tampered { reason, .. } if reason.starts_with("the journal ends at seq 2, but the store's head file says seq 6 was written")),
            "{e}"
        );
        assert_eq!(fs::read(path.join(store::JOURNAL)).unwrap(), &full[..cut]);
        let o = permdrift(&["history", "--store", &dir, "verify"]);
        assert_eq!(code(&o), 1, "{}", stderr(&o));
        assert!(
            stdout(&o).contains("tampered: journal.jsonl line 3: the journal ends at seq 2"),
            "{}",
            stdout(&o)
        );
        assert_eq!(fs::read(path.join(store::JOURNAL)).unwrap(), &full[..cut]);
    }
}

#[test]
fn a_rehashed_edit_fails_with_the_key() {
    let tmp = tempdir();
    let (key_path, key) = key_file(tmp.path(), 7);
    let path = keyed_store_with(tmp.path(), 6, &key);
    let dir = path.display().to_string();
    let kf = key_path.display().to_string();
    let mut records = parse(&journal_lines(&path));
    assert!(records.iter().all(|r| r.mac.is_some()));
    records[2].body = json!({"severity": "low", "i": 3});
    forge(&path, records, 2);

    // Without the key the re-hashed chain reads intact, and verify says
    // what it did not check.
    let o = permdrift(&["history", "--store", &dir, "verify"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("records carry a MAC from seq 1 on, not checked: no journal key given"),
        "{}",
        stdout(&o)
    );
    // With it, the forgery is found at its line.
    for args in [
        vec!["history", "--store", &dir, "verify", "--key-file", &kf],
        vec!["history", "--store", &dir, "verify"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_permdrift"))
            .args(&args)
            .env_remove("PERMDRIFT_STORE")
            .env("PERMDRIFT_JOURNAL_KEY_FILE", &key_path)
            .output()
            .unwrap();
        assert_eq!(code(&o), 1, "{}", stderr(&o));
        assert!(
            stdout(&o).starts_with(&format!(
                "store {dir}: tampered: journal.jsonl line 3 (seq 3): MAC mismatch"
            )),
            "{}",
            stdout(&o)
        );
    }
    let e = open_store(&path, Some(&key)).unwrap_err();
    assert!(matches!(e, StoreError::Tampered { .. }), "{e}");
    // Without the key the store is not opened for writing at all.
    let e = open_store(&path, None).unwrap_err();
    assert!(matches!(e, StoreError::KeyRequired { seq: 1, .. }), "{e}");
}

#[test]
fn a_deleted_record_rehashed_fails_with_the_key() {
    let tmp = tempdir();
    let (key_path, key) = key_file(tmp.path(), 7);
    let path = keyed_store_with(tmp.path(), 6, &key);
    let dir = path.display().to_string();
    let mut records = parse(&journal_lines(&path));
    records.remove(3);
    forge(&path, records, 3);
    assert_eq!(store::verify(&path, None, None).unwrap().first_broken, None);
    let o = permdrift(&[
        "history",
        "--store",
        &dir,
        "verify",
        "--key-file",
        &key_path.display().to_string(),
        "--format",
        "json",
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (
            &v["firstBroken"]["line"],
            &v["firstBroken"]["tampered"],
            &v["macsChecked"]
        ),
        (&json!(4), &json!(true), &json!(true)),
        "{v}"
    );
    // Stripping the MACs from there on is no way out either.
    let mut records = parse(&journal_lines(&path));
    for r in &mut records[3..] {
        r.mac = None;
    }
    forge(&path, records, 3);
    let b = store::verify(&path, None, None)
        .unwrap()
        .first_broken
        .unwrap();
    assert!(b.tampered && b.line == 4, "{b:?}");
    assert!(
        b.reason
            .starts_with("no MAC, but records carry one from seq 1"),
        "{b:?}"
    );
    // A different key is not the key.
    let (_, other) = key_file(tmp.path(), 8);
    let b = store::verify(&path, Some(&other), None)
        .unwrap()
        .first_broken
        .unwrap();
    assert_eq!((b.line, b.tampered), (1, true));
}

#[test]
fn expect_head_catches_a_shortened_journal() {
    let tmp = tempdir();
    let path = tmp.path().join("store");
    let (mut s, _) = open_store(&path, None).unwrap();
    let mut heads = Vec::new();
    for i in 1..=6u64 {
        s.append("note", None, json!({"i": i}), AT).unwrap();
        heads.push(s.head());
    }
    drop(s);
    let dir = path.display().to_string();
    let verify = |expect: &str| {
        permdrift(&[
            "history",
            "--store",
            &dir,
            "verify",
            "--expect-head",
            expect,
        ])
    };
    let o = verify(&heads[5].to_string());
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("reaches the expected head {}", heads[5])),
        "{}",
        stdout(&o)
    );
    // Records 5 and 6 removed, and the store's own head file made to agree:
    // locally consistent, so only the head kept elsewhere can tell.
    let lines = journal_lines(&path);
    write_lines(&path, &lines[..4]);
    fs::write(path.join("head"), format!("{}\n", heads[3])).unwrap();
    assert_eq!(code(&permdrift(&["history", "--store", &dir, "verify"])), 0);
    for expect in [heads[5].to_string(), "6".to_string()] {
        let o = verify(&expect);
        assert_eq!(code(&o), 1, "{expect}: {}", stdout(&o));
        assert!(
            stdout(&o).contains(
                "line 5: the journal ends at seq 4, but the expected head says seq 6 was written"
            ),
            "{}",
            stdout(&o)
        );
    }
    assert_eq!(code(&verify(&heads[3].to_string())), 0);
    assert_eq!(code(&verify("4")), 0);
    // A journal of the right length but other content.
    let o = verify(&format!("4:{}", heads[2].hash));
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("record 4 has hash"), "{}", stdout(&o));
    // Bad input is trouble, not a verdict.
    let o = verify("four");
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("`four` is not a seq"), "{}", stderr(&o));
}

#[test]
fn an_old_journal_still_verifies_and_a_key_macs_from_the_next_record() {
    let tmp = tempdir();
    let path = tmp.path().join("store");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1");
    fs::create_dir_all(path.join("snapshots")).unwrap();
    for entry in ["journal.jsonl"].into_iter().map(String::from).chain(
        fs::read_dir(fixture.join("snapshots"))
            .unwrap()
            .map(|e| format!("snapshots/{}", e.unwrap().file_name().to_str().unwrap())),
    ) {
        fs::copy(fixture.join(&entry), path.join(&entry)).unwrap();
    }
    let old = fs::read_to_string(path.join(store::JOURNAL)).unwrap();
    let dir = path.display().to_string();
    let (key_path, key) = key_file(tmp.path(), 7);
    let kf = key_path.display().to_string();

    let o = permdrift(&["history", "--store", &dir, "verify"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!(
            "store {dir}: intact: 4 records, 1 snapshot checked, head 4:2206be12"
        )),
        "{out}"
    );
    assert!(
        out.contains("no journal key given: only the unkeyed chain was checked"),
        "{out}"
    );
    let o = permdrift(&["history", "--store", &dir, "verify", "--key-file", &kf]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("no record carries a MAC: only the unkeyed chain was checked"),
        "{}",
        stdout(&o)
    );

    // The operator, now with a key, opens it and MACs from the next record.
    let (mut s, warnings) = open_store(&path, Some(&key)).unwrap();
    assert!(
        warnings.len() == 1 && warnings[0].contains("started head at 4:2206be12"),
        "{warnings:?}"
    );
    let r = s
        .append("note", None, json!({"reason": "key on"}), AT)
        .unwrap();
    assert_eq!(r.seq, 5);
    assert!(r.mac.is_some());
    drop(s);
    let now = fs::read_to_string(path.join(store::JOURNAL)).unwrap();
    assert!(now.starts_with(&old), "old records are left as they were");
    let o = permdrift(&["history", "--store", &dir, "verify", "--key-file", &kf]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("MACs checked with the journal key from seq 5 on"),
        "{}",
        stdout(&o)
    );
    // The keyed record's MAC covers the old records too, through its prev.
    let mut lines = journal_lines(&path);
    lines[2] = lines[2].replace("\"high\"", "\"low\"");
    let mut records: Vec<store::Record> = parse(&lines[..2]);
    records.extend(lines[2..].iter().map(|l| {
        let mut r: store::Record = serde_json::from_str(l).unwrap();
        r.hash.clear();
        r
    }));
    forge(&path, records, 2);
    let b = store::verify(&path, Some(&key), None)
        .unwrap()
        .first_broken
        .unwrap();
    assert_eq!((b.line, b.tampered), (5, true), "{b:?}");
}

#[test]
fn reset_sets_the_journal_aside_and_starts_a_new_chain() {
    let tmp = tempdir();
    let (key_path, key) = key_file(tmp.path(), 7);
    let path = keyed_store_with(tmp.path(), 6, &key);
    let dir = path.display().to_string();
    let kf = key_path.display().to_string();
    let old_head = fs::read_to_string(path.join("head")).unwrap();
    let lines = journal_lines(&path);
    // Shortened: the operator refuses it.
    write_lines(&path, &lines[..3]);
    let cut = fs::read(path.join(store::JOURNAL)).unwrap();
    assert!(matches!(
        open_store(&path, Some(&key)),
        Err(StoreError::Tampered { .. })
    ));

    // Its records carry MACs, so starting over takes the key.
    let o = permdrift(&[
        "history",
        "--store",
        &dir,
        "reset",
        "--reason",
        "lost the tail",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("carry a MAC from seq 1 on, so writing needs the journal key"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read(path.join(store::JOURNAL)).unwrap(), cut);

    let o = permdrift(&[
        "history",
        "--store",
        &dir,
        "reset",
        "--reason",
        "lost the tail",
        "--actor",
        "alice",
        "--key-file",
        &kf,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the previous journal was not intact: the journal ends at seq 3"),
        "{}",
        stderr(&o)
    );
    assert!(
        stdout(&o).contains("previous journal set aside as"),
        "{}",
        stdout(&o)
    );
    // Set aside byte for byte, never deleted.
    assert_eq!(fs::read(path.join("journal.reset-1.jsonl")).unwrap(), cut);
    let records = store::read_records(&path).unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (r.seq, r.kind.as_str(), r.prev.as_str()),
        (1, "reset", store::ZERO_HASH)
    );
    assert!(r.mac.is_some());
    assert_eq!(r.body["reason"], "lost the tail");
    assert_eq!(r.body["actor"], "alice");
    assert_eq!(r.body["previous"]["journal"], "journal.reset-1.jsonl");
    assert_eq!(r.body["previous"]["records"], 3);
    assert_eq!(r.body["previous"]["headFile"], old_head.trim());
    assert_eq!(
        r.body["previous"]["head"],
        format!("3:{}", parse(&lines)[2].hash)
    );

    // The new chain opens and continues; verify is intact with the key.
    let (mut s, warnings) = open_store(&path, Some(&key)).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(s.append("note", None, json!({}), AT).unwrap().seq, 2);
    // Not while a writer holds the store.
    let o = permdrift(&[
        "history",
        "--store",
        &dir,
        "reset",
        "--reason",
        "x",
        "--key-file",
        &kf,
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("stop the operator before resetting its store"),
        "{}",
        stderr(&o)
    );
    assert!(!path.join("journal.reset-2.jsonl").exists());
    drop(s);
    let o = permdrift(&["history", "--store", &dir, "verify", "--key-file", &kf]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));

    // A crash between the new journal and the new head file: open accepts
    // the old head file because the reset record names it.
    let reset = || Store::reset(&path, Some(&key), "again", "bob", AT);
    let started = Instant::now();
    let mut done = reset();
    while matches!(done, Err(StoreError::Locked { .. }))
        && started.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(5));
        done = reset();
    }
    let (_, r2) = done.unwrap();
    assert_eq!(r2.body["previous"]["journal"], "journal.reset-2.jsonl");
    fs::write(
        path.join("head"),
        format!("{}\n", r2.body["previous"]["headFile"].as_str().unwrap()),
    )
    .unwrap();
    let (s, _) = open_store(&path, Some(&key)).unwrap();
    assert_eq!(s.head().seq, 1);
    drop(s);
    assert_eq!(fs::read(path.join("journal.reset-1.jsonl")).unwrap(), cut);
}

#[test]
fn bad_key_files_are_trouble_and_never_shown() {
    let tmp = tempdir();
    let path = store_with(tmp.path(), 1);
    let dir = path.display().to_string();
    let short = tmp.path().join("short-key");
    fs::write(&short, "deadbeefcafe\n").unwrap();
    let o = permdrift(&[
        "history",
        "--store",
        &dir,
        "verify",
        "--key-file",
        &short.display().to_string(),
    ]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "journal key file {}: 6 bytes (hex); a journal key needs at least 32",
            short.display()
        )),
        "{err}"
    );
    assert!(!err.contains("deadbeef"), "{err}");
    let missing = tmp.path().join("no-such-key").display().to_string();
    let o = permdrift(&["history", "--store", &dir, "verify", "--key-file", &missing]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains(&format!("journal key file {missing}: ")),
        "{}",
        stderr(&o)
    );
}
