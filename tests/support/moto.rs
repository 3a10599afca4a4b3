//! A real `moto_server` for the AWS tests (test-support/src/moto.rs).

pub use permdrift_test_support::moto::*;
