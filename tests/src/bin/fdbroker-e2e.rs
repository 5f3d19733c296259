//! The `fdbroker` entry point, built inside this package so the end-to-end tests get
//! a fresh binary through `CARGO_BIN_EXE_fdbroker-e2e` (cargo exposes only a package's
//! own binaries to its tests). It is the same code as `broker/src/main.rs`.

fn main() -> std::process::ExitCode {
    fdbroker::cli::main()
}
