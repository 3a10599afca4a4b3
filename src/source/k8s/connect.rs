//! Which clusters to read and how to reach them: kubeconfig files and
//! contexts (`--kubeconfig`, `KUBECONFIG`, `~/.kube/config`; `--context`
//! repeatable, `--all-contexts`, else the current context) or the in-cluster
//! service account, resolved into [`ClusterTarget`]s that name the source
//! and its server and build `kube` clients.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::SourceInfo;
use super::error::{K8sSourceError, chain_text};

/// The source name used for the in-cluster configuration.
pub const IN_CLUSTER: &str = "in-cluster";

/// Makes ring the process's rustls crypto provider. Both ring and aws-lc-rs
/// are compiled into this package, so rustls cannot pick one by itself and
/// kube's HTTPS client would panic; installing twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where to find clusters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct K8sOptions {
    /// Read this kubeconfig instead of `KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Contexts to read (empty: the current context).
    pub contexts: Vec<String>,
    /// Read every context of the kubeconfig.
    pub all_contexts: bool,
    /// Use the pod's service account instead of a kubeconfig.
    pub in_cluster: bool,
}

/// One cluster to read: the source name, where it is, and its client settings.
#[derive(Clone)]
pub struct ClusterTarget {
    pub info: SourceInfo,
    pub config: kube::Config,
}

impl std::fmt::Debug for ClusterTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds credentials: show only where it points.
        f.debug_struct("ClusterTarget")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl ClusterTarget {
    /// Builds a client (must run inside a tokio runtime).
    pub fn client(&self) -> Result<kube::Client, K8sSourceError> {
        install_crypto_provider();
        kube::Client::try_from(self.config.clone()).map_err(|e| K8sSourceError::Client {
            source_name: self.info.name.clone(),
            server: self.info.server.clone(),
            detail: chain_text(&e),
        })
    }
}

/// The server URL as written (the parsed URI adds a trailing `/`).
fn server_of(config: &kube::Config) -> String {
    let url = config.cluster_url.to_string();
    match url.strip_suffix('/') {
        Some(trimmed) if config.cluster_url.path() == "/" => trimmed.to_owned(),
        _ => url,
    }
}

/// Resolves the options into the clusters to read, in the order given
/// (`--all-contexts`: the kubeconfig's order).
pub async fn resolve_clusters(opts: &K8sOptions) -> Result<Vec<ClusterTarget>, K8sSourceError> {
    if opts.in_cluster {
        return Ok(vec![in_cluster()?]);
    }
    let (kubeconfig, origin) = match load_kubeconfig(opts.kubeconfig.as_deref())? {
        Some(found) => found,
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            return Ok(vec![in_cluster()?]);
        }
        None => {
            return Err(K8sSourceError::NoKubeconfig {
                tried: "KUBECONFIG is unset and ~/.kube/config does not exist".into(),
            });
        }
    };
    let available: Vec<&str> = kubeconfig
        .contexts
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let names: Vec<String> = if opts.all_contexts {
        if available.is_empty() {
            return Err(K8sSourceError::NoContexts { origin });
        }
        available.iter().map(|s| (*s).to_owned()).collect()
    } else if !opts.contexts.is_empty() {
        for c in &opts.contexts {
            if !available.contains(&c.as_str()) {
                return Err(K8sSourceError::NoSuchContext {
                    context: c.clone(),
                    origin,
                    available: if available.is_empty() {
                        "none".into()
                    } else {
                        available.join(", ")
                    },
                });
            }
        }
        let mut names = opts.contexts.clone();
        names.dedup();
        names
    } else {
        match kubeconfig.current_context.as_deref() {
            Some(c) if !c.is_empty() => vec![c.to_owned()],
            _ if available.is_empty() => return Err(K8sSourceError::NoContexts { origin }),
            _ => return Err(K8sSourceError::NoCurrentContext { origin }),
        }
    };
    let mut targets = Vec::with_capacity(names.len());
    for name in names {
        let options = KubeConfigOptions {
            context: Some(name.clone()),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &options)
            .await
            .map_err(|e| K8sSourceError::ContextConfig {
                source_name: name.clone(),
                context: name.clone(),
                detail: chain_text(&e),
            })?;
        targets.push(ClusterTarget {
            info: SourceInfo {
                server: server_of(&config),
                context: Some(name.clone()),
                name,
            },
            config,
        });
    }
    Ok(targets)
}

