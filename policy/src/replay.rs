//! Recorded decisions re-decided under another policy (`fdbroker policy replay`,
//! `fdbroker reload --replay`): which of them would flip.
//!
//! The policy's part of a decision is lexical, so it can be re-made from the log alone:
//! the client (by name, else by the logged uid and gid), the path and the access. What
//! the filesystem then said (`failed`) counts as allowed: the policy let it through.

use std::fmt;

use crate::audit_log::{Action, Evidence, Record};
use crate::{Access, ClientId, Decision, Denial, Policy, RuleId};

/// What the policy decides for a logged request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redecided {
    Allow(RuleId),
    Deny(Option<Denial>),
    /// `directory` allowed, but its descriptor would show what the policy hides.
    Hidden,
}

impl Redecided {
    pub fn allowed(self) -> bool {
        matches!(self, Redecided::Allow(_))
    }
}

/// Which client of `policy` a logged request belongs to.
pub fn client_of(policy: &Policy, rec: &Record) -> Option<ClientId> {
    policy
        .client_by_name(&rec.client)
        .or_else(|| Some(policy.client_for(rec.uid?, rec.gid?)).flatten())
}

/// Which client `fdbroker serve` would serve the logged peer as under `policy`: by its
/// uid and gid, as the broker picks one; by name only when the line has no credentials
/// the policy knows (a spawn-mode worker's transient uid, a line without them). A
/// policy that moves a uid to another client changes what that peer gets even though
/// the logged name still exists.
pub fn served_client(policy: &Policy, rec: &Record) -> Option<ClientId> {
    rec.uid
        .zip(rec.gid)
        .and_then(|(u, g)| policy.client_for(u, g))
        .or_else(|| policy.client_by_name(&rec.client))
}

/// Decide `rec` again under `policy`, the way the broker decides its action.
pub fn redecide(policy: &Policy, rec: &Record) -> Redecided {
    match client_of(policy, rec) {
        Some(client) => redecide_as(policy, client, rec),
        None => Redecided::Deny(None),
    }
}

/// Decide `rec` again under `policy` as `client`.
pub fn redecide_as(policy: &Policy, client: ClientId, rec: &Record) -> Redecided {
    let decide = |access| policy.decide(client, &rec.path, access);
    let decision = match rec.action {
        Action::Open(a) => decide(a),
        Action::Stat => match decide(Access::Read) {
            Decision::Deny(_) => decide(Access::Directory),
            allow => allow,
        },
        Action::List => decide(Access::Directory),
    };
    match decision {
        // A directory's descriptor is refused where the policy hides something beneath
        // it (the broker then lists it instead): for the log that is a denial.
        Decision::Allow(_)
            if rec.action == Action::Open(Access::Directory)
                && policy.hidden_beneath(client, &rec.path).is_some() =>
        {
            Redecided::Hidden
        }
        Decision::Allow(g) => Redecided::Allow(g.rule),
        Decision::Deny(d) => Redecided::Deny(Some(d)),
    }
}

/// One recorded decision that `policy` would decide the other way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flip {
    pub record: Record,
    pub count: u64,
    pub now: Redecided,
}

impl Flip {
    /// Granted (or allowed, then failed) before, refused now.
    pub fn takes_away(&self) -> bool {
        self.record.outcome.allowed() && !self.now.allowed()
    }
}

/// Every flip in `evidence`, grants taken away first, each with its count.
pub fn replay(policy: &Policy, evidence: &Evidence) -> Vec<Flip> {
    let mut flips: Vec<Flip> = evidence
        .records
        .iter()
        // A refusal for the flags or for what a descriptor shows is not the policy's
        // decision on the path: it cannot be re-made here.
        .filter(|(rec, _)| rec.refusal.is_none_or(|r| r.lexical()))
        .filter_map(|(rec, count)| {
            let now = match served_client(policy, rec) {
                Some(client) => redecide_as(policy, client, rec),
                None => Redecided::Deny(None),
            };
            (now.allowed() != rec.outcome.allowed()).then(|| Flip {
                record: rec.clone(),
                count: *count,
                now,
            })
        })
        .collect();
    flips.sort_by_key(|f| !f.takes_away());
    flips
}

/// One flip as a line: `granted -> denied  3x  client "c"  read /a  (was ...; now ...)`.
pub struct FlipLine<'a> {
    pub policy: &'a Policy,
    pub flip: &'a Flip,
}

