//! Integration tests of the dev-only kube-test-server against the real
//! kubectl and the real kube client / kube-runtime watcher.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube_test_server::harness::{KubeTestServer, Options, Response, TOKEN, USER, http_request};
use serde_json::{Value, json};

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "t"}},
        "data": {"v": v},
    }))
    .unwrap()
}

fn cluster_role(name: &str) -> ClusterRole {
    serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    }))
    .unwrap()
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

// ---------------------------------------------------------------- kubectl

#[test]
fn kubectl_create_get_and_delete_rbac() {
    let srv = KubeTestServer::start();
    srv.kubectl_ok(&["create", "namespace", "team-a"]);
    srv.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "eng-view",
        "--clusterrole=view",
        "--group=eng",
    ]);
    srv.kubectl_ok(&[
        "create",
        "rolebinding",
        "bob-edit",
        "-n",
        "team-a",
        "--clusterrole=edit",
        "--user=bob",
    ]);
    srv.kubectl_ok(&[
        "create",
        "role",
        "secret-reader",
        "-n",
        "team-a",
        "--verb=get",
        "--resource=secrets",
    ]);
    srv.kubectl_ok(&[
        "create",
        "clusterrole",
        "secret-getter",
        "--verb=get",
        "--resource=secrets",
    ]);
    srv.kubectl_ok(&["create", "serviceaccount", "bot", "-n", "team-a"]);

    let kinds = "clusterroles,clusterrolebindings,roles,rolebindings,serviceaccounts";
    let list: Value =
        serde_json::from_str(&srv.kubectl_ok(&["get", kinds, "-A", "-o", "json"])).unwrap();
    let names: BTreeSet<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["kind"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    let want: BTreeSet<String> = [
        "ClusterRole/secret-getter",
        "ClusterRoleBinding/eng-view",
        "Role/secret-reader",
        "RoleBinding/bob-edit",
        "ServiceAccount/bot",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names, want);
    let crb = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "ClusterRoleBinding")
        .unwrap();
    assert_eq!(
        crb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"})
    );
    assert_eq!(crb["subjects"][0]["name"], "eng");
    assert_eq!(crb["subjects"][0]["kind"], "Group");

    let yaml = srv.kubectl_ok(&["get", kinds, "-A", "-o", "yaml"]);
    assert!(
        yaml.contains("name: bob-edit") && yaml.contains("kind: List"),
        "{yaml}"
    );

    let table = srv.kubectl_ok(&["get", kinds, "-A"]);
    assert!(table.contains("NAMESPACE"), "{table}");
    assert!(
        table.contains("clusterrolebinding.rbac.authorization.k8s.io/eng-view   ClusterRole/view"),
        "{table}"
    );
    let wide = srv.kubectl_ok(&["get", "clusterrolebindings", "-o", "wide"]);
    assert!(wide.contains("GROUPS") && wide.contains("eng"), "{wide}");
    // short names resolve through discovery
    assert!(
        srv.kubectl_ok(&["get", "sa", "-n", "team-a"])
            .contains("bot")
    );
    assert!(srv.kubectl_ok(&["get", "ns"]).contains("kube-system"));

    srv.kubectl_ok(&["delete", "clusterrolebinding", "eng-view"]);
    srv.kubectl_ok(&["delete", "namespace", "team-a"]);
    let left = srv.kubectl_ok(&["get", kinds, "-A", "-o", "name"]);
    assert_eq!(
        left.trim(),
        "clusterrole.rbac.authorization.k8s.io/secret-getter"
    );
}

