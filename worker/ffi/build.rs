//! Generates the C header from `src/lib.rs` with cbindgen into `OUT_DIR`; a test
//! (`header_is_current` in `src/lib.rs`) compares it with the committed
//! `include/fdbroker.h`, so a stale header fails CI. The build never writes into the
//! source tree.
//!
//! Also gives the shared library its soname, `libfdbroker_client.so.0`: programs
//! linked against it name that, so an incompatible 1.x can be installed beside it.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml"))
        .expect("worker/ffi/cbindgen.toml is readable and valid");
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen can generate the header from src/lib.rs")
        .write_to_file(out.join("fdbroker.h"));
    println!("cargo:rerun-if-changed=src/lib.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libfdbroker_client.so.0");
}