impl fmt::Display for FlipLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.flip.record;
        let (was, now) = if self.flip.takes_away() {
            (r.outcome.as_str(), "denied")
        } else {
            (r.outcome.as_str(), "granted")
        };
        write!(
            f,
            "{was} -> {now}  {}x  client {:?}  {} \"{}\"  (was: {}",
            self.flip.count,
            r.client,
            r.action.as_str(),
            r.path.escape_ascii(),
            r.rule.as_deref().unwrap_or("no rule"),
        )?;
        if r.learn {
            f.write_str(", learning")?;
        }
        f.write_str("; now: ")?;
        match self.flip.now {
            Redecided::Allow(rule) => {
                let rule = self.policy.rule(rule);
                write!(
                    f,
                    "{}:{} {:?})",
                    self.policy.origin().display(),
                    rule.location,
                    rule.pattern
                )
            }
            Redecided::Deny(None) => f.write_str("no client of this policy)"),
            Redecided::Hidden => f.write_str(
                "its descriptor would show what the policy hides beneath it; listed instead)",
            ),
            Redecided::Deny(Some(d)) => match d.rule() {
                Some(id) => {
                    let rule = self.policy.rule(id);
                    write!(
                        f,
                        "{d} at {}:{} {:?})",
                        self.policy.origin().display(),
                        rule.location,
                        rule.pattern
                    )
                }
                None => write!(f, "{d})"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn flips_both_ways_with_counts() {
        let old = "[[client]]\nname = \"c\"\nusers = [7]\n[[client.allow]]\npath = \"/srv/a/\"\n";
        let new = "[[client]]\nname = \"c\"\nusers = [7]\n[[client.allow]]\npath = \"/srv/a/x\"\n[[client.allow]]\npath = \"/srv/b\"\n";
        let _ = old;
        let policy = Policy::parse(new, Path::new("new.toml")).expect("policy");
        let log = "\
INFO fdbroker::audit: uid=7 gid=7 pid=1 client=\"c\" path=\"/srv/a/x\" access=\"read\" rule=\"old.toml:5:8\" result=\"granted\" ino=1
INFO fdbroker::audit: uid=7 gid=7 pid=1 client=\"c\" path=\"/srv/a/y\" access=\"read\" rule=\"old.toml:5:8\" result=\"granted\" ino=2
INFO fdbroker::audit: uid=7 gid=7 pid=1 client=\"c\" path=\"/srv/a/y\" access=\"read\" rule=\"old.toml:5:8\" result=\"granted\" ino=2
INFO fdbroker::audit: uid=7 gid=7 pid=1 client=\"c\" path=\"/srv/b\" access=\"read\" rule=\"-\" result=\"denied\" reason=no rule allows this path
INFO fdbroker::audit: uid=7 gid=7 pid=1 client=\"c\" path=\"/srv/z\" access=\"read\" rule=\"-\" result=\"denied\" reason=no rule allows this path
";
        let ev = Evidence::read(log.as_bytes()).expect("read");
        let flips = replay(&policy, &ev);
        assert_eq!(flips.len(), 2);
        assert!(flips[0].takes_away());
        assert_eq!(flips[0].record.path, b"/srv/a/y");
        assert_eq!(flips[0].count, 2);
        assert!(!flips[1].takes_away());
        assert_eq!(flips[1].record.path, b"/srv/b");
        let line = FlipLine {
            policy: &policy,
            flip: &flips[0],
        }
        .to_string();
        assert!(
            line.starts_with("granted -> denied  2x  client \"c\"  read \"/srv/a/y\""),
            "{line}"
        );
    }

    #[test]
    fn refusals_a_rule_did_not_make_are_not_replayed_and_hidden_directories_are_denials() {
        let text = "[[client]]\nname = \"c\"\nusers = [7]\n[[client.allow]]\npath = \"/d\"\naccess = [\"directory\"]\n[[client.allow]]\npath = \"/d/f\"\n";
        let policy = Policy::parse(text, Path::new("p.toml")).expect("policy");
        let log = "\
INFO fdbroker::audit: uid=7 gid=7 pid=1 client=\"c\" path=\"/d\" access=\"directory\" rule=\"p.toml:5:8\" result=\"denied\" reason=a directory descriptor would reveal paths no allow rule covers beneath it
INFO fdbroker::audit: uid=7 gid=7 pid=1 client=\"c\" path=\"/d/f\" access=\"write\" rule=\"-\" result=\"denied\" reason=open flags 0x40 are not allowed
INFO fdbroker::audit: uid=7 gid=7 pid=1 client=\"c\" path=\"/d\" access=\"directory\" rule=\"old:1:1\" result=\"granted\" ino=3
";
        let ev = Evidence::read(log.as_bytes()).expect("read");
        let flips = replay(&policy, &ev);
        assert_eq!(flips.len(), 1, "{flips:#?}");
        assert!(flips[0].takes_away());
        assert_eq!(flips[0].now, Redecided::Hidden);
    }
}
