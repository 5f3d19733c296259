//! What a request is decided against: a policy with its roots open, made once per
//! (re)load and never changed after, so one request sees one policy throughout.

use crate::request::roots::Roots;
use fdbroker_policy::{Policy, RuleId};
use std::fmt;

/// A policy with its roots open.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub roots: Roots,
    /// Increments on every successful (re)load; connections cache their client per
    /// generation.
    pub generation: u64,
    /// The policy file's name as audit lines print it (`Path::display`), made once:
    /// every decision's rule label starts with it.
    origin: String,
}

impl Loaded {
    pub fn new(policy: Policy, generation: u64) -> Loaded {
        let roots = Roots::open(&policy);
        for (path, error) in roots.problems() {
            tracing::warn!(
                root = %path.display(),
                error = %error,
                "policy root cannot be opened; requests under it will fail until a reload"
            );
        }
        // Learn mode (`learn_scope`) is never quiet: once per (re)load, for every server.
        for c in policy.clients().iter().filter(|c| c.learning) {
            tracing::warn!(
                client = %c.name,
                "LEARN MODE: this client is granted anything beneath its learn_scope that no \
                 rule grants, and its audit lines say mode=\"learn\""
            );
        }
        let origin = policy.origin().display().to_string();
        Loaded {
            policy,
            roots,
            generation,
            origin,
        }
    }

    /// `FILE:LINE:COL` of a rule, for audit lines, without allocating.
    pub fn rule_label(&self, id: RuleId) -> RuleLabel<'_> {
        RuleLabel { loaded: self, id }
    }
}

pub struct RuleLabel<'a> {
    loaded: &'a Loaded,
    id: RuleId,
}

impl fmt::Display for RuleLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = self.loaded.policy.rule(self.id);
        // A learning scope is not a rule anyone wrote: say so rather than point at it.
        if rule.learning {
            return write!(f, "learn_scope:{}", rule.pattern);
        }
        f.write_str(&self.loaded.origin)?;
        write!(f, ":{}:{}", rule.location.line, rule.location.col)
    }
}
