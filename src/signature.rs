//! Signed statements: how a person without a Kubernetes identity asks the
//! operator to act.
//!
//! A [`Statement`] (what to do, to which source, by which key, valid from
//! when to when, with a one-time nonce) is signed with an ed25519 key
//! (`permdrift keygen`) over its canonical bytes; the operator checks a
//! [`Signed`] statement against the configured public keys, the request it
//! came with, the time it is given and the nonces it has already seen. Pure:
//! the caller reads the clock and keeps the [`ReplayGuard`].

use ed25519_dalek::{Signer, Verifier};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Domain separation: a signature over a statement is never a valid
/// signature over anything else this key signs.
const CONTEXT: &[u8] = b"permdrift-statement-v1\n";

/// How far ahead of our clock a statement may be issued (clock skew).
pub const MAX_SKEW: SignedDuration = SignedDuration::from_secs(60);
/// The longest a statement may be valid: a captured request is useless soon.
pub const MAX_LIFETIME: SignedDuration = SignedDuration::from_secs(600);

/// What a statement asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Accept a source's open widenings into its baseline.
    BaselineAccept,
    /// Start the journal over when the store refuses to open it.
    BaselineReset,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::BaselineAccept => "baseline-accept",
            Action::BaselineReset => "baseline-reset",
        }
    }
}

/// The signed content. Field order is the canonical order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Statement {
    pub action: Action,
    /// The source acted on; `None` means every source.
    pub source: Option<String>,
    pub key_id: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// Random, used once: a statement is refused the second time it is seen.
    pub nonce: String,
}

impl Statement {
    /// The bytes signed: a fixed prefix, then the statement's JSON in field order.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = CONTEXT.to_vec();
        // Serializing a struct of strings and timestamps cannot fail.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }
}

/// A statement with its signature, as sent in a request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Signed {
    pub statement: Statement,
    /// base64 of the 64-byte ed25519 signature.
    pub signature: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("not a signed statement: {0}")]
    Malformed(String),
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    #[error("the signature does not verify with key {0:?}")]
    Forged(String),
    #[error("the statement expired at {0}")]
    Expired(Timestamp),
    #[error("the statement is issued in the future ({0})")]
    NotYetValid(Timestamp),
    #[error("the statement is valid for longer than {} s", MAX_LIFETIME.as_secs())]
    TooLong,
    #[error("the statement was already used (nonce {0:?})")]
    Replayed(String),
    #[error("the statement is for {0}, not this request")]
    WrongRequest(String),
    #[error("bad key: {0}")]
    BadKey(String),
}

impl SignatureError {
    /// The label this refusal is counted under.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SignatureError::Malformed(_) => "malformed",
            SignatureError::UnknownKey(_) => "unknown-key",
            SignatureError::Forged(_) => "forged",
            SignatureError::Expired(_) => "expired",
            SignatureError::NotYetValid(_) => "not-yet-valid",
            SignatureError::TooLong => "too-long",
            SignatureError::Replayed(_) => "replayed",
            SignatureError::WrongRequest(_) => "wrong-request",
            SignatureError::BadKey(_) => "bad-key",
        }
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// An approver's public key, as written in the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// base64 of the 32 key bytes.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        use base64::Engine;
        let bytes = b64()
            .decode(text.trim())
            .map_err(|e| SignatureError::BadKey(format!("not base64: {e}")))?;
        let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            SignatureError::BadKey(format!(
                "an ed25519 public key has 32 bytes, this has {}",
                bytes.len()
            ))
        })?;
        ed25519_dalek::VerifyingKey::from_bytes(&array)
            .map(PublicKey)
            .map_err(|e| SignatureError::BadKey(e.to_string()))
    }

    pub fn to_base64(&self) -> String {
        use base64::Engine;
        b64().encode(self.0.as_bytes())
    }

    /// Whether `signature` (base64) is this key's signature over `message`;
    /// for other signed documents (approvals), which bring their own context.
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        use base64::Engine;
        b64()
            .decode(signature.trim())
            .ok()
            .and_then(|bytes| ed25519_dalek::Signature::from_slice(&bytes).ok())
            .is_some_and(|sig| self.0.verify(message, &sig).is_ok())
    }
}

