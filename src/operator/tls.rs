//! The API listener's TLS identity.
//!
//! The configured certificate and key files (a mounted Secret, for example
//! one cert-manager renews) or, without them, a self-signed certificate made
//! at start, become a rustls acceptor; its SHA-256 fingerprint is what a
//! client pins (`permdrift baseline accept --fingerprint`) when it has no CA
//! to trust.

use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("api.tls.certFile {file}: {message}")]
    Cert { file: String, message: String },
    #[error("api.tls.keyFile {file}: {message}")]
    Key { file: String, message: String },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("the certificate and key do not make a TLS server: {0}")]
    Config(String),
}

/// A ready acceptor and the fingerprint of the certificate it presents.
pub struct ApiTls {
    pub acceptor: TlsAcceptor,
    /// `sha256:` and the hex digest of the leaf certificate's DER.
    pub fingerprint: String,
    /// True when made at start (no files configured).
    pub generated: bool,
}

/// The fingerprint clients pin: `sha256:<hex>` of the DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// Builds the acceptor from files, or from a certificate made now for
/// `localhost`, `127.0.0.1` and `config.hosts`.
pub fn load(config: &TlsConfig) -> Result<ApiTls, TlsError> {
    let (chain, key, generated) = match (&config.cert_file, &config.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let cert_err = |message: String| TlsError::Cert {
                file: cert_file.display().to_string(),
                message,
            };
            let chain = CertificateDer::pem_file_iter(cert_file)
                .map_err(|e| cert_err(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| cert_err(e.to_string()))?;
            if chain.is_empty() {
                return Err(cert_err("no PEM certificate in the file".into()));
            }
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Key {
                file: key_file.display().to_string(),
                message: e.to_string(),
            })?;
            (chain, key, false)
        }
        _ => {
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            names.extend(config.hosts.iter().cloned());
            let made = rcgen::generate_simple_self_signed(names)
                .map_err(|e| TlsError::Generate(e.to_string()))?;
            let key =
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
            (vec![made.cert.der().clone()], key, true)
        }
    };
    let fingerprint = fingerprint(&chain[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(ApiTls {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        fingerprint,
        generated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_has_a_fresh_fingerprint_each_start() {
        let a = load(&TlsConfig::default()).unwrap();
        let b = load(&TlsConfig::default()).unwrap();
        assert!(a.generated && b.generated);
        assert!(a.fingerprint.starts_with("sha256:") && a.fingerprint.len() == 7 + 64);
        assert_ne!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn files_are_read_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["permdrift.test".into()]).unwrap();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let config = TlsConfig {
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
            hosts: Vec::new(),
        };
        let loaded = load(&config).unwrap();
        assert!(!loaded.generated);
        assert_eq!(loaded.fingerprint, fingerprint(made.cert.der()));
        std::fs::write(&key, "not a key").unwrap();
        let e = load(&config).err().unwrap().to_string();
        assert!(
            e.starts_with("api.tls.keyFile") && e.contains("tls.key"),
            "{e}"
        );
        std::fs::write(&cert, "").unwrap();
        let e = load(&config).err().unwrap().to_string();
        assert!(e.starts_with("api.tls.certFile"), "{e}");
    }
}
