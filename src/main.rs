#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    permdrift::cli::main()
}
