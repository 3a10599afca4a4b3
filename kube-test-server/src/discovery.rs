//! Discovery and OpenAPI. The kind table is rendered as `/version`, legacy
//! discovery (`/api`, `/api/v1`, `/apis`, `/apis/{g}`, `/apis/{g}/{v}`),
//! aggregated discovery v2 (what kubectl 1.32 asks for first, saving it one
//! request per group), and a minimal OpenAPI v3 whose PATCH operations
//! declare `fieldValidation`, which is what kubectl checks before it trusts
//! the server to validate `create -f` / `apply` input.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::kinds::{KindDef, Registry};

pub const AGGREGATED_CT: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const AGGREGATED_CT_BETA: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// `/version` for a `major.minor` such as "1.33".
pub fn version(major_minor: &str) -> Value {
    let (major, minor) = major_minor.split_once('.').unwrap_or(("1", "32"));
    json!({
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "gitVersion": format!("v{major}.{minor}.0-kube-test-server"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// Which aggregated discovery format the Accept header asks for, if any.
pub fn wants_aggregated(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let p: Vec<&str> = part.split(';').map(str::trim).collect();
        if p.first() != Some(&"application/json")
            || !p.contains(&"g=apidiscovery.k8s.io")
            || !p.contains(&"as=APIGroupDiscoveryList")
        {
            continue;
        }
        if p.contains(&"v=v2") {
            return Some(AGGREGATED_CT);
        }
        if p.contains(&"v=v2beta1") {
            return Some(AGGREGATED_CT_BETA);
        }
    }
    None
}

fn storage_hash(kd: &KindDef) -> String {
    let h = Sha256::digest(format!(
        "{}/{}/{}",
        kd.group,
        kd.preferred_version(),
        kd.kind
    ));
    // The real hash is 8 bytes of a sha256, base64; its value is opaque.
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &h[..8])
}

fn resource_entries(kd: &KindDef) -> Vec<Value> {
    let mut r = json!({
        "name": kd.plural,
        "singularName": kd.singular,
        "namespaced": kd.namespaced,
        "kind": kd.kind,
        "verbs": kd.verbs(),
        "storageVersionHash": storage_hash(kd),
    });
    if !kd.short_names.is_empty() {
        r["shortNames"] = json!(kd.short_names);
    }
    if !kd.categories.is_empty() {
        r["categories"] = json!(kd.categories);
    }
    let mut out = vec![r];
    if kd.status_subresource {
        out.push(json!({
            "name": format!("{}/status", kd.plural),
            "singularName": "",
            "namespaced": kd.namespaced,
            "kind": kd.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    out
}

/// `/api` or `/apis/{g}/{v}`'s APIResourceList.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let kinds = reg.kinds_in(group, version);
    if kinds.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let resources: Vec<Value> = kinds.iter().flat_map(|k| resource_entries(k)).collect();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

pub fn core_versions(server_addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_addr}],
    })
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": vs, "preferredVersion": preferred})
}

pub fn group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| group_json(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(reg: &Registry, name: &str) -> Option<Value> {
    let groups = reg.groups();
    let (_, versions) = groups.iter().find(|(g, _)| g == name && !g.is_empty())?;
    let mut v = group_json(name, versions);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

/// Aggregated discovery for `/api` (core) or `/apis` (everything else).
pub fn aggregated(reg: &Registry, core: bool, content_type: &str) -> Value {
    let api_version = if content_type == AGGREGATED_CT {
        "apidiscovery.k8s.io/v2"
    } else {
        "apidiscovery.k8s.io/v2beta1"
    };
    let items: Vec<Value> = reg
        .groups()
        .iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = reg
                        .kinds_in(g, v)
                        .iter()
                        .map(|kd| {
                            let rk = json!({"group": kd.group, "version": v, "kind": kd.kind});
                            let mut r = json!({
                                "resource": kd.plural,
                                "responseKind": rk,
                                "scope": if kd.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": kd.singular,
                                "verbs": kd.verbs(),
                            });
                            if !kd.short_names.is_empty() {
                                r["shortNames"] = json!(kd.short_names);
                            }
                            if !kd.categories.is_empty() {
                                r["categories"] = json!(kd.categories);
                            }
                            if kd.status_subresource {
                                r["subresources"] = json!([{
                                    "subresource": "status",
                                    "responseKind": rk,
                                    "verbs": ["get", "patch", "update"],
                                }]);
                            }
                            r
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": vs})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items})
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The OpenAPI v3 document of one group-version: paths only, each write
/// operation tagged with its GVK and the query parameters it accepts.
pub fn openapi_gv(reg: &Registry, path: &str) -> Option<Value> {
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    let kinds = reg.kinds_in(&group, &version);
    if kinds.is_empty() {
        return None;
    }
    let prefix = format!("/{}", gv_path(&group, &version));
    let q = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let mut paths = serde_json::Map::new();
    for kd in kinds {
        let gvk = json!({"group": kd.group, "version": version, "kind": kd.kind});
        let base = if kd.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", kd.plural)
        } else {
            format!("{prefix}/{}", kd.plural)
        };
        let op = |action: &str, extra: &[&str]| {
            let mut params = vec![q("dryRun"), q("fieldManager"), q("fieldValidation")];
            params.extend(extra.iter().map(|e| q(e)));
            json!({
                "operationId": format!("{action}{}", kd.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        paths.insert(base.clone(), json!({"post": op("post", &[])}));
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"put": op("put", &[]), "patch": op("patch", &["force"])}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// `/openapi/v3`: where each group-version's document lives.
pub fn openapi_index(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, versions) in reg.groups() {
        for v in versions {
            let p = gv_path(&g, &v);
            let doc = openapi_gv(reg, &p).unwrap_or(Value::Null);
            let hash = hex::encode(Sha256::digest(doc.to_string().as_bytes()));
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", &hash[..32])}),
            );
        }
    }
    json!({"paths": paths})
}
