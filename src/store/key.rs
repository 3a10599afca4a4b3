//! The journal key: secret bytes in, record MACs out.
//!
//! A key file (a mounted Kubernetes Secret, or any file) holds raw bytes or
//! hex or base64 text; [`JournalKey::from_file`] turns it into at least 32
//! bytes or a [`KeyError`] naming the file, never its content. A record's MAC
//! is HMAC-SHA256 under the key of the same text its hash is computed from,
//! minus the `mac` field itself (see `record.rs`), written as 64 hex digits.
//! The key is never printed: its `Debug` shows only its length.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::path::Path;
use std::sync::Arc;

/// Fewest key bytes accepted: the output size of the MAC's hash.
pub const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("journal key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("journal key file {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// A journal MAC key, kept as the HMAC state it initialises. Cheap to
/// clone; never shown.
#[derive(Clone)]
pub struct JournalKey {
    keyed: Arc<Hmac<Sha256>>,
    len: usize,
}

impl std::fmt::Debug for JournalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JournalKey(<{} bytes, redacted>)", self.len)
    }
}

impl JournalKey {
    /// Reads a key file: raw bytes, or hex or base64 text (surrounding
    /// whitespace ignored), at least [`MIN_KEY_BYTES`] once decoded.
    pub fn from_file(path: &Path) -> Result<JournalKey, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        JournalKey::from_bytes(&bytes).map_err(|reason| KeyError::Invalid {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Decodes a key file's content. Text made only of hex or base64
    /// characters must decode as such (a typo is an error, not a different
    /// key); anything else is taken as raw bytes. Hex wins when text is both.
    pub fn from_bytes(bytes: &[u8]) -> Result<JournalKey, String> {
        let text = std::str::from_utf8(bytes).ok().map(str::trim);
        let (key, encoding) = match text {
            Some(t) if !t.is_empty() && t.bytes().all(is_base64_or_hex) => decode_text(t)?,
            _ => (bytes.to_vec(), "raw"),
        };
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "{} byte{} ({encoding}); a journal key needs at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)",
                key.len(),
                if key.len() == 1 { "" } else { "s" }
            ));
        }
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .map_err(|e| format!("not usable as an HMAC key: {e}"))?;
        Ok(JournalKey {
            keyed: Arc::new(keyed),
            len: key.len(),
        })
    }

    fn hmac(&self, prev: &str, canonical: &str) -> Hmac<Sha256> {
        let mut mac = (*self.keyed).clone();
        mac.update(prev.as_bytes());
        mac.update(b"\n");
        mac.update(canonical.as_bytes());
        mac
    }

    /// The MAC of a record's `prev` and canonical text, in hex.
    pub fn mac(&self, prev: &str, canonical: &str) -> String {
        hex::encode(self.hmac(prev, canonical).finalize().into_bytes())
    }

    /// Whether `tag` (hex) is the MAC of `prev` and `canonical`, compared in
    /// constant time.
    pub fn verify(&self, prev: &str, canonical: &str, tag: &str) -> bool {
        match hex::decode(tag) {
            Ok(bytes) => self.hmac(prev, canonical).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

fn is_base64_or_hex(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'=')
}

fn decode_text(t: &str) -> Result<(Vec<u8>, &'static str), String> {
    if t.len().is_multiple_of(2) && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex::decode(t)
            .map(|k| (k, "hex"))
            .map_err(|e| format!("not hex: {e}"));
    }
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(t).ok())
        .map(|k| (k, "base64"))
        .ok_or_else(|| {
            "text of hex/base64 characters that is neither valid hex nor valid base64".into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_base64_and_raw_keys_decode_to_the_same_bytes() {
        let raw: Vec<u8> = (0u8..32)
            .map(|i| i.wrapping_mul(37).wrapping_add(200))
            .collect();
        let hex_text = format!("{}\n", hex::encode(&raw));
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        let mac = |k: JournalKey| k.mac("p", "{}");
        let want = mac(JournalKey::from_bytes(&raw).unwrap());
        assert_eq!(
            mac(JournalKey::from_bytes(hex_text.as_bytes()).unwrap()),
            want
        );
        assert_eq!(mac(JournalKey::from_bytes(b64.as_bytes()).unwrap()), want);
        assert_eq!(mac(JournalKey::from_bytes(url.as_bytes()).unwrap()), want);
    }

    #[test]
    fn short_or_mistyped_keys_are_refused_without_showing_them() {
        let e = JournalKey::from_bytes(b"00112233").unwrap_err();
        assert!(
            e.starts_with("4 bytes (hex); a journal key needs at least 32"),
            "{e}"
        );
        let e = JournalKey::from_bytes(b"short secret").unwrap_err();
        assert!(e.starts_with("12 bytes (raw)"), "{e}");
        // 63 hex digits: odd, so tried as base64, which it is not either.
        let e = JournalKey::from_bytes("a".repeat(63).as_bytes()).unwrap_err();
        assert!(e.contains("neither valid hex nor valid base64"), "{e}");
        assert!(!e.contains("aaaa"), "{e}");
        let k = JournalKey::from_bytes(&[7u8; 40]).unwrap();
        assert_eq!(format!("{k:?}"), "JournalKey(<40 bytes, redacted>)");
    }

    #[test]
    fn macs_depend_on_key_prev_and_text() {
        let k = JournalKey::from_bytes(&[1u8; 32]).unwrap();
        let other = JournalKey::from_bytes(&[2u8; 32]).unwrap();
        let tag = k.mac("p", "{\"a\":1}");
        assert_eq!(tag.len(), 64);
        assert!(k.verify("p", "{\"a\":1}", &tag));
        assert!(!k.verify("q", "{\"a\":1}", &tag));
        assert!(!k.verify("p", "{\"a\":2}", &tag));
        assert!(!other.verify("p", "{\"a\":1}", &tag));
        assert!(!k.verify("p", "{\"a\":1}", "not hex"));
    }
}
