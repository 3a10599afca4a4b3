fn main() -> std::process::ExitCode {
    permdrift::cli::main()
}
