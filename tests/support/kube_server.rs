//! The Kubernetes API test server for integration tests: the
//! `kube-test-server` crate's harness, which runs the server in-process
//! (kube-test-server/src/harness.rs).

pub use kube_test_server::harness::*;
