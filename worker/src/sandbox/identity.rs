//! Who the sandboxed process becomes: resolving the target user and group, switching every
//! id to them, and proving the switch cannot be undone.
//!
//! Resolution happens while preparing, before Landlock, because it reads `/etc/passwd` and
//! `/etc/group` (or asks NSS), which the finished sandbox can no longer open.

use std::fmt;

use nix::unistd::{self, Gid, Group, Uid, User};

use super::error::SandboxError;

/// A user or group, by name (looked up in the system databases) or by number.
///
/// ```
/// use fdbroker_worker::sandbox::Identity;
/// assert_eq!(Identity::from("nobody"), Identity::Name("nobody".into()));
/// assert_eq!(Identity::from(65534).to_string(), "65534");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A name to look up, such as `"nobody"`.
    Name(String),
    /// A numeric id, used as is.
    Id(u32),
}

impl From<&str> for Identity {
    fn from(name: &str) -> Identity {
        Identity::Name(name.to_owned())
    }
}

impl From<String> for Identity {
    fn from(name: String) -> Identity {
        Identity::Name(name)
    }
}

impl From<u32> for Identity {
    fn from(id: u32) -> Identity {
        Identity::Id(id)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Name(name) => f.write_str(name),
            Identity::Id(id) => write!(f, "{id}"),
        }
    }
}

/// The numeric ids the process will run as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ids {
    pub(crate) uid: Uid,
    pub(crate) gid: Gid,
    /// Keep the supplementary groups the process holds ([`super::Sandbox::keep_groups`])
    /// rather than drop them all.
    pub(crate) keep_groups: bool,
}

/// Resolves `user` and `group` (default: the user's primary group) to numeric ids.
///
/// Refuses uid 0 and gid 0 (the sandbox exists to shed them) and the id `u32::MAX`, which
/// `setresuid(2)`/`setresgid(2)` read as "leave this id unchanged".
pub(crate) fn resolve(
    user: &Identity,
    group: Option<&Identity>,
    keep_groups: bool,
) -> Result<Ids, SandboxError> {
    let (uid, primary_gid) = match user {
        Identity::Name(name) => {
            let entry = User::from_name(name)
                .map_err(|source| lookup_error("user", name, source))?
                .ok_or_else(|| SandboxError::UnknownUser(name.clone()))?;
            (entry.uid, Some(entry.gid))
        }
        Identity::Id(id) => {
            let uid = Uid::from_raw(*id);
            let entry = User::from_uid(uid)
                .map_err(|source| lookup_error("user", &id.to_string(), source))?;
            (uid, entry.map(|u| u.gid))
        }
    };
    let gid = match group {
        Some(Identity::Name(name)) => {
            Group::from_name(name)
                .map_err(|source| lookup_error("group", name, source))?
                .ok_or_else(|| SandboxError::UnknownGroup(name.clone()))?
                .gid
        }
        Some(Identity::Id(id)) => Gid::from_raw(*id),
        None => primary_gid.ok_or(SandboxError::NoPrimaryGroup(uid.as_raw()))?,
    };
    refuse_privileged("uid", uid.as_raw())?;
    refuse_privileged("gid", gid.as_raw())?;
    Ok(Ids {
        uid,
        gid,
        keep_groups,
    })
}

fn refuse_privileged(what: &'static str, id: u32) -> Result<(), SandboxError> {
    if id == 0 || id == u32::MAX {
        return Err(SandboxError::PrivilegedTarget { what, id });
    }
    Ok(())
}

/// Kept supplementary groups may not include gid 0 (or -1).
fn refuse_privileged_groups(groups: &[Gid]) -> Result<(), SandboxError> {
    for g in groups {
        refuse_privileged("supplementary gid", g.as_raw())?;
    }
    Ok(())
}

#[cold]
fn lookup_error(what: &'static str, name: &str, source: nix::Error) -> SandboxError {
    SandboxError::Lookup {
        what,
        name: name.to_owned(),
        source,
    }
}

