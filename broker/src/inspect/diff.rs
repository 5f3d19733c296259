//! `fdbroker policy diff OLD NEW`: what a change grants and takes away, in words.

use super::error;
use fdbroker_policy::Policy;
use std::path::Path;
use std::process::ExitCode;

/// Exit 0 when they mean the same, 1 when they differ, 2 on errors.
pub fn diff_main(old: &Path, new: &Path) -> ExitCode {
    let (a, b) = match (Policy::load(old), Policy::load(new)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return error(e),
    };
    let changes = fdbroker_policy::diff::diff(&a, &b);
    for c in &changes {
        println!("{c}");
    }
    if changes.is_empty() {
        println!("{} and {} mean the same", old.display(), new.display());
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
