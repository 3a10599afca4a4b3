//! permdrift: snapshots access-control state (Kubernetes RBAC, AWS IAM), computes
//! effective permissions, and diffs states to tell widening from narrowing.
//!
//! The core (`model`, `grants`, `diff`, `classify`) is pure and synchronous; the
//! edges (`input`, `source`, `cli`) do I/O around it.

pub mod cli;
pub mod source;
