//! The unified text diff of one object, made with `similar` from the
//! objects' normal forms rendered as YAML, so reordering never shows up.

use serde_json::Value;
use similar::TextDiff;

fn render(v: Option<&Value>) -> String {
    match v {
        Some(v) => serde_yaml::to_string(v).unwrap_or_else(|_| v.to_string()),
        None => String::new(),
    }
}

/// A unified diff (3 lines of context) between two versions of `label`.
pub fn object_diff(label: &str, old: Option<&Value>, new: Option<&Value>) -> String {
    let (a, b) = (render(old), render(new));
    let old_header = if old.is_some() {
        format!("a/{label}")
    } else {
        "/dev/null".into()
    };
    let new_header = if new.is_some() {
        format!("b/{label}")
    } else {
        "/dev/null".into()
    };
    TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header(&old_header, &new_header)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shows_only_what_changed() {
        let a = json!({"kind":"Role","rules":[{"verbs":["get"]}]});
        let b = json!({"kind":"Role","rules":[{"verbs":["get","list"]}]});
        let d = object_diff("Role/x", Some(&a), Some(&b));
        assert!(d.starts_with("--- a/Role/x\n+++ b/Role/x\n"), "{d}");
        assert!(d.contains("+  - list"), "{d}");
        let added = object_diff("Role/x", None, Some(&b));
        assert!(added.starts_with("--- /dev/null\n+++ b/Role/x"), "{added}");
    }
}
