//! Reader crashes found while fuzzing (`fuzz/`, see docs/fuzzing.md), kept
//! as end-to-end checks through the CLI: each input must give a clear error
//! naming the file and the field, with exit code 2.

use std::path::PathBuf;
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("permdrift-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Fuzz target `config`: a duration of more minutes or hours than fit in
/// u64 seconds overflowed (a panic in debug builds, a wrapped and silently
/// wrong poll interval in release builds).
#[test]
fn an_overlong_duration_is_a_config_error() {
    let dir = scratch("fuzz-duration");
    for (value, field) in [
        ("18446744073709551615h", "sources[0].aws.pollInterval"),
        ("307445734561825861m", "sources[0].aws.pollInterval"),
        ("5124095576030432h", "leaderElection.leaseDuration"),
    ] {
        let (lease, poll) = if field.starts_with("leader") {
            (value, "30s")
        } else {
            ("15s", value)
        };
        let path = dir.join("config.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: permdrift.dev/v1alpha1\nkind: Config\nstore:\n  path: {}\n\
                 leaderElection:\n  leaseDuration: {lease}\n\
                 sources:\n  - name: acct\n    aws:\n      pollInterval: {poll}\n",
                dir.join("store").display()
            ),
        )
        .expect("write config");
        let out = Command::new(env!("CARGO_BIN_EXE_permdrift"))
            .args(["run", "--check", "--config"])
            .arg(&path)
            .output()
            .expect("run permdrift");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        assert!(stderr.contains("config.yaml"), "{value}: {stderr}");
        assert!(stderr.contains(field), "{value}: {stderr}");
        assert!(stderr.contains("too long a duration"), "{value}: {stderr}");
    }
    // The largest count that fits is still a duration.
    assert_eq!(
        permdrift::config::parse_duration("5124095576030431h"),
        Ok(std::time::Duration::from_secs(5_124_095_576_030_431 * 3600))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Fuzz target `load_xml`: the check for a JSON snapshot looked at the
/// first 256 bytes of every input by slicing the text there, which panicked
/// when byte 256 fell inside a multi-byte character, whatever the format.
#[test]
fn a_character_across_byte_256_is_read() {
    let dir = scratch("fuzz-char-boundary");
    let head = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: a\n  annotations:\n    note: \"";
    // '€' is three bytes: one of these paddings puts byte 256 inside it.
    for pad in 0..3 {
        let note = format!("{}{}", "x".repeat(pad), "€".repeat(100));
        let path = dir.join(format!("role-{pad}.yaml"));
        std::fs::write(&path, format!("{head}{note}\"\nrules: []\n")).expect("write manifest");
        let out = Command::new(env!("CARGO_BIN_EXE_permdrift"))
            .args(["snapshot", "-q", "--from"])
            .arg(&path)
            .args(["--format", "json"])
            .output()
            .expect("run permdrift");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "pad {pad}: {stderr}");
        let snapshot: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("snapshot is JSON");
        assert_eq!(
            snapshot["sources"][0]["objects"][0]["metadata"]["annotations"]["note"],
            note.as_str(),
            "pad {pad}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
