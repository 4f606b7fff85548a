//! The `rk3s` binary: parse the command line, then hand over to the library.
fn main() -> std::process::ExitCode {
    rk3s::cli::main()
}
