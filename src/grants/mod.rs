//! Effective permissions: from indexed state to atomic grants per subject.
//!
//! Kubernetes perms (`kube_perm`, `kube`) and IAM permission sets
//! (`catalog`, `glob`, `resource_pattern`, `iam_perm`, `iam`) are computed purely from the index;
//! [`Grant`] is their common, serialisable form in reports.

pub mod catalog;
pub mod glob;
pub mod iam;
pub mod iam_perm;
pub mod kube;
pub mod kube_perm;
pub mod resource_pattern;
