//! One `[[client]]`: a named set of peers and the rules that apply to them.

use crate::{Location, RuleId};

/// Peers are matched by uid first, then by primary gid; names in the file are
/// resolved to ids at load so a later change to `/etc/passwd` cannot silently move a
/// peer to another client while the broker runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub name: String,
    pub users: Vec<u32>,
    pub groups: Vec<u32>,
    /// This client's rules, allow and deny, in file order.
    pub rules: Vec<RuleId>,
    /// Learn mode (`learn_scope`): its lines are marked `mode="learn"`.
    pub learning: bool,
    /// Where the client's `name` is in the file.
    pub location: Location,
}
