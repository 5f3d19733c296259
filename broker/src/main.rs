//! The `fdbroker` binary: everything lives in the library's `cli` module so the
//! end-to-end tests run exactly this entry point.

fn main() -> std::process::ExitCode {
    fdbroker::cli::main()
}
