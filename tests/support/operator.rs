//! A real `permdrift run` process for end-to-end tests
//! (test-support/src/operator.rs).

pub use permdrift_test_support::operator::*;
