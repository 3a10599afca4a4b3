//! Real servers the integration tests and benchmarks run against.

pub mod moto;
