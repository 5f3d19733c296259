//! Paths of the binaries the tests run: the broker under test and this package's
//! probes, made reachable for unprivileged children.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The fdbroker binary under test: this package's `fdbroker-e2e`, which cargo builds
/// before it runs the package's tests or benchmarks, beside their own executables.
pub fn fdbroker_bin() -> PathBuf {
    sibling_bin("fdbroker-e2e")
}

/// The directory cargo built this package's binaries in (`target/<profile>`, the
/// running test executable's `target/<profile>/deps/test-HASH` two levels up): where
/// the build's other products are, which [`sibling_bin`]'s path may not say (it can
/// be a copy elsewhere).
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap();
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap();
    }
    dir.to_owned()
}

/// A binary of this package, found next to the running test executable
/// (`target/<profile>/deps/test-HASH` -> `target/<profile>/NAME`), or a copy of it that
/// unprivileged children can reach.
pub fn sibling_bin(name: &str) -> PathBuf {
    let p = build_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build with `cargo test --workspace`",
        p.display()
    );
    if reachable_by_others(&p) {
        p
    } else {
        exposed(&p)
    }
}

/// Can a process that is neither owner nor group (`nobody`) reach and run `bin`?
fn reachable_by_others(bin: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mode = |p: &Path| fs::metadata(p).map(|m| m.mode()).unwrap_or(0);
    mode(bin) & 0o001 != 0 && bin.ancestors().skip(1).all(|d| mode(d) & 0o001 != 0)
}

/// `bin`, made reachable for unprivileged children: a checkout under a private
/// directory (`mktemp -d` gives 0700) keeps `nobody` out of `target/`. Linked (or
/// copied) into a root-owned directory under /tmp that no one else can write, named by
/// the build's inode and mtime so a rebuild never reuses a stale copy.
fn exposed(bin: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir().join("fdbroker-tests-bin");
    match fs::create_dir(&dir) {
        Ok(()) => fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap(),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("{}: {e}", dir.display()),
    }
    let d = fs::symlink_metadata(&dir).unwrap();
    assert!(
        d.is_dir() && d.uid() == 0 && d.mode() & 0o022 == 0,
        "{} must be a root-owned directory no one else can write",
        dir.display()
    );
    let m = fs::metadata(bin).unwrap();
    let name = bin.file_name().unwrap().to_string_lossy();
    let target = dir.join(format!("{name}-{}-{}-{}", m.dev(), m.ino(), m.mtime_nsec()));
    if target.exists() {
        return target;
    }
    // A link shares the build's mode, so it serves only if that lets others run it.
    if m.mode() & 0o005 != 0o005 || fs::hard_link(bin, &target).is_err() {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{name}.{}.{n}.tmp", std::process::id()));
        fs::copy(bin, &tmp).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
        fs::rename(&tmp, &target).unwrap();
    }
    target
}

/// The workspace's root directory (the parent of this package's).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}
