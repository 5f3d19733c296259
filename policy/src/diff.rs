//! What an edit to a policy changes, in words (`fdbroker policy diff OLD NEW`).
//!
//! Compared by meaning, not by text: rules are matched per client by effect and path,
//! so reordering, comments and spelling (`users = ["nobody"]` or `[65534]`) change
//! nothing; an access word or an option that changes is a widening or a narrowing of
//! that rule.

use std::collections::BTreeMap;
use std::fmt;

use crate::{AccessSet, Effect, Policy, Rule, RuleOptions};

/// One difference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    ClientAdded(String),
    ClientRemoved(String),
    UsersChanged {
        client: String,
        old: Vec<u32>,
        new: Vec<u32>,
    },
    GroupsChanged {
        client: String,
        old: Vec<u32>,
        new: Vec<u32>,
    },
    LearningChanged {
        client: String,
        now: bool,
    },
    /// A rule only NEW has: an allow grants more, a deny takes away.
    RuleAdded {
        client: String,
        effect: Effect,
        pattern: String,
        access: AccessSet,
    },
    RuleRemoved {
        client: String,
        effect: Effect,
        pattern: String,
        access: AccessSet,
    },
    /// Same path, more access words.
    Widened {
        client: String,
        pattern: String,
        old: AccessSet,
        new: AccessSet,
    },
    Narrowed {
        client: String,
        pattern: String,
        old: AccessSet,
        new: AccessSet,
    },
    /// Some words added and some taken away.
    AccessChanged {
        client: String,
        pattern: String,
        old: AccessSet,
        new: AccessSet,
    },
    OptionsChanged {
        client: String,
        pattern: String,
        old: RuleOptions,
        new: RuleOptions,
    },
    /// A deny rule's `listed`: whether the carve-out's name and metadata show.
    ListedChanged {
        client: String,
        pattern: String,
        now: bool,
    },
    /// A learning client's `learn_scope` directory that only NEW (or only OLD) has:
    /// any access beneath it that no rule grants.
    ScopeAdded {
        client: String,
        pattern: String,
    },
    ScopeRemoved {
        client: String,
        pattern: String,
    },
    RootAdded(String),
    RootRemoved(String),
    BrokerSettings,
    SandboxSettings,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Change::*;
        match self {
            ClientAdded(c) => write!(f, "+ client {c:?} appears"),
            ClientRemoved(c) => write!(f, "- client {c:?} goes: its peers are refused"),
            UsersChanged { client, old, new } => {
                write!(f, "~ client {client:?}: users {old:?} -> {new:?}")
            }
            GroupsChanged { client, old, new } => {
                write!(f, "~ client {client:?}: groups {old:?} -> {new:?}")
            }
            LearningChanged { client, now } => write!(
                f,
                "{} client {client:?}: learn mode {}",
                if *now { "+" } else { "-" },
                if *now { "on" } else { "off" }
            ),
            RuleAdded {
                client,
                effect: Effect::Allow,
                pattern,
                access,
            } => {
                write!(
                    f,
                    "+ client {client:?}: grants {access} on {pattern:?} (rule added)"
                )
            }
            RuleAdded {
                client, pattern, ..
            } => {
                write!(
                    f,
                    "- client {client:?}: denies {pattern:?} (deny rule added)"
                )
            }
            RuleRemoved {
                client,
                effect: Effect::Allow,
                pattern,
                access,
            } => write!(
                f,
                "- client {client:?}: no longer grants {access} on {pattern:?} (rule removed)"
            ),
            RuleRemoved {
                client, pattern, ..
            } => write!(
                f,
                "+ client {client:?}: no longer denies {pattern:?} (deny rule removed)"
            ),
            Widened {
                client,
                pattern,
                old,
                new,
            } => {
                write!(
                    f,
                    "+ client {client:?}: {pattern:?} widened from {old} to {new}"
                )
            }
            Narrowed {
                client,
                pattern,
                old,
                new,
            } => {
                write!(
                    f,
                    "- client {client:?}: {pattern:?} narrowed from {old} to {new}"
                )
            }
            AccessChanged {
                client,
                pattern,
                old,
                new,
            } => {
                write!(
                    f,
                    "~ client {client:?}: {pattern:?} changed from {old} to {new}"
                )
            }
            OptionsChanged {
                client,
                pattern,
                old,
                new,
            } => {
                write!(f, "~ client {client:?}: {pattern:?} options changed:")?;
                let pairs = [
                    (
                        "symlinks",
                        old.symlinks.as_str().to_owned(),
                        new.symlinks.as_str().to_owned(),
                    ),
                    ("devices", old.devices.to_string(), new.devices.to_string()),
                    (
                        "hardlinks",
                        old.hardlinks.to_string(),
                        new.hardlinks.to_string(),
                    ),
                    (
                        "mode",
                        format!("{:04o}", old.create_mode),
                        format!("{:04o}", new.create_mode),
                    ),
                    (
                        "same_filesystem",
                        old.same_filesystem.to_string(),
                        new.same_filesystem.to_string(),
                    ),
                    (
                        "owner",
                        format!("{:?}", old.owner),
                        format!("{:?}", new.owner),
                    ),
                    (
                        "group",
                        format!("{:?}", old.group),
                        format!("{:?}", new.group),
                    ),
                    (
                        "allow_reopen",
                        old.allow_reopen.to_string(),
                        new.allow_reopen.to_string(),
                    ),
                ];
                for (name, a, b) in pairs {
                    if a != b {
                        write!(f, " {name} {a} -> {b}")?;
                    }
                }
                Ok(())
            }
            ListedChanged {
                client,
                pattern,
                now: true,
            } => write!(
                f,
                "+ client {client:?}: sees that {pattern:?} exists (its name and metadata; deny rule now listed)"
            ),
            ListedChanged {
                client, pattern, ..
            } => write!(
                f,
                "- client {client:?}: no longer sees that {pattern:?} exists (deny rule no longer listed)"
            ),
            ScopeAdded { client, pattern } => write!(
                f,
                "+ client {client:?}: learns beneath {pattern:?} (any access no rule grants; learn_scope added)"
            ),
            ScopeRemoved { client, pattern } => write!(
                f,
                "- client {client:?}: no longer learns beneath {pattern:?} (learn_scope removed)"
            ),
            RootAdded(r) => write!(f, "+ root {r} appears (the broker will hold it open)"),
            RootRemoved(r) => write!(f, "- root {r} goes"),
            BrokerSettings => write!(f, "~ [broker] settings differ"),
            SandboxSettings => write!(f, "~ [sandbox] settings differ"),
        }
    }
}

