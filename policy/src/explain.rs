//! Why a request would be allowed or denied, for humans (`fdbroker explain`).
//!
//! It reuses [`Policy::client_for`] and [`Policy::decide`] rather than a parallel
//! implementation, so the explanation can never disagree with what the broker does.
//! Unlike a decision it owns its data: it is for printing, not for the hot path.

use std::fmt;
use std::path::PathBuf;

use crate::{Access, AccessSet, ClientId, Decision, Denial, HiddenBeneath, Location, Policy, Rule};

/// Why a peer is the client it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchedBy {
    /// The client's `users` lists the peer's uid.
    Uid(u32),
    /// No client lists the uid; this one's `groups` lists the peer's primary gid.
    Gid(u32),
    /// `fdbroker run` serves its worker as the chosen client whatever its uid.
    Spawn,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientMatch {
    pub id: ClientId,
    pub name: String,
    pub by: MatchedBy,
    pub location: Location,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No client matches the peer: the broker refuses the connection.
    ConnectionRefused,
    Allow {
        rule: Rule,
        root: PathBuf,
        relative: Vec<u8>,
    },
    Deny {
        reason: Denial,
        rule: Option<Rule>,
    },
}

/// A request and the policy's answer, with the reasons. `Display` is multi-line text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub origin: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub path: Vec<u8>,
    pub access: Access,
    pub client: Option<ClientMatch>,
    pub verdict: Verdict,
    /// For an allowed `directory` request: why the broker lists the directory itself
    /// rather than pass its descriptor (`Policy::hidden_beneath`, the policy's part;
    /// the broker also judges how far `..` reaches on the filesystem), with the deny
    /// rule if one is the reason.
    pub hidden: Option<(HiddenBeneath, Option<Rule>)>,
}

impl Policy {
    /// Explains what the broker would do for a peer with `uid`/`gid` asking for
    /// `path` with `access`.
    pub fn explain(&self, uid: u32, gid: u32, path: &[u8], access: Access) -> Explanation {
        let client = self.client_for(uid, gid).and_then(|id| {
            let c = self.clients.get(id.0)?;
            let by = if c.users.contains(&uid) {
                MatchedBy::Uid(uid)
            } else {
                MatchedBy::Gid(gid)
            };
            Some(ClientMatch {
                id,
                name: c.name.clone(),
                by,
                location: c.location,
            })
        });
        self.explain_for(client, uid, gid, path, access)
    }

    /// Explains what `fdbroker run` would do for its worker, served as `client` (by
    /// `--client`, or the only client) whatever its uid and gid.
    pub fn explain_spawn(
        &self,
        client: ClientId,
        uid: u32,
        gid: u32,
        path: &[u8],
        access: Access,
    ) -> Explanation {
        let client = self.clients.get(client.0).map(|c| ClientMatch {
            id: client,
            name: c.name.clone(),
            by: MatchedBy::Spawn,
            location: c.location,
        });
        self.explain_for(client, uid, gid, path, access)
    }

    fn explain_for(
        &self,
        client: Option<ClientMatch>,
        uid: u32,
        gid: u32,
        path: &[u8],
        access: Access,
    ) -> Explanation {
        let verdict = match &client {
            None => Verdict::ConnectionRefused,
            Some(m) => match self.decide(m.id, path, access) {
                Decision::Allow(grant) => {
                    match (self.rules.get(grant.rule.0), self.roots.get(grant.root.0)) {
                        (Some(rule), Some(root)) => Verdict::Allow {
                            rule: rule.clone(),
                            root: root.clone(),
                            relative: grant.relative.to_vec(),
                        },
                        _ => Verdict::Deny {
                            reason: Denial::NoRule,
                            rule: None,
                        },
                    }
                }
                Decision::Deny(reason) => Verdict::Deny {
                    reason,
                    rule: reason.rule().and_then(|r| self.rules.get(r.0)).cloned(),
                },
            },
        };
        let hidden = match (&client, &verdict) {
            (Some(m), Verdict::Allow { .. }) if access == Access::Directory => {
                self.hidden_beneath(m.id, path).map(|h| {
                    let rule = match h {
                        HiddenBeneath::DenyBeneath(r) => self.rules.get(r.0).cloned(),
                        HiddenBeneath::NotCovered => None,
                    };
                    (h, rule)
                })
            }
            _ => None,
        };
        Explanation {
            hidden,
            origin: self.origin.clone(),
            uid,
            gid,
            path: path.to_vec(),
            access,
            client,
            verdict,
        }
    }
}

impl Explanation {
    pub fn is_allow(&self) -> bool {
        matches!(self.verdict, Verdict::Allow { .. })
    }

