//! Dev-only Kubernetes API test server (placeholder).
fn main() {}
