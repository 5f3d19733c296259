//! Records which commit the binary was built from, for `fdbroker --version` and
//! `fdbroker version`: an operator reporting a problem, or a package, can then name the
//! exact source. `FDBROKER_BUILD_COMMIT` when set (a build from a release tarball can
//! pass it); else `git describe` where the source is a git checkout (a worktree too);
//! else `unknown`. A missing git is never a build failure.

use std::path::Path;
use std::process::Command;

fn main() {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo");
    println!("cargo:rerun-if-env-changed=FDBROKER_BUILD_COMMIT");
    let commit = std::env::var("FDBROKER_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| describe(Path::new(&dir)))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=FDBROKER_COMMIT={}", commit.trim());
}

/// `git describe --always --tags` of the checkout holding `dir`, and the files whose
/// change means a new commit (HEAD, and the branch it names), so cargo runs this again
/// after a commit, not after every edit.
fn describe(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let described = git(&["describe", "--always", "--tags", "--abbrev=12"])?;
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", &branch]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    Some(described)
}
