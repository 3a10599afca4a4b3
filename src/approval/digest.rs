//! The grants digest an approval names: what one object's change grants
//! beyond the baseline, hashed.
//!
//! A [`Change`] comes in (diffed with no cap on listed grants, so the list is
//! complete); a hex SHA-256 comes out over its gained grants, sorted and
//! serialized as JSON. Severity, risk tags and text are left out: they follow
//! from the grants. An edit that widens further gains another grant, so it
//! has another digest and needs a new approval; an edit that keeps the gained
//! grants (a label, a reordered list) keeps the digest.

use crate::report::{Change, Grant};
use sha2::{Digest, Sha256};

/// Why a digest cannot be computed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error(
        "the change of {object} lists {listed} of its {total} gained grants; diff it with no cap \
         (max_grants 0) to approve it"
    )]
    Truncated {
        object: String,
        listed: usize,
        total: usize,
    },
}

/// The approval digest of a change: SHA-256 over its sorted gained grants.
pub fn grants_digest(change: &Change) -> Result<String, DigestError> {
    if change.gained.len() != change.gained_count {
        return Err(DigestError::Truncated {
            object: change.object.display(),
            listed: change.gained.len(),
            total: change.gained_count,
        });
    }
    Ok(digest_of(&change.gained))
}

/// SHA-256 over grants in canonical order (each grant's JSON, sorted and deduplicated).
pub fn digest_of(grants: &[Grant]) -> String {
    let mut sorted: Vec<&Grant> = grants.iter().collect();
    sorted.sort();
    sorted.dedup();
    // Grants are strings, booleans and a JSON condition: serializing them cannot fail.
    let bytes = serde_json::to_vec(&sorted).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(b"permdrift-grants-v1\n");
    hasher.update(&bytes);
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(subject: &str, action: &str) -> Grant {
        Grant {
            subject: subject.into(),
            scope: "cluster".into(),
            action: action.into(),
            resource: "secrets".into(),
            api_group: None,
            resource_names: Vec::new(),
            condition: None,
            effect: None,
            latent: false,
            possible: false,
        }
    }

    #[test]
    fn order_does_not_matter_and_a_further_grant_does() {
        let a = [grant("User:a", "get"), grant("User:b", "list")];
        let b = [grant("User:b", "list"), grant("User:a", "get")];
        assert_eq!(digest_of(&a), digest_of(&b));
        let wider = [
            grant("User:a", "get"),
            grant("User:b", "list"),
            grant("User:b", "delete"),
        ];
        assert_ne!(digest_of(&a), digest_of(&wider));
        assert_eq!(digest_of(&a).len(), 64);
    }
}
