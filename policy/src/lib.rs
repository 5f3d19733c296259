//! fdbroker policy files: parse, validate, decide, explain.
//!
//! A policy says which peers (by uid or primary gid) are which *client*, and which
//! paths each client may open with which access. It is checked completely at load:
//! an operator mistake is an error with `FILE:LINE:COL`, never a surprise in
//! production (see the design guide). After load, [`Policy::decide`] answers one
//! request without allocating and in time independent of the number of rules, and
//! [`Policy::explain`] tells a human why.
//!
//! Decisions are lexical: they tell the broker which held root directory to open a
//! path beneath and how, and the broker's `openat2(RESOLVE_BENEATH ...)` makes the
//! filesystem agree with the string.

// Policy files are parsed here and decide what a hostile worker gets: no `unsafe`.
#![forbid(unsafe_code)]

mod access;
pub mod audit_log;
mod beneath;
mod client;
mod decide;
pub mod diff;
mod error;
mod explain;
mod file;
mod index;
pub mod limits;
mod load;
mod location;
mod path;
mod pattern;
pub mod replay;
mod rule;
mod settings;
pub mod suggest;
pub mod who;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use access::AccessSet;
pub use beneath::HiddenBeneath;
pub use client::Client;
pub use decide::{Decision, Denial, Grant};
pub use error::{IdKind, LoadError, LoadErrorKind, ModeError};
pub use explain::{ClientMatch, Explanation, MatchedBy, Verdict};
pub use fdbroker_shared::wire::Access;
pub use limits::Limits;
pub use load::{MAX_POLICY_BYTES, MAX_RULES};
pub use location::Location;
pub use path::{MAX_PATH_LEN, PathError, check as check_path};
pub use pattern::{PatternError, PatternKind};
pub use rule::{Effect, Rule, RuleOptions, Symlinks};
pub use settings::{AuditFailure, BrokerSettings, SandboxSettings, UidRange, UserSpec};

/// A client (one `[[client]]` table), by position in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientId(pub usize);

/// A rule, by position among all rules in the file (allow and deny, in file order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleId(pub usize);

/// A directory the broker holds open, by position in [`Policy::roots`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RootId(pub usize);

/// A loaded, validated policy. Immutable: reloading builds a new one.
#[derive(Debug)]
pub struct Policy {
    origin: PathBuf,
    broker: BrokerSettings,
    sandbox: SandboxSettings,
    clients: Vec<Client>,
    rules: Vec<Rule>,
    roots: Vec<PathBuf>,
    /// One rule trie per client, by `ClientId`.
    indexes: Vec<index::Index>,
    by_uid: HashMap<u32, ClientId>,
    by_gid: HashMap<u32, ClientId>,
    /// Each access some single allow rule grants (a union of sets would wrongly
    /// claim read-write from one read rule and another write rule).
    granted: Vec<Access>,
}

impl Policy {
    /// Reads and parses a policy file.
    pub fn load(path: &Path) -> Result<Policy, LoadError> {
        let text = load::read(path)?;
        Policy::parse(&text, path)
    }

    /// Parses policy text; `origin` is the file name used in errors and explanations.
    pub fn parse(text: &str, origin: &Path) -> Result<Policy, LoadError> {
        load::parse(text, origin)
    }

    /// Parses policy text with client `client` learning beneath `scope` (as if its
    /// table said `learn_scope = [...]`): what `fdbroker run --learn` serves.
    pub fn parse_learning(
        text: &str,
        origin: &Path,
        client: &str,
        scope: &[String],
    ) -> Result<Policy, LoadError> {
        load::parse_with(text, origin, Some((client, scope)))
    }

    /// Reads a policy file's text, bounded as [`Policy::load`] reads it.
    pub fn read_text(path: &Path) -> Result<String, LoadError> {
        load::read(path)
    }

    pub fn origin(&self) -> &Path {
        &self.origin
    }

    pub fn broker(&self) -> &BrokerSettings {
        &self.broker
    }

    pub fn sandbox(&self) -> &SandboxSettings {
        &self.sandbox
    }

    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// # Panics
    /// If `id` did not come from this policy.
    pub fn client(&self, id: ClientId) -> &Client {
        &self.clients[id.0]
    }

    /// Which client a peer is: the one listing its uid, else the one listing its
    /// primary gid, else none (the broker refuses the connection). Load guarantees
    /// no uid or gid is listed by two clients, so the answer never depends on order.
    pub fn client_for(&self, uid: u32, gid: u32) -> Option<ClientId> {
        self.by_uid
            .get(&uid)
            .or_else(|| self.by_gid.get(&gid))
            .copied()
    }

    pub fn client_by_name(&self, name: &str) -> Option<ClientId> {
        self.clients
            .iter()
            .position(|c| c.name == name)
            .map(ClientId)
    }

    /// The distinct static roots of all allow rules, by [`RootId`]: the directories
    /// the broker opens at startup.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// All rules, by [`RuleId`].
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// # Panics
    /// If `id` did not come from this policy.
    pub fn rule(&self, id: RuleId) -> &Rule {
        &self.rules[id.0]
    }

    /// Does any allow rule grant `access`? Lets the broker drop what no request can
    /// ever need (e.g. `CAP_DAC_OVERRIDE` for writes, or creation altogether).
    pub fn grants_any(&self, access: Access) -> bool {
        self.granted.contains(&access)
    }
}

#[cfg(test)]
mod tests;
