//! The decision for one request: deny by default, deny rules first, then the most
//! specific allow rule that grants the access.
//!
//! This runs once per path the worker asks for, so it borrows instead of allocating:
//! the [`Grant`] points into the request path, and the rule data stays in the
//! [`Policy`].

use crate::index::Candidate;
use crate::path::{self, PathError};
use crate::{Access, ClientId, Effect, Policy, RootId, RuleId, RuleOptions};

/// What the policy says about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision<'p> {
    Allow(Grant<'p>),
    Deny(Denial),
}

impl Decision<'_> {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// The rule that decided, if one did.
    pub fn rule(&self) -> Option<RuleId> {
        match self {
            Decision::Allow(grant) => Some(grant.rule),
            Decision::Deny(denial) => denial.rule(),
        }
    }
}

/// Everything the broker needs to open an allowed path: which held root to open
/// beneath, the path relative to it, and how to check the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant<'p> {
    pub rule: RuleId,
    pub root: RootId,
    /// The request path minus the root and its slash. Empty when the request names
    /// the root directory itself; the broker then opens `"."` beneath it.
    pub relative: &'p [u8],
    pub options: RuleOptions,
}

/// Why a request is refused. Every variant looks the same to the worker (guide,
/// lesson 4); the distinction is for the audit log and `explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Denial {
    #[error("invalid path: {0}")]
    InvalidPath(PathError),
    #[error("no rule allows this path")]
    NoRule,
    #[error("denied by a deny rule")]
    DeniedBy(RuleId),
    #[error("the matching rule does not grant this access")]
    AccessNotGranted(RuleId),
}

impl Denial {
    pub fn rule(&self) -> Option<RuleId> {
        match self {
            Denial::DeniedBy(rule) | Denial::AccessNotGranted(rule) => Some(*rule),
            Denial::InvalidPath(_) | Denial::NoRule => None,
        }
    }
}

/// Keeps the higher-ranked of the best candidate so far and a new one.
#[inline]
fn keep_best(slot: &mut Option<Candidate>, candidate: Candidate) {
    if slot.is_none_or(|best| candidate.rank > best.rank) {
        *slot = Some(candidate);
    }
}

impl Policy {
    /// Decides one request of `client` (from [`Policy::client_for`]). An id that is
    /// not this policy's is denied, not a panic.
    pub fn decide<'p>(&self, client: ClientId, path: &'p [u8], access: Access) -> Decision<'p> {
        self.decide_with(client, path, access, true)
    }

    /// Does some deny rule of `client` that is not `listed` match `path`? Hiding is the
    /// default: a name any unlisted deny refuses stays hidden whichever deny decides.
    pub(crate) fn unlisted_deny_matches(&self, client: ClientId, path: &[u8]) -> bool {
        let Some(index) = self.indexes.get(client.0) else {
            return true;
        };
        let mut found = false;
        index.walk(path, |candidate| match self.rules.get(candidate.rule.0) {
            Some(rule) if rule.effect == Effect::Deny && !rule.listed => found = true,
            Some(_) => {}
            None => found = true,
        });
        found
    }

    /// [`Policy::decide`], with `denies = false` as if the client had no deny rule:
    /// only for [`Policy::listed_grant`], which has already seen the deny.
    pub(crate) fn decide_with<'p>(
        &self,
        client: ClientId,
        path: &'p [u8],
        access: Access,
        denies: bool,
    ) -> Decision<'p> {
        if let Err(e) = path::check(path) {
            return Decision::Deny(Denial::InvalidPath(e));
        }
        let Some(index) = self.indexes.get(client.0) else {
            return Decision::Deny(Denial::NoRule);
        };
        let mut deny: Option<Candidate> = None;
        let mut granting: Option<Candidate> = None;
        let mut matching: Option<Candidate> = None;
        index.walk(path, |candidate| {
            let Some(rule) = self.rules.get(candidate.rule.0) else {
                return;
            };
            match rule.effect {
                Effect::Deny if denies => keep_best(&mut deny, candidate),
                Effect::Deny => {}
                Effect::Allow => {
                    keep_best(&mut matching, candidate);
                    if rule.access.grants(access) {
                        keep_best(&mut granting, candidate);
                    }
                }
            }
        });
        if let Some(best) = deny {
            return Decision::Deny(Denial::DeniedBy(best.rule));
        }
        if let Some(best) = granting {
            let id = best.rule;
            // Every allow rule has a root; fail closed if that ever stops being true.
            if let Some((rule, root)) = self
                .rules
                .get(id.0)
                .and_then(|rule| Some((rule, rule.root?)))
            {
                let relative = best
                    .relative
                    .and_then(|start| path.get(start..))
                    .unwrap_or_default();
                return Decision::Allow(Grant {
                    rule: id,
                    root,
                    relative,
                    options: rule.options,
                });
            }
            return Decision::Deny(Denial::NoRule);
        }
        match matching {
            Some(best) => Decision::Deny(Denial::AccessNotGranted(best.rule)),
            None => Decision::Deny(Denial::NoRule),
        }
    }
}
