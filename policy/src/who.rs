//! What one identity may access, rule by rule, with what is carved out of each
//! (`fdbroker policy who`, like `sudo -l -U`).

use std::fmt;

use crate::pattern::Pattern;
use crate::{ClientId, Effect, Policy, Rule};

/// One allow rule of the client and the deny rules that take something out of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub rule: Rule,
    pub except: Vec<Rule>,
}

/// Everything a client is granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub client: ClientId,
    pub grants: Vec<Grant>,
    /// Deny rules that lie under no allow rule (they take nothing away).
    pub other_denies: Vec<Rule>,
}

impl Policy {
    /// What `client` may access: its allow rules in file order, each with the deny rules
    /// of the same client that could match a path it grants.
    pub fn who(&self, client: ClientId) -> Listing {
        let rules: Vec<&Rule> = self
            .clients
            .get(client.0)
            .map(|c| {
                c.rules
                    .iter()
                    .filter_map(|id| self.rules.get(id.0))
                    .collect()
            })
            .unwrap_or_default();
        let parsed = |r: &Rule| Pattern::parse(&r.pattern).ok();
        let mut used = vec![false; rules.len()];
        let mut grants = Vec::new();
        for allow in rules.iter().filter(|r| r.effect == Effect::Allow) {
            let Some(ap) = parsed(allow) else { continue };
            let mut except = Vec::new();
            for (i, deny) in rules.iter().enumerate() {
                if deny.effect != Effect::Deny {
                    continue;
                }
                let Some(dp) = parsed(deny) else { continue };
                // An exact allow loses its one path or nothing; a subtree or glob loses
                // what a deny beneath its literal part, or a glob deny above it, matches.
                let carves = match ap.kind() {
                    crate::PatternKind::Exact => dp.matches(&ap.prefix_path()),
                    _ => {
                        dp.prefix().starts_with(ap.prefix())
                            || (dp.kind() != crate::PatternKind::Exact
                                && ap.prefix().starts_with(dp.prefix()))
                    }
                };
                if carves {
                    except.push((*deny).clone());
                    if let Some(u) = used.get_mut(i) {
                        *u = true;
                    }
                }
            }
            grants.push(Grant {
                rule: (*allow).clone(),
                except,
            });
        }
        let other_denies = rules
            .iter()
            .enumerate()
            .filter(|(i, r)| r.effect == Effect::Deny && !used.get(*i).copied().unwrap_or(true))
            .map(|(_, r)| (*r).clone())
            .collect();
        Listing {
            client,
            grants,
            other_denies,
        }
    }
}

/// The listing as text, for `policy`.
pub struct ListingText<'a> {
    pub policy: &'a Policy,
    pub listing: &'a Listing,
}

impl fmt::Display for ListingText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = self.policy.origin().display();
        let c = self.policy.client(self.listing.client);
        writeln!(f, "client {:?} ({origin}:{}) may:", c.name, c.location)?;
        if c.learning {
            writeln!(
                f,
                "  (learn mode: anything beneath its learn_scope that no rule grants)"
            )?;
        }
        if self.listing.grants.is_empty() {
            writeln!(f, "  nothing: no allow rule")?;
        }
        for g in &self.listing.grants {
            let r = &g.rule;
            let what = match r.kind {
                crate::PatternKind::Exact => "this path",
                crate::PatternKind::Subtree => "this directory and everything beneath it",
                crate::PatternKind::Glob => "what this glob matches",
            };
            writeln!(
                f,
                "  {} {:?}  ({what}; {origin}:{}{})",
                r.access,
                r.pattern,
                r.location,
                if r.learning { ", learn_scope" } else { "" }
            )?;
            for d in &g.except {
                writeln!(
                    f,
                    "      except {:?}  (deny{}, {origin}:{})",
                    d.pattern,
                    if d.listed {
                        ", listed: its name shows"
                    } else {
                        ""
                    },
                    d.location
                )?;
            }
        }
        for d in &self.listing.other_denies {
            writeln!(
                f,
                "  deny {:?} ({origin}:{}) lies under no allow rule",
                d.pattern, d.location
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Policy;
    use std::path::Path;

    #[test]
    fn grants_list_their_carve_outs() {
        let p = Policy::parse(
            "[[client]]\nname = \"c\"\nusers = [1]\n[[client.allow]]\npath = \"/srv/\"\n[[client.deny]]\npath = \"/srv/keys/\"\n[[client.allow]]\npath = \"/etc/hostname\"\n[[client.deny]]\npath = \"/var/x\"\n[[client.deny]]\npath = \"/etc/motd\"\n",
            Path::new("p.toml"),
        )
        .expect("policy");
        let l = p.who(crate::ClientId(0));
        assert_eq!(l.grants.len(), 2);
        assert_eq!(l.grants[0].except.len(), 1);
        assert_eq!(l.grants[0].except[0].pattern, "/srv/keys/");
        assert!(l.grants[1].except.is_empty());
        // `/etc/motd` is beside the exact `/etc/hostname`, not carved out of it.
        assert_eq!(l.other_denies.len(), 2);
        let text = super::ListingText {
            policy: &p,
            listing: &l,
        }
        .to_string();
        assert!(
            text.contains("except \"/srv/keys/\"  (deny, p.toml:"),
            "{text}"
        );
    }

    #[test]
    fn a_listed_carve_out_says_its_name_shows() {
        let p = Policy::parse(
            "[[client]]\nname = \"c\"\nusers = [1]\n[[client.allow]]\npath = \"/srv/\"\n[[client.deny]]\npath = \"/srv/keys/\"\nlisted = true\n",
            Path::new("p.toml"),
        )
        .expect("policy");
        let l = p.who(crate::ClientId(0));
        let text = super::ListingText {
            policy: &p,
            listing: &l,
        }
        .to_string();
        assert!(
            text.contains("except \"/srv/keys/\"  (deny, listed: its name shows, p.toml:"),
            "{text}"
        );
        let why = p
            .explain(1, 1, b"/srv/keys/a", crate::Access::Read)
            .to_string();
        assert!(
            why.contains("a deny rule matches the path (listed: "),
            "{why}"
        );
        let unlisted = Policy::parse(
            "[[client]]\nname = \"c\"\nusers = [1]\n[[client.allow]]\npath = \"/srv/\"\n[[client.deny]]\npath = \"/srv/keys/\"\n",
            Path::new("p.toml"),
        )
        .expect("policy");
        let why = unlisted
            .explain(1, 1, b"/srv/keys/a", crate::Access::Read)
            .to_string();
        assert!(!why.contains("listed"), "{why}");
    }
}
