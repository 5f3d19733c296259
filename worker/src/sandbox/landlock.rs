//! Landlock: no filesystem access beyond the allowlist, no TCP (or, on newer kernels, UDP)
//! at all, and no abstract Unix sockets or signals that reach outside the sandbox.
//!
//! The ruleset handles every filesystem and network right the running kernel knows (the
//! crate intersects `from_all` of the newest ABI it knows with what the kernel reports), so
//! anything not granted by a path rule is denied, including operations that only newer
//! kernels can control. Nothing outside the allowlist is granted, and no network rule is ever
//! added.
//!
//! Strict mode additionally requires, as a hard requirement checked while preparing,
//! everything [`REQUIRED_ABI`] (ABI 6, Linux 6.12) provides: the filesystem rights up to
//! `IoctlDev`, TCP bind/connect, and both scopes. A kernel that lacks them fails before any
//! privilege is dropped. Best effort takes what the kernel has and says what it got in
//! [`LandlockReport`].
//!
//! Pathname Unix sockets are a filesystem right from ABI 9 on (`ResolveUnix`): handled, like
//! every right the kernel knows, and never granted, so no socket path can be connected to
//! or sent to. On older kernels the seccomp filter refuses making and connecting sockets
//! instead (see its module documentation), which also covers this.
//!
//! Descriptors opened before enforcement keep working: Landlock checks at `open(2)` (and at
//! `connect(2)`/`bind(2)` for sockets), so the broker connection and stdio are unaffected.

use std::fmt;
use std::os::fd::AsFd;
use std::path::PathBuf;

use ::landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, LandlockStatus,
    PathBeneath, PathFd, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, RulesetStatus, Scope,
};

use super::error::SandboxError;

/// The newest ABI whose rights `landlock` 0.4.8 can name; rights of newer kernels are not
/// handled (see [`LandlockReport::abi`]).
const NEWEST_KNOWN_ABI: ABI = ABI::V10;

/// What strict mode insists on: ABI 6 is the first with all three parts (filesystem,
/// network, scopes).
const REQUIRED_ABI: ABI = ABI::V6;

/// How much of the Landlock sandbox the kernel enforced.
///
/// ```no_run
/// use fdbroker_worker::sandbox::{Enforcement, Sandbox};
/// let report = Sandbox::new().best_effort().apply()?;
/// if report.landlock.status != Enforcement::Full {
///     eprintln!("Landlock only partly enforced: {report}");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Enforcement {
    /// Filesystem, network and scope restrictions are all in force, each handling every
    /// right the running kernel knows.
    Full,
    /// A Landlock domain is in force but the kernel lacks one or more of the parts.
    Partial,
    /// No Landlock domain: the kernel has no Landlock or it is disabled.
    NotEnforced,
}

/// What Landlock enforced, as reported by the running kernel.
///
/// ```no_run
/// let report = fdbroker_worker::sandbox::Sandbox::new().apply()?;
/// println!("Landlock ABI {}, network restricted: {}", report.landlock.abi, report.landlock.network);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LandlockReport {
    /// The kernel's Landlock ABI version; 0 if Landlock is unavailable. A value above 10
    /// means the kernel knows rights that `landlock` 0.4.8 cannot name, and those are not
    /// handled.
    pub abi: i32,
    /// Overall result.
    pub status: Enforcement,
    /// Filesystem access is restricted to the allowlist (ABI 1).
    pub filesystem: bool,
    /// TCP bind and connect are denied (ABI 4); UDP too from ABI 10.
    pub network: bool,
    /// Abstract Unix socket connections and signals to processes outside the sandbox are
    /// denied (ABI 6).
    pub scopes: bool,
}

impl LandlockReport {
    /// The report for a domain enforced with `effective` (the ABI the crate used) on a kernel
    /// reporting `kernel_abi`.
    pub(crate) fn enforced(effective: ABI, kernel_abi: i32) -> LandlockReport {
        let filesystem = effective >= ABI::V1;
        let network = effective >= ABI::V4;
        let scopes = effective >= ABI::V6;
        let status = if filesystem && network && scopes {
            Enforcement::Full
        } else if filesystem {
            Enforcement::Partial
        } else {
            Enforcement::NotEnforced
        };
        LandlockReport {
            abi: kernel_abi,
            status,
            filesystem,
            network,
            scopes,
        }
    }

