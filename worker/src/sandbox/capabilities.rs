//! Emptying every capability set: bounding, ambient, effective, permitted, inheritable.
//!
//! The bounding set goes first, while the process is still privileged: removing a capability
//! from it (`PR_CAPBSET_DROP`) needs `CAP_SETPCAP` in the effective set, and the switch to an
//! unprivileged uid clears the effective set. Done afterwards it would fail, and a non-empty
//! bounding set is what lets a later `execve` of a file with capabilities hand them back.
//!
//! The result is read back from `/proc/self/status` rather than from the `caps` crate, whose
//! list of capabilities stops at the ones it knows: a capability added by a newer kernel
//! shows up there as a set bit and fails verification instead of being missed.

use caps::CapSet;

use super::error::SandboxError;

const STATUS: &str = "/proc/self/status";

/// Clears the ambient set and the bounding set. Must run before the id change (see the module
/// documentation).
///
/// With `best_effort`, a process that lacks `CAP_SETPCAP` (one started without privileges)
/// keeps its bounding set, which [`verify`] then reports; `no_new_privs` still stops it from
/// gaining anything through `execve`. Without `best_effort` that is an error.
pub(crate) fn drop_bounding_and_ambient(best_effort: bool) -> Result<(), SandboxError> {
    caps::clear(None, CapSet::Ambient).map_err(|source| SandboxError::Capabilities {
        op: "clear the ambient set",
        source,
    })?;
    match caps::clear(None, CapSet::Bounding) {
        Ok(()) => Ok(()),
        Err(_) if best_effort => Ok(()),
        Err(source) => Err(SandboxError::Capabilities {
            op: "clear the bounding set (needs CAP_SETPCAP: start the worker as root, or with \
                 an empty bounding set such as systemd's CapabilityBoundingSet=, or use best_effort)",
            source,
        }),
    }
}

/// Clears the effective, permitted, inheritable and ambient sets.
///
/// Changing every uid away from 0 already clears effective and permitted, unless a parent set
/// `SECBIT_KEEP_CAPS` or `SECBIT_NO_SETUID_FIXUP`; inheritable is never cleared by it. Lowering
/// a set needs no privilege, so this runs after the id change.
pub(crate) fn clear_remaining() -> Result<(), SandboxError> {
    for (set, op) in [
        (CapSet::Effective, "clear the effective set"),
        (CapSet::Permitted, "clear the permitted set"),
        (CapSet::Inheritable, "clear the inheritable set"),
        (CapSet::Ambient, "clear the ambient set"),
    ] {
        caps::clear(None, set).map_err(|source| SandboxError::Capabilities { op, source })?;
    }
    Ok(())
}

/// What [`verify`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verified {
    /// Effective, permitted, inheritable and ambient are all empty.
    pub(crate) sets_cleared: bool,
    /// The bounding set is empty.
    pub(crate) bounding_cleared: bool,
}

/// Reads every capability set from `/proc/self/status` and checks that it is empty.
///
/// A non-empty effective, permitted, inheritable or ambient set is always an error. A
/// non-empty bounding set is an error unless `best_effort` (see
/// [`drop_bounding_and_ambient`]).
pub(crate) fn verify(best_effort: bool) -> Result<Verified, SandboxError> {
    let status = std::fs::read_to_string(STATUS).map_err(|source| SandboxError::Proc {
        path: STATUS,
        source,
    })?;
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        let mask = cap_mask(&status, set)?;
        if mask != 0 {
            return Err(SandboxError::CapabilitiesRemain { set, mask });
        }
    }
    let bounding = cap_mask(&status, "CapBnd")?;
    if bounding != 0 && !best_effort {
        return Err(SandboxError::CapabilitiesRemain {
            set: "CapBnd",
            mask: bounding,
        });
    }
    Ok(Verified {
        sets_cleared: true,
        bounding_cleared: bounding == 0,
    })
}

/// Parses the hexadecimal mask of one `CapXxx:` line of a `/proc/<pid>/status` text.
pub(crate) fn cap_mask(status: &str, set: &'static str) -> Result<u64, SandboxError> {
    let value = status
        .lines()
        .find_map(|line| {
            line.strip_prefix(set)
                .and_then(|rest| rest.strip_prefix(':'))
        })
        .ok_or_else(|| malformed(set))?;
    u64::from_str_radix(value.trim(), 16).map_err(|_| malformed(set))
}

#[cold]
fn malformed(set: &'static str) -> SandboxError {
    SandboxError::Proc {
        path: STATUS,
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no readable {set} line"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_masks() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapBnd:\t0000000000000000\n";
        assert_eq!(cap_mask(status, "CapInh").ok(), Some(0));
        assert_eq!(cap_mask(status, "CapPrm").ok(), Some(0x1ff_ffff_ffff));
        assert!(matches!(
            cap_mask(status, "CapAmb"),
            Err(SandboxError::Proc { .. })
        ));
        assert!(cap_mask("CapEff:\tzz\n", "CapEff").is_err());
    }

    #[test]
    fn reads_this_process() {
        let status = std::fs::read_to_string(STATUS).expect("read /proc/self/status");
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            cap_mask(&status, set).expect(set);
        }
    }
}
