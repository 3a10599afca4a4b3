//! End-to-end tests of the live Kubernetes source: the `permdrift` binary
//! (`snapshot --kube`, `diff`, `who-can`) and the library
//! (`snapshot_cluster`, `watch_cluster` + `LiveIndex`) against the project's
//! Kubernetes API test server, through the real `kube` client, with people
//! acting through the real `kubectl`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use permdrift::index::k8s_live::{ChangeOrigin, LiveIndex, ObjectChange};
use permdrift::model::k8s::RbacKind;
use permdrift::source::k8s::{
    K8sProgress, SourceInfo, WatchBackoff, WatchOptions, snapshot_cluster, watch_cluster,
};
use serde_json::{Value, json};
use support::kube_server::{KubeContext, KubeTestServer, Options, TOKEN, USER, write_kubeconfig};

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";

// ---------------------------------------------------------------- helpers

fn permdrift(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_permdrift"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        // as if not in a pod, whatever runs the tests
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .expect("run permdrift")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

/// Runs permdrift expecting `want`; returns the output.
/// `permdrift snapshot --kube --kubeconfig KC -o OUT`, expecting exit status `want`.
fn snapshot_kube(kc: &Path, out: &Path, home: &Path, want: i32) -> Output {
    let (kc, out) = (kc.to_str().unwrap(), out.to_str().unwrap());
    run(
        &["snapshot", "--kube", "--kubeconfig", kc, "-o", out],
        home,
        want,
    )
}

fn run(args: &[&str], home: &Path, want: i32) -> Output {
    let o = permdrift(args, home);
    assert_eq!(
        code(&o),
        want,
        "permdrift {args:?}\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    o
}

/// A kubeconfig with one context for this server.
fn kubeconfig(
    srv: &KubeTestServer,
    file: &str,
    context: &str,
    tls: bool,
    user: &str,
    token: &str,
) -> PathBuf {
    let path = srv.dir.path().join(file);
    let server = if tls { &srv.https_url } else { &srv.url };
    write_kubeconfig(
        &path,
        &[KubeContext {
            name: context,
            server,
            user,
            token,
        }],
    );
    path
}

fn create(srv: &KubeTestServer, path: &str, body: Value) -> Value {
    let r = srv.request("POST", path, Some(&body.to_string()));
    assert!(
        r.status == 200 || r.status == 201,
        "POST {path}: {} {}",
        r.status,
        r.text()
    );
    r.json()
}

/// A small cluster: a namespace and six objects (two role bindings, one of each other kind).
fn seed(srv: &KubeTestServer) {
    create(
        srv,
        "/api/v1/namespaces",
        json!({"metadata": {"name": "team-a"}}),
    );
    create(
        srv,
        &format!("{RBAC}/clusterroles"),
        json!({"metadata": {"name": "secret-reader", "labels": {"team": "ops"}},
               "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]}),
    );
    create(
        srv,
        &format!("{RBAC}/clusterrolebindings"),
        json!({"metadata": {"name": "ops-secrets"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "secret-reader"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "ops"}]}),
    );
    create(
        srv,
        &format!("{RBAC}/namespaces/team-a/roles"),
        json!({"metadata": {"name": "cm-editor", "namespace": "team-a"},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]}),
    );
    create(
        srv,
        &format!("{RBAC}/namespaces/team-a/rolebindings"),
        json!({"metadata": {"name": "bob-secrets", "namespace": "team-a"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "secret-reader"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]}),
    );
    create(
        srv,
        "/api/v1/namespaces/team-a/serviceaccounts",
        json!({"metadata": {"name": "bot", "namespace": "team-a"}}),
    );
    create(
        srv,
        &format!("{RBAC}/namespaces/team-a/rolebindings"),
        json!({"metadata": {"name": "bot-cm", "namespace": "team-a"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-editor"},
               "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "team-a"}]}),
    );
}

fn object_key(o: &Value) -> String {
    let kind = o["kind"].as_str().expect("kind");
    let name = o["metadata"]["name"].as_str().expect("name");
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind}/{ns}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

/// Every RBAC object and ServiceAccount on the server, as a fresh list
/// returns them (with `apiVersion`/`kind` put back on each item).
fn server_objects(srv: &KubeTestServer) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for kind in RbacKind::ALL {
        let (prefix, api_version) = match kind {
            RbacKind::ServiceAccount => ("/api/v1".to_owned(), "v1"),
            _ => (RBAC.to_owned(), "rbac.authorization.k8s.io/v1"),
        };
        let list = srv
            .request("GET", &format!("{prefix}/{}", kind.resource()), None)
            .json();
        for mut item in list["items"].as_array().cloned().unwrap_or_default() {
            item["apiVersion"] = json!(api_version);
            item["kind"] = json!(kind.as_str());
            out.insert(object_key(&item), item);
        }
    }
    out
}

fn read_snapshot(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read snapshot");
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).expect("snapshot JSON")
    } else {
        serde_yaml::from_str(&text).expect("snapshot YAML")
    }
}

fn source<'a>(snapshot: &'a Value, name: &str) -> &'a Value {
    snapshot["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name:?} in {snapshot}"))
}

