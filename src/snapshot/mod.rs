//! Snapshots: the point-in-time state of one or more sources.
//!
//! In memory a [`Snapshot`] holds, per source, its metadata and its indexed
//! model (raw objects plus reverse maps). On disk it is the versioned,
//! canonical document described in `docs/snapshot-format.md`
//! ([`format`]): sorted, byte-identical for the same state whatever the input
//! order, and lossless on round trip.

pub mod format;

use crate::index::aws::AwsModel;
use crate::index::k8s::K8sModel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Kubernetes,
    Aws,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Kubernetes => "kubernetes",
            Platform::Aws => "aws",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Part of a source that could not be read. Objects it would hold are unknown,
/// never "deleted".
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MissingPart {
    /// The resource (e.g. `rolebindings`) or AWS operation that failed.
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceMeta {
    /// Kubeconfig context or in-cluster name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// List resourceVersion per resource at collection time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resource_versions: BTreeMap<String, String>,
    /// When a live source was read (absent for files, which have no time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collected_at: Option<String>,
    /// Parts that could not be read; a source with any is incomplete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<MissingPart>,
}

#[derive(Clone, Debug)]
pub enum SourceData {
    Kubernetes(K8sModel),
    Aws(AwsModel),
}

#[derive(Clone, Debug)]
pub struct SourceSnapshot {
    pub name: String,
    pub meta: SourceMeta,
    pub data: SourceData,
}

impl SourceSnapshot {
    pub fn kubernetes(name: &str, model: K8sModel) -> Self {
        Self {
            name: name.to_owned(),
            meta: SourceMeta::default(),
            data: SourceData::Kubernetes(model),
        }
    }

    pub fn aws(name: &str, model: AwsModel) -> Self {
        Self {
            name: name.to_owned(),
            meta: SourceMeta::default(),
            data: SourceData::Aws(model),
        }
    }

    pub fn platform(&self) -> Platform {
        match self.data {
            SourceData::Kubernetes(_) => Platform::Kubernetes,
            SourceData::Aws(_) => Platform::Aws,
        }
    }

    pub fn is_complete(&self) -> bool {
        self.meta.missing.is_empty()
    }

    pub fn object_count(&self) -> usize {
        match &self.data {
            SourceData::Kubernetes(m) => m.len(),
            SourceData::Aws(m) => m.len(),
        }
    }

    pub fn kube(&self) -> Option<&K8sModel> {
        match &self.data {
            SourceData::Kubernetes(m) => Some(m),
            SourceData::Aws(_) => None,
        }
    }

    pub fn iam(&self) -> Option<&AwsModel> {
        match &self.data {
            SourceData::Aws(m) => Some(m),
            SourceData::Kubernetes(_) => None,
        }
    }
}

/// One or more sources, keyed by name.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub sources: BTreeMap<String, SourceSnapshot>,
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn object_count(&self) -> usize {
        self.sources
            .values()
            .map(SourceSnapshot::object_count)
            .sum()
    }

    pub fn is_complete(&self) -> bool {
        self.sources.values().all(SourceSnapshot::is_complete)
    }
}
