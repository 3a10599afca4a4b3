//! AWS managed policies, which a Terraform plan names only by ARN.
//!
//! The binary ships the default version of each managed policy vendored in
//! tests/data/aws/managed-policies.json.gz (see tests/data/PROVENANCE.md),
//! gzipped, decompressed on first use; `--managed-policies FILE` gives a
//! newer set in the same shape (`[{name, arn, version_id, document}]`).
//! What comes out is one GetAccountAuthorizationDetails `Policies` entry per
//! ARN, ready for the same parser as an account dump.

use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::OnceLock;

/// The vendored set, compressed (225 KB; 2.1 MB as JSON).
const EMBEDDED: &[u8] = include_bytes!("../../tests/data/aws/managed-policies.json.gz");

#[derive(Debug, thiserror::Error)]
pub enum ManagedPolicyError {
    #[error("not gzip data: {0}")]
    Gzip(std::io::Error),
    #[error("{0}")]
    Json(#[from] serde_path_to_error::Error<serde_json::Error>),
}

#[derive(Deserialize)]
struct Entry {
    name: String,
    /// Missing for a few entries of the vendored set; without the ARN's
    /// path a plan could not name them, so they are left out.
    arn: Option<String>,
    version_id: String,
    document: Value,
}

/// AWS managed policies by ARN, as `Policies` entries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ManagedPolicies {
    by_arn: BTreeMap<String, Value>,
}

impl ManagedPolicies {
    /// Reads `[{name, arn, version_id, document}]` JSON, gzipped or not.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManagedPolicyError> {
        let mut text = Vec::new();
        let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut text)
                .map_err(ManagedPolicyError::Gzip)?;
            &text[..]
        } else {
            bytes
        };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let entries: Vec<Entry> = serde_path_to_error::deserialize(&mut de)?;
        let by_arn = entries
            .into_iter()
            .filter_map(|e| Some((e.arn.clone()?, e)))
            .map(|(arn, e)| {
                let entry = json!({
                    "PolicyName": e.name,
                    "Arn": arn,
                    "Path": "/",
                    "DefaultVersionId": e.version_id,
                    "IsAttachable": true,
                    "PolicyVersionList": [{
                        "VersionId": e.version_id,
                        "IsDefaultVersion": true,
                        "Document": e.document,
                    }],
                });
                (arn, entry)
            })
            .collect();
        Ok(Self { by_arn })
    }

    /// The set shipped in the binary. A broken embedded file is a build
    /// defect the tests catch; at run time it reads as an empty set.
    pub fn embedded() -> &'static Self {
        static SET: OnceLock<ManagedPolicies> = OnceLock::new();
        SET.get_or_init(|| Self::parse(EMBEDDED).unwrap_or_default())
    }

    /// The `Policies` entry of an AWS managed policy.
    pub fn get(&self, arn: &str) -> Option<&Value> {
        self.by_arn.get(arn)
    }

    pub fn len(&self) -> usize {
        self.by_arn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_arn.is_empty()
    }
}

/// Whether an ARN names an AWS managed policy (any partition).
pub fn is_aws_managed(arn: &str) -> bool {
    arn.starts_with("arn:aws")
        && arn
            .split(':')
            .nth(4)
            .is_some_and(|account| account == "aws")
        && arn
            .split(':')
            .nth(5)
            .is_some_and(|r| r.starts_with("policy/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_set_holds_administrator_access() {
        ManagedPolicies::parse(EMBEDDED).unwrap();
        let set = ManagedPolicies::embedded();
        // 822 vendored, 33 of them without an ARN.
        assert_eq!(set.len(), 789);
        let admin = set
            .get("arn:aws:iam::aws:policy/AdministratorAccess")
            .unwrap();
        assert_eq!(admin["PolicyName"], "AdministratorAccess");
        assert_eq!(
            admin["PolicyVersionList"][0]["Document"]["Statement"][0]["Action"],
            "*"
        );
    }

    #[test]
    fn managed_arns_are_recognised_in_every_partition() {
        assert!(is_aws_managed("arn:aws:iam::aws:policy/ReadOnlyAccess"));
        assert!(is_aws_managed(
            "arn:aws-us-gov:iam::aws:policy/service-role/X"
        ));
        assert!(!is_aws_managed("arn:aws:iam::111122223333:policy/mine"));
    }

    #[test]
    fn a_bad_set_names_the_field() {
        let e = ManagedPolicies::parse(br#"[{"name":"x","arn":"a","document":{}}]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[0]") && e.contains("version_id"), "{e}");
    }
}
