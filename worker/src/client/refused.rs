//! Why the socket's permissions kept this process out, in words an operator can act on.
//!
//! `connect(2)` on a Unix socket fails with `EACCES` when the caller may not write the
//! socket file or search a directory above it; the errno alone does not say which, nor
//! who would be let in. The broker's socket is usually `0660` in a `0750` directory of
//! the service's group (see the shipped units), so the useful answer is nearly always
//! "join group G". This reads only what `stat(2)` shows the caller; it changes nothing.

use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Group, Uid, User, getegid, geteuid, getgroups};
use std::path::Path;

/// A sentence naming the first file on the way to `socket` that keeps this process out
/// and who it lets in (the group to join, or its owner alone); `None` when that cannot
/// be found out (every step looks open to us: an LSM or a user namespace said no).
pub(super) fn who_may_connect(socket: &Path) -> Option<String> {
    let me = Caller::this_process();
    if me.uid.is_root() {
        return None;
    }
    let mut steps: Vec<&Path> = socket.ancestors().skip(1).collect();
    steps.reverse();
    // The directories must be searchable, the socket itself writable.
    let checks = steps
        .into_iter()
        .map(|dir| (dir, Mode::S_IXUSR))
        .chain(std::iter::once((socket, Mode::S_IWUSR)));
    for (path, want) in checks {
        // A step we cannot even stat is below one that refused us, which is reported.
        let st = nix::sys::stat::stat(path).ok()?;
        let owner = Uid::from_raw(st.st_uid);
        let group = Gid::from_raw(st.st_gid);
        let perm = st.st_mode & 0o777;
        // The bits that apply to us: owner's, else group's, else other's.
        let shift = if owner == me.uid {
            6
        } else if me.in_group(group) {
            3
        } else {
            0
        };
        let want = want.bits() >> 6;
        if (perm >> shift) & want == want {
            continue;
        }
        let kind = if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR
        {
            "directory"
        } else {
            "socket"
        };
        let owner_name = User::from_uid(owner)
            .ok()
            .flatten()
            .map_or_else(|| owner.to_string(), |u| u.name);
        let group_name = Group::from_gid(group)
            .ok()
            .flatten()
            .map_or_else(|| group.to_string(), |g| g.name);
        let head = format!(
            "the {kind} {} (mode {perm:04o}, owner {owner_name}, group {group_name}) does not let uid {} in",
            path.display(),
            me.uid
        );
        let group_may = (perm >> 3) & want == want;
        return Some(if group_may && !me.in_group(group) {
            format!(
                "{head}; members of group {group_name} may connect: run the client as a member \
                 (e.g. `usermod -aG {group_name} USER`, then a new login session, or \
                 SupplementaryGroups={group_name} in its unit)"
            )
        } else {
            format!("{head}; only its owner {owner_name} may connect")
        });
    }
    None
}

/// Who this process is, for the permission check.
struct Caller {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

impl Caller {
    fn this_process() -> Caller {
        Caller {
            uid: geteuid(),
            gid: getegid(),
            groups: getgroups().unwrap_or_default(),
        }
    }

    fn in_group(&self, g: Gid) -> bool {
        self.gid == g || self.groups.contains(&g)
    }
}
