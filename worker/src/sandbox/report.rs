//! What the sandbox verified, for a log line at startup.

use std::fmt;

use super::landlock::{Enforcement, LandlockReport};

/// The state of the process after [`Sandbox::apply`](super::Sandbox::apply), as read back
/// from the kernel (not as requested).
///
/// ```no_run
/// let report = fdbroker_worker::sandbox::Sandbox::new().apply()?;
/// assert_eq!(report.uid, 65534);
/// eprintln!("{report}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Real, effective and saved uid.
    pub uid: u32,
    /// Real, effective and saved gid (there are no supplementary groups).
    pub gid: u32,
    /// The effective, permitted, inheritable and ambient capability sets are empty.
    pub capabilities_cleared: bool,
    /// The bounding set is empty. Only `best_effort` can leave it `false`, when the process
    /// lacked `CAP_SETPCAP`.
    pub bounding_set_cleared: bool,
    /// `PR_SET_NO_NEW_PRIVS` is set: `execve` can never grant privileges again.
    pub no_new_privs: bool,
    /// What Landlock enforced.
    pub landlock: LandlockReport,
    /// The seccomp filter is installed.
    pub seccomp: bool,
}

impl Report {
    /// Every part of the sandbox is in force; what strict mode guarantees.
    ///
    /// ```no_run
    /// let report = fdbroker_worker::sandbox::Sandbox::new().best_effort().apply()?;
    /// if !report.is_complete() {
    ///     eprintln!("running partly confined: {report}");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_complete(&self) -> bool {
        self.capabilities_cleared
            && self.bounding_set_cleared
            && self.no_new_privs
            && self.landlock.status == Enforcement::Full
            && self.seccomp
    }
}

impl fmt::Display for Report {
    /// One line, for example
    /// `sandbox: uid 65534 gid 65534, capabilities cleared, bounding set cleared,
    /// no_new_privs, landlock abi 7 full (fs net scope), seccomp on`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: bool, yes: &'static str, no: &'static str| if b { yes } else { no };
        write!(
            f,
            "sandbox{}: uid {} gid {}, {}, {}, {}, {}, {}",
            on(self.is_complete(), "", " (INCOMPLETE)"),
            self.uid,
            self.gid,
            on(
                self.capabilities_cleared,
                "capabilities cleared",
                "CAPABILITIES KEPT"
            ),
            on(
                self.bounding_set_cleared,
                "bounding set cleared",
                "BOUNDING SET KEPT"
            ),
            on(self.no_new_privs, "no_new_privs", "NO no_new_privs"),
            self.landlock,
            on(self.seccomp, "seccomp on", "SECCOMP OFF"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_and_incomplete_is_loud() {
        let mut report = Report {
            uid: 65534,
            gid: 65534,
            capabilities_cleared: true,
            bounding_set_cleared: true,
            no_new_privs: true,
            landlock: LandlockReport::enforced(::landlock::ABI::V7, 7),
            seccomp: true,
        };
        assert!(report.is_complete());
        assert_eq!(
            report.to_string(),
            "sandbox: uid 65534 gid 65534, capabilities cleared, bounding set cleared, \
             no_new_privs, landlock abi 7 full (fs net scope), seccomp on"
        );
        report.landlock = LandlockReport::not_enforced(0);
        report.bounding_set_cleared = false;
        assert!(!report.is_complete());
        let line = report.to_string();
        assert!(line.starts_with("sandbox (INCOMPLETE):"), "{line}");
        assert!(line.contains("BOUNDING SET KEPT"), "{line}");
        assert!(
            line.contains("landlock not enforced (unavailable)"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}
