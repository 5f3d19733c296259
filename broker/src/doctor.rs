//! `fdbroker version` (alias `doctor`), run by the operator as whoever they are,
//! unconfined: which fdbroker this is (the version and the commit it was built from),
//! and with `--check` what the running kernel offers that fdbroker relies on, each
//! feature with what fdbroker does without it.
//!
//! Every probe asks the kernel itself (a system call that changes nothing), never the
//! version number alone: distribution kernels backport features and disable others at
//! boot (`lsm=` without `landlock`). The one exception is transparent mode's floor,
//! Linux 6.9, which is the check `fdbroker run --transparent` itself makes
//! ([`fdbroker_transparent::check_kernel`]), so the two cannot disagree.

use crate::log::sink::eprint_line;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;
use std::io::Write as _;
use std::os::fd::AsFd;
use std::process::ExitCode;

/// The commit the binary was built from (`broker/build.rs`): `git describe`, or
/// `unknown` for a build outside a git checkout.
pub const COMMIT: &str = env!("FDBROKER_COMMIT");

/// `fdbroker --version`: the version and the commit.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FDBROKER_COMMIT"),
    ")"
);

/// How far the kernel offers a feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Everything fdbroker uses of it.
    Yes,
    /// Some of it: fdbroker runs with less (the note says what).
    Partial,
    /// None of it.
    No,
}

impl Support {
    pub fn as_str(self) -> &'static str {
        match self {
            Support::Yes => "yes",
            Support::Partial => "partial",
            Support::No => "no",
        }
    }
}

/// One feature of the kernel, as probed.
#[derive(Clone, Debug)]
pub struct Feature {
    /// A stable name, the key in `--json`.
    pub name: &'static str,
    pub support: Support,
    /// What the probe found (an ABI version, an errno).
    pub found: String,
    /// What fdbroker does without the feature (or with only part of it).
    pub without: &'static str,
    /// Whether `fdbroker serve` cannot serve at all without it.
    pub required: bool,
}

/// Landlock ABI the broker's own confinement and the strict worker sandbox use fully.
const LANDLOCK_FULL_ABI: i32 = 6;

/// Probes every feature, in the order the text output lists them.
pub fn probe() -> Vec<Feature> {
    vec![
        probe_openat2(),
        probe_landlock(),
        probe_seccomp(),
        probe_user_notification(),
        probe_cgroup(),
    ]
}

fn probe_openat2() -> Feature {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let (support, found) = match std::fs::File::open("/")
        .map_err(|e| e.to_string())
        .and_then(|root| openat2(root.as_fd(), ".", how).map_err(|e| e.desc().to_owned()))
    {
        Ok(_) => (Support::Yes, "RESOLVE_BENEATH works".to_owned()),
        Err(e) => (Support::No, e),
    };
    Feature {
        name: "openat2",
        support,
        found,
        without: "every open is refused (the broker never falls back to a weaker open(2)); \
                  Linux 5.6 or later has it",
        required: true,
    }
}

fn probe_landlock() -> Feature {
    let (support, found) = match crate::sys::landlock_abi() {
        Ok(abi) if abi >= LANDLOCK_FULL_ABI => (Support::Yes, format!("ABI {abi}")),
        Ok(abi) => (Support::Partial, format!("ABI {abi}")),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => (
            Support::No,
            "built in but not enabled (add landlock to the lsm= boot parameter)".to_owned(),
        ),
        Err(e) => (Support::No, format!("not in this kernel ({e})")),
    };
    Feature {
        name: "landlock",
        support,
        found,
        without: "the broker confines itself with capabilities and seccomp only and says so \
                  at start-up; `fdbroker run` and a strict Sandbox::apply() refuse to start a \
                  worker below ABI 6 (Sandbox::best_effort() runs it with what there is)",
        required: false,
    }
}