/// Drops the supplementary groups, then sets the real, effective and saved gid, then the
/// real, effective and saved uid.
///
/// The order matters: changing groups needs `CAP_SETGID`, which the uid change takes away.
/// Changing all three uids (not just the effective one) leaves no saved root id to switch
/// back to, and makes the kernel clear the permitted and effective capability sets.
///
/// A step whose result already holds is skipped, so a worker that a service manager started
/// as the target user without privileges can still apply the sandbox.
pub(crate) fn switch(ids: Ids) -> Result<(), SandboxError> {
    let groups = unistd::getgroups().map_err(|source| credentials_error("getgroups()", source))?;
    if ids.keep_groups {
        refuse_privileged_groups(&groups)?;
    } else if !groups.is_empty() {
        unistd::setgroups(&[]).map_err(|source| {
            // The usual cause: a worker started as its own user with the socket's group.
            let hint = if source == nix::Error::EPERM {
                format!(
                    " (this process holds {} supplementary groups and lacks CAP_SETGID to \
                     drop them; a worker started as its own user keeps them with \
                     Sandbox::keep_groups())",
                    groups.len()
                )
            } else {
                String::new()
            };
            credentials_error(format!("setgroups([]){hint}"), source)
        })?;
    }
    let gids = unistd::getresgid().map_err(|source| credentials_error("getresgid()", source))?;
    if [gids.real, gids.effective, gids.saved] != [ids.gid; 3] {
        unistd::setresgid(ids.gid, ids.gid, ids.gid)
            .map_err(|source| credentials_error(format!("setresgid({})", ids.gid), source))?;
    }
    let uids = unistd::getresuid().map_err(|source| credentials_error("getresuid()", source))?;
    if [uids.real, uids.effective, uids.saved] != [ids.uid; 3] {
        unistd::setresuid(ids.uid, ids.uid, ids.uid)
            .map_err(|source| credentials_error(format!("setresuid({})", ids.uid), source))?;
    }
    Ok(())
}

#[cold]
fn credentials_error(op: impl Into<String>, source: nix::Error) -> SandboxError {
    SandboxError::Credentials {
        op: op.into(),
        source,
    }
}

/// Reads the ids back from the kernel and checks that root cannot be regained.
///
/// Trusting the return codes of the set*id calls is not enough: a parent may have set
/// securebits or a seccomp filter that turns them into silent no-ops.
pub(crate) fn verify(ids: Ids) -> Result<(), SandboxError> {
    let uids = unistd::getresuid().map_err(|source| credentials_error("getresuid()", source))?;
    if [uids.real, uids.effective, uids.saved] != [ids.uid; 3] {
        return Err(SandboxError::IdentityMismatch(format!(
            "uids are {}/{}/{}, wanted {}",
            uids.real, uids.effective, uids.saved, ids.uid
        )));
    }
    let gids = unistd::getresgid().map_err(|source| credentials_error("getresgid()", source))?;
    if [gids.real, gids.effective, gids.saved] != [ids.gid; 3] {
        return Err(SandboxError::IdentityMismatch(format!(
            "gids are {}/{}/{}, wanted {}",
            gids.real, gids.effective, gids.saved, ids.gid
        )));
    }
    let groups = unistd::getgroups().map_err(|source| credentials_error("getgroups()", source))?;
    if ids.keep_groups {
        refuse_privileged_groups(&groups)?;
    } else if !groups.is_empty() {
        return Err(SandboxError::IdentityMismatch(format!(
            "{} supplementary groups remain",
            groups.len()
        )));
    }
    if unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(SandboxError::RegainedPrivilege("setuid(0)"));
    }
    if unistd::setgid(Gid::from_raw(0)).is_ok() {
        return Err(SandboxError::RegainedPrivilege("setgid(0)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nobody_resolves_to_its_primary_group() {
        let Some(nobody) = User::from_name("nobody").ok().flatten() else {
            eprintln!("no user nobody on this system; skipping");
            return;
        };
        let ids = resolve(&Identity::from("nobody"), None, false).expect("resolve nobody");
        assert_eq!(ids.uid, nobody.uid);
        assert_eq!(ids.gid, nobody.gid);

        let ids =
            resolve(&Identity::from(nobody.uid.as_raw()), None, false).expect("resolve by id");
        assert_eq!(ids.gid, nobody.gid);

        let ids =
            resolve(&Identity::from("nobody"), Some(&Identity::Id(4242)), false).expect("group id");
        assert_eq!(ids.gid.as_raw(), 4242);
    }

    #[test]
    fn refuses_root_and_minus_one() {
        assert!(matches!(
            resolve(&Identity::from("root"), None, false),
            Err(SandboxError::PrivilegedTarget { what: "uid", id: 0 })
        ));
        assert!(matches!(
            resolve(&Identity::Id(4242), Some(&Identity::Id(0)), false),
            Err(SandboxError::PrivilegedTarget { what: "gid", id: 0 })
        ));
        assert!(matches!(
            resolve(&Identity::Id(u32::MAX), Some(&Identity::Id(4242)), false),
            Err(SandboxError::PrivilegedTarget { what: "uid", .. })
        ));
    }

    #[test]
    fn unknown_names_and_groupless_ids_are_errors() {
        assert!(matches!(
            resolve(&Identity::from("no-such-user-fdbroker"), None, false),
            Err(SandboxError::UnknownUser(_))
        ));
        assert!(matches!(
            resolve(
                &Identity::Id(4242),
                Some(&Identity::from("no-such-group-fdbroker")),
                false
            ),
            Err(SandboxError::UnknownGroup(_))
        ));
        // 4242 has no passwd entry on a normal system, so there is no primary group.
        if User::from_uid(Uid::from_raw(4242)).ok().flatten().is_none() {
            assert!(matches!(
                resolve(&Identity::Id(4242), None, false),
                Err(SandboxError::NoPrimaryGroup(4242))
            ));
        }
    }
}