    fn write_rule(&self, f: &mut fmt::Formatter<'_>, rule: &Rule) -> fmt::Result {
        write!(
            f,
            "\nrule:     {}:{}: {} {:?}",
            self.origin.display(),
            rule.location,
            rule.effect.as_str(),
            rule.pattern,
        )?;
        if rule.effect == crate::Effect::Allow {
            write!(f, " {}", rule.access)?;
        }
        write!(f, " ({})", rule.kind.as_str())
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.client {
            Some(ClientMatch {
                by: MatchedBy::Spawn,
                ..
            }) => write!(
                f,
                "request:  the worker of `fdbroker run` wants {} of \"{}\"",
                self.access,
                self.path.escape_ascii()
            )?,
            _ => write!(
                f,
                "request:  uid {} gid {} wants {} of \"{}\"",
                self.uid,
                self.gid,
                self.access,
                self.path.escape_ascii()
            )?,
        }
        match &self.client {
            None => write!(
                f,
                "\nclient:   none: no client lists uid {} in `users` or gid {} in `groups`",
                self.uid, self.gid
            )?,
            Some(m) => {
                write!(
                    f,
                    "\nclient:   {:?} ({}:{}), ",
                    m.name,
                    self.origin.display(),
                    m.location
                )?;
                match m.by {
                    MatchedBy::Uid(uid) => write!(f, "uid {uid} is in its `users`")?,
                    MatchedBy::Gid(gid) => write!(
                        f,
                        "no client lists uid {}; gid {gid} is in its `groups`",
                        self.uid
                    )?,
                    MatchedBy::Spawn => write!(
                        f,
                        "`fdbroker run` serves its worker as this client whatever its uid"
                    )?,
                }
            }
        }
        match &self.verdict {
            Verdict::ConnectionRefused => {
                write!(f, "\ndecision: deny: the broker refuses the connection")
            }
            Verdict::Allow {
                rule,
                root,
                relative,
            } => {
                write!(f, "\ndecision: allow")?;
                self.write_rule(f, rule)?;
                write!(f, "\nroot:     {}", root.display())?;
                if relative.is_empty() {
                    write!(f, "\nrelative: . (the root itself)")?;
                } else {
                    write!(f, "\nrelative: {}", relative.escape_ascii())?;
                }
                let o = &rule.options;
                write!(
                    f,
                    "\noptions:  symlinks = {}, devices = {}, hardlinks = {}, same_filesystem = {}",
                    o.symlinks.as_str(),
                    o.devices,
                    o.hardlinks,
                    o.same_filesystem
                )?;
                if o.allow_reopen {
                    write!(f, ", allow_reopen = true")?;
                }
                if self.access == Access::Create {
                    write!(f, ", mode = {:04o}", o.create_mode)?;
                    if let Some(uid) = o.owner {
                        write!(f, ", owner = {uid}")?;
                    }
                    if let Some(gid) = o.group {
                        write!(f, ", group = {gid}")?;
                    }
                }
                match &self.hidden {
                    None => Ok(()),
                    Some((hidden, deny)) => {
                        write!(
                            f,
                            "\nlisting:  by the broker, with what the policy hides left out; no \
                             descriptor is passed for this directory: "
                        )?;
                        match (hidden, deny) {
                            (HiddenBeneath::DenyBeneath(_), Some(rule)) => {
                                write!(f, "a deny rule lies beneath it")?;
                                self.write_rule(f, rule)
                            }
                            (HiddenBeneath::DenyBeneath(_), None) => {
                                write!(f, "a deny rule lies beneath it")
                            }
                            (HiddenBeneath::NotCovered, _) => {
                                write!(f, "no allow rule covers everything beneath it")
                            }
                        }
                    }
                }
            }
            Verdict::Deny { reason, rule } => {
                match reason {
                    Denial::InvalidPath(e) => write!(f, "\ndecision: deny: invalid path: {e}")?,
                    Denial::NoRule => write!(
                        f,
                        "\ndecision: deny: no rule of this client matches the path"
                    )?,
                    Denial::DeniedBy(_) => {
                        write!(f, "\ndecision: deny: a deny rule matches the path")?;
                        if rule.as_ref().is_some_and(|r| r.listed) {
                            write!(
                                f,
                                " (listed: what it denies shows in its directory's listing, \
                                 and a stat of a name listed there is answered; nothing in it \
                                 is opened)"
                            )?;
                        }
                    }
                    Denial::AccessNotGranted(_) => write!(
                        f,
                        "\ndecision: deny: the most specific matching rule does not grant {} (needs {})",
                        self.access,
                        AccessSet::required(self.access)
                    )?,
                }
                match rule {
                    Some(rule) => self.write_rule(f, rule),
                    None => Ok(()),
                }
            }
        }
    }
}
