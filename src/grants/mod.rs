//! Effective permissions: from indexed state to atomic grants per subject.
//!
//! Kubernetes perms (`k8s_perm`, `kube`) and IAM permission sets
//! (`catalog`, `glob`, `resource_pattern`, `aws_perm`, `iam`) are computed purely from the index;
//! [`Grant`] is their common, serialisable form in reports.

pub mod aws;
pub mod aws_perm;
pub mod catalog;
pub mod glob;
pub mod k8s;
pub mod k8s_perm;
pub mod resource_pattern;