fn snapshot_objects(source: &Value) -> BTreeMap<String, Value> {
    source["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| (object_key(o), o.clone()))
        .collect()
}

/// The live index fed by the watch driver on a background task, with every
/// change it emitted.
#[derive(Default)]
struct Live {
    index: LiveIndex,
    changes: Vec<ObjectChange>,
}

fn quick_options() -> WatchOptions {
    WatchOptions {
        backoff: WatchBackoff {
            min: Duration::from_millis(50),
            max: Duration::from_millis(500),
            jitter: false,
        },
        ..WatchOptions::default()
    }
}

fn start_live(client: kube::Client) -> (Arc<Mutex<Live>>, tokio::task::JoinHandle<()>) {
    start_live_with(client, quick_options())
}

fn start_live_with(
    client: kube::Client,
    options: WatchOptions,
) -> (Arc<Mutex<Live>>, tokio::task::JoinHandle<()>) {
    let live = Arc::new(Mutex::new(Live::default()));
    let shared = live.clone();
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(watch_cluster(client, options));
        while let Some(event) = events.next().await {
            let mut live = shared.lock().unwrap();
            let changes = live.index.apply(event);
            live.changes.extend(changes);
        }
    });
    (live, task)
}

async fn wait_for(live: &Mutex<Live>, what: &str, cond: impl Fn(&Live) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if cond(&live.lock().unwrap()) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn find_change<'a>(changes: &'a [Value], kind: &str, name: &str) -> &'a Value {
    changes
        .iter()
        .find(|c| c["object"]["kind"] == kind && c["object"]["name"] == name)
        .unwrap_or_else(|| panic!("no change to {kind}/{name} in {changes:?}"))
}

fn has_risk(change: &Value, risk: &str) -> bool {
    change["risks"]
        .as_array()
        .is_some_and(|r| r.iter().any(|x| x == risk))
}

// ---------------------------------------------------------------- snapshot

