//! ClusterRole aggregation, the one controller this server runs because RBAC
//! drift depends on it: a ClusterRole with an `aggregationRule` gets as
//! `rules` the union of the rules of every other ClusterRole its
//! `clusterRoleSelectors` match (sources in name order, duplicates dropped),
//! written by manager `clusterrole-aggregation-controller` as separate writes
//! right after the write that changed a source or an aggregating role.

use std::sync::Arc;

use serde_json::Value;

use crate::ops::{self, Ctx};
use crate::store::{Obj, Store};

pub const GROUP: &str = "rbac.authorization.k8s.io";
const MANAGER: &str = "clusterrole-aggregation-controller";

fn res() -> (String, String) {
    (GROUP.to_string(), "clusterroles".to_string())
}

/// The `clusterRoleSelectors` of a ClusterRole, if it aggregates.
pub fn selectors_of(value: &Value) -> Option<Vec<Value>> {
    value
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
        .cloned()
}

/// Whether a `metav1.LabelSelector` matches an object's labels.
fn selector_matches(sel: &Value, obj: &Obj) -> bool {
    let labels_ok = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| {
            m.iter()
                .all(|(k, v)| v.as_str().is_some_and(|v| obj.label(k) == Some(v)))
        });
    let exprs_ok = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|exprs| {
            exprs.iter().all(|e| {
                let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
                let values: Vec<&str> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let got = obj.label(key);
                match e.get("operator").and_then(Value::as_str) {
                    Some("In") => got.is_some_and(|g| values.contains(&g)),
                    Some("NotIn") => got.is_none_or(|g| !values.contains(&g)),
                    Some("Exists") => got.is_some(),
                    Some("DoesNotExist") => got.is_none(),
                    _ => false,
                }
            })
        });
    labels_ok && exprs_ok
}

/// Bookkeeping after a ClusterRole write or delete (`new` None), then
/// reconciliation if the write can change an aggregated role.
pub fn after_write(
    st: &mut Store,
    now: &str,
    preload: bool,
    old: Option<&Obj>,
    new: Option<&Obj>,
    selectors: Option<Vec<Value>>,
) {
    let Some(name) = new.or(old).map(|o| o.name.clone()) else {
        return;
    };
    let aggregates = selectors.is_some();
    match selectors {
        Some(s) => st.aggregators.insert(name.clone(), s),
        None => st.aggregators.remove(&name),
    };
    if preload || st.reconciling {
        return;
    }
    let touches = st.aggregators.iter().any(|(agg, sels)| {
        *agg != name
            && sels.iter().any(|s| {
                old.is_some_and(|o| selector_matches(s, o))
                    || new.is_some_and(|n| selector_matches(s, n))
            })
    });
    if aggregates || touches {
        reconcile(st, now);
    }
}

fn empty_rules(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

/// Recomputes every aggregated ClusterRole until nothing changes (roles
/// may aggregate aggregated roles, as admin aggregates edit).
pub fn reconcile(st: &mut Store, now: &str) {
    let Some(kd) = st.kinds.get(GROUP, "clusterroles") else {
        return;
    };
    st.reconciling = true;
    for _ in 0..10 {
        let mut changed = false;
        let aggregators: Vec<(String, Vec<Value>)> = st
            .aggregators
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, selectors) in aggregators {
            let Some(agg) = st.get(&res(), &(String::new(), name.clone())) else {
                continue;
            };
            let mut sources: Vec<Arc<Obj>> = Vec::new();
            st.each(&res(), |o| {
                if o.name != name && selectors.iter().any(|s| selector_matches(s, o)) {
                    sources.push(o.clone());
                }
            });
            let mut rules: Vec<Value> = Vec::new();
            for src in sources {
                let v = src.value();
                for r in v
                    .get("rules")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if !rules.contains(r) {
                        rules.push(r.clone());
                    }
                }
            }
            let mut value = agg.value();
            let current = value.get("rules");
            let same = match current {
                Some(Value::Array(a)) => *a == rules,
                other => empty_rules(other) && rules.is_empty(),
            };
            if same {
                continue;
            }
            if let Some(m) = value.as_object_mut() {
                // an aggregated role without sources has `rules: null`, as in Go
                let new_rules = if rules.is_empty() {
                    Value::Null
                } else {
                    Value::Array(rules)
                };
                m.insert("rules".into(), new_rules);
            }
            let c = Ctx {
                kd: &kd,
                version: "v1",
                namespace: None,
                manager: MANAGER,
                now,
                dry_run: false,
                preload: false,
            };
            if ops::update_from_controller(st, &c, &agg, value).is_ok() {
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    st.reconciling = false;
}
