//! What a directory descriptor would show: everything beneath it.
//!
//! A descriptor for a directory is a way to every path beneath it: `getdents(2)` lists
//! its names, and `fstatat(2)`, `readlinkat(2)` and `statx(2)` through it describe any
//! file below, whatever the directories above it would have refused, and Landlock does
//! not cover any of them. So the broker passes one only where the policy lets the
//! worker see the whole subtree ([`Policy::hidden_beneath`] is `None`), and answers a
//! listing itself elsewhere, leaving out each entry the worker may not see
//! ([`Policy::visible`]).

use crate::{Access, ClientId, Decision, Grant, Policy, RuleId};

/// Why a descriptor for a directory would show the worker something the policy does
/// not let it see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum HiddenBeneath {
    /// A deny rule could match something beneath the directory (a carve-out).
    #[error("a deny rule lies beneath this directory")]
    DenyBeneath(RuleId),
    /// No single allow rule covers the whole subtree (the directory is granted by an
    /// exact rule or a glob), so some path beneath it is outside the policy.
    #[error("no allow rule covers everything beneath this directory")]
    NotCovered,
}

impl Policy {
    /// Would a descriptor for the directory `path` show `client` anything the policy
    /// denies it? `None` when every path beneath is matched by an allow rule of the
    /// client and no deny rule of the client could match `path` or anything beneath
    /// it. Decided lexically, like [`Policy::decide`]; an invalid path or an unknown
    /// client is never `None`.
    pub fn hidden_beneath(&self, client: ClientId, path: &[u8]) -> Option<HiddenBeneath> {
        if crate::path::check(path).is_err() {
            return Some(HiddenBeneath::NotCovered);
        }
        let Some(index) = self.indexes.get(client.0) else {
            return Some(HiddenBeneath::NotCovered);
        };
        let (deny, covered) = index.beneath(path, |id| self.rules.get(id.0).map(|r| r.effect));
        match (deny, covered) {
            (Some(rule), _) => Some(HiddenBeneath::DenyBeneath(rule)),
            (None, false) => Some(HiddenBeneath::NotCovered),
            (None, true) => None,
        }
    }

    /// The grant under which a stat of `path` is answered although a deny rule refuses
    /// it: `path` is a carve-out of a `listed` deny rule whose name shows in its parent's
    /// listing (the parent may be listed), and the allow rule the deny overrides grants
    /// `read` or `directory` there. As the kernel shows a directory that exists and
    /// cannot be opened: its metadata, never its contents, and nothing beneath it.
    pub fn listed_grant<'p>(&self, client: ClientId, path: &'p [u8]) -> Option<Grant<'p>> {
        let Decision::Deny(crate::Denial::DeniedBy(id)) = self.decide(client, path, Access::Read)
        else {
            return None;
        };
        if !self.rule(id).listed || self.unlisted_deny_matches(client, path) {
            return None;
        }
        let parent = match path.iter().rposition(|&b| b == b'/')? {
            0 => &path[..1],
            cut => &path[..cut],
        };
        if parent == path
            || !matches!(
                self.decide(client, parent, Access::Directory),
                Decision::Allow(_)
            )
        {
            return None;
        }
        [Access::Read, Access::Directory]
            .into_iter()
            .find_map(
                |access| match self.decide_with(client, path, access, false) {
                    // Never under a learning scope: what a learning run is answered
                    // under it learns, and an allow for the carve-out cannot load.
                    Decision::Allow(grant) if !self.rule(grant.rule).learning => Some(grant),
                    Decision::Allow(_) | Decision::Deny(_) => None,
                },
            )
    }

    /// May `client` see that `path` exists: does the policy grant it some access
    /// there, or is it denied by a deny rule that is `listed`? A listing the broker
    /// answers shows exactly these entries, so a name outside the policy or under a
    /// deny rule is left out, as if it did not exist, unless the operator listed it.
    pub fn visible(&self, client: ClientId, path: &[u8]) -> bool {
        Access::ALL
            .into_iter()
            .any(|access| match self.decide(client, path, access) {
                Decision::Allow(_) => true,
                Decision::Deny(crate::Denial::DeniedBy(id)) => {
                    self.rule(id).listed && !self.unlisted_deny_matches(client, path)
                }
                Decision::Deny(_) => false,
            })
    }
}