fn probe_seccomp() -> Feature {
    let (support, found) = match crate::sys::seccomp_filters() {
        Ok(()) => (Support::Yes, "filters with SECCOMP_RET_ERRNO".to_owned()),
        Err(e) => (Support::No, e.to_string()),
    };
    Feature {
        name: "seccomp",
        support,
        found,
        without: "the broker's own system-call filter cannot be installed, so a confined \
                  broker fails at start with the kernel's error, and so do `fdbroker run` and \
                  Sandbox::apply() (`[broker] confine = false` is for debugging only)",
        required: false,
    }
}

fn probe_user_notification() -> Feature {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let notify = crate::sys::seccomp_user_notification();
    let new_enough = fdbroker_transparent::check_kernel();
    let (support, found) = match (&notify, &new_enough) {
        (Ok(()), Ok(())) => (Support::Yes, format!("Linux {release}")),
        (Ok(()), Err(_)) => (
            Support::Partial,
            format!("present, but Linux {release}: transparent mode needs 6.9 or later"),
        ),
        (Err(e), _) => (Support::No, format!("{e} (Linux {release})")),
    };
    Feature {
        name: "seccomp_user_notification",
        support,
        found,
        without: "`fdbroker run --transparent` refuses to start (it needs Linux 6.9 or later); \
                  `fdbroker serve`, `fdbroker run` and the client libraries are unaffected",
        required: false,
    }
}

fn probe_cgroup() -> Feature {
    let v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        });
    let (support, found) = match (v2, own) {
        (true, Some(path)) => (Support::Yes, format!("cgroup v2, this process in {path}")),
        (false, Some(path)) => (
            Support::Partial,
            format!("a unified hierarchy (this process in {path}), not mounted at /sys/fs/cgroup"),
        ),
        (_, None) => (Support::No, "no cgroup v2 hierarchy".to_owned()),
    };
    Feature {
        name: "cgroup",
        support,
        found,
        without: "`fdbroker reload` refuses a monitor that /proc hides from it \
                  (ProtectProc=invisible) instead of accepting it by the caller's own cgroup: \
                  run it as root there; nothing else depends on cgroups",
        required: false,
    }
}

/// `fdbroker version [--check] [--json]`: exit 0, or with `--check` exit 1 when a feature
/// the broker cannot serve without is missing.
pub fn version_main(check: bool, json: bool) -> ExitCode {
    let features = if check { probe() } else { Vec::new() };
    let text = if json {
        render_json(&features, check)
    } else {
        render_text(&features)
    };
    if writeln!(std::io::stdout().lock(), "{text}").is_err() {
        eprint_line("fdbroker: cannot write to stdout");
        return ExitCode::from(2);
    }
    if features
        .iter()
        .any(|f| f.required && f.support == Support::No)
    {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn render_text(features: &[Feature]) -> String {
    let mut out = format!("fdbroker {LONG_VERSION}");
    if features.is_empty() {
        return out;
    }
    out.push_str(&format!("\nkernel: Linux {}", kernel_release()));
    for f in features {
        out.push_str(&format!(
            "\n{}: {} ({})",
            f.name,
            f.support.as_str(),
            f.found
        ));
        if f.support != Support::Yes {
            out.push_str(&format!("\n  without it: {}", f.without));
        }
    }
    out
}

pub fn render_json(features: &[Feature], check: bool) -> String {
    let mut doc = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": COMMIT,
    });
    if check {
        doc["kernel"] = kernel_release().into();
        let mut map = serde_json::Map::new();
        for f in features {
            map.insert(
                f.name.to_owned(),
                serde_json::json!({
                    "support": f.support.as_str(),
                    "found": f.found,
                    "without": f.without,
                    "required": f.required,
                }),
            );
        }
        doc["features"] = map.into();
    }
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_names_what_fdbroker_does_without_it() {
        let features = probe();
        let names: Vec<_> = features.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "openat2",
                "landlock",
                "seccomp",
                "seccomp_user_notification",
                "cgroup"
            ]
        );
        for f in &features {
            assert!(!f.without.is_empty() && !f.found.is_empty(), "{f:?}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&features, true)).expect("valid JSON");
        assert_eq!(json["commit"], COMMIT);
        assert_eq!(json["features"].as_object().map(|m| m.len()), Some(5));
    }
}
