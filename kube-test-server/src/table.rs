//! Server-side printing: when a client asks for `as=Table` (kubectl's
//! default output), list/get/watch results are rendered here into a
//! `meta.k8s.io/v1` `Table` with per-kind columns, like the real server's
//! printers, so kubectl shows NAME/AGE/ROLE... without knowing the kinds.

use serde_json::{Map, Value, json};

use crate::kinds::{KindDef, Printer};

/// What each row carries in `object` (the `includeObject` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

fn col(name: &str, type_: &str, format: &str, priority: i64, description: &str) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

fn name_col() -> Value {
    col(
        "Name",
        "string",
        "name",
        0,
        "Name must be unique within a namespace.",
    )
}

fn age_col() -> Value {
    col(
        "Age",
        "string",
        "",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    )
}

pub fn columns(kd: &KindDef) -> Vec<Value> {
    match kd.printer {
        Printer::CreatedAt => vec![
            name_col(),
            col(
                "Created At",
                "date",
                "",
                0,
                "CreationTimestamp is a timestamp representing the server time when this object was created.",
            ),
        ],
        Printer::Binding => vec![
            name_col(),
            col(
                "Role",
                "string",
                "",
                0,
                "RoleRef references the role granted.",
            ),
            age_col(),
            col("Users", "string", "", 1, "Users in the binding"),
            col("Groups", "string", "", 1, "Groups in the binding"),
            col(
                "ServiceAccounts",
                "string",
                "",
                1,
                "ServiceAccounts in the binding",
            ),
        ],
        Printer::Namespace => vec![
            name_col(),
            col("Status", "string", "", 0, "The status of the namespace"),
            age_col(),
        ],
        Printer::ServiceAccount => vec![
            name_col(),
            col(
                "Secrets",
                "string",
                "",
                0,
                "Secrets is the list of secrets allowed to be used by pods running using this ServiceAccount.",
            ),
            age_col(),
        ],
        Printer::ConfigMap => vec![
            name_col(),
            col(
                "Data",
                "string",
                "",
                0,
                "Data contains the configuration data.",
            ),
            age_col(),
        ],
        Printer::Secret => vec![
            name_col(),
            col(
                "Type",
                "string",
                "",
                0,
                "Used to facilitate programmatic handling of secret data.",
            ),
            col("Data", "string", "", 0, "Data contains the secret data."),
            age_col(),
        ],
        Printer::Lease => vec![
            name_col(),
            col(
                "Holder",
                "string",
                "",
                0,
                "holderIdentity contains the identity of the holder of a current lease.",
            ),
            age_col(),
        ],
        Printer::CoreEvent | Printer::Event => vec![
            col(
                "Last Seen",
                "string",
                "",
                0,
                "Time when this Event was last observed.",
            ),
            col(
                "Type",
                "string",
                "",
                0,
                "Type of this event (Normal, Warning).",
            ),
            col(
                "Reason",
                "string",
                "",
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            col(
                "Object",
                "string",
                "",
                0,
                "The object that this event is about.",
            ),
            col(
                "Message",
                "string",
                "",
                0,
                "A human-readable description of the status of this operation.",
            ),
            {
                let mut c = name_col();
                c["priority"] = json!(1);
                c
            },
        ],
        Printer::Custom => {
            let mut cols = vec![name_col()];
            if kd.printer_columns.is_empty() {
                cols.push(age_col());
            }
            for pc in &kd.printer_columns {
                cols.push(col(
                    &pc.name,
                    &pc.type_,
                    &pc.format,
                    pc.priority,
                    &pc.description,
                ));
            }
            cols
        }
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn count(v: &Value, ptr: &str) -> usize {
    match v.pointer(ptr) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

/// `kubectl`'s human durations: 45s, 3m12s, 5h, 3d4h, 2y10d.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    if secs < 120 {
        return format!("{secs}s");
    }
    let mins = secs / 60;
    if mins < 10 {
        let rem = secs % 60;
        return if rem == 0 {
            format!("{mins}m")
        } else {
            format!("{mins}m{rem}s")
        };
    }
    if mins < 180 {
        return format!("{mins}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let rem = mins % 60;
        return if rem == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{rem}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let rem = hours % 24;
        return if rem == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{rem}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let rem = days % 365;
        return if rem == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{rem}d")
        };
    }
    format!("{years}y")
}

fn age_of(ts: &str, now: i64) -> String {
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => human_duration(now - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

fn subjects(v: &Value, kind: &str) -> String {
    let list: Vec<String> = v
        .get("subjects")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|s| s.get("kind").and_then(Value::as_str) == Some(kind))
                .map(|s| {
                    let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
                    match s.get("namespace").and_then(Value::as_str) {
                        Some(ns) if kind == "ServiceAccount" => format!("{ns}/{name}"),
                        _ => name.to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    list.join(", ")
}

/// Evaluates the simple JSONPath forms CRDs use: `.spec.a`, `.items[0].b`.
fn json_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in path.trim_start_matches('.').split('.') {
        if part.is_empty() {
            continue;
        }
        let (field, index) = match part.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

fn cells(kd: &KindDef, v: &Value, now: i64) -> Vec<Value> {
    let name = s(v, "/metadata/name");
    let created = s(v, "/metadata/creationTimestamp");
    let age = age_of(created, now);
    match kd.printer {
        Printer::CreatedAt => vec![json!(name), json!(created)],
        Printer::Binding => vec![
            json!(name),
            json!(format!(
                "{}/{}",
                s(v, "/roleRef/kind"),
                s(v, "/roleRef/name")
            )),
            json!(age),
            json!(subjects(v, "User")),
            json!(subjects(v, "Group")),
            json!(subjects(v, "ServiceAccount")),
        ],
        Printer::Namespace => vec![json!(name), json!(s(v, "/status/phase")), json!(age)],
        Printer::ServiceAccount => vec![json!(name), json!(count(v, "/secrets")), json!(age)],
        Printer::ConfigMap => vec![
            json!(name),
            json!(count(v, "/data") + count(v, "/binaryData")),
            json!(age),
        ],
        Printer::Secret => vec![
            json!(name),
            json!(s(v, "/type")),
            json!(count(v, "/data")),
            json!(age),
        ],
        Printer::Lease => vec![json!(name), json!(s(v, "/spec/holderIdentity")), json!(age)],
        Printer::CoreEvent | Printer::Event => {
            let (obj_kind, obj_name, last) = if kd.printer == Printer::CoreEvent {
                let last = [
                    "/lastTimestamp",
                    "/eventTime",
                    "/firstTimestamp",
                    "/metadata/creationTimestamp",
                ]
                .iter()
                .map(|p| s(v, p))
                .find(|t| !t.is_empty())
                .unwrap_or_default();
                (
                    s(v, "/involvedObject/kind"),
                    s(v, "/involvedObject/name"),
                    last,
                )
            } else {
                let last = [
                    "/deprecatedLastTimestamp",
                    "/eventTime",
                    "/metadata/creationTimestamp",
                ]
                .iter()
                .map(|p| s(v, p))
                .find(|t| !t.is_empty())
                .unwrap_or_default();
                (s(v, "/regarding/kind"), s(v, "/regarding/name"), last)
            };
            let message = if kd.printer == Printer::CoreEvent {
                s(v, "/message")
            } else {
                s(v, "/note")
            };
            vec![
                json!(age_of(last, now)),
                json!(s(v, "/type")),
                json!(s(v, "/reason")),
                json!(format!("{}/{}", obj_kind.to_lowercase(), obj_name)),
                json!(message),
                json!(name),
            ]
        }
        Printer::Custom => {
            let mut out = vec![json!(name)];
            if kd.printer_columns.is_empty() {
                out.push(json!(age));
            }
            for pc in &kd.printer_columns {
                let cell = match json_path(v, &pc.json_path) {
                    None | Some(Value::Null) => Value::Null,
                    Some(Value::String(t)) if pc.type_ == "date" => json!(age_of(t, now)),
                    Some(Value::Array(a)) if pc.type_ == "string" => json!(
                        a.iter()
                            .map(|x| x
                                .as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| x.to_string()))
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                    Some(Value::Object(_)) if pc.type_ == "string" => {
                        json!(json_path(v, &pc.json_path).map(Value::to_string))
                    }
                    Some(other) => other.clone(),
                };
                out.push(cell);
            }
            out
        }
    }
}

fn row_object(mut v: Value, include: Include) -> Option<Value> {
    match include {
        Include::None => None,
        Include::Object => Some(v),
        Include::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": v.get_mut("metadata").map(Value::take).unwrap_or_else(|| json!({})),
        })),
    }
}

/// A `Table` of `items`; `list_meta` becomes its metadata.
pub fn table(
    kd: &KindDef,
    items: impl Iterator<Item = Value>,
    include: Include,
    list_meta: Map<String, Value>,
) -> Value {
    let now = jiff::Timestamp::now().as_second();
    let rows: Vec<Value> = items
        .map(|v| {
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells(kd, &v, now)));
            if let Some(o) = row_object(v, include) {
                row.insert("object".into(), o);
            }
            Value::Object(row)
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns(kd),
        "rows": rows,
    })
}