#[test]
fn kubectl_server_side_and_client_side_apply() {
    let srv = KubeTestServer::start();
    let v1 = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: applied
  labels: {team: a, tier: x}
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get"]
"#;
    let file = srv.dir.path().join("cr.yaml");
    std::fs::write(&file, v1).unwrap();
    let f = file.to_str().unwrap();
    let out = srv.kubectl_ok(&["apply", "--server-side", "-f", f]);
    assert!(out.contains("serverside-applied"), "{out}");
    // drop a label and change the rules: the label must disappear
    std::fs::write(
        &file,
        v1.replace(", tier: x", "")
            .replace(r#"["get"]"#, r#"["get", "list"]"#),
    )
    .unwrap();
    srv.kubectl_ok(&["apply", "--server-side", "-f", f]);
    let obj: Value = serde_json::from_str(&srv.kubectl_ok(&[
        "get",
        "clusterrole",
        "applied",
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .unwrap();
    assert_eq!(obj["metadata"]["labels"], json!({"team": "a"}));
    assert_eq!(obj["rules"][0]["verbs"], json!(["get", "list"]));
    let mf = &obj["metadata"]["managedFields"][0];
    assert_eq!(mf["manager"], "kubectl");
    assert_eq!(mf["operation"], "Apply");

    // another manager conflicts on the atomic rules list, unless forced
    std::fs::write(
        &file,
        v1.replace(r#"["get"]"#, r#"["*"]"#)
            .replace("  labels: {team: a, tier: x}\n", ""),
    )
    .unwrap();
    let out = srv.kubectl(&["apply", "--server-side", "--field-manager=other", "-f", f]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl" using rbac.authorization.k8s.io/v1: .rules"#),
        "{err}"
    );
    srv.kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=other",
        "-f",
        f,
    ]);
    let obj: Value = serde_json::from_str(&srv.kubectl_ok(&[
        "get",
        "clusterrole",
        "applied",
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .unwrap();
    assert_eq!(obj["rules"][0]["verbs"], json!(["*"]));
    assert_eq!(
        obj["metadata"]["labels"],
        json!({"team": "a"}),
        "labels stay with kubectl"
    );

    // client-side apply: create, then update
    let csa = srv.dir.path().join("csa.yaml");
    let doc = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: csa\n  namespace: default\ndata:\n  a: \"1\"\n";
    std::fs::write(&csa, doc).unwrap();
    assert!(
        srv.kubectl_ok(&["apply", "-f", csa.to_str().unwrap()])
            .contains("created")
    );
    std::fs::write(&csa, doc.replace("\"1\"", "\"2\"")).unwrap();
    assert!(
        srv.kubectl_ok(&["apply", "-f", csa.to_str().unwrap()])
            .contains("configured")
    );
    let obj: Value = serde_json::from_str(&srv.kubectl_ok(&[
        "get",
        "cm",
        "csa",
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .unwrap();
    assert_eq!(obj["data"]["a"], "2");
    assert!(
        obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    assert_eq!(
        obj["metadata"]["managedFields"][0]["manager"],
        "kubectl-client-side-apply"
    );
}

#[test]
fn kubectl_patch_label_annotate() {
    let srv = KubeTestServer::start();
    srv.kubectl_ok(&[
        "create",
        "clusterrole",
        "cr",
        "--verb=get",
        "--resource=secrets",
    ]);
    let key = "rbac.authorization.k8s.io/aggregate-to-admin";
    srv.kubectl_ok(&["label", "clusterrole", "cr", &format!("{key}=true")]);
    let out = srv.kubectl(&["label", "clusterrole", "cr", &format!("{key}=false")]);
    assert!(
        !out.status.success(),
        "relabel without --overwrite must fail"
    );
    srv.kubectl_ok(&[
        "label",
        "clusterrole",
        "cr",
        &format!("{key}=false"),
        "--overwrite",
    ]);
    let labels = srv.kubectl_ok(&[
        "get",
        "clusterrole",
        "cr",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert_eq!(
        serde_json::from_str::<Value>(&labels).unwrap(),
        json!({key: "false"})
    );
    srv.kubectl_ok(&["label", "clusterrole", "cr", &format!("{key}-")]);
    assert_eq!(
        srv.kubectl_ok(&[
            "get",
            "clusterrole",
            "cr",
            "-o",
            "jsonpath={.metadata.labels}"
        ]),
        ""
    );
    srv.kubectl_ok(&["annotate", "clusterrole", "cr", "owner=sec"]);

    srv.kubectl_ok(&[
        "patch",
        "clusterrole",
        "cr",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"m":"1"}}}"#,
    ]);
    srv.kubectl_ok(&[
        "patch",
        "clusterrole",
        "cr",
        "--type=strategic",
        "-p",
        r#"{"metadata":{"labels":{"s":"2"}}}"#,
    ]);
    srv.kubectl_ok(&[
        "patch", "clusterrole", "cr", "--type=json", "-p",
        r#"[{"op":"test","path":"/metadata/labels/m","value":"1"},{"op":"add","path":"/rules/0/verbs/-","value":"list"},{"op":"remove","path":"/metadata/labels/s"}]"#,
    ]);
    let failed = srv.kubectl(&[
        "patch",
        "clusterrole",
        "cr",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/metadata/labels/m","value":"x"}]"#,
    ]);
    assert!(!failed.status.success());
    let obj: Value = serde_json::from_str(&srv.kubectl_ok(&[
        "get",
        "clusterrole",
        "cr",
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .unwrap();
    assert_eq!(obj["metadata"]["labels"], json!({"m": "1"}));
    assert_eq!(obj["metadata"]["annotations"], json!({"owner": "sec"}));
    assert_eq!(obj["rules"][0]["verbs"], json!(["get", "list"]));
    assert_eq!(
        obj["metadata"]["generation"], 2,
        "only the rules change bumps generation"
    );
    let managers: BTreeSet<&str> = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert!(
        // kubectl-label lost its last field when the label was removed
        managers == BTreeSet::from(["kubectl-annotate", "kubectl-patch"]),
        "{managers:?}"
    );
    srv.kubectl_ok(&["delete", "clusterrole", "cr"]);
    let gone = srv.kubectl(&["get", "clusterrole", "cr"]);
    assert!(
        String::from_utf8_lossy(&gone.stderr)
            .contains(r#"clusterroles.rbac.authorization.k8s.io "cr" not found"#)
    );
}

#[test]
fn crd_registers_kinds_at_runtime() {
    let srv = KubeTestServer::start();
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
"#;
    let out = srv.kubectl_stdin(&["apply", "--server-side", "-f", "-"], crd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cr = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: default}\nspec: {size: 3}\n";
    let out = srv.kubectl_stdin(&["apply", "-f", "-"], cr);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = srv.kubectl_ok(&["get", "wd"]);
    assert!(
        table.contains("SIZE") && table.contains("w1") && table.contains('3'),
        "{table}"
    );
    let established = srv.kubectl_ok(&[
        "get",
        "crd",
        "widgets.example.com",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
    ]);
    assert_eq!(established, "True");
    // status subresource: status only through /status, generation for spec only
    let w = "/apis/example.com/v1/namespaces/default/widgets/w1";
    let merge = |path: &str, body: &str| {
        let r = http_request(
            srv.port,
            "PATCH",
            path,
            &[
                ("Authorization", &format!("Bearer {TOKEN}")),
                ("Content-Type", "application/merge-patch+json"),
            ],
            Some(body.as_bytes()),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    let o = merge(
        &format!("{w}/status"),
        r#"{"status":{"ready":true},"spec":{"size":9}}"#,
    );
    assert_eq!(
        (o["status"]["ready"].clone(), o["spec"]["size"].clone()),
        (json!(true), json!(3))
    );
    assert_eq!(o["metadata"]["generation"], 1);
    let o = merge(w, r#"{"status":{"ready":false},"spec":{"size":4}}"#);
    assert_eq!(
        (o["status"]["ready"].clone(), o["spec"]["size"].clone()),
        (json!(true), json!(4))
    );
    assert_eq!(o["metadata"]["generation"], 2);
    srv.kubectl_ok(&["delete", "crd", "widgets.example.com"]);
    let r = srv.request(
        "GET",
        "/apis/example.com/v1/namespaces/default/widgets",
        None,
    );
    assert_eq!(r.status, 404);
}

// ------------------------------------------------------------ kube client

#[tokio::test]
async fn paging_returns_each_object_once_during_writes() {
    let srv = KubeTestServer::start();
    let client = srv.client().await;
    let api: Api<ClusterRole> = Api::all(client.clone());
    for i in 0..200 {
        api.create(
            &PostParams::default(),
            &cluster_role(&format!("stable-{i:03}")),
        )
        .await
        .unwrap();
    }
    // churn other objects (interleaved names) while paging
    let churn = {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                let name = format!("stable-{:03}-churn", i % 200);
                let _ = api
                    .create(&PostParams::default(), &cluster_role(&name))
                    .await;
                if i % 2 == 0 {
                    let _ = api.delete(&name, &DeleteParams::default()).await;
                }
            }
        })
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default().limit(7);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        for o in &page.items {
            *seen.entry(o.metadata.name.clone().unwrap()).or_default() += 1;
        }
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
        tokio::task::yield_now().await;
    }
    churn.await.unwrap();
    assert!(pages > 20);
    for i in 0..200 {
        assert_eq!(
            seen.get(&format!("stable-{i:03}")),
            Some(&1),
            "stable-{i:03}"
        );
    }
    assert!(seen.values().all(|n| *n == 1), "duplicates: {seen:?}");
}

#[tokio::test]
async fn replace_with_stale_resource_version_conflicts() {
    let srv = KubeTestServer::start();
    let api: Api<ConfigMap> = Api::default_namespaced(srv.client().await);
    let created = api
        .create(&PostParams::default(), &cm("c", "1"))
        .await
        .unwrap();
    let mut fresh = created.clone();
    fresh.data = Some([("v".to_string(), "2".to_string())].into());
    let updated = api
        .replace("c", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    let mut stale = created.clone();
    stale.data = Some([("v".to_string(), "3".to_string())].into());
    let err = api_error(
        api.replace("c", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        r#"Operation cannot be fulfilled on configmaps "c": the object has been modified; please apply your changes to the latest version and try again"#
    );
    // AlreadyExists, NotFound and missing namespaces look like the real server's
    let err = api_error(
        api.create(&PostParams::default(), &cm("c", "1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (409, "AlreadyExists", r#"configmaps "c" already exists"#)
    );
    let err = api_error(api.get("nope").await.unwrap_err());
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, r#"configmaps "nope" not found"#)
    );
    let other: Api<ConfigMap> = Api::namespaced(srv.client().await, "missing");
    let err = api_error(
        other
            .create(&PostParams::default(), &cm("c", "1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, r#"namespaces "missing" not found"#)
    );
    // a merge patch carrying a stale resourceVersion is a precondition
    let p = json!({"metadata": {"resourceVersion": created.metadata.resource_version}, "data": {"v": "9"}});
    let err = api_error(
        api.patch("c", &PatchParams::default(), &Patch::Merge(&p))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    // delete preconditions
    let dp = DeleteParams::default().preconditions(kube::api::Preconditions {
        resource_version: created.metadata.resource_version.clone(),
        uid: None,
    });
    let err = api_error(api.delete("c", &dp).await.unwrap_err());
    assert_eq!(err.code, 409);
    assert!(
        err.message
            .contains("Precondition failed: ResourceVersion in precondition"),
        "{}",
        err.message
    );
    api.delete("c", &DeleteParams::default()).await.unwrap();
}

/// The server state a watcher should converge to: name -> resourceVersion.
async fn server_state(api: &Api<ConfigMap>) -> BTreeMap<String, String> {
    // retried: the tests using this may inject list faults
    let list = loop {
        if let Ok(l) = api.list(&ListParams::default()).await {
            break l;
        }
    };
    list.items
        .into_iter()
        .map(|o| {
            (
                o.metadata.name.unwrap(),
                o.metadata.resource_version.unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn watcher_sees_every_change_in_order() {
    for streaming in [false, true] {
        let srv = KubeTestServer::start();
        let api: Api<ConfigMap> = Api::default_namespaced(srv.client().await);
        for i in 0..5 {
            api.create(&PostParams::default(), &cm(&format!("pre-{i}"), "0"))
                .await
                .unwrap();
        }
        let mut cfg = watcher::Config::default().page_size(2);
        if streaming {
            cfg = cfg.streaming_lists();
        }
        let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
        let w = {
            let api = api.clone();
            tokio::spawn(async move {
                let mut stream = watcher(api, cfg).boxed();
                while let Some(ev) = stream.next().await {
                    if events_tx.send(ev.map_err(|e| e.to_string())).is_err() {
                        break;
                    }
                }
            })
        };
        // wait for the initial list
        let mut init = BTreeSet::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events_rx.recv())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
            {
                watcher::Event::InitApply(o) => {
                    init.insert(o.metadata.name.unwrap());
                }
                watcher::Event::InitDone => break,
                _ => {}
            }
        }
        assert_eq!(init.len(), 5);
        let mut written = Vec::new();
        for i in 0..10 {
            let o = api
                .create(&PostParams::default(), &cm(&format!("c-{i}"), "1"))
                .await
                .unwrap();
            written.push((
                "apply",
                o.metadata.name.unwrap(),
                o.metadata.resource_version.unwrap(),
            ));
        }
        for i in 0..10 {
            let p = json!({"data": {"v": "2"}});
            let o = api
                .patch(
                    &format!("c-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&p),
                )
                .await
                .unwrap();
            written.push((
                "apply",
                o.metadata.name.unwrap(),
                o.metadata.resource_version.unwrap(),
            ));
        }
        for i in 0..3 {
            let name = format!("c-{i}");
            api.delete(&name, &DeleteParams::default()).await.unwrap();
        }
        let mut seen = Vec::new();
        while seen.len() < 23 {
            let ev = tokio::time::timeout(Duration::from_secs(10), events_rx.recv())
                .await
                .expect("watcher stalled")
                .unwrap()
                .unwrap();
            match ev {
                watcher::Event::Apply(o) => seen.push((
                    "apply",
                    o.metadata.name.unwrap(),
                    o.metadata.resource_version.unwrap(),
                )),
                watcher::Event::Delete(o) => seen.push((
                    "delete",
                    o.metadata.name.unwrap(),
                    o.metadata.resource_version.unwrap(),
                )),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(&seen[..20], &written[..], "streaming={streaming}");
        let rvs: Vec<u64> = seen.iter().map(|s| s.2.parse().unwrap()).collect();
        assert!(rvs.windows(2).all(|w| w[0] < w[1]), "ordered: {rvs:?}");
        assert_eq!(
            seen[20..].iter().map(|s| s.0).collect::<Vec<_>>(),
            ["delete"; 3]
        );
        w.abort();
    }
}

#[tokio::test]
async fn watcher_recovers_from_expired_and_dropped_watches() {
    for streaming in [false, true] {
        let srv = KubeTestServer::start_with(Options::default().args(["--bookmark-interval", "1"]));
        srv.control(
            "POST",
            "/_testserver/faults",
            r#"{"seed": 7, "rules": [
                {"verbs": ["watch"], "resources": ["configmaps"], "expire_next": 2},
                {"verbs": ["watch"], "resources": ["configmaps"], "drop_watch_after": 3, "times": 4}
            ]}"#,
        );
        let api: Api<ConfigMap> = Api::default_namespaced(srv.client().await);
        let mut cfg = watcher::Config::default().page_size(3);
        if streaming {
            cfg = cfg.streaming_lists();
        }
        let cache = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<String, String>::new()));
        let w = {
            let (api, cache) = (api.clone(), cache.clone());
            tokio::spawn(async move {
                let mut buffer = BTreeMap::new();
                let mut stream = watcher(api, cfg).default_backoff().boxed();
                while let Some(ev) = stream.next().await {
                    let Ok(ev) = ev else { continue };
                    let mut c = cache.lock().unwrap();
                    let key = |o: &ConfigMap| {
                        (
                            o.metadata.name.clone().unwrap(),
                            o.metadata.resource_version.clone().unwrap(),
                        )
                    };
                    match ev {
                        watcher::Event::Init => buffer.clear(),
                        watcher::Event::InitApply(o) => {
                            let (n, rv) = key(&o);
                            buffer.insert(n, rv);
                        }
                        watcher::Event::InitDone => *c = std::mem::take(&mut buffer),
                        watcher::Event::Apply(o) => {
                            let (n, rv) = key(&o);
                            c.insert(n, rv);
                        }
                        watcher::Event::Delete(o) => {
                            c.remove(o.metadata.name.as_ref().unwrap());
                        }
                    }
                }
            })
        };
        let writer_api: Api<ConfigMap> = Api::default_namespaced(srv.client().await);
        // writes in phases, each followed by convergence, so that the
        // watcher really resumes watches (dropped every 3 events)
        for phase in 0..3 {
            for i in phase * 10..phase * 10 + 10 {
                writer_api
                    .create(&PostParams::default(), &cm(&format!("c-{i}"), "1"))
                    .await
                    .unwrap();
                if i % 3 == 0 {
                    let p = json!({"data": {"v": "2"}});
                    writer_api
                        .patch(
                            &format!("c-{i}"),
                            &PatchParams::default(),
                            &Patch::Merge(&p),
                        )
                        .await
                        .unwrap();
                }
                if i % 5 == 0 {
                    writer_api
                        .delete(&format!("c-{i}"), &DeleteParams::default())
                        .await
                        .unwrap();
                }
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let expected = server_state(&api).await;
                if *cache.lock().unwrap() == expected {
                    assert_eq!(expected.len(), (phase + 1) * 8);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "watcher did not converge (streaming={streaming}, phase {phase}): {:?} vs {expected:?}",
                    cache.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let stats = srv.control("GET", "/_testserver/stats", "");
        let watches = stats["requests"]["watch configmaps"].as_u64().unwrap();
        assert!(watches >= 4, "expected re-watches, stats: {stats}");
        let faults = srv.control("GET", "/_testserver/faults", "");
        assert!(
            faults["injected"]["expire"].as_u64().unwrap() >= 1,
            "{faults}"
        );
        assert_eq!(faults["injected"]["drop_watch"], 4, "{faults}");
        w.abort();
    }
}

#[tokio::test]
async fn watch_bookmarks_streaming_list_and_too_old_resource_version() {
    let srv = KubeTestServer::start_with(Options::default().args([
        "--bookmark-interval",
        "1",
        "--history",
        "5",
    ]));
    let api: Api<ConfigMap> = Api::default_namespaced(srv.client().await);
    for i in 0..10 {
        api.create(&PostParams::default(), &cm(&format!("c-{i}"), "1"))
            .await
            .unwrap();
    }
    // periodic bookmarks through the kube client
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(3), &rv)
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    // streaming list: ADDED for everything, then the initial-events-end bookmark
    let auth = format!("Bearer {TOKEN}");
    let r = http_request(
        srv.port,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1",
        &[("Authorization", &auth)],
        None,
    );
    let lines = r.lines();
    assert_eq!(lines.iter().filter(|l| l["type"] == "ADDED").count(), 10);
    let end = &lines[10];
    assert_eq!(end["type"], "BOOKMARK");
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(end["object"]["metadata"]["resourceVersion"], json!(rv));
    assert_eq!(
        lines.last().unwrap()["type"],
        "BOOKMARK",
        "a final bookmark at the timeout"
    );
    // a resourceVersion older than the history window: ERROR 410 and the stream ends
    let r = http_request(
        srv.port,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=2&timeoutSeconds=5",
        &[("Authorization", &auth)],
        None,
    );
    let lines = r.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["type"], "ERROR");
    assert_eq!(lines[0]["object"]["code"], 410);
    assert_eq!(lines[0]["object"]["reason"], "Expired");
    assert!(
        lines[0]["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with("too old resource version: 2 (")
    );
    // and paging across the window gives 410 Expired for the continue token
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    for i in 0..10 {
        api.create(&PostParams::default(), &cm(&format!("d-{i}"), "1"))
            .await
            .unwrap();
    }
    let token = first.metadata.continue_.unwrap();
    let err = api_error(
        api.list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (410, "Expired"));
    assert!(
        err.metadata
            .and_then(|m| m.continue_)
            .is_some_and(|c| !c.is_empty())
    );
}

// ------------------------------------------------------------------ audit

#[tokio::test]
async fn audit_records_users_and_objects_and_reaches_the_webhook() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/audit", listener.local_addr().unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..h]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap_or(0);
                        if buf.len() >= h + 4 + len {
                            let body: Value =
                                serde_json::from_slice(&buf[h + 4..h + 4 + len]).unwrap();
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                                .await;
                            let _ = tx.send(body);
                            return;
                        }
                    }
                }
            });
        }
    });
    let srv = KubeTestServer::start_with(Options::default().audit().args([
        "--basic",
        "bob:secret:devs",
        "--audit-webhook",
        &hook,
    ]));
    // token user via kubectl (https)
    srv.kubectl_ok(&[
        "create",
        "clusterrole",
        "audited",
        "--verb=get",
        "--resource=pods",
    ]);
    // basic-auth user, impersonating someone else
    let basic = format!("Basic {}", base64_encode("bob:secret"));
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"imp"}}"#;
    let r = http_request(
        srv.port,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[
            ("Authorization", &basic),
            ("Impersonate-User", "carol"),
            ("Impersonate-Group", "auditors"),
            ("User-Agent", "audit-test/1.0"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let created_rv = r.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    // bad credentials are denied and audited
    let r = http_request(
        srv.port,
        "GET",
        "/api/v1/namespaces",
        &[("Authorization", "Bearer wrong")],
        None,
    );
    assert_eq!(r.status, 401);

    // a watch is audited when it starts and when it ends, under one auditID
    let auth = format!("Bearer {TOKEN}");
    let w = http_request(
        srv.port,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(w.status, 200);
    std::thread::sleep(Duration::from_millis(100));

    let events = srv.audit_events();
    let watches: Vec<&Value> = events.iter().filter(|e| e["verb"] == "watch").collect();
    assert_eq!(watches.len(), 2, "{watches:?}");
    assert_eq!(
        (watches[0]["stage"].as_str(), watches[1]["stage"].as_str()),
        (Some("ResponseStarted"), Some("ResponseComplete"))
    );
    assert_eq!(watches[0]["auditID"], watches[1]["auditID"]);
    let create_cr = events
        .iter()
        .find(|e| e["verb"] == "create" && e["objectRef"]["resource"] == "clusterroles")
        .expect("clusterrole create audited");
    assert_eq!(create_cr["user"]["username"], USER);
    assert_eq!(create_cr["level"], "RequestResponse");
    assert_eq!(create_cr["stage"], "ResponseComplete");
    assert!(
        create_cr["userAgent"]
            .as_str()
            .unwrap()
            .starts_with("kubectl/")
    );
    assert_eq!(
        create_cr["objectRef"]["apiGroup"],
        "rbac.authorization.k8s.io"
    );
    assert_eq!(create_cr["objectRef"]["name"], "audited");
    assert_eq!(create_cr["responseStatus"]["code"], 201);
    assert_eq!(create_cr["requestObject"]["metadata"]["name"], "audited");
    assert_eq!(
        create_cr["responseObject"]["metadata"]["resourceVersion"],
        create_cr["objectRef"]["resourceVersion"]
    );
    let ts = create_cr["stageTimestamp"].as_str().unwrap();
    assert_eq!(ts.len(), "2024-01-01T00:00:00.000000Z".len(), "{ts}");

    let create_cm = events
        .iter()
        .find(|e| e["verb"] == "create" && e["objectRef"]["resource"] == "configmaps")
        .expect("configmap create audited");
    assert_eq!(create_cm["user"]["username"], "bob");
    assert!(
        create_cm["user"]["groups"]
            .as_array()
            .unwrap()
            .contains(&json!("devs"))
    );
    assert_eq!(create_cm["impersonatedUser"]["username"], "carol");
    assert!(
        create_cm["impersonatedUser"]["groups"]
            .as_array()
            .unwrap()
            .contains(&json!("auditors"))
    );
    assert_eq!(create_cm["userAgent"], "audit-test/1.0");
    assert_eq!(create_cm["objectRef"]["namespace"], "default");
    assert_eq!(create_cm["sourceIPs"], json!(["127.0.0.1"]));
    assert_eq!(
        create_cm["responseObject"]["metadata"]["resourceVersion"],
        json!(created_rv)
    );
    // the impersonated user is the manager's owner and the object's creator
    assert!(events.iter().any(|e| e["responseStatus"]["code"] == 401));

    // the webhook receives the same events as EventList batches
    let mut hooked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !hooked
        .iter()
        .any(|e: &Value| e["objectRef"]["name"] == "imp")
    {
        let batch = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            rx.recv(),
        )
        .await
        .expect("webhook batch")
        .unwrap();
        assert_eq!(batch["kind"], "EventList");
        assert_eq!(batch["apiVersion"], "audit.k8s.io/v1");
        hooked.extend(batch["items"].as_array().unwrap().iter().cloned());
    }
    assert!(hooked.iter().any(|e| e["objectRef"]["name"] == "audited"));
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

// --------------------------------------------------- authorization, faults

#[tokio::test]
async fn deny_list_forbids_like_the_real_server() {
    let srv = KubeTestServer::start();
    srv.control(
        "POST",
        "/_testserver/deny",
        &format!(
            r#"{{"users": ["{USER}"], "verbs": ["list", "watch"], "resources": ["rolebindings"]}}"#
        ),
    );
    let client = srv.client().await;
    let all: Api<RoleBinding> = Api::all(client.clone());
    let err = api_error(all.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(err.code, 403);
    assert_eq!(err.reason, "Forbidden");
    assert_eq!(
        err.message,
        format!(
            r#"rolebindings.rbac.authorization.k8s.io is forbidden: User "{USER}" cannot list resource "rolebindings" in API group "rbac.authorization.k8s.io" at the cluster scope"#
        )
    );
    let ns: Api<RoleBinding> = Api::namespaced(client.clone(), "kube-system");
    let err = api_error(ns.list(&ListParams::default()).await.unwrap_err());
    assert!(
        err.message.ends_with(r#"in the namespace "kube-system""#),
        "{}",
        err.message
    );
    // other resources stay readable; kubectl reports the 403
    Api::<ClusterRole>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let out = srv.kubectl(&["get", "rolebindings", "-A"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot list resource \"rolebindings\""));
    // access reviews answer from the same deny list
    let out = srv.kubectl(&["auth", "can-i", "list", "rolebindings", "-A"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "no - denied by the kube-test-server deny list"
    );
    assert_eq!(
        srv.kubectl_ok(&[
            "auth",
            "can-i",
            "list",
            "rolebindings",
            "-A",
            "--as",
            "someone-else"
        ])
        .trim(),
        "yes"
    );
    // cleared at run time
    srv.control("DELETE", "/_testserver/deny", "");
    all.list(&ListParams::default()).await.unwrap();
}

fn get(srv: &KubeTestServer, path: &str) -> Response {
    srv.request("GET", path, None)
}

#[test]
fn faults_are_injected_and_control_api_is_exempt() {
    let srv = KubeTestServer::start();
    let cms = "/api/v1/namespaces/default/configmaps";
    for i in 0..4 {
        let body =
            format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"c{i}"}}}}"#);
        assert_eq!(srv.request("POST", cms, Some(&body)).status, 201);
    }
    // 5xx with a Status body, once
    srv.control(
        "POST",
        "/_testserver/faults",
        r#"{"verbs":["list"],"error_rate":1.0,"error_codes":[503],"times":1}"#,
    );
    let r = get(&srv, cms);
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["reason"], "ServiceUnavailable");
    assert_eq!(get(&srv, cms).status, 200);
    // every request faulted, but the control API still answers
    srv.control("PUT", "/_testserver/faults", r#"{"error_rate":1.0}"#);
    assert_eq!(get(&srv, cms).status / 100, 5);
    let r = http_request(srv.port, "GET", "/_testserver/healthz", &[], None);
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    srv.control("GET", "/_testserver/stats", "");
    // 429 with Retry-After
    srv.control(
        "PUT",
        "/_testserver/faults",
        r#"{"throttle_rate":1.0,"retry_after_seconds":2,"times":1}"#,
    );
    let r = get(&srv, cms);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(r.json()["reason"], "TooManyRequests");
    // latency
    srv.control(
        "PUT",
        "/_testserver/faults",
        r#"{"latency_ms":[500,550],"resources":["configmaps"]}"#,
    );
    let t = Instant::now();
    assert_eq!(get(&srv, cms).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(500));
    let t = Instant::now();
    assert_eq!(get(&srv, "/api/v1/namespaces").status, 200);
    assert!(
        t.elapsed() < Duration::from_millis(450),
        "filtered by resource"
    );
    // garbage bodies
    srv.control(
        "PUT",
        "/_testserver/faults",
        r#"{"garbage_rate":1.0,"times":4}"#,
    );
    for _ in 0..4 {
        let r = get(&srv, cms);
        assert_eq!(r.status, 200);
        assert!(
            serde_json::from_slice::<Value>(&r.body).is_err(),
            "{}",
            r.text()
        );
    }
    assert!(serde_json::from_slice::<Value>(&get(&srv, cms).body).is_ok());
    // watch dropped mid-stream after N events
    srv.control(
        "PUT",
        "/_testserver/faults",
        r#"{"verbs":["watch"],"drop_watch_after":2}"#,
    );
    let r = get(&srv, &format!("{cms}?watch=true&timeoutSeconds=5"));
    assert_eq!(r.lines().len(), 2);
    // forced 410 for the next list with a resourceVersion and the next watch
    srv.control(
        "PUT",
        "/_testserver/faults",
        r#"{"expire_next":1,"verbs":["list"]}"#,
    );
    let rv = get(&srv, cms).json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let with_rv = format!("{cms}?resourceVersion={rv}&resourceVersionMatch=NotOlderThan");
    let r = get(&srv, &with_rv);
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (410, json!("Expired"))
    );
    assert_eq!(get(&srv, &with_rv).status, 200);
    srv.control(
        "PUT",
        "/_testserver/faults",
        r#"{"expire_next":1,"verbs":["watch"]}"#,
    );
    let r = get(
        &srv,
        &format!("{cms}?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
    );
    assert_eq!(r.lines()[0]["object"]["code"], 410);
    let faults = srv.control("GET", "/_testserver/faults", "");
    assert_eq!(faults["injected"]["expire"], 1);
    srv.control("DELETE", "/_testserver/faults", "");

    // deterministic given the seed
    let run = |seed: u64| -> Vec<u16> {
        srv.control(
            "PUT",
            "/_testserver/faults",
            &format!(r#"{{"seed":{seed},"error_rate":0.5}}"#),
        );
        (0..20).map(|_| get(&srv, cms).status).collect()
    };
    let a = run(42);
    assert_eq!(a, run(42));
    assert!(a.contains(&200) && a.iter().any(|c| *c >= 500));
    srv.control("DELETE", "/_testserver/faults", "");

    // stats count requests by verb and resource, and reset
    let stats = srv.control("GET", "/_testserver/stats", "");
    assert!(stats["requests"]["list configmaps"].as_u64().unwrap() > 20);
    assert!(stats["total_bytes"].as_u64().unwrap() > 0);
    srv.control("DELETE", "/_testserver/stats", "");
    let stats = srv.control("GET", "/_testserver/stats", "");
    assert_eq!(stats["total_requests"], 0);
}

// ------------------------------------------------------------- robustness

#[test]
fn bad_input_gets_status_errors() {
    let srv = KubeTestServer::start();
    let cms = "/api/v1/namespaces/default/configmaps";
    let r = srv.request("POST", cms, Some("{not json"));
    assert_eq!((r.status, r.json()["kind"].clone()), (400, json!("Status")));
    let r = srv.request("POST", cms, Some("[1,2]"));
    assert_eq!(r.status, 400);
    let r = srv.request(
        "POST",
        cms,
        Some(r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#),
    );
    assert_eq!(r.status, 400);
    let r = srv.request(
        "POST",
        cms,
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#),
    );
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (422, json!("Invalid"))
    );
    let r = srv.request(
        "POST",
        cms,
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":"oops"}"#),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        srv.request("GET", "/apis/nope.example.com/v1/things", None)
            .status,
        404
    );
    assert_eq!(
        srv.request("GET", "/api/v1/namespaces/default/configmaps/x/y/z/w", None)
            .status,
        404
    );
    assert_eq!(
        srv.request("GET", &format!("{cms}?labelSelector=a%20in%20(b"), None)
            .status,
        400
    );
    assert_eq!(
        srv.request("GET", &format!("{cms}?fieldSelector=spec.x%3Dy"), None)
            .status,
        400
    );
    assert_eq!(
        srv.request("GET", &format!("{cms}?continue=garbage"), None)
            .status,
        400
    );
    assert_eq!(
        srv.request("GET", &format!("{cms}?limit=-1"), None).status,
        400
    );
    let r = http_request(
        srv.port,
        "PATCH",
        &format!("{cms}/x"),
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Content-Type", "text/plain"),
        ],
        Some(b"x"),
    );
    assert_eq!(r.status, 415);
    assert_eq!(http_request(srv.port, "GET", cms, &[], None).status, 401);
    // generateName, selectors and namespace cascade
    let r = srv.request("POST", cms, Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"gen-","labels":{"tier":"a"}}}"#));
    assert_eq!(r.status, 201);
    assert!(
        r.json()["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("gen-")
    );
    let r = srv.request(
        "GET",
        &format!("{cms}?labelSelector=tier%20in%20(a,b),!missing"),
        None,
    );
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    let r = srv.request("GET", &format!("{cms}?labelSelector=tier!%3Da"), None);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 0);
    srv.request(
        "POST",
        "/api/v1/namespaces",
        Some(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"gone"}}"#),
    );
    srv.request(
        "POST",
        "/api/v1/namespaces/gone/configmaps",
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#),
    );
    assert_eq!(
        srv.request("DELETE", "/api/v1/namespaces/gone", None)
            .status,
        200
    );
    assert_eq!(
        srv.request("GET", "/api/v1/namespaces/gone/configmaps/c", None)
            .status,
        404
    );
    // still alive, and it stops cleanly
    assert_eq!(srv.request("GET", "/version", None).status, 200);
    srv.terminate();
}

// ------------------------------------------------------------- benchmark

/// Loads 100,000 objects and lists them with kubectl; run with --ignored.
#[test]
#[ignore]
fn load_and_list_100k_objects() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.json");
    let mut items = Vec::with_capacity(100_000);
    for i in 0..50_000 {
        items.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": format!("role-{i:06}"), "labels": {"batch": (i % 10).to_string()}},
            "rules": [{"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["get", "list"]}],
        }));
        items.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("rb-{i:06}"), "namespace": format!("ns-{}", i % 100)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("role-{i:06}")},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": format!("user-{i}")}],
        }));
    }
    std::fs::write(&file, serde_json::to_vec(&items).unwrap()).unwrap();
    let t = Instant::now();
    let srv =
        KubeTestServer::start_with(Options::default().args(["--load", file.to_str().unwrap()]));
    eprintln!("startup with 100k objects: {:?}", t.elapsed());
    let t = Instant::now();
    let out = srv.kubectl_ok(&["get", "clusterroles,rolebindings", "-A", "-o", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    eprintln!(
        "kubectl get -A -o json of 100k objects: {:?} ({} bytes)",
        t.elapsed(),
        out.len()
    );
    assert_eq!(v["items"].as_array().unwrap().len(), 100_000);
    let t = Instant::now();
    let r = srv.request(
        "GET",
        "/apis/rbac.authorization.k8s.io/v1/rolebindings",
        None,
    );
    eprintln!(
        "one unpaged list of 50k rolebindings: {:?} ({} bytes)",
        t.elapsed(),
        r.body.len()
    );
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 50_000);
    let t = Instant::now();
    let table = srv.kubectl_ok(&["get", "clusterroles"]);
    eprintln!("kubectl get clusterroles (table) of 50k: {:?}", t.elapsed());
    assert_eq!(table.lines().count(), 50_001);
}

#[tokio::test]
async fn event_recorder_and_leases_work() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event as EventsV1;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};

    let srv = KubeTestServer::start();
    let client = srv.client().await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "permdrift-test".into(),
            instance: None,
        },
    );
    let target = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: Some("watched".into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    let ev = Event {
        type_: EventType::Warning,
        reason: "Drift".into(),
        note: Some("rolebinding widened".into()),
        action: "Detect".into(),
        secondary: None,
    };
    // the second publish of the same event patches the series
    recorder.publish(&ev, &target).await.unwrap();
    recorder.publish(&ev, &target).await.unwrap();
    let events: Api<EventsV1> = Api::namespaced(client.clone(), "default");
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].reason.as_deref(), Some("Drift"));
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
    let table = srv.kubectl_ok(&["get", "events.events.k8s.io"]);
    assert!(
        table.contains("Drift") && table.contains("configmap/watched"),
        "{table}"
    );

    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }))
    .unwrap();
    // PUT creates leases, like the real server
    leases
        .replace("leader", &PostParams::default(), &lease)
        .await
        .unwrap();
    let got = leases.get("leader").await.unwrap();
    assert_eq!(got.spec.unwrap().holder_identity.as_deref(), Some("a"));
    // the same over https with the test CA
    let tls: Api<Lease> = Api::namespaced(srv.client_tls().await, "kube-node-lease");
    assert_eq!(
        tls.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
}

#[test]
fn filtered_watch_sees_objects_enter_and_leave_the_selection() {
    let srv = KubeTestServer::start();
    let port = srv.port;
    let auth = format!("Bearer {TOKEN}");
    let watcher = std::thread::spawn(move || {
        http_request(
            port,
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=true&labelSelector=app%3Dt&timeoutSeconds=2",
            &[("Authorization", &auth)],
            None,
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let cms = "/api/v1/namespaces/default/configmaps";
    let patch = |labels: &str| {
        let r = http_request(
            srv.port,
            "PATCH",
            &format!("{cms}/c"),
            &[
                ("Authorization", &format!("Bearer {TOKEN}")),
                ("Content-Type", "application/merge-patch+json"),
            ],
            Some(format!(r#"{{"metadata":{{"labels":{labels}}}}}"#).as_bytes()),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    srv.request("POST", cms, Some(r#"{"metadata":{"name":"other"}}"#));
    srv.request(
        "POST",
        cms,
        Some(r#"{"metadata":{"name":"c","labels":{"app":"t"}}}"#),
    );
    patch(r#"{"x":"1"}"#);
    patch(r#"{"app":"gone"}"#);
    patch(r#"{"app":"t"}"#);
    srv.request("DELETE", &format!("{cms}/c"), None);
    let events: Vec<(String, String)> = watcher
        .join()
        .unwrap()
        .lines()
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap().to_string(),
                l["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = ["ADDED", "MODIFIED", "DELETED", "ADDED", "DELETED"]
        .iter()
        .map(|t| (t.to_string(), "c".to_string()))
        .collect();
    assert_eq!(events, want);
}

#[test]
fn cluster_role_aggregation_follows_labels() {
    let srv = KubeTestServer::start();
    let agg = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: team-admin}
aggregationRule:
  clusterRoleSelectors:
  - matchLabels: {example.com/aggregate-to-team-admin: "true"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: super-admin}
aggregationRule:
  clusterRoleSelectors:
  - matchExpressions: [{key: example.com/aggregate-to-super, operator: Exists}]
"#;
    let out = srv.kubectl_stdin(&["apply", "--server-side", "-f", "-"], agg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    srv.kubectl_ok(&[
        "create",
        "clusterrole",
        "secrets-reader",
        "--verb=get",
        "--resource=secrets",
    ]);
    srv.kubectl_ok(&[
        "create",
        "clusterrole",
        "pods-reader",
        "--verb=list",
        "--resource=pods",
    ]);
    let rules = |name: &str| -> Value {
        serde_json::from_str(&srv.kubectl_ok(&["get", "clusterrole", name, "-o", "json"]))
            .map(|v: Value| v["rules"].clone())
            .unwrap()
    };
    assert_eq!(rules("team-admin"), Value::Null);
    srv.kubectl_ok(&[
        "label",
        "clusterrole",
        "secrets-reader",
        "example.com/aggregate-to-team-admin=true",
    ]);
    srv.kubectl_ok(&[
        "label",
        "clusterrole",
        "pods-reader",
        "example.com/aggregate-to-team-admin=true",
    ]);
    assert_eq!(
        rules("team-admin"),
        json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        ])
    );
    // aggregated roles aggregate further
    srv.kubectl_ok(&[
        "label",
        "clusterrole",
        "team-admin",
        "example.com/aggregate-to-super=yes",
    ]);
    assert_eq!(rules("super-admin").as_array().unwrap().len(), 2);
    // a source's rule change and removal propagate
    srv.kubectl_ok(&[
        "patch",
        "clusterrole",
        "pods-reader",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/rules/0/verbs/-","value":"watch"}]"#,
    ]);
    assert_eq!(rules("super-admin")[0]["verbs"], json!(["list", "watch"]));
    srv.kubectl_ok(&[
        "label",
        "clusterrole",
        "pods-reader",
        "example.com/aggregate-to-team-admin-",
    ]);
    srv.kubectl_ok(&["delete", "clusterrole", "secrets-reader"]);
    assert_eq!(rules("team-admin"), Value::Null);
    assert_eq!(rules("super-admin"), Value::Null);
    let managers = srv.kubectl_ok(&[
        "get",
        "clusterrole",
        "team-admin",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
        "--show-managed-fields",
    ]);
    assert!(
        managers.contains("clusterrole-aggregation-controller"),
        "{managers}"
    );
}

#[tokio::test]
async fn kube_discovery_and_dynamic_objects() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject};
    use kube::discovery::{Discovery, Scope};

    let srv = KubeTestServer::start();
    let client = srv.client().await;
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "drifts.permdrift.dev"},
        "spec": {
            "group": "permdrift.dev", "scope": "Cluster",
            "names": {"plural": "drifts", "singular": "drift", "kind": "Drift", "shortNames": ["dr"]},
            "versions": [
                {"name": "v1alpha1", "served": true, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}},
                {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}
            ]
        }
    }))
    .unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "Drift")
        .expect("Drift discovered");
    assert_eq!((ar.version.as_str(), ar.plural.as_str()), ("v1", "drifts"));
    assert!(matches!(caps.scope, Scope::Cluster));
    assert!(
        discovery
            .groups()
            .any(|g| g.name() == "rbac.authorization.k8s.io")
    );

    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "permdrift.dev/v1", "kind": "Drift", "metadata": {"name": "d1"}, "spec": {"severity": "high"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    // the other served version sees the same object
    let alpha = ApiResource {
        version: "v1alpha1".into(),
        api_version: "permdrift.dev/v1alpha1".into(),
        ..ar.clone()
    };
    let got = Api::<DynamicObject>::all_with(client, &alpha)
        .get("d1")
        .await
        .unwrap();
    assert_eq!(got.types.unwrap().api_version, "permdrift.dev/v1alpha1");
    assert_eq!(got.data["spec"]["severity"], "high");
}

#[test]
fn rbac_validation_like_the_real_server() {
    let srv = KubeTestServer::start();
    srv.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "b",
        "--clusterrole=view",
        "--user=u",
    ]);
    // roleRef is immutable
    let out = srv.kubectl(&[
        "patch",
        "clusterrolebinding",
        "b",
        "--type=merge",
        "-p",
        r#"{"roleRef":{"name":"edit"}}"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            r#"The ClusterRoleBinding "b" is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"ClusterRole", Name:"view"}: cannot change roleRef"#
        ),
        "{err}"
    );
    let crs = "/apis/rbac.authorization.k8s.io/v1/clusterroles";
    let r = srv.request(
        "POST",
        crs,
        Some(r#"{"metadata":{"name":"x"},"rules":[{"apiGroups":[""],"resources":["pods"]}]}"#),
    );
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json()["message"],
        r#"ClusterRole.rbac.authorization.k8s.io "x" is invalid: rules[0].verbs: Required value: verbs must contain at least one value"#
    );
    let r = srv.request("POST", crs, Some(r#"{"metadata":{"name":"x"},"rules":[{"verbs":["get"],"nonResourceURLs":["/healthz"]}]}"#));
    assert_eq!(r.status, 201, "cluster roles may name non-resource URLs");
    let r = srv.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
        Some(r#"{"metadata":{"name":"x"},"rules":[{"verbs":["get"],"nonResourceURLs":["/healthz"]}]}"#),
    );
    assert_eq!(r.status, 422);
    let r = srv.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        Some(r#"{"metadata":{"name":"y"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"x"},"subjects":[]}"#),
    );
    assert_eq!(r.status, 422);
    assert!(
        r.json()["message"].as_str().unwrap().contains(
            r#"roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole""#
        )
    );
    let r = srv.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        Some(r#"{"metadata":{"name":"y"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"x"},"subjects":[{"kind":"ServiceAccount","name":"sa"}]}"#),
    );
    assert_eq!(r.status, 422);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .ends_with("subjects[0].namespace: Required value")
    );
}

// ------------------------------------------- tokens, token and access reviews

/// RFC 3339 time `secs` from now.
fn rfc3339_in(secs: i64) -> String {
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap()
        .to_string()
}

const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

#[tokio::test]
async fn token_review_of_good_unknown_expired_and_deleted_tokens() {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    let srv = KubeTestServer::start();
    srv.add_token("alice-token", "alice", &["eng"], Some(&rfc3339_in(3600)));
    let reviews: Api<TokenReview> = Api::all(srv.client().await);
    let review = |token: &str| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: None,
        },
        ..Default::default()
    };

    // a good token, through the kube client
    let good = reviews
        .create(&PostParams::default(), &review("alice-token"))
        .await
        .unwrap();
    let st = good.status.unwrap();
    assert_eq!(st.authenticated, Some(true));
    assert_eq!(st.error, None);
    assert_eq!(st.audiences, Some(vec![API_AUDIENCE.to_string()]));
    let user = st.user.unwrap();
    assert_eq!(user.username.as_deref(), Some("alice"));
    assert_eq!(
        user.groups,
        Some(vec!["eng".to_string(), "system:authenticated".to_string()])
    );
    let r = srv.request_as("alice-token", "GET", "/api/v1/namespaces", None);
    assert_eq!(r.status, 200, "{}", r.text());

    // unknown
    let st = reviews
        .create(&PostParams::default(), &review("nobody-token"))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.authenticated, Some(false));
    assert!(st.error.unwrap().contains("token not found"));
    let r = srv.request_as("nobody-token", "GET", "/api/v1/namespaces", None);
    assert_eq!(r.status, 401);

    // expired before it was added
    srv.add_token("old-token", "olga", &[], Some("2020-01-01T00:00:00Z"));
    let st = srv.token_review("old-token", &[]);
    assert_eq!(st["authenticated"], false, "{st}");
    assert_eq!(
        st["error"],
        "invalid bearer token, token expired at 2020-01-01T00:00:00Z"
    );
    let r = srv.request_as("old-token", "GET", "/api/v1/namespaces", None);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["reason"], "Unauthorized");

    // a lifetime running out: good now, refused once it has passed
    let soon = rfc3339_in(2);
    srv.add_token("short-token", "sam", &[], Some(&soon));
    assert_eq!(srv.token_review("short-token", &[])["authenticated"], true);
    let r = srv.request_as("short-token", "GET", "/api/v1/namespaces", None);
    assert_eq!(r.status, 200);
    let deadline: jiff::Timestamp = soon.parse().unwrap();
    while jiff::Timestamp::now() <= deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let st = srv.token_review("short-token", &[]);
    assert_eq!(st["authenticated"], false);
    assert!(st["error"].as_str().unwrap().contains("expired"), "{st}");
    let r = srv.request_as("short-token", "GET", "/api/v1/namespaces", None);
    assert_eq!(r.status, 401);

    // deleted: refused in reviews, on requests and by kubectl
    srv.delete_token("alice-token");
    let st = srv.token_review("alice-token", &[]);
    assert_eq!(st["authenticated"], false);
    assert_eq!(st["user"], json!({}));
    let r = srv.request_as("alice-token", "GET", "/api/v1/namespaces", None);
    assert_eq!(r.status, 401);
    let out = srv.kubectl_as("alice-token", &["get", "namespaces"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("You must be logged in to the server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // audiences: the intersection with the token's, or refused
    srv.control(
        "POST",
        "/_testserver/tokens",
        r#"{"token": "aud-token", "user": "ann", "audiences": ["permdrift", "vault"]}"#,
    );
    let st = srv.token_review("aud-token", &["other", "permdrift"]);
    assert_eq!(st["authenticated"], true, "{st}");
    assert_eq!(st["audiences"], json!(["permdrift"]));
    let st = srv.token_review("aud-token", &[]);
    assert_eq!(st["authenticated"], false);
    assert!(st["error"].as_str().unwrap().contains("audiences"), "{st}");
    // not a token for this API server
    let r = srv.request_as("aud-token", "GET", "/api/v1/namespaces", None);
    assert_eq!(r.status, 401);
}

#[test]
fn token_review_needs_an_authenticated_allowed_caller() {
    let srv = KubeTestServer::start();
    let path = "/apis/authentication.k8s.io/v1/tokenreviews";
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                      "spec": {"token": TOKEN}})
    .to_string();
    // served in discovery like the real one
    let d = get(&srv, "/apis/authentication.k8s.io/v1").json();
    let res = d["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "tokenreviews")
        .expect("tokenreviews in discovery");
    assert_eq!(res["kind"], "TokenReview");
    assert_eq!(res["verbs"], json!(["create"]));
    // not stored: the answer is 201 with the object
    let r = srv.request("POST", path, Some(&body));
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["kind"], "TokenReview");
    assert_eq!(v["status"]["user"]["username"], USER);
    assert_eq!(srv.request("GET", path, None).status, 405);
    // no credentials
    let r = http_request(srv.port, "POST", path, &[], Some(body.as_bytes()));
    assert_eq!(r.status, 401);
    // denied
    srv.control(
        "POST",
        "/_testserver/deny",
        r#"{"verbs": ["create"], "resources": ["tokenreviews"]}"#,
    );
    let r = srv.request("POST", path, Some(&body));
    assert_eq!(r.status, 403);
    assert!(
        r.json()["message"].as_str().unwrap().contains(
            r#"cannot create resource "tokenreviews" in API group "authentication.k8s.io""#
        )
    );
    srv.control("DELETE", "/_testserver/deny", "");
    // bad input names the field
    let r = srv.request("POST", path, Some(r#"{"spec": {}}"#));
    assert_eq!(r.status, 422);
    assert!(r.json()["message"].as_str().unwrap().contains("spec.token"));
    for (bad, field) in [
        (
            r#"{"token": "t", "user": "u", "expiresAt": "tomorrow"}"#,
            "expiresAt",
        ),
        (r#"{"token": "t", "user": ""}"#, "user"),
        (r#"{"token": "t", "user": "u", "expires": null}"#, "expires"),
    ] {
        let r = http_request(
            srv.port,
            "POST",
            "/_testserver/tokens",
            &[],
            Some(bad.as_bytes()),
        );
        assert_eq!(r.status, 400, "{bad}");
        assert!(
            r.json()["error"].as_str().unwrap().contains(field),
            "{}",
            r.text()
        );
    }
    let r = http_request(srv.port, "DELETE", "/_testserver/tokens/none", &[], None);
    assert_eq!(r.status, 404);
    // the token table lists what is there
    let listed = srv.control("GET", "/_testserver/tokens", "");
    assert_eq!(listed["tokens"][0]["token"], TOKEN);
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 1);
}

/// RBAC objects for the access-review tests, applied with kubectl. The CRD
/// makes `baselines.permdrift.dev` known to discovery, so `kubectl auth
/// can-i` sends its group (for a resource it cannot resolve it sends the
/// argument unparsed as the resource name).
const REVIEW_RBAC: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: baselines.permdrift.dev}
spec:
  group: permdrift.dev
  scope: Namespaced
  names: {plural: baselines, singular: baseline, kind: Baseline}
  versions:
  - {name: v1alpha1, served: true, storage: true,
     schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: baseline-acceptor}
rules:
- {apiGroups: [permdrift.dev], resources: [baselines], verbs: [accept]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: accept-alice}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: baseline-acceptor}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: accept-eng}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: baseline-acceptor}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: eng}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: accept-bob, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: baseline-acceptor}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: local-acceptor, namespace: team-a}
rules:
- {apiGroups: [permdrift.dev], resources: [baselines], verbs: [accept]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: robot-accepts, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: local-acceptor}
subjects:
- {kind: ServiceAccount, name: robot}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ghost-binding}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ghost}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: gina}
"#;

