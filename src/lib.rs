//! permdrift: snapshots access-control state (Kubernetes RBAC, AWS IAM), computes
//! effective permissions, and diffs states to tell widening from narrowing.
//!
//! The core (`model`, `index`, `grants`, `diff`, `classify`) is pure and
//! synchronous: no I/O, no clock. The edges (`input`, `source`, `cli`) do I/O
//! around it.

// The workspace denies unsafe code; the product forbids it outright (only
// test support may opt out, see test-support/src/moto.rs).
#![forbid(unsafe_code)]

pub mod admission;
pub mod approval;
pub mod attribution;
pub mod classify;
pub mod cli;
pub mod config;
pub mod decide;
pub mod diff;
pub mod grants;
pub mod index;
pub mod input;
pub mod metrics;
pub mod model;
pub mod operator;
pub mod render;
pub mod report;
pub mod revert;
pub mod sarif;
pub mod signature;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod whocan;