/// (is a deny, is a learning scope, path as written).
type RuleKey<'a> = (bool, bool, &'a str);

fn rules_of<'a>(p: &'a Policy, client: &crate::Client) -> BTreeMap<RuleKey<'a>, Vec<&'a Rule>> {
    let mut out: BTreeMap<RuleKey<'a>, Vec<&'a Rule>> = BTreeMap::new();
    for id in &client.rules {
        let r = p.rule(*id);
        out.entry((r.effect == Effect::Deny, r.learning, r.pattern.as_str()))
            .or_default()
            .push(r);
    }
    out
}

fn added(client: &str, r: &Rule) -> Change {
    if r.learning {
        return Change::ScopeAdded {
            client: client.to_owned(),
            pattern: r.pattern.clone(),
        };
    }
    Change::RuleAdded {
        client: client.to_owned(),
        effect: r.effect,
        pattern: r.pattern.clone(),
        access: r.access,
    }
}

fn removed(client: &str, r: &Rule) -> Change {
    if r.learning {
        return Change::ScopeRemoved {
            client: client.to_owned(),
            pattern: r.pattern.clone(),
        };
    }
    Change::RuleRemoved {
        client: client.to_owned(),
        effect: r.effect,
        pattern: r.pattern.clone(),
        access: r.access,
    }
}

fn sorted(v: &[u32]) -> Vec<u32> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}