/// A signer's private key.
pub struct SecretKey(ed25519_dalek::SigningKey);

impl SecretKey {
    /// A key from 32 random bytes (the caller supplies the randomness).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Reads a PKCS#8 PEM private key (what `permdrift keygen` writes).
    pub fn from_pem(text: &str) -> Result<Self, SignatureError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        ed25519_dalek::SigningKey::from_pkcs8_pem(text)
            .map(SecretKey)
            .map_err(|e| SignatureError::BadKey(format!("not an ed25519 PKCS#8 PEM key: {e}")))
    }

    pub fn to_pem(&self) -> Result<String, SignatureError> {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|p| p.to_string())
            .map_err(|e| SignatureError::BadKey(e.to_string()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// base64 of this key's signature over `message` (see [`PublicKey::verifies`]).
    pub fn sign_bytes(&self, message: &[u8]) -> String {
        use base64::Engine;
        b64().encode(self.0.sign(message).to_bytes())
    }

    pub fn sign(&self, statement: Statement) -> Signed {
        use base64::Engine;
        let signature = self.0.sign(&statement.canonical_bytes());
        Signed {
            statement,
            signature: b64().encode(signature.to_bytes()),
        }
    }
}

/// The nonces of statements accepted and not yet expired.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: BTreeMap<String, Timestamp>,
}

impl ReplayGuard {
    /// Marks a nonce used until `expires` (nonces another process accepted,
    /// from the journal).
    pub fn remember(&mut self, nonce: String, expires: Timestamp) {
        self.seen.insert(nonce, expires);
    }

    /// Forgets nonces whose statements have expired: they are refused as expired anyway.
    fn prune(&mut self, now: Timestamp) {
        self.seen.retain(|_, expires| *expires > now);
    }
}

/// What a checked statement must be for.
pub struct Expected<'a> {
    pub action: Action,
    pub source: Option<&'a str>,
}

