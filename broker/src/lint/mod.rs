//! `fdbroker policy check`: what a policy that loads may still get wrong on this
//! machine. Loading proves the file means what it says; these warnings say where it
//! will not do what the operator probably meant: roots that do not exist or that the
//! broker would refuse to open (see `roots`), deny rules that match nothing on disk or
//! lie outside every allow (they take nothing away), rules written twice, and
//! capabilities the policy needs that the service unit does not grant ([`unit`]).

pub mod unit;

use crate::request::roots::{RootError, open_root_with};
use caps::Capability;
use fdbroker_policy::{Access, Effect, PatternKind, Policy, Rule};
use nix::errno::Errno;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

/// One finding, at the rule (or whole file) it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// Everything worth a warning in `policy`, in file order, its capabilities checked
/// against `unit` (the service unit it will run under).
pub fn check(policy: &Policy, unit: &unit::Unit) -> Vec<Warning> {
    let mut out = Vec::new();
    let at = |rule: &Rule, message: String| Warning {
        file: policy.origin().to_owned(),
        line: rule.location.line,
        col: rule.location.col,
        message,
    };
    // Roots, reported at the first rule that uses each.
    let mut seen_roots = Vec::new();
    for rule in policy.rules() {
        let Some(root) = rule.root else { continue };
        if seen_roots.contains(&root) {
            continue;
        }
        seen_roots.push(root);
        let path = &policy.roots()[root.0];
        // As the broker opens it: a learning scope's root follows no link.
        let strict = policy
            .rules()
            .iter()
            .any(|r| r.learning && r.root == Some(root));
        match open_root_with(path, !strict) {
            Ok(_) => {}
            Err(RootError::Open(Errno::ENOENT)) => out.push(at(
                rule,
                format!(
                    "root {} does not exist: requests under it fail with \"not found\" until \
                     it does and the broker reloads",
                    path.display()
                ),
            )),
            Err(e @ (RootError::Untrusted { .. } | RootError::LearnLink { .. })) => out.push(at(
                rule,
                format!("the broker would refuse root {}: {e}", path.display()),
            )),
            Err(RootError::Open(e)) => out.push(at(
                rule,
                format!("root {} cannot be opened: {}", path.display(), e.desc()),
            )),
        }
    }
    // Learn mode grants what no rule says: never what a finished policy should do.
    for rule in policy.rules().iter().filter(|r| r.learning) {
        out.push(at(
            rule,
            format!(
                "learn_scope {:?}: client {:?} is in learn mode and is granted anything \
                 beneath it; replace it with the rules `fdbroker policy suggest` finds",
                rule.pattern,
                policy.client(rule.client).name
            ),
        ));
    }
    // Rules written twice (same client, effect, path and grant).
    let mut first: HashMap<(usize, Effect, &str, String), &Rule> = HashMap::new();
    for rule in policy.rules() {
        let key = (
            rule.client.0,
            rule.effect,
            rule.pattern.as_str(),
            format!("{:?}{:?}", rule.access, rule.options),
        );
        match first.get(&key) {
            Some(earlier) => out.push(at(
                rule,
                format!(
                    "duplicates the {} rule at {}:{}",
                    rule.effect.as_str(),
                    earlier.location.line,
                    earlier.location.col
                ),
            )),
            None => {
                first.insert(key, rule);
            }
        }
    }
    // Deny rules that cannot take anything away.
    for rule in policy.rules().iter().filter(|r| r.effect == Effect::Deny) {
        let prefix = static_prefix(&rule.pattern);
        let overlaps = policy.rules().iter().any(|a| {
            a.effect == Effect::Allow
                && a.client == rule.client
                && a.root.is_some_and(|r| {
                    let root = &policy.roots()[r.0];
                    prefix.starts_with(root) || root.starts_with(&prefix)
                })
        });
        if !overlaps {
            out.push(at(
                rule,
                format!(
                    "deny rule {:?} lies outside every allow rule of its client: it can never \
                     take anything away",
                    rule.pattern
                ),
            ));
        } else if rule.kind != PatternKind::Glob && std::fs::symlink_metadata(&prefix).is_err() {
            out.push(at(
                rule,
                format!(
                    "deny rule {:?} matches nothing on disk now (a later file there is still \
                     denied)",
                    rule.pattern
                ),
            ));
        }
    }
    // Capabilities: at the first rule that needs each.
    let needs = [
        (
            Capability::CAP_DAC_OVERRIDE,
            "grants write or create, so the broker needs",
            policy.rules().iter().find(|r| {
                r.effect == Effect::Allow
                    && [Access::Write, Access::ReadWrite, Access::Create]
                        .into_iter()
                        .any(|a| r.access.grants(a))
            }),
        ),
        (
            Capability::CAP_CHOWN,
            "gives created files an owner or group, so the broker needs",
            policy
                .rules()
                .iter()
                .find(|r| r.options.owner.is_some() || r.options.group.is_some()),
        ),
    ];
    for (cap, what, rule) in needs {
        let Some(rule) = rule else { continue };
        if let Some(lacking) = unit.lacks(cap) {
            out.push(at(
                rule,
                format!(
                    "this rule {what} {cap}; {} does not grant it ({lacking}), so the \
                     broker will refuse to start under it: add {cap} to CapabilityBoundingSet= and \
                     AmbientCapabilities= (a drop-in: systemctl edit fdbroker.service)",
                    unit.name
                ),
            ));
        }
    }
    out.sort_by_key(|w| (w.line, w.col));
    out
}

/// The longest glob-free directory prefix of a rule's path (the whole path for a
/// literal one).
fn static_prefix(pattern: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in pattern.split('/').filter(|c| !c.is_empty()) {
        if part.contains(['*', '?']) {
            break;
        }
        out.push(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_prefixes_stop_at_the_first_glob() {
        assert_eq!(static_prefix("/a/b/"), PathBuf::from("/a/b"));
        assert_eq!(static_prefix("/a/*.conf"), PathBuf::from("/a"));
        assert_eq!(static_prefix("/a/**/x"), PathBuf::from("/a"));
    }
}
