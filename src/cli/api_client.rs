//! The CLI's client of the operator's authenticated API.
//!
//! A request (method, URL, credential, body) goes out over TLS only, trusting
//! either a CA file (the operator's certificate from a Secret, e.g.
//! cert-manager's) or exactly one certificate by its SHA-256 fingerprint
//! (the one the operator logs when it generates its own); the status and
//! body come back. The credential is a Kubernetes bearer token (`--token`,
//! else the kubeconfig's) or a statement signed with `--key`.

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;

/// How the operator's certificate is trusted.
#[derive(clap::Args, Clone, Debug)]
pub struct TrustArgs {
    /// Trust the operator's certificate if a CA in this PEM file signed it.
    #[arg(long, value_name = "FILE", conflicts_with = "fingerprint")]
    pub ca_cert: Option<PathBuf>,
    /// Trust exactly the certificate with this SHA-256 fingerprint
    /// (`sha256:HEX`, as the operator logs it at start).
    #[arg(long, value_name = "sha256:HEX")]
    pub fingerprint: Option<String>,
}

/// Where the caller's Kubernetes bearer token comes from, for the API's
/// TokenReview: `--token`, else the kubeconfig's.
#[derive(clap::Args, Clone, Debug)]
pub struct TokenArgs {
    /// A Kubernetes bearer token [default: the kubeconfig's, for the current context].
    #[arg(
        long,
        value_name = "TOKEN",
        env = "PERMDRIFT_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The kubeconfig the token is read from [default: $KUBECONFIG, else ~/.kube/config].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context the token is read from [default: the current one].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

impl TokenArgs {
    /// The token: `--token` as given, else read from the kubeconfig.
    pub async fn token(&self) -> anyhow::Result<String> {
        match &self.token {
            Some(t) => Ok(t.clone()),
            None => kubeconfig_token(self.kubeconfig.as_deref(), self.context.as_deref()).await,
        }
    }
}

/// The bearer token of a kubeconfig context (`token`, or `tokenFile`).
async fn kubeconfig_token(
    file: Option<&std::path::Path>,
    context: Option<&str>,
) -> anyhow::Result<String> {
    use secrecy::ExposeSecret;
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = match file {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .context("cannot read a kubeconfig for your token (or pass --token, or --key to sign)")?;
    let auth = &config.auth_info;
    if let Some(token) = &auth.token {
        return Ok(token.expose_secret().to_owned());
    }
    if let Some(path) = &auth.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("the kubeconfig's tokenFile {path}"))?;
        return Ok(text.trim().to_owned());
    }
    bail!(
        "the kubeconfig's user has no bearer token (client certificates and exec plugins are not \
         sent to the operator); pass --token (e.g. from `kubectl create token`), or --key to sign"
    )
}

/// Accepts exactly one certificate, by the digest of its DER bytes; the
/// handshake signature is still checked with the certificate's key. rustls
/// has no built-in pinning, hence this small verifier.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = crate::operator::tls::fingerprint(end_entity);
        if seen.eq_ignore_ascii_case(&self.fingerprint) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate is {seen}, not the pinned {}",
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls_config(trust: &TrustArgs) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match (&trust.ca_cert, &trust.fingerprint) {
        (Some(file), _) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(file)
                .with_context(|| format!("--ca-cert {}", file.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("--ca-cert {}", file.display()))?;
            if certs.is_empty() {
                bail!(
                    "--ca-cert {}: no PEM certificate in the file",
                    file.display()
                );
            }
            for cert in certs {
                roots
                    .add(cert)
                    .with_context(|| format!("--ca-cert {}", file.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (None, Some(fingerprint)) => {
            let hex_part = fingerprint.strip_prefix("sha256:").unwrap_or(fingerprint);
            if hex_part.len() != 64 || !hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!("--fingerprint {fingerprint:?}: expected sha256: and 64 hex digits");
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    fingerprint: format!("sha256:{}", hex_part.to_ascii_lowercase()),
                    provider,
                }))
                .with_no_client_auth()
        }
        (None, None) => bail!(
            "say how to trust the operator's certificate: --ca-cert FILE (its CA), or \
             --fingerprint sha256:HEX (logged by the operator at start as `fingerprint`)"
        ),
    };
    Ok(config)
}

/// The credential a request carries.
pub enum Credential {
    Bearer(String),
    /// A JSON body (a signed statement).
    Signed(String),
    /// A bearer token with a JSON body (an approval request).
    BearerJson {
        token: String,
        body: String,
    },
    /// A bearer token with a text body (a suggestion), sent as it is.
    BearerText {
        token: String,
        body: Vec<u8>,
    },
}

/// Sends one request; returns the status and the body text.
pub async fn send(
    url: &str,
    trust: &TrustArgs,
    credential: &Credential,
) -> anyhow::Result<(u16, String)> {
    use http_body_util::BodyExt;
    let uri: hyper::Uri = url.parse().with_context(|| format!("{url}: not a URL"))?;
    if uri.scheme_str() != Some("https") {
        bail!(
            "{url}: the operator's API is served over TLS only; use --server https://HOST:PORT \
             (its `api.listen`, 8443 by default)"
        );
    }
    let host = uri.host().context("the URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(trust)?));
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| {
            format!("cannot reach the operator at {host}:{port}; is it running? (or use --store)")
        })?;
    let name = ServerName::try_from(host.trim_matches(|c| c == '[' || c == ']').to_owned())
        .with_context(|| format!("{host}: not a valid server name"))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with {host}:{port}"))?;
    let io = hyper_util::rt::TokioIo::new(tls);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = hyper::Request::post(path).header("host", format!("{host}:{port}"));
    let request = match credential {
        Credential::Bearer(token) => request
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))?,
        Credential::BearerJson { token, body } => request
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))?,
        Credential::BearerText { token, body } => request
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "text/markdown; charset=utf-8")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))?,
        Credential::Signed(body) => request
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))?,
    };
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