/// Checks a signed statement and, when it passes, marks its nonce used.
/// Every check runs before the nonce is recorded, so a refused statement
/// does not burn its nonce.
pub fn verify(
    signed: &Signed,
    keys: &BTreeMap<String, PublicKey>,
    expected: &Expected<'_>,
    now: Timestamp,
    guard: &mut ReplayGuard,
) -> Result<(), SignatureError> {
    use base64::Engine;
    let s = &signed.statement;
    let key = keys
        .get(&s.key_id)
        .ok_or_else(|| SignatureError::UnknownKey(s.key_id.clone()))?;
    let bytes = b64()
        .decode(signed.signature.trim())
        .map_err(|_| SignatureError::Forged(s.key_id.clone()))?;
    let signature = ed25519_dalek::Signature::from_slice(&bytes)
        .map_err(|_| SignatureError::Forged(s.key_id.clone()))?;
    key.0
        .verify(&s.canonical_bytes(), &signature)
        .map_err(|_| SignatureError::Forged(s.key_id.clone()))?;
    if s.action != expected.action || s.source.as_deref() != expected.source {
        return Err(SignatureError::WrongRequest(format!(
            "{} of {}",
            s.action.as_str(),
            s.source.as_deref().unwrap_or("every source")
        )));
    }
    if s.expires_at <= now {
        return Err(SignatureError::Expired(s.expires_at));
    }
    if s.issued_at > now + MAX_SKEW {
        return Err(SignatureError::NotYetValid(s.issued_at));
    }
    if s.expires_at.duration_since(s.issued_at) > MAX_LIFETIME {
        return Err(SignatureError::TooLong);
    }
    guard.prune(now);
    if s.nonce.len() < 16 || guard.seen.contains_key(&s.nonce) {
        return Err(SignatureError::Replayed(s.nonce.clone()));
    }
    guard.seen.insert(s.nonce.clone(), s.expires_at);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn statement(key_id: &str, nonce: &str) -> Statement {
        Statement {
            action: Action::BaselineAccept,
            source: Some("prod".into()),
            key_id: key_id.into(),
            issued_at: t("2026-12-03T10:00:00Z"),
            expires_at: t("2026-12-03T10:05:00Z"),
            nonce: nonce.into(),
        }
    }

    fn setup() -> (SecretKey, BTreeMap<String, PublicKey>) {
        let secret = SecretKey::from_seed([7; 32]);
        let keys = BTreeMap::from([("alice".to_owned(), secret.public())]);
        (secret, keys)
    }

    const EXPECT: Expected<'static> = Expected {
        action: Action::BaselineAccept,
        source: Some("prod"),
    };

    #[test]
    fn a_good_statement_passes_once() {
        let (secret, keys) = setup();
        let signed = secret.sign(statement("alice", "0123456789abcdef"));
        let mut guard = ReplayGuard::default();
        let now = t("2026-12-03T10:01:00Z");
        assert_eq!(verify(&signed, &keys, &EXPECT, now, &mut guard), Ok(()));
        assert!(matches!(
            verify(&signed, &keys, &EXPECT, now, &mut guard),
            Err(SignatureError::Replayed(_))
        ));
    }

    #[test]
    fn forged_expired_unknown_and_misdirected_statements_are_refused() {
        let (secret, keys) = setup();
        let now = t("2026-12-03T10:01:00Z");
        let mut guard = ReplayGuard::default();
        // Edited after signing.
        let mut edited = secret.sign(statement("alice", "0123456789abcdef"));
        edited.statement.source = None;
        let e = verify(&edited, &keys, &EXPECT, now, &mut guard).unwrap_err();
        assert_eq!(e.metric_label(), "forged");
        // Signed by another key under alice's name.
        let mallory = SecretKey::from_seed([9; 32]).sign(statement("alice", "0123456789abcdef"));
        let e = verify(&mallory, &keys, &EXPECT, now, &mut guard).unwrap_err();
        assert_eq!(e.metric_label(), "forged");
        let unknown = secret.sign(statement("bob", "0123456789abcdef"));
        let e = verify(&unknown, &keys, &EXPECT, now, &mut guard).unwrap_err();
        assert_eq!(e.metric_label(), "unknown-key");
        let good = secret.sign(statement("alice", "0123456789abcdef"));
        let later = t("2026-12-03T10:05:00Z");
        let e = verify(&good, &keys, &EXPECT, later, &mut guard).unwrap_err();
        assert_eq!(e.metric_label(), "expired");
        let other = Expected {
            action: Action::BaselineAccept,
            source: Some("staging"),
        };
        let e = verify(&good, &keys, &other, now, &mut guard).unwrap_err();
        assert_eq!(e.metric_label(), "wrong-request");
        let early = t("2026-12-03T09:58:00Z");
        let e = verify(&good, &keys, &EXPECT, early, &mut guard).unwrap_err();
        assert_eq!(e.metric_label(), "not-yet-valid");
        let mut long = statement("alice", "0123456789abcdef");
        long.expires_at = t("2026-12-04T10:00:00Z");
        let e = verify(&secret.sign(long), &keys, &EXPECT, now, &mut guard).unwrap_err();
        assert_eq!(e.metric_label(), "too-long");
        // None of the refusals burned the nonce.
        assert_eq!(verify(&good, &keys, &EXPECT, now, &mut guard), Ok(()));
    }

    #[test]
    fn keys_round_trip_through_their_text_forms() {
        let secret = SecretKey::from_seed([3; 32]);
        let pem = secret.to_pem().unwrap();
        let back = SecretKey::from_pem(&pem).unwrap();
        assert_eq!(back.public(), secret.public());
        let public = PublicKey::parse(&secret.public().to_base64()).unwrap();
        assert_eq!(public, secret.public());
        assert!(PublicKey::parse("AAAA").is_err());
        assert!(SecretKey::from_pem("-----BEGIN NOTHING-----").is_err());
    }

    #[test]
    fn signed_statements_round_trip_through_json() {
        let (secret, keys) = setup();
        let signed = secret.sign(statement("alice", "0123456789abcdef"));
        let text = serde_json::to_string(&signed).unwrap();
        let back: Signed = serde_json::from_str(&text).unwrap();
        let mut guard = ReplayGuard::default();
        let now = t("2026-12-03T10:01:00Z");
        assert_eq!(verify(&back, &keys, &EXPECT, now, &mut guard), Ok(()));
        let extra = text.replacen("\"nonce\"", "\"admin\":true,\"nonce\"", 1);
        assert!(serde_json::from_str::<Signed>(&extra).is_err());
    }
}