fn in_cluster() -> Result<ClusterTarget, K8sSourceError> {
    let config = kube::Config::incluster().map_err(|e| K8sSourceError::InCluster {
        detail: chain_text(&e),
    })?;
    Ok(ClusterTarget {
        info: SourceInfo {
            name: IN_CLUSTER.into(),
            context: None,
            server: server_of(&config),
        },
        config,
    })
}

/// The kubeconfig to use and a description of where it came from; `None`
/// when there is none at all. Like kubectl, files listed in `KUBECONFIG`
/// that do not exist are skipped and the rest merged (first one wins).
fn load_kubeconfig(
    explicit: Option<&Path>,
) -> Result<Option<(Kubeconfig, String)>, K8sSourceError> {
    let read = |path: &Path| {
        Kubeconfig::read_from(path).map_err(|e| K8sSourceError::Kubeconfig {
            path: path.to_owned(),
            detail: chain_text(&e),
        })
    };
    if let Some(path) = explicit {
        return Ok(Some((
            read(path)?,
            format!("kubeconfig {}", path.display()),
        )));
    }
    if let Some(value) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let paths: Vec<PathBuf> = std::env::split_paths(&value)
            .filter(|p| !p.as_os_str().is_empty() && p.exists())
            .collect();
        let mut merged: Option<Kubeconfig> = None;
        for path in &paths {
            let next = read(path)?;
            merged = Some(match merged {
                None => next,
                Some(m) => m.merge(next).map_err(|e| K8sSourceError::Kubeconfig {
                    path: path.clone(),
                    detail: chain_text(&e),
                })?,
            });
        }
        let origin = format!(
            "KUBECONFIG ({})",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        );
        return Ok(merged.map(|k| (k, origin)));
    }
    let default = std::env::home_dir().map(|h| h.join(".kube").join("config"));
    match default {
        Some(path) if path.exists() => {
            let origin = format!("kubeconfig {}", path.display());
            Ok(Some((read(&path)?, origin)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_CONTEXTS: &str = "apiVersion: v1\nkind: Config\nclusters:\n\
        - name: a\n  cluster:\n    server: https://10.0.0.1:6443\n\
        - name: b\n  cluster:\n    server: http://127.0.0.1:8001/prefix\n\
        users:\n- name: u\n  user:\n    token: t\n\
        contexts:\n- name: prod\n  context:\n    cluster: a\n    user: u\n\
        - name: dev\n  context:\n    cluster: b\n    user: u\n\
        current-context: dev\n";

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn opts(path: &Path) -> K8sOptions {
        K8sOptions {
            kubeconfig: Some(path.to_owned()),
            ..K8sOptions::default()
        }
    }

    #[tokio::test]
    async fn contexts_resolve_to_named_sources_with_their_servers() {
        let (_dir, path) = write(TWO_CONTEXTS);
        let current = resolve_clusters(&opts(&path)).await.unwrap();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0].info.name, "dev");
        assert_eq!(current[0].info.server, "http://127.0.0.1:8001/prefix");

        let all = resolve_clusters(&K8sOptions {
            all_contexts: true,
            ..opts(&path)
        })
        .await
        .unwrap();
        let names: Vec<_> = all.iter().map(|t| t.info.name.as_str()).collect();
        assert_eq!(names, ["prod", "dev"]);
        assert_eq!(all[0].info.server, "https://10.0.0.1:6443");
        assert_eq!(all[0].info.context.as_deref(), Some("prod"));

        let err = resolve_clusters(&K8sOptions {
            contexts: vec!["staging".into()],
            ..opts(&path)
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("context \"staging\" is not in kubeconfig"),
            "{err}"
        );
        assert!(err.contains("(contexts: prod, dev)"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_or_broken_kubeconfig_says_which_file() {
        let err = resolve_clusters(&opts(Path::new("/nonexistent/kubeconfig")))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("kube source: cannot read kubeconfig /nonexistent/kubeconfig"),
            "{err}"
        );
        let (_dir, path) = write("apiVersion: v1\nkind: Config\ncontexts: []\n");
        let err = resolve_clusters(&opts(&path))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("defines no contexts"), "{err}");
    }
}