    /// The report when no Landlock domain could be created.
    pub(crate) fn not_enforced(kernel_abi: i32) -> LandlockReport {
        LandlockReport {
            abi: kernel_abi,
            status: Enforcement::NotEnforced,
            filesystem: false,
            network: false,
            scopes: false,
        }
    }
}

impl fmt::Display for LandlockReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (self.filesystem, "fs"),
            (self.network, "net"),
            (self.scopes, "scope"),
        ];
        let list = |want: bool| {
            parts
                .iter()
                .filter(|(on, _)| *on == want)
                .map(|(_, name)| *name)
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self.status {
            Enforcement::NotEnforced if self.abi == 0 => {
                f.write_str("landlock not enforced (unavailable)")
            }
            Enforcement::NotEnforced => write!(f, "landlock abi {} not enforced", self.abi),
            Enforcement::Full => write!(f, "landlock abi {} full ({})", self.abi, list(true)),
            Enforcement::Partial => write!(
                f,
                "landlock abi {} partial ({}; missing {})",
                self.abi,
                list(true),
                list(false)
            ),
        }
    }
}

/// A path the sandbox may read (and maybe execute) beneath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Allowed {
    pub(crate) path: PathBuf,
    pub(crate) execute: bool,
    /// Also write, create, remove and rename beneath it (never execute).
    pub(crate) write: bool,
    /// Also make symbolic links beneath it (with `write`).
    pub(crate) symlinks: bool,
}

/// Builds the ruleset and adds one rule per allowlisted path.
///
/// Runs while still privileged: the paths are opened as `O_PATH` descriptors now, so a
/// directory only root can traverse can still be named (the kernel's permission checks still
/// apply to what the sandboxed process then opens beneath it). The descriptors are closed
/// once the rules hold them.
pub(crate) fn prepare(
    allowed: &[Allowed],
    best_effort: bool,
) -> Result<RulesetCreated, SandboxError> {
    let mut ruleset = Ruleset::default();
    if !best_effort {
        ruleset = ruleset
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(REQUIRED_ABI))
            .map_err(SandboxError::Landlock)?
            .handle_access(AccessNet::from_all(REQUIRED_ABI))
            .map_err(SandboxError::Landlock)?
            .scope(Scope::from_all(REQUIRED_ABI))
            .map_err(SandboxError::Landlock)?;
    }
    // Whatever newer rights the kernel also knows are handled too, in both modes.
    let mut created = ruleset
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(NEWEST_KNOWN_ABI))
        .map_err(SandboxError::Landlock)?
        .handle_access(AccessNet::from_all(NEWEST_KNOWN_ABI))
        .map_err(SandboxError::Landlock)?
        .scope(Scope::from_all(NEWEST_KNOWN_ABI))
        .map_err(SandboxError::Landlock)?
        .create()
        .map_err(SandboxError::Landlock)?;
    if !best_effort {
        created = created.set_compatibility(CompatLevel::HardRequirement);
    }
    for entry in allowed {
        let fd = PathFd::new(&entry.path).map_err(|e| path_error(&entry.path, e))?;
        let is_dir = nix::sys::stat::fstat(fd.as_fd())
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .map_err(|e| SandboxError::Path {
                path: entry.path.clone(),
                source: e.into(),
            })?;
        created = created
            .add_rule(PathBeneath::new(
                fd,
                grant(is_dir, entry.execute, entry.write)
                    | if entry.symlinks && entry.write && is_dir {
                        BitFlags::from(AccessFs::MakeSym)
                    } else {
                        BitFlags::empty()
                    },
            ))
            .map_err(SandboxError::Landlock)?;
    }
    Ok(created)
}

/// Read (and list, for a directory), plus execute for `allow_read_exec`. Listing is not
/// granted on a plain file because Landlock rejects directory rights on one.
fn grant(is_dir: bool, execute: bool, write: bool) -> BitFlags<AccessFs> {
    let mut access = BitFlags::from(AccessFs::ReadFile);
    if is_dir {
        access |= AccessFs::ReadDir;
    }
    if write {
        access |= AccessFs::WriteFile | AccessFs::Truncate;
        if is_dir {
            access |= AccessFs::MakeReg
                | AccessFs::MakeDir
                | AccessFs::RemoveFile
                | AccessFs::RemoveDir
                | AccessFs::Refer;
        }
    }
    if execute {
        access |= AccessFs::Execute;
    }
    access
}

