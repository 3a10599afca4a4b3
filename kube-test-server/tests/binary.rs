//! The `kube-test-server` binary itself, and how the in-process harness
//! ends: the first stdout line, SIGTERM, flag errors that name the flag or
//! file, and open watches cut when a harness server is dropped.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube_test_server::harness::{KubeTestServer, TOKEN, http_request};

fn server_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kube-test-server"));
    c.args(args);
    c
}

#[test]
fn binary_announces_its_port_serves_and_exits_cleanly_on_sigterm() {
    let mut child = server_cmd(&["--listen", "127.0.0.1:0", "--token", "t=alice:eng"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("listening on http://127.0.0.1:")
        .unwrap_or_else(|| panic!("first line {line:?}"))
        .parse()
        .unwrap();
    let r = http_request(
        port,
        "GET",
        "/version",
        &[("Authorization", "Bearer t")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["minor"], "32");
    // Without the token: 401, since a token is configured.
    assert_eq!(http_request(port, "GET", "/api", &[], None).status, 401);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

fn failure(args: &[&str]) -> String {
    let out = server_cmd(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_flags_and_files_are_named_in_the_error() {
    let stderr = failure(&["--faults", "{not json"]);
    assert!(stderr.contains("--faults: parsing JSON"), "{stderr}");
    let stderr = failure(&["--deny", "@/nonexistent/deny.json"]);
    assert!(
        stderr.contains("--deny: reading /nonexistent/deny.json"),
        "{stderr}"
    );
    let stderr = failure(&["--token", "no-user"]);
    assert!(stderr.contains("--token \"no-user\""), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("objects.yaml");
    std::fs::write(&bad, "kind: [unclosed\n").unwrap();
    let stderr = failure(&["--load", bad.to_str().unwrap()]);
    assert!(
        stderr.contains(&format!("--load {}: invalid YAML", bad.display())),
        "{stderr}"
    );
}

#[test]
#[should_panic(expected = "--load")]
fn harness_start_fails_loudly_on_a_bad_load_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("objects.json");
    std::fs::write(&bad, "[{").unwrap();
    let _ = KubeTestServer::start_with(
        kube_test_server::harness::Options::default()
            .arg("--load")
            .arg(bad.to_str().unwrap()),
    );
}

#[test]
fn dropping_a_harness_server_cuts_open_watches() {
    let srv = KubeTestServer::start();
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /api/v1/namespaces/default/configmaps?watch=true HTTP/1.1\r\n\
         Host: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let t = Instant::now();
    drop(srv);
    // The watch has no timeout; only the server going away ends it.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}
