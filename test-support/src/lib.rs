//! What permdrift's integration tests and benchmarks share, as a crate so
//! benches reach it as a dependency rather than by file path: a real
//! `moto_server` ([`moto`]) and a real `permdrift run` process
//! ([`operator`]), plus where to find the `permdrift` binary and a scratch
//! directory for their files.

pub mod moto;
pub mod operator;

use std::path::PathBuf;

/// The `permdrift` binary Cargo built for the running test or benchmark.
///
/// Cargo names it in `CARGO_BIN_EXE_permdrift` only while compiling the
/// product's own tests and benches, not this library, so it is found beside
/// the running executable instead (`target/PROFILE/deps/NAME` →
/// `target/PROFILE/permdrift`); `PERMDRIFT_BIN` overrides that.
pub fn permdrift_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PERMDRIFT_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("path of the running test executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable lives in target/PROFILE/deps");
    profile_dir.join(format!("permdrift{}", std::env::consts::EXE_SUFFIX))
}

/// `target/tmp`, the directory Cargo gives integration tests for scratch
/// files (`CARGO_TARGET_TMPDIR`), found from the running executable for the
/// same reason as [`permdrift_bin`].
pub fn target_tmpdir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running test executable");
    let target_dir = exe
        .ancestors()
        .nth(3)
        .expect("the test executable lives in target/PROFILE/deps");
    target_dir.join("tmp")
}
