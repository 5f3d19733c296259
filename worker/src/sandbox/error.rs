//! Why the sandbox could not be applied.
//!
//! Every step of [`Sandbox::apply`](super::Sandbox::apply) either succeeds and is verified or
//! stops with one of these. The variants say which step failed so that an operator can fix the
//! cause (a missing user, a kernel without Landlock, a service manager that already removed
//! `CAP_SETPCAP`) instead of guessing.

use std::io;
use std::path::PathBuf;

use super::landlock::LandlockReport;

/// A step of the sandbox that failed, or a precondition that did not hold.
///
/// Converts into [`std::io::Error`] (the variant stays reachable through
/// `err.get_ref().and_then(|e| e.downcast_ref::<SandboxError>())`).
///
/// An error from [`PreparedSandbox::apply`](super::PreparedSandbox::apply) may leave the
/// process partly confined (for example with its ids changed but no seccomp filter); treat it
/// as fatal and exit rather than go on parsing untrusted data.
///
/// ```no_run
/// use fdbroker_worker::sandbox::{Sandbox, SandboxError};
/// match Sandbox::new().apply() {
///     Ok(report) => eprintln!("{report}"),
///     Err(SandboxError::Threads(n)) => panic!("apply before starting threads ({n} running)"),
///     Err(e) => panic!("cannot confine: {e}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The process has more than one thread. Identity changes, `no_new_privs`, Landlock and
    /// seccomp act on the calling thread only, so the other threads would keep every
    /// privilege. Apply the sandbox before starting threads (or in a freshly forked child).
    #[error(
        "the sandbox must be applied from a single-threaded process, but this one has {0} threads"
    )]
    Threads(usize),

    /// `/proc/self/task` could not be read, so the thread count is unknown; refusing rather
    /// than guessing.
    #[error("cannot count this process's threads in /proc/self/task: {0}")]
    ThreadCount(#[source] io::Error),

    /// The user name has no passwd entry.
    #[error("unknown user {0:?}")]
    UnknownUser(String),

    /// The group name has no group entry.
    #[error("unknown group {0:?}")]
    UnknownGroup(String),

    /// A numeric user has no passwd entry, so it has no primary group to default to.
    #[error(
        "user id {0} has no passwd entry and so no primary group; name one with Sandbox::group"
    )]
    NoPrimaryGroup(u32),

    /// The user or group database could not be read.
    #[error("cannot look up {what} {name:?}: {source}")]
    Lookup {
        /// `"user"` or `"group"`.
        what: &'static str,
        /// The name or number asked for.
        name: String,
        /// The error from the name service.
        #[source]
        source: nix::Error,
    },

    /// The target identity would keep privilege: uid or gid 0, or the id `-1`, which the
    /// set*id system calls read as "leave unchanged".
    #[error("refusing to sandbox as {what} {id}: the target must be an unprivileged id")]
    PrivilegedTarget {
        /// `"uid"` or `"gid"`.
        what: &'static str,
        /// The id that was refused.
        id: u32,
    },

    /// An allowlisted path could not be opened (it must exist when the sandbox is prepared).
    #[error("cannot open allowlisted path {path:?}: {source}")]
    Path {
        /// The path given to `allow_read` or `allow_read_exec`.
        path: PathBuf,
        /// Why it could not be opened.
        #[source]
        source: io::Error,
    },

    /// The Landlock ruleset could not be built or enforced. In strict mode this is also how
    /// a kernel without the required Landlock features is reported.
    #[error("cannot build or enforce the Landlock ruleset: {0}")]
    Landlock(#[source] ::landlock::RulesetError),

    /// Strict mode was asked for but Landlock enforced less than everything.
    #[error("Landlock is not fully enforced ({0}) and best_effort() was not requested")]
    LandlockIncomplete(LandlockReport),

    /// Dropping a capability set failed.
    #[error("cannot {op}: {source}")]
    Capabilities {
        /// What was being done, for example `"clear the bounding set"`.
        op: &'static str,
        /// The error from the capability system calls.
        #[source]
        source: caps::errors::CapsError,
    },

    /// A capability set was still not empty after it was cleared.
    #[error("capability set {set} is not empty after dropping it: {mask:#x}")]
    CapabilitiesRemain {
        /// The `/proc/self/status` name of the set (`CapEff`, `CapBnd`, ...).
        set: &'static str,
        /// The bits still set.
        mask: u64,
    },

    /// `setgroups`, `setresgid` or `setresuid` failed.
    #[error("cannot {op}: {source}")]
    Credentials {
        /// What was being done, for example `"setresuid(65534)"`.
        op: String,
        /// The kernel's error.
        #[source]
        source: nix::Error,
    },

    /// The ids read back after the change are not the requested ones.
    #[error("identity change did not take effect: {0}")]
    IdentityMismatch(String),

    /// `setuid(0)` or `setgid(0)` succeeded after privileges were dropped.
    #[error("{0} succeeded after dropping privileges")]
    RegainedPrivilege(&'static str),

    /// `PR_SET_NO_NEW_PRIVS` could not be set or did not stick.
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(#[source] nix::Error),

    /// The seccomp filter could not be compiled.
    #[error("cannot build the seccomp filter: {0}")]
    SeccompBuild(#[source] seccompiler::BackendError),

    /// The seccomp filter could not be installed.
    #[error("cannot install the seccomp filter: {0}")]
    SeccompInstall(#[source] seccompiler::Error),

    /// There is no seccomp syscall table for this architecture.
    #[error("no seccomp filter is defined for the {0} architecture")]
    UnsupportedArch(&'static str),

    /// A file under `/proc` needed to verify the result could not be read or parsed.
    #[error("cannot read {path}: {source}")]
    Proc {
        /// The file.
        path: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl SandboxError {
    /// The [`io::ErrorKind`] that best describes this error to a caller that only sees an
    /// `io::Error`.
    ///
    /// ```
    /// use fdbroker_worker::sandbox::SandboxError;
    /// assert_eq!(SandboxError::UnknownUser("x".into()).kind(), std::io::ErrorKind::NotFound);
    /// ```
    pub fn kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match self {
            SandboxError::Threads(_)
            | SandboxError::NoPrimaryGroup(_)
            | SandboxError::PrivilegedTarget { .. } => K::InvalidInput,
            SandboxError::UnknownUser(_) | SandboxError::UnknownGroup(_) => K::NotFound,
            SandboxError::ThreadCount(e)
            | SandboxError::Path { source: e, .. }
            | SandboxError::Proc { source: e, .. } => e.kind(),
            SandboxError::Lookup { source, .. } | SandboxError::NoNewPrivs(source) => {
                io::Error::from(*source).kind()
            }
            SandboxError::Landlock(e) => landlock_kind(e),
            SandboxError::LandlockIncomplete(_) | SandboxError::UnsupportedArch(_) => {
                K::Unsupported
            }
            SandboxError::Capabilities { .. }
            | SandboxError::CapabilitiesRemain { .. }
            | SandboxError::Credentials { .. }
            | SandboxError::IdentityMismatch(_)
            | SandboxError::RegainedPrivilege(_) => K::PermissionDenied,
            SandboxError::SeccompBuild(_) => K::InvalidInput,
            SandboxError::SeccompInstall(seccompiler::Error::Seccomp(e))
            | SandboxError::SeccompInstall(seccompiler::Error::Prctl(e)) => e.kind(),
            SandboxError::SeccompInstall(_) => K::Other,
        }
    }
}

/// Handling an access right or scope fails only when strict mode asks for a feature the
/// running kernel lacks, so those errors are `Unsupported`; anything else is a system call
/// failing at run time.
fn landlock_kind(e: &::landlock::RulesetError) -> io::ErrorKind {
    use ::landlock::RulesetError as R;
    match e {
        R::HandleAccesses(_) | R::Scope(_) | R::CreateRuleset(_) | R::RestrictSelfFlags(_) => {
            io::ErrorKind::Unsupported
        }
        _ => io::ErrorKind::Other,
    }
}

impl From<SandboxError> for io::Error {
    fn from(e: SandboxError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_io_error_with_kind_and_keeps_the_variant() {
        let e: io::Error = SandboxError::Threads(3).into();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("3 threads"), "{e}");
        let inner = e
            .get_ref()
            .and_then(|e| e.downcast_ref::<SandboxError>())
            .map(|e| matches!(e, SandboxError::Threads(3)));
        assert_eq!(inner, Some(true));

        let e: io::Error = SandboxError::UnknownUser("nope".into()).into();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e: io::Error = SandboxError::RegainedPrivilege("setuid(0)").into();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        let e: io::Error = SandboxError::Path {
            path: "/nonexistent".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        }
        .into();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(
            e.to_string()
                .ends_with(": No such file or directory (os error 2)"),
            "{e}"
        );
    }

    #[test]
    fn system_call_errors_name_their_errno() {
        let e = SandboxError::Credentials {
            op: "setgroups([])".into(),
            source: nix::Error::EPERM,
        };
        assert_eq!(
            e.to_string(),
            "cannot setgroups([]): EPERM: Operation not permitted"
        );
        let e = SandboxError::NoNewPrivs(nix::Error::EINVAL);
        assert!(e.to_string().contains("EINVAL"), "{e}");
        let e = SandboxError::Lookup {
            what: "user",
            name: "x".into(),
            source: nix::Error::EIO,
        };
        assert!(e.to_string().contains("EIO"), "{e}");
    }
}