/// Every difference between `old` and `new`; empty when they mean the same.
pub fn diff(old: &Policy, new: &Policy) -> Vec<Change> {
    let mut out = Vec::new();
    for c in old.clients() {
        if new.client_by_name(&c.name).is_none() {
            out.push(Change::ClientRemoved(c.name.clone()));
        }
    }
    for c in new.clients() {
        let name = c.name.clone();
        let Some(oid) = old.client_by_name(&c.name) else {
            out.push(Change::ClientAdded(name.clone()));
            for (_, rules) in rules_of(new, c) {
                for r in rules {
                    out.push(added(&name, r));
                }
            }
            continue;
        };
        let oc = old.client(oid);
        if sorted(&oc.users) != sorted(&c.users) {
            out.push(Change::UsersChanged {
                client: name.clone(),
                old: sorted(&oc.users),
                new: sorted(&c.users),
            });
        }
        if sorted(&oc.groups) != sorted(&c.groups) {
            out.push(Change::GroupsChanged {
                client: name.clone(),
                old: sorted(&oc.groups),
                new: sorted(&c.groups),
            });
        }
        if oc.learning != c.learning {
            out.push(Change::LearningChanged {
                client: name.clone(),
                now: c.learning,
            });
        }
        let before = rules_of(old, oc);
        let after = rules_of(new, c);
        for (key, rules) in &before {
            if !after.contains_key(key) {
                for r in rules {
                    out.push(removed(&name, r));
                }
            }
        }
        for (key, rules) in &after {
            let Some(was) = before.get(key) else {
                for r in rules {
                    out.push(added(&name, r));
                }
                continue;
            };
            // A path written more than once: compare what the rules grant together.
            let union = |rs: &[&Rule]| rs.iter().fold(AccessSet::EMPTY, |a, r| a | r.access);
            let (o, n) = (union(was), union(rules));
            let pattern = key.2.to_owned();
            if o != n {
                let client = name.clone();
                out.push(if n.contains(o) {
                    Change::Widened {
                        client,
                        pattern: pattern.clone(),
                        old: o,
                        new: n,
                    }
                } else if o.contains(n) {
                    Change::Narrowed {
                        client,
                        pattern: pattern.clone(),
                        old: o,
                        new: n,
                    }
                } else {
                    Change::AccessChanged {
                        client,
                        pattern: pattern.clone(),
                        old: o,
                        new: n,
                    }
                });
            }
            let listed = |rs: &[&Rule]| rs.iter().any(|r| r.listed);
            if listed(was) != listed(rules) {
                out.push(Change::ListedChanged {
                    client: name.clone(),
                    pattern: pattern.clone(),
                    now: listed(rules),
                });
            }
            if let (Some(a), Some(b)) = (was.first(), rules.first())
                && a.options != b.options
            {
                out.push(Change::OptionsChanged {
                    client: name.clone(),
                    pattern,
                    old: a.options,
                    new: b.options,
                });
            }
        }
    }
    for r in old.roots() {
        if !new.roots().contains(r) {
            out.push(Change::RootRemoved(r.display().to_string()));
        }
    }
    for r in new.roots() {
        if !old.roots().contains(r) {
            out.push(Change::RootAdded(r.display().to_string()));
        }
    }
    if old.broker() != new.broker() {
        out.push(Change::BrokerSettings);
    }
    if old.sandbox() != new.sandbox() {
        out.push(Change::SandboxSettings);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn p(text: &str) -> Policy {
        Policy::parse(text, Path::new("p.toml")).expect("policy")
    }

    #[test]
    fn same_meaning_is_no_difference() {
        let a = p(
            "[[client]]\nname = \"c\"\nusers = [1, 2]\n[[client.allow]]\npath = \"/a\"\n[[client.allow]]\npath = \"/b/\"\n",
        );
        let b = p(
            "# reordered\n[[client]]\nusers = [2, 1]\nname = \"c\"\n[[client.allow]]\npath = \"/b/\"\naccess = [\"read\"]\n[[client.allow]]\npath = \"/a\"\n",
        );
        assert_eq!(diff(&a, &b), []);
    }

    #[test]
    fn widening_narrowing_and_rules_and_roots() {
        let a = p(
            "[[client]]\nname = \"c\"\nusers = [1]\n[[client.allow]]\npath = \"/a\"\n[[client.allow]]\npath = \"/w\"\naccess = [\"read\", \"write\"]\n[[client.allow]]\npath = \"/gone/\"\n",
        );
        let b = p(
            "[[client]]\nname = \"c\"\nusers = [1]\n[[client.allow]]\npath = \"/a\"\naccess = [\"read\", \"write\"]\n[[client.allow]]\npath = \"/w\"\n[[client.allow]]\npath = \"/new/x\"\n[[client.deny]]\npath = \"/new/x/y\"\n[[client]]\nname = \"d\"\nusers = [2]\n",
        );
        let words: Vec<String> = diff(&a, &b).iter().map(|c| c.to_string()).collect();
        let want = [
            "+ client \"c\": \"/a\" widened from [read] to [read, write]",
            "- client \"c\": no longer grants [read] on \"/gone/\" (rule removed)",
            "- client \"c\": \"/w\" narrowed from [read, write] to [read]",
            "+ client \"c\": grants [read] on \"/new/x\" (rule added)",
            "- client \"c\": denies \"/new/x/y\" (deny rule added)",
            "+ client \"d\" appears",
            "- root /gone goes",
            "+ root /new appears (the broker will hold it open)",
        ];
        for w in want {
            assert!(words.iter().any(|x| x == w), "missing {w:?} in {words:#?}");
        }
        assert_eq!(words.len(), want.len(), "{words:#?}");
    }
}
