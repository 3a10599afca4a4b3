//! The typed access-control model: Kubernetes RBAC objects and AWS IAM
//! entities parsed from raw JSON, with the normal forms used to compare them.

pub mod aws;
pub mod iam_policy;
pub mod k8s;
