//! Real servers the integration tests and benchmarks run against.
#![allow(dead_code, unused_imports)] // each test binary uses a different part of these helpers

pub mod api;
pub mod kube_server;
pub mod moto;
pub mod operator;