#[cold]
fn path_error(path: &std::path::Path, e: ::landlock::PathFdError) -> SandboxError {
    let source = match e {
        ::landlock::PathFdError::OpenCall { source, .. } => source,
        other => std::io::Error::other(other),
    };
    SandboxError::Path {
        path: path.to_owned(),
        source,
    }
}

/// Enforces the ruleset on the calling thread (and, through inheritance, on every process it
/// starts afterwards).
///
/// Needs `no_new_privs` or `CAP_SYS_ADMIN`; the caller has set the former already. In strict
/// mode anything short of [`Enforcement::Full`] is an error (it cannot normally happen: the
/// hard requirements in [`prepare`] fail first).
pub(crate) fn enforce(
    created: RulesetCreated,
    best_effort: bool,
) -> Result<LandlockReport, SandboxError> {
    let status = created.restrict_self().map_err(SandboxError::Landlock)?;
    let report = report_from(&status);
    if !best_effort && report.status != Enforcement::Full {
        return Err(SandboxError::LandlockIncomplete(report));
    }
    Ok(report)
}

fn report_from(status: &RestrictionStatus) -> LandlockReport {
    match status.landlock {
        LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => {
            let abi = kernel_abi.unwrap_or_else(|| abi_number(effective_abi));
            if status.ruleset == RulesetStatus::NotEnforced {
                LandlockReport::not_enforced(abi)
            } else {
                LandlockReport::enforced(effective_abi, abi)
            }
        }
        LandlockStatus::NotEnabled | LandlockStatus::NotImplemented => {
            LandlockReport::not_enforced(0)
        }
    }
}

/// The version number of a known ABI. `ABI` is `non_exhaustive`, so it cannot be cast.
fn abi_number(abi: ABI) -> i32 {
    const ALL: [(ABI, i32); 10] = [
        (ABI::V10, 10),
        (ABI::V9, 9),
        (ABI::V8, 8),
        (ABI::V7, 7),
        (ABI::V6, 6),
        (ABI::V5, 5),
        (ABI::V4, 4),
        (ABI::V3, 3),
        (ABI::V2, 2),
        (ABI::V1, 1),
    ];
    ALL.iter()
        .find(|(known, _)| abi >= *known)
        .map_or(0, |(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_parts_follow_the_abi() {
        let r = LandlockReport::enforced(ABI::V7, 7);
        assert_eq!(r.status, Enforcement::Full);
        assert!(r.filesystem && r.network && r.scopes);
        assert_eq!(r.to_string(), "landlock abi 7 full (fs net scope)");

        let r = LandlockReport::enforced(ABI::V5, 5);
        assert_eq!(r.status, Enforcement::Partial);
        assert!(r.filesystem && r.network && !r.scopes);
        assert_eq!(
            r.to_string(),
            "landlock abi 5 partial (fs net; missing scope)"
        );

        let r = LandlockReport::enforced(ABI::V3, 3);
        assert_eq!(r.status, Enforcement::Partial);
        assert!(r.filesystem && !r.network && !r.scopes);

        let r = LandlockReport::enforced(ABI::V10, 12);
        assert_eq!((r.abi, r.status), (12, Enforcement::Full));

        let r = LandlockReport::not_enforced(0);
        assert_eq!(r.to_string(), "landlock not enforced (unavailable)");
    }

    #[test]
    fn abi_numbers() {
        assert_eq!(abi_number(ABI::Unsupported), 0);
        assert_eq!(abi_number(ABI::V1), 1);
        assert_eq!(abi_number(ABI::V7), 7);
        assert_eq!(abi_number(ABI::V10), 10);
    }

    #[test]
    fn grants() {
        assert_eq!(grant(false, false, false), AccessFs::ReadFile);
        assert_eq!(
            grant(true, false, false),
            AccessFs::ReadFile | AccessFs::ReadDir
        );
        assert_eq!(
            grant(true, true, false),
            AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute
        );
    }

    #[test]
    fn missing_path_is_reported() {
        let err = prepare(
            &[Allowed {
                path: "/nonexistent/fdbroker-sandbox".into(),
                execute: false,
                write: false,
                symlinks: false,
            }],
            true,
        )
        .err();
        assert!(
            matches!(&err, Some(SandboxError::Path { source, .. }) if source.kind() == std::io::ErrorKind::NotFound),
            "{err:?}"
        );
    }
}