#[test]
fn snapshot_over_http_holds_exactly_the_cluster_and_answers_who_can() {
    let srv = KubeTestServer::start();
    seed(&srv);
    let kc = kubeconfig(&srv, "kc-http", "kts", false, USER, TOKEN);
    let out = srv.dir.path().join("snap.json");
    let o = snapshot_kube(&kc, &out, srv.dir.path(), 0);
    let err = stderr(&o);
    assert!(err.contains("kube kts: clusterroles: 1 (page 1)"), "{err}");
    assert!(err.contains("kube kts: rolebindings: 2 (page 1)"), "{err}");
    assert!(
        err.contains(&format!(
            "kube kts: 6 objects from {} (5 pages, 5 requests)",
            srv.url
        )),
        "{err}"
    );

    let snap = read_snapshot(&out);
    let src = source(&snap, "kts");
    assert_eq!(src["platform"], "kubernetes");
    assert_eq!(src["complete"], true);
    assert_eq!(src["context"], "kts");
    assert_eq!(src["server"], srv.url.as_str());
    let rvs = src["resourceVersions"]
        .as_object()
        .expect("resourceVersions");
    assert_eq!(rvs.len(), 5, "{rvs:?}");
    let collected = src["collectedAt"].as_str().expect("collectedAt");
    assert!(collected.parse::<jiff::Timestamp>().is_ok(), "{collected}");
    assert!(src.get("missing").is_none());

    // Exactly the server's objects, byte for byte as values: nothing added,
    // nothing lost (uid, resourceVersion, managedFields included).
    let objects = snapshot_objects(src);
    let expected = server_objects(&srv);
    assert_eq!(
        objects.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert_eq!(objects, expected);
    let cr = &objects["ClusterRole/secret-reader"];
    assert_eq!(cr["apiVersion"], "rbac.authorization.k8s.io/v1");
    assert!(
        cr["metadata"]["managedFields"][0]["manager"].is_string(),
        "{cr}"
    );
    assert!(cr["metadata"]["uid"].is_string());

    // who-can answers from it
    let o = run(
        &[
            "who-can",
            "get",
            "secrets",
            "-n",
            "team-a",
            out.to_str().unwrap(),
        ],
        srv.dir.path(),
        0,
    );
    let answer = stdout(&o);
    assert!(answer.contains("Group:ops"), "{answer}");
    assert!(answer.contains("User:bob"), "{answer}");
    assert!(!answer.contains("ServiceAccount:team-a:bot"), "{answer}");
    let o = run(
        &[
            "who-can",
            "delete",
            "configmaps",
            "-n",
            "team-a",
            out.to_str().unwrap(),
        ],
        srv.dir.path(),
        0,
    );
    assert!(
        stdout(&o).contains("ServiceAccount:team-a:bot"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn snapshot_over_https_with_a_token_through_the_cli() {
    let srv = KubeTestServer::start();
    seed(&srv);
    let kc = kubeconfig(&srv, "kc-https", "secure", true, USER, TOKEN);
    let out = srv.dir.path().join("snap.yaml");
    snapshot_kube(&kc, &out, srv.dir.path(), 0);
    let snap = read_snapshot(&out);
    let src = source(&snap, "secure");
    assert_eq!(src["server"], srv.https_url.as_str());
    assert_eq!(src["complete"], true);
    assert_eq!(snapshot_objects(src), server_objects(&srv));
    // the same state read over http gives the same objects: one canonical form
    let kc_http = kubeconfig(&srv, "kc-plain", "secure", false, USER, TOKEN);
    let out_http = srv.dir.path().join("snap-http.yaml");
    snapshot_kube(&kc_http, &out_http, srv.dir.path(), 0);
    let http = read_snapshot(&out_http);
    assert_eq!(
        snapshot_objects(source(&http, "secure")),
        snapshot_objects(src)
    );
}

#[test]
fn several_clusters_land_in_one_snapshot_and_clashing_names_are_refused() {
    let a = KubeTestServer::start();
    let b = KubeTestServer::start();
    seed(&a);
    create(
        &b,
        &format!("{RBAC}/clusterroles"),
        json!({"metadata": {"name": "only-in-beta"}, "rules": []}),
    );
    let home = a.dir.path();
    let kc = home.join("kc-two");
    write_kubeconfig(
        &kc,
        &[
            KubeContext {
                name: "alpha",
                server: &a.url,
                user: USER,
                token: TOKEN,
            },
            KubeContext {
                name: "beta",
                server: &b.https_url,
                user: USER,
                token: TOKEN,
            },
        ],
    );
    let kc = kc.to_str().unwrap();
    let out = home.join("two.json");
    let out = out.to_str().unwrap();

    // default: the current context only
    run(
        &["snapshot", "--kube", "--kubeconfig", kc, "-o", out],
        home,
        0,
    );
    let snap = read_snapshot(Path::new(out));
    assert_eq!(snap["sources"].as_array().unwrap().len(), 1);
    assert_eq!(snap["sources"][0]["name"], "alpha");

    for selection in [
        vec!["--all-contexts"],
        vec!["--context", "beta", "--context", "alpha"],
    ] {
        let mut args = vec!["snapshot", "--kube", "--kubeconfig", kc, "-o", out];
        args.extend(selection);
        run(&args, home, 0);
        let snap = read_snapshot(Path::new(out));
        assert_eq!(snapshot_objects(source(&snap, "alpha")), server_objects(&a));
        let beta = source(&snap, "beta");
        assert_eq!(beta["server"], b.https_url.as_str());
        assert!(snapshot_objects(beta).contains_key("ClusterRole/only-in-beta"));
    }

    // with files and a renamed cluster
    let manifests = home.join("manifests.yaml");
    std::fs::write(
        &manifests,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: from-file}\nrules: []\n",
    )
    .unwrap();
    let manifests = manifests.to_str().unwrap();
    let err = stderr(&run(
        &[
            "snapshot",
            "--kube",
            "--kubeconfig",
            kc,
            "--from",
            manifests,
            "--source-name",
            "alpha",
            "-o",
            out,
        ],
        home,
        2,
    ));
    assert!(
        err.contains("two sources are both named \"alpha\"; rename one with --source-name or --kube-source-name"),
        "{err}"
    );
    run(
        &[
            "snapshot",
            "--kube",
            "--kubeconfig",
            kc,
            "--from",
            manifests,
            "--source-name",
            "alpha",
            "--kube-source-name",
            "prod",
            "-o",
            out,
        ],
        home,
        0,
    );
    let snap = read_snapshot(Path::new(out));
    assert_eq!(source(&snap, "prod")["context"], "alpha");
    assert!(snapshot_objects(source(&snap, "alpha")).contains_key("ClusterRole/from-file"));

    let err = stderr(&run(
        &[
            "snapshot",
            "--kube",
            "--kubeconfig",
            kc,
            "--all-contexts",
            "--kube-source-name",
            "x",
        ],
        home,
        2,
    ));
    assert!(
        err.contains("--kube-source-name names one cluster, but 2 are read"),
        "{err}"
    );
    let err = stderr(&run(
        &[
            "snapshot",
            "--kube",
            "--kubeconfig",
            kc,
            "--context",
            "gamma",
        ],
        home,
        2,
    ));
    assert!(
        err.contains("context \"gamma\" is not in kubeconfig") && err.contains("alpha, beta"),
        "{err}"
    );
}

// ---------------------------------------------------------------- forum advice

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forum_advice_applied_with_kubectl_is_a_widening_and_the_live_index_sees_it() {
    let srv = KubeTestServer::start();
    seed(&srv);
    let home = srv.dir.path().to_owned();
    let kc = kubeconfig(&srv, "kc-http", "prod", false, USER, TOKEN);
    let kc = kc.to_str().unwrap().to_owned();
    let snap = |name: &str| {
        let path = home.join(name);
        run(
            &[
                "snapshot",
                "--kube",
                "--kubeconfig",
                &kc,
                "-q",
                "-o",
                path.to_str().unwrap(),
            ],
            &home,
            0,
        );
        path.to_str().unwrap().to_owned()
    };
    let before = snap("before.json");

    let (live, task) = start_live(srv.client().await);
    wait_for(&live, "the first sync", |l| {
        l.index.is_synced() && l.index.model().len() == 6
    })
    .await;
    {
        let l = live.lock().unwrap();
        assert!(
            l.changes
                .iter()
                .all(|c| c.origin == ChangeOrigin::Relist && c.is_added())
        );
        assert_eq!(l.changes.len(), 6);
    }
    let synced = live.lock().unwrap().changes.len();

    // priya follows the agent's answer on the forum, typing what it said
    srv.kubectl_ok(&[
        "create",
        "clusterrole",
        "engineering-debug",
        "--verb=get,list,watch",
        "--resource=secrets,configmaps",
    ]);
    srv.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "engineering-debug",
        "--clusterrole=engineering-debug",
        "--group=engineering",
    ]);

    wait_for(&live, "both additions", |l| l.changes.len() >= synced + 2).await;
    let after = snap("after.json");
    {
        let l = live.lock().unwrap();
        let new = &l.changes[synced..];
        assert_eq!(new.len(), 2, "{new:?}");
        assert_eq!(new[0].key.to_string(), "ClusterRole/engineering-debug");
        assert_eq!(
            new[1].key.to_string(),
            "ClusterRoleBinding/engineering-debug"
        );
        let after_objects = snapshot_objects(source(&read_snapshot(Path::new(&after)), "prod"));
        for change in new {
            assert!(change.is_added() && change.origin == ChangeOrigin::Watch);
            let current = change.current.as_ref().unwrap().value();
            // the emitted object is the one the snapshot holds, managedFields included
            assert_eq!(current, after_objects[&object_key(&current)]);
            assert_eq!(
                change.resource_version.as_deref(),
                current["metadata"]["resourceVersion"].as_str()
            );
            assert_eq!(
                current["metadata"]["managedFields"][0]["manager"],
                "kubectl-create"
            );
        }
    }

    let o = run(
        &["diff", &before, &after, "--format", "json", "-q"],
        &home,
        1,
    );
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let changes = report["changes"].as_array().unwrap();
    let binding = find_change(changes, "ClusterRoleBinding", "engineering-debug");
    assert_eq!(binding["change"], "added");
    assert_eq!(binding["direction"], "widening");
    assert!(has_risk(binding, "secrets-read"), "{binding}");
    assert_eq!(binding["witness"]["subject"], "Group:engineering");
    assert_eq!(binding["source"], "prod");
    let text = stdout(&run(&["diff", &before, &after], &home, 1));
    assert!(text.contains("Group:engineering can now"), "{text}");

    // The answer's second command: real kubectl's client-side apply replaces
    // the role's rules (it does not merge them, unlike the incident files).
    let yaml = srv.kubectl_ok(&[
        "create",
        "clusterrole",
        "engineering-debug",
        "--verb=create",
        "--resource=pods/exec",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let applied = srv.kubectl_stdin(&["apply", "-f", "-"], &yaml);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    wait_for(&live, "the apply", |l| l.changes.len() >= synced + 3).await;
    let later = snap("later.json");
    {
        let l = live.lock().unwrap();
        let change = &l.changes[synced + 2];
        assert_eq!(change.key.to_string(), "ClusterRole/engineering-debug");
        let previous = change.previous.as_ref().unwrap().value();
        let current = change.current.as_ref().unwrap().value();
        assert_eq!(
            previous["rules"][0]["resources"],
            json!(["secrets", "configmaps"])
        );
        assert_eq!(
            current["rules"],
            json!([{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}])
        );
        let managers: Vec<&str> = current["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert!(
            managers.contains(&"kubectl-client-side-apply"),
            "{managers:?}"
        );
    }
    let o = run(
        &["diff", &after, &later, "--format", "json", "-q"],
        &home,
        1,
    );
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let role = find_change(
        report["changes"].as_array().unwrap(),
        "ClusterRole",
        "engineering-debug",
    );
    assert_eq!(role["direction"], "mixed");
    assert!(has_risk(role, "pod-exec"), "{role}");

    // replaying the emitted changes gives the server's state
    {
        let l = live.lock().unwrap();
        let mut replay: BTreeMap<String, Value> = BTreeMap::new();
        for c in &l.changes {
            match &c.current {
                Some(o) => replay.insert(c.key.to_string(), o.value()),
                None => replay.remove(&c.key.to_string()),
            };
        }
        assert_eq!(replay, server_objects(&srv));
    }
    task.abort();
}

// ---------------------------------------------------------------- forbidden

#[test]
fn a_partly_forbidden_cluster_is_incomplete_and_diff_does_not_read_it_as_removals() {
    let srv = KubeTestServer::start_with(
        Options::default().args(["--token", "viewer-token=viewer:viewers"]),
    );
    seed(&srv);
    let home = srv.dir.path();
    let admin = kubeconfig(&srv, "kc-admin", "prod", false, USER, TOKEN);
    let viewer = kubeconfig(&srv, "kc-viewer", "prod", true, "viewer", "viewer-token");
    let full = home.join("full.json");
    let part = home.join("part.json");
    snapshot_kube(&admin, &full, home, 0);
    srv.control(
        "POST",
        "/_testserver/deny",
        r#"{"users":["viewer"],"verbs":["list"],"resources":["rolebindings"]}"#,
    );
    let o = snapshot_kube(&viewer, &part, home, 0);
    let err = stderr(&o);
    assert!(
        err.contains(
            "warning: kube prod: rolebindings not read: forbidden to list \
             rolebindings.rbac.authorization.k8s.io at cluster scope (user \"viewer\"); grant \
             get/list/watch on it or expect an incomplete snapshot"
        ),
        "{err}"
    );
    assert!(err.contains("written with complete: false"), "{err}");

    let snap = read_snapshot(&part);
    let src = source(&snap, "prod");
    assert_eq!(src["complete"], false);
    assert_eq!(src["missing"][0]["resource"], "rolebindings");
    assert!(
        src["missing"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("user \"viewer\"")
    );
    let objects = snapshot_objects(src);
    assert!(!objects.keys().any(|k| k.starts_with("RoleBinding/")));
    assert!(objects.contains_key("ClusterRole/secret-reader"));
    assert!(src["resourceVersions"].get("rolebindings").is_none());

    let (full, part) = (full.to_str().unwrap(), part.to_str().unwrap());
    let o = run(&["diff", full, part, "--format", "json", "-q"], home, 2);
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(
        report["changes"].as_array().unwrap().is_empty(),
        "the unread bindings are not removals: {report}"
    );
    assert_eq!(report["incomplete"][0]["source"], "prod");
    assert!(stderr(&o).contains("--allow-incomplete"), "{}", stderr(&o));

    // exit by the findings (none) when told to
    run(&["diff", full, part, "--allow-incomplete", "-q"], home, 0);
    // or read the gap as removals
    let o = run(
        &[
            "diff",
            full,
            part,
            "--missing-as-removed",
            "--format",
            "json",
            "-q",
        ],
        home,
        0,
    );
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let removed: Vec<&str> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["object"]["kind"] == "RoleBinding" && c["change"] == "removed")
        .map(|c| c["object"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(removed.len(), 2, "{report}");
    assert!(removed.contains(&"bob-secrets") && removed.contains(&"bot-cm"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_index_records_a_forbidden_kind_until_it_is_granted() {
    let srv = KubeTestServer::start();
    seed(&srv);
    srv.control(
        "POST",
        "/_testserver/deny",
        &format!(r#"{{"users":["{USER}"],"verbs":["list","watch"],"resources":["rolebindings"]}}"#),
    );
    let (live, task) = start_live(srv.client().await);
    wait_for(&live, "rolebindings refused, the rest synced", |l| {
        l.index.forbidden().count() == 1
            && RbacKind::ALL
                .iter()
                .all(|k| *k == RbacKind::RoleBinding || l.index.is_synced_kind(*k))
    })
    .await;
    {
        let l = live.lock().unwrap();
        assert!(!l.index.is_synced());
        assert!(l.index.is_settled());
        let missing = l.index.missing_parts();
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing[0].resource, "rolebindings");
        assert!(
            missing[0].reason.contains(&format!("(user \"{USER}\")")),
            "{}",
            missing[0].reason
        );
        let snapshot = l.index.to_source_snapshot("prod", Default::default());
        assert!(!snapshot.is_complete());
        assert_eq!(snapshot.object_count(), 4);
    }
    // the permission is granted: the watcher's retry lists them
    srv.control("DELETE", "/_testserver/deny", "");
    wait_for(&live, "rolebindings listed", |l| l.index.is_synced()).await;
    let l = live.lock().unwrap();
    assert!(l.index.missing_parts().is_empty());
    assert_eq!(l.index.model().len(), 6);
    let added: Vec<String> = l
        .changes
        .iter()
        .filter(|c| c.key.kind == RbacKind::RoleBinding)
        .map(|c| c.key.to_string())
        .collect();
    assert_eq!(
        added,
        [
            "RoleBinding/team-a/bob-secrets",
            "RoleBinding/team-a/bot-cm"
        ]
    );
    assert!(l.index.status(RbacKind::RoleBinding).failures >= 1);
    drop(l);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_index_syncs_from_streaming_lists_too() {
    let srv = KubeTestServer::start();
    seed(&srv);
    srv.control("DELETE", "/_testserver/stats", "");
    let options = WatchOptions {
        streaming_lists: true,
        ..quick_options()
    };
    let (live, task) = start_live_with(srv.client().await, options);
    wait_for(&live, "the first sync", |l| {
        l.index.is_synced() && l.index.model().len() == 6
    })
    .await;
    create(
        &srv,
        &format!("{RBAC}/clusterrolebindings"),
        json!({"metadata": {"name": "late"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "secret-reader"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "late-comers"}]}),
    );
    wait_for(&live, "the new binding", |l| l.changes.len() == 7).await;
    {
        let l = live.lock().unwrap();
        assert!(
            l.changes[..6]
                .iter()
                .all(|c| c.origin == ChangeOrigin::Relist && c.is_added())
        );
        assert_eq!(l.changes[6].key.to_string(), "ClusterRoleBinding/late");
        assert_eq!(l.changes[6].origin, ChangeOrigin::Watch);
    }
    // the initial state came through watches (sendInitialEvents), no list
    let stats = srv.control("GET", "/_testserver/stats", "");
    let requests = stats["requests"].as_object().unwrap();
    assert!(
        !requests.keys().any(|k| k.starts_with("list ")),
        "{requests:?}"
    );
    assert_eq!(requests["watch clusterrolebindings"], 1, "{requests:?}");
    task.abort();
}

// ---------------------------------------------------------------- failures

#[test]
fn unreachable_servers_and_rejected_credentials_are_clear_errors() {
    let srv = KubeTestServer::start();
    let home = srv.dir.path();
    // a port nobody listens on
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down_url = format!("http://127.0.0.1:{closed}");
    let kc = home.join("kc-down");
    write_kubeconfig(
        &kc,
        &[KubeContext {
            name: "down",
            server: &down_url,
            user: USER,
            token: TOKEN,
        }],
    );
    let started = Instant::now();
    let err = stderr(&run(
        &["snapshot", "--kube", "--kubeconfig", kc.to_str().unwrap()],
        home,
        2,
    ));
    assert!(
        err.contains(&format!(
            "kube source \"down\": cannot reach the api server {down_url}"
        )),
        "{err}"
    );
    assert!(err.contains("check that the cluster is up"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast");

    for (tls, url) in [(false, &srv.url), (true, &srv.https_url)] {
        let kc = kubeconfig(&srv, "kc-bad", "prod", tls, USER, "not-the-token");
        let err = stderr(&run(
            &["snapshot", "--kube", "--kubeconfig", kc.to_str().unwrap()],
            home,
            2,
        ));
        assert!(
            err.contains(&format!(
                "kube source \"prod\": the api server {url} rejected the credentials (401 Unauthorized"
            )),
            "{err}"
        );
        assert!(err.contains("log in again"), "{err}");
    }

    // https without the cluster's CA
    let kc = home.join("kc-no-ca");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n\
             users:\n- name: u\n  user:\n    token: {TOKEN}\ncontexts:\n- name: untrusted\n  \
             context:\n    cluster: c\n    user: u\ncurrent-context: untrusted\n",
            srv.https_url
        ),
    )
    .unwrap();
    let err = stderr(&run(
        &["snapshot", "--kube", "--kubeconfig", kc.to_str().unwrap()],
        home,
        2,
    ));
    assert!(
        err.contains(&format!(
            "kube source \"untrusted\": the api server {} did not accept its tls connection",
            srv.https_url
        )),
        "{err}"
    );

    let err = stderr(&run(
        &["snapshot", "--kube", "--kubeconfig", "/nonexistent/kc"],
        home,
        2,
    ));
    assert!(
        err.contains("cannot read kubeconfig /nonexistent/kc"),
        "{err}"
    );
    let err = stderr(&run(&["snapshot", "--kube"], home, 2));
    assert!(err.contains("no kubeconfig found"), "{err}");
    let err = stderr(&run(&["snapshot", "--kube", "--in-cluster"], home, 2));
    assert!(
        err.contains("kube source \"in-cluster\": cannot load the in-cluster configuration"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_survives_5xx_garbage_and_an_expired_continue_token() {
    // 1,200 role bindings and 1,100 cluster roles: three pages each
    let mut items = Vec::new();
    for i in 0..1_100 {
        items.push(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": format!("role-{i:04}")},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        );
    }
    for i in 0..1_200 {
        items.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("rb-{i:04}"), "namespace": format!("ns-{}", i % 7)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("role-{:04}", i % 1_100)},
            "subjects": [{"kind": "User", "name": format!("user-{i}")}]}));
    }
    let dir = tempfile::tempdir().unwrap();
    let load = dir.path().join("load.json");
    std::fs::write(
        &load,
        json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string(),
    )
    .unwrap();
    let srv =
        KubeTestServer::start_with(Options::default().arg("--load").arg(load.to_str().unwrap()));
    let expected = server_objects(&srv);
    assert_eq!(expected.len(), 2_300);

    srv.control(
        "PUT",
        "/_testserver/faults",
        r#"{"seed": 7, "rules": [
            {"verbs": ["list"], "error_rate": 0.25, "error_codes": [500], "times": 4},
            {"verbs": ["list"], "garbage_rate": 0.15, "times": 3},
            {"verbs": ["list"], "resources": ["rolebindings"], "expire_next": 1}
        ]}"#,
    );
    srv.control("DELETE", "/_testserver/stats", "");
    let info = SourceInfo {
        name: "big".into(),
        context: None,
        server: srv.url.clone(),
    };
    let seen = Mutex::new(Vec::<K8sProgress>::new());
    let source = snapshot_cluster(srv.client().await, &info, &|p| seen.lock().unwrap().push(p))
        .await
        .expect("snapshot despite faults");
    let faults = srv.control("GET", "/_testserver/faults", "");
    srv.control("DELETE", "/_testserver/faults", "");
    let injected = &faults["injected"];
    assert!(injected["error"].as_u64().unwrap_or(0) >= 1, "{faults}");
    assert!(injected["garbage"].as_u64().unwrap_or(0) >= 1, "{faults}");
    assert_eq!(injected["expire"], 1, "{faults}");

    assert!(source.is_complete(), "{:?}", source.meta.missing);
    let model = source.kube().unwrap();
    let got: BTreeMap<String, Value> = model
        .objects()
        .map(|(k, o)| (k.to_string(), o.value()))
        .collect();
    assert_eq!(got, expected);

    let seen = seen.into_inner().unwrap();
    let pages = |kind| seen.iter().filter(|p| p.kind == kind).count();
    assert_eq!(pages(RbacKind::ClusterRole), 3);
    // the expired continue token started the list over: 1 page, then 3
    assert_eq!(pages(RbacKind::RoleBinding), 4);
    let last = seen
        .iter()
        .rev()
        .find(|p| p.kind == RbacKind::RoleBinding)
        .unwrap();
    assert_eq!((last.objects, last.page, last.more), (1_200, 3, false));
    let stats = srv.control("GET", "/_testserver/stats", "");
    assert_eq!(
        stats["total_requests"].as_u64().unwrap(),
        u64::from(seen.last().unwrap().requests),
        "every request the source counted reached the server: {stats}"
    );
}