fn rbac_server() -> KubeTestServer {
    let srv = KubeTestServer::start_with(Options::default().authorizer_rbac());
    let out = srv.kubectl_stdin(&["apply", "-f", "-"], REVIEW_RBAC);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    srv
}

/// The spec of a review: `user` in `groups` wants to accept baseline `name` in `ns`.
fn accept(user: &str, groups: &[&str], ns: &str, name: &str) -> Value {
    json!({"user": user, "groups": groups, "resourceAttributes": {
        "verb": "accept", "group": "permdrift.dev", "resource": "baselines",
        "namespace": ns, "name": name}})
}

#[tokio::test]
async fn subject_access_review_evaluates_rbac_bindings() {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let srv = rbac_server();

    // via a ClusterRoleBinding, through the kube client
    let sars: Api<SubjectAccessReview> = Api::all(srv.client().await);
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some("alice".into()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some("accept".into()),
                group: Some("permdrift.dev".into()),
                resource: Some("baselines".into()),
                name: Some("prod".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let st = sars
        .create(&PostParams::default(), &sar)
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(st.allowed);
    assert_eq!(
        st.reason.as_deref(),
        Some(
            r#"RBAC: allowed by ClusterRoleBinding "accept-alice" of ClusterRole "baseline-acceptor" to User "alice""#
        )
    );

    // via a RoleBinding: in its namespace only
    let st = srv.access_review(accept("bob", &[], "team-a", "prod"));
    assert_eq!(st["allowed"], true, "{st}");
    assert_eq!(
        st["reason"],
        r#"RBAC: allowed by RoleBinding "accept-bob/team-a" of ClusterRole "baseline-acceptor" to User "bob""#
    );
    for ns in ["team-b", ""] {
        let st = srv.access_review(accept("bob", &[], ns, "prod"));
        assert_eq!(st, json!({"allowed": false}), "namespace {ns:?}");
    }

    // via a group
    let st = srv.access_review(accept("carol", &["eng"], "", "prod"));
    assert_eq!(st["allowed"], true);
    assert_eq!(
        st["reason"],
        r#"RBAC: allowed by ClusterRoleBinding "accept-eng" of ClusterRole "baseline-acceptor" to Group "eng""#
    );
    assert_eq!(
        srv.access_review(accept("carol", &["ops"], "", "prod"))["allowed"],
        false
    );

    // via a service account (subject namespace taken from the binding)
    let robot = "system:serviceaccount:team-a:robot";
    let st = srv.access_review(accept(robot, &[], "team-a", "prod"));
    assert_eq!(st["allowed"], true);
    assert_eq!(
        st["reason"],
        r#"RBAC: allowed by RoleBinding "robot-accepts/team-a" of Role "local-acceptor" to ServiceAccount "robot/team-a""#
    );
    let other = "system:serviceaccount:team-b:robot";
    assert_eq!(
        srv.access_review(accept(other, &[], "team-a", "prod"))["allowed"],
        false
    );

    // no binding; a binding to a missing role is an evaluation error
    assert_eq!(
        srv.access_review(accept("dave", &["system:authenticated"], "team-a", "prod")),
        json!({"allowed": false})
    );
    let st = srv.access_review(accept("gina", &[], "", "prod"));
    assert_eq!(st["allowed"], false);
    assert_eq!(
        st["evaluationError"],
        r#"clusterrole.rbac.authorization.k8s.io "ghost" not found"#
    );

    // system:masters may do anything
    let st = srv.access_review(accept("root", &["system:masters"], "team-b", "x"));
    assert_eq!(st["allowed"], true);

    // the deny list wins over RBAC
    srv.control(
        "POST",
        "/_testserver/deny",
        r#"{"users": ["alice"], "verbs": ["accept"], "resources": ["baselines"]}"#,
    );
    let st = srv.access_review(accept("alice", &[], "", "prod"));
    assert_eq!(
        st,
        json!({"allowed": false, "denied": true,
               "reason": "denied by the kube-test-server deny list"})
    );
    assert_eq!(
        srv.access_review(accept("bob", &[], "team-a", "prod"))["allowed"],
        true
    );

    // a service account's token carries its groups, and can-i answers for it
    srv.add_token("robot-token", robot, &[], None);
    let st = srv.token_review("robot-token", &[]);
    assert_eq!(
        st["user"]["groups"],
        json!([
            "system:authenticated",
            "system:serviceaccounts",
            "system:serviceaccounts:team-a"
        ])
    );
    let out = srv.kubectl_as(
        "robot-token",
        &[
            "auth",
            "can-i",
            "accept",
            "baselines.permdrift.dev/prod",
            "-n",
            "team-a",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    let out = srv.kubectl_as(
        "robot-token",
        &[
            "auth",
            "can-i",
            "accept",
            "baselines.permdrift.dev/prod",
            "-n",
            "team-b",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    assert!(!out.status.success());

    // bad input names the field
    let r = srv.request(
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        Some(r#"{"spec": {"user": "alice"}}"#),
    );
    assert_eq!(r.status, 422);
    assert!(r.text().contains("spec.resourceAttributes"), "{}", r.text());
}

#[test]
fn subject_access_review_matches_rules_like_the_api_server() {
    let srv = KubeTestServer::start_with(Options::default().authorizer_rbac());
    let role = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: matcher}
rules:
- {apiGroups: [""], resources: [pods/log], verbs: [get]}
- {apiGroups: [apps], resources: ["*/scale"], verbs: [update]}
- {apiGroups: [""], resources: [configmaps], verbs: [get], resourceNames: [settings]}
- {apiGroups: ["*"], resources: [widgets], verbs: ["*"]}
- {apiGroups: [batch], resources: ["*"], verbs: [get]}
- {nonResourceURLs: [/healthz, "/metrics/*"], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: matcher-mia}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: matcher}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: mia}
"#;
    let out = srv.kubectl_stdin(&["apply", "-f", "-"], role);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (verb, group, resource, subresource, name, allowed)
    let cases = [
        ("get", "", "pods", "log", "p", true),
        ("get", "", "pods", "", "p", false),
        ("list", "", "pods", "log", "", false),
        ("update", "apps", "deployments", "scale", "d", true),
        ("update", "apps", "statefulsets", "scale", "s", true),
        ("update", "apps", "deployments", "", "d", false),
        ("update", "", "deployments", "scale", "d", false),
        ("get", "", "configmaps", "", "settings", true),
        ("get", "", "configmaps", "", "other", false),
        ("get", "", "configmaps", "", "", false),
        ("delete", "example.com", "widgets", "", "w", true),
        ("escalate", "", "widgets", "", "", true),
        ("get", "example.com", "widgets", "status", "w", false),
        ("get", "batch", "jobs", "status", "j", true),
        ("list", "batch", "jobs", "", "", false),
    ];
    for (verb, group, resource, subresource, name, allowed) in cases {
        let st = srv.access_review(json!({"user": "mia", "resourceAttributes": {
            "verb": verb, "group": group, "resource": resource,
            "subresource": subresource, "namespace": "default", "name": name}}));
        assert_eq!(
            st["allowed"], allowed,
            "{verb} {group}/{resource}/{subresource} {name:?}: {st}"
        );
    }
    for (verb, path, allowed) in [
        ("get", "/healthz", true),
        ("post", "/healthz", false),
        ("get", "/metrics/cadvisor/x", true),
        ("get", "/metrics", false),
        ("get", "/version", false),
    ] {
        let st = srv.access_review(
            json!({"user": "mia", "nonResourceAttributes": {"verb": verb, "path": path}}),
        );
        assert_eq!(st["allowed"], allowed, "{verb} {path}: {st}");
    }
    // an aggregated ClusterRole grants its sources' rules, as stored
    let agg = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: aggregate}
aggregationRule:
  clusterRoleSelectors:
  - matchLabels: {example.com/aggregate-to-agg: "true"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: source
  labels: {example.com/aggregate-to-agg: "true"}
rules:
- {apiGroups: [permdrift.dev], resources: [baselines], verbs: [accept]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: aggregate-ali}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: aggregate}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: ali}
"#;
    let out = srv.kubectl_stdin(&["apply", "-f", "-"], agg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = srv.access_review(accept("ali", &[], "default", "prod"));
    assert_eq!(
        st["reason"],
        r#"RBAC: allowed by ClusterRoleBinding "aggregate-ali" of ClusterRole "aggregate" to User "ali""#,
        "{st}"
    );
    srv.kubectl_ok(&[
        "label",
        "clusterrole",
        "source",
        "example.com/aggregate-to-agg-",
    ]);
    let st = srv.access_review(accept("ali", &[], "default", "prod"));
    assert_eq!(st["allowed"], false, "{st}");

    // another user gets none of it
    let st = srv.access_review(json!({"user": "max", "nonResourceAttributes":
        {"verb": "get", "path": "/healthz"}}));
    assert_eq!(st["allowed"], false);
}

#[test]
fn rbac_authorizer_refuses_unbound_users_in_kubectl() {
    let srv = rbac_server();
    srv.add_token("mallory-token", "mallory", &[], None);
    // discovery is open to every authenticated user, as in a real cluster
    let out = srv.kubectl_as("mallory-token", &["api-versions"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a user with no binding is refused with the real server's 403
    let out = srv.kubectl_as("mallory-token", &["get", "clusterroles"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Forbidden")
            && err.contains(r#"User "mallory" cannot list resource "clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope"#),
        "{err}"
    );
    let r = srv.request_as(
        "mallory-token",
        "GET",
        "/api/v1/namespaces/team-a/configmaps",
        None,
    );
    assert_eq!(r.status, 403);
    // but may ask what it may do (system:basic-user in a real cluster)
    let out = srv.kubectl_as("mallory-token", &["auth", "can-i", "list", "clusterroles"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");

    // bound by the admin, through kubectl
    srv.kubectl_ok(&[
        "create",
        "clusterrole",
        "rbac-reader",
        "--verb=get,list,watch",
        "--resource=clusterroles",
    ]);
    srv.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "mallory-reads",
        "--clusterrole=rbac-reader",
        "--user=mallory",
    ]);
    let out = srv.kubectl_as("mallory-token", &["get", "clusterroles", "-o", "name"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("clusterrole.rbac.authorization.k8s.io/rbac-reader")
    );
    let out = srv.kubectl_as("mallory-token", &["get", "clusterrolebindings"]);
    assert!(!out.status.success());
    // impersonation needs its own permission
    let out = srv.kubectl_as("mallory-token", &["get", "clusterroles", "--as", "alice"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(r#"User "mallory" cannot impersonate resource "users" in API group """#),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // the admin asks for others: can-i --as, and a SubjectAccessReview via create -f
    let can = |user: &str| {
        let out = srv.kubectl(&[
            "auth",
            "can-i",
            "accept",
            "baselines.permdrift.dev/prod",
            "--as",
            user,
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(can("alice"), "yes");
    assert_eq!(can("dave"), "no");
    let sar = r#"
apiVersion: authorization.k8s.io/v1
kind: SubjectAccessReview
spec:
  user: mallory
  resourceAttributes: {verb: list, group: rbac.authorization.k8s.io, resource: clusterroles}
"#;
    let out = srv.kubectl_stdin(&["create", "-f", "-", "-o", "json"], sar);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"]["allowed"], true);
    assert_eq!(
        v["status"]["reason"],
        r#"RBAC: allowed by ClusterRoleBinding "mallory-reads" of ClusterRole "rbac-reader" to User "mallory""#
    );
    // unbound again: refused again
    srv.kubectl_ok(&["delete", "clusterrolebinding", "mallory-reads"]);
    let r = srv.request_as(
        "mallory-token",
        "GET",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        None,
    );
    assert_eq!(r.status, 403);
}

/// For any request, a ClusterRole whose one rule names the request's
/// attributes (each optionally as `*`) grants it to the bound user only,
/// and a verb or name the rule does not name stays refused.
#[test]
fn rbac_grants_what_a_rule_names_and_nothing_else() {
    use proptest::prelude::*;
    use proptest::sample::select;
    use proptest::test_runner::{Config, TestRunner};
    let srv = KubeTestServer::start_with(Options::default().authorizer_rbac());
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let request = (
        select(vec!["get", "list", "accept", "update"]),
        select(vec!["", "apps", "permdrift.dev"]),
        select(vec!["pods", "baselines", "deployments"]),
        select(vec!["", "status", "scale"]),
        select(vec!["", "team-a"]),
        select(vec!["", "prod", "x"]),
        any::<[bool; 4]>(),
    );
    let n = std::cell::Cell::new(0u32);
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    runner
        .run(&request, |(verb, group, resource, sub, ns, name, wild)| {
            n.set(n.get() + 1);
            let (user, role) = (format!("user-{}", n.get()), format!("role-{}", n.get()));
            let combined = if sub.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}/{sub}")
            };
            let pick = |w: bool, v: &str| if w { "*".to_string() } else { v.to_string() };
            let names: Vec<&str> = if wild[3] || name.is_empty() { vec![] } else { vec![name] };
            let cr = json!({"metadata": {"name": role}, "rules": [{
                "verbs": [pick(wild[0], verb)], "apiGroups": [pick(wild[1], group)],
                "resources": [pick(wild[2], &combined)], "resourceNames": names}]});
            let crb = json!({"metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]});
            for (path, body) in [("clusterroles", cr), ("clusterrolebindings", crb)] {
                let r = srv.request("POST", &format!("{rbac}/{path}"), Some(&body.to_string()));
                prop_assert_eq!(r.status, 201, "{}", r.text());
            }
            let review = |who: &str, verb: &str, name: &str| {
                srv.access_review(json!({"user": who, "resourceAttributes": {
                    "verb": verb, "group": group, "resource": resource,
                    "subresource": sub, "namespace": ns, "name": name}}))["allowed"]
                    .as_bool()
                    .unwrap()
            };
            prop_assert!(review(&user, verb, name));
            prop_assert!(!review("stranger", verb, name));
            prop_assert_eq!(review(&user, "delete", name), wild[0]);
            prop_assert_eq!(review(&user, verb, "other"), names.is_empty());
            Ok(())
        })
        .unwrap();
}
