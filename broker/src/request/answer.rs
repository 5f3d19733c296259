//! One request in, one reply (and its descriptors) out.
//!
//! This is the middle of the data path: `policy::decide` on the lexical path, then
//! `resolve::open_beneath` from the rule's pre-opened root, then the audit line. It
//! reads the loaded policy and writes nothing shared, so any thread can run it.

use crate::audit::{self, Action, Batch, Verdict};
use crate::request::list;
use crate::request::loaded::Loaded;
use crate::request::reach;
use crate::request::resolve::{self, OpenError};
use fdbroker_policy::{AuditFailure, ClientId, Decision, Denial};
use fdbroker_shared::peer::PeerCredentials;
use fdbroker_shared::wire::{Access, FileMeta, Op, Outcome, ReplyBody, StatMeta, WireError};
use nix::errno::Errno;
use std::os::fd::{AsFd, OwnedFd};

/// Answer one operation for `client`. Granted descriptors are pushed to `fds` in
/// outcome order, and each decision's audit line to `audit`, which the caller writes
/// before it sends the reply. `groups` are the peer's supplementary groups, for judging
/// what it could reopen a file for (`resolve::Holder`).
#[allow(clippy::too_many_arguments)]
pub fn answer(
    audit: &mut Batch,
    loaded: &Loaded,
    client: ClientId,
    peer: &PeerCredentials,
    groups: &[u32],
    op: Op,
    max_batch: usize,
    fds: &mut Vec<OwnedFd>,
) -> ReplyBody {
    match op {
        Op::Open(spec) => ReplyBody::Open(open_one(
            audit,
            loaded,
            client,
            peer,
            groups,
            &spec.path,
            spec.access,
            spec.flags,
            fds,
        )),
        Op::OpenMany {
            paths,
            access,
            flags,
        } => {
            if paths.len() > max_batch {
                return ReplyBody::Refused(WireError::new(
                    Errno::E2BIG as i32,
                    format!(
                        "batch of {} paths exceeds this broker's limit of {max_batch}",
                        paths.len()
                    ),
                ));
            }
            ReplyBody::OpenMany(
                paths
                    .iter()
                    .map(|p| open_one(audit, loaded, client, peer, groups, p, access, flags, fds))
                    .collect(),
            )
        }
        Op::Stat(spec) => ReplyBody::Stat(stat_one(audit, loaded, client, peer, &spec.path)),
        // `lstat(2)` and `readlink(2)`: decided as a stat, resolved without following
        // the last component (`resolve::link_beneath`); access `lstat` in the audit line.
        Op::Link(spec) => ReplyBody::Link(describe(
            audit,
            loaded,
            client,
            peer,
            &spec.path,
            Action::Link,
            |root, rel, granted, options, listed| {
                resolve::link_beneath(root, rel, granted, options).map(|mut link| {
                    // A listed carve-out shows that it exists, never what it holds: a
                    // link's target is its content.
                    if listed {
                        link.target.clear();
                    }
                    (link.meta.file.ino, Box::new(link))
                })
            },
        )),
        Op::List(spec) => ReplyBody::List(list::list_one(
            audit, loaded, client, peer, &spec.path, spec.start,
        )),
        // Answered by the connection itself (conn.rs), which alone can make one.
        Op::Connect => ReplyBody::Refused(WireError::new(
            Errno::EOPNOTSUPP as i32,
            "a new connection cannot be made here",
        )),
        // Only before the hello, from the broker's operator (conn.rs).
        Op::Status => ReplyBody::Status(Err(WireError::new(
            Errno::EOPNOTSUPP as i32,
            "status is asked before the hello, on a connection of its own",
        ))),
    }
}

/// The metadata of one path, under the policy: allowed where an open for `read`, or
/// failing that for `directory`, would be; resolved beneath that grant's root the way an
/// open is (`resolve::stat_beneath`); denied outside the policy exactly as an open is, so
/// a stat tells no more about existence than an open. One audit line, access `stat`.
///
/// Kept apart from the open path so that anything answering a `stat(2)` under the policy
/// (a transparent mode) can call it as it is.
pub fn stat_one(
    audit: &mut Batch,
    loaded: &Loaded,
    client: ClientId,
    peer: &PeerCredentials,
    path: &[u8],
) -> Result<StatMeta, WireError> {
    describe(
        audit,
        loaded,
        client,
        peer,
        path,
        Action::Stat,
        |root, rel, granted, options, _listed| {
            resolve::stat_beneath(root, rel, granted, options).map(|meta| (meta.file.ino, meta))
        },
    )
}

/// A description of one path, under the policy: allowed where an open for `read`, or
/// failing that for `directory`, would be; resolved by `resolve` beneath that grant's
/// root (which returns the inode for the audit line with what it found); denied outside
/// the policy exactly as an open is. One audit line, with `action`.
fn describe<T>(
    audit: &mut Batch,
    loaded: &Loaded,
    client: ClientId,
    peer: &PeerCredentials,
    path: &[u8],
    action: Action,
    resolve: impl FnOnce(
        std::os::fd::BorrowedFd<'_>,
        &[u8],
        Access,
        &fdbroker_policy::RuleOptions,
        bool,
    ) -> Result<(u64, T), OpenError>,
) -> Result<T, WireError> {
    let policy = &loaded.policy;
    let client_name = policy.client(client).name.as_str();
    let decided = match policy.decide(client, path, Access::Read) {
        Decision::Allow(grant) => Ok((grant, Access::Read, false)),
        Decision::Deny(denial) => match policy.decide(client, path, Access::Directory) {
            Decision::Allow(grant) => Ok((grant, Access::Directory, false)),
            // A `listed` carve-out is described as the kernel describes a directory
            // that exists and cannot be opened; anything else refused stays refused.
            Decision::Deny(_) => policy
                .listed_grant(client, path)
                .map(|grant| (grant, Access::Read, true))
                .ok_or(denial),
        },
    };
    let (grant, granted, listed) = match decided {
        Ok(g) => g,
        Err(denial) => {
            let rule = denial.rule().map(|r| loaded.rule_label(r));
            audit::decision(
                audit,
                peer,
                client_name,
                path,
                action,
                rule.as_ref().map(|r| r as &dyn std::fmt::Display),
                Verdict::Denied(&denial),
            );
            return Err(denial_to_wire(&denial));
        }
    };
    let rule = loaded.rule_label(grant.rule);
    let described = loaded
        .roots
        .get(grant.root)
        .map_err(OpenError::RootUnavailable)
        .and_then(|root| resolve(root, grant.relative, granted, &grant.options, listed));
    let verdict_rule = Some(&rule as &dyn std::fmt::Display);
    match described {
        Ok((ino, meta)) => {
            audit::decision(
                audit,
                peer,
                client_name,
                path,
                action,
                verdict_rule,
                Verdict::Granted { ino },
            );
            Ok(meta)
        }
        Err(e) => {
            if e.is_refusal() {
                audit::refused::request(path);
            }
            audit::decision(
                audit,
                peer,
                client_name,
                path,
                action,
                verdict_rule,
                Verdict::Failed(&e),
            );
            Err(e.to_wire())
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn open_one(
    audit: &mut Batch,
    loaded: &Loaded,
    client: ClientId,
    peer: &PeerCredentials,
    groups: &[u32],
    path: &[u8],
    access: Access,
    flags: u32,
    fds: &mut Vec<OwnedFd>,
) -> Outcome {
    let policy = &loaded.policy;
    let client_name = policy.client(client).name.as_str();
    let extra = match resolve::check_flags(access, flags) {
        Ok(extra) => extra,
        Err(e) => {
            audit::decision(
                audit,
                peer,
                client_name,
                path,
                access,
                None,
                Verdict::Denied(&e),
            );
            return Err(e.to_wire());
        }
    };
    let grant = match policy.decide(client, path, access) {
        Decision::Allow(grant) => grant,
        Decision::Deny(denial) => {
            let rule = match &denial {
                Denial::DeniedBy(r) | Denial::AccessNotGranted(r) => Some(loaded.rule_label(*r)),
                _ => None,
            };
            audit::decision(
                audit,
                peer,
                client_name,
                path,
                access,
                rule.as_ref().map(|r| r as &dyn std::fmt::Display),
                Verdict::Denied(&denial),
            );
            return Err(denial_to_wire(&denial));
        }
    };
    let rule = loaded.rule_label(grant.rule);
    // Every decision from here on is about this rule.
    let record = |audit: &mut Batch, verdict: Verdict<'_>| {
        audit::decision(audit, peer, client_name, path, access, Some(&rule), verdict);
    };
    let holder = resolve::Holder {
        uid: peer.uid,
        gid: peer.gid,
        groups,
    };
    // A request that changes the filesystem (a truncate, a new file) must not change it
    // unrecorded under `audit_failure = "refuse"`: refused before the open while the log
    // is known to fail, and otherwise its line is written before the change is kept.
    let truncate = extra.contains(nix::fcntl::OFlag::O_TRUNC);
    let changes = truncate || access == Access::Create;
    let record_first = changes && policy.broker().audit_failure == AuditFailure::Refuse;
    if record_first && let Some(error) = audit::trail_failing() {
        let e = OpenError::AuditUnwritable(error);
        record(audit, Verdict::Failed(&e));
        return Err(e.to_wire());
    }
    let opened = loaded
        .roots
        .get(grant.root)
        .map_err(OpenError::RootUnavailable)
        .and_then(|root| {
            resolve::open_beneath(root, grant.relative, access, extra, &grant.options, &holder)
        });
    match opened {
        Ok((fd, mut meta)) => {
            if access == Access::Directory
                && let Err(refusal) =
                    reach::check(loaded, client, path, &grant, fd.as_fd(), &holder)
            {
                audit::decision_listed_instead(
                    audit,
                    peer,
                    client_name,
                    path,
                    access,
                    Some(&rule),
                    &refusal,
                );
                return Err(WireError::new(
                    Errno::EACCES as i32,
                    "a descriptor for this directory would show what the broker's policy \
                     hides beneath it; list it through the broker instead",
                ));
            }
            record(audit, Verdict::Granted { ino: meta.ino });
            let kept = if record_first {
                keep_only_if_recorded(audit, loaded, &grant, access, &meta)
            } else {
                Ok(())
            };
            let kept = kept.and_then(|()| {
                if truncate {
                    meta = resolve::truncate(&fd, meta)?;
                }
                Ok(())
            });
            if let Err(e) = kept {
                record(audit, Verdict::Failed(&e));
                return Err(e.to_wire());
            }
            fds.push(fd);
            Ok::<FileMeta, WireError>(meta)
        }
        Err(e) => {
            if e.is_refusal() {
                audit::refused::request(path);
            }
            record(audit, Verdict::Failed(&e));
            Err(e.to_wire())
        }
    }
}

/// Write the request's audit lines now, before what it changes is kept
/// (`audit_failure = "refuse"`). When they cannot be written the request is refused
/// after the fact: a file it created is removed again (if its name still names it), and
/// a truncate is not done.
fn keep_only_if_recorded(
    audit: &mut Batch,
    loaded: &Loaded,
    grant: &fdbroker_policy::Grant<'_>,
    access: Access,
    meta: &FileMeta,
) -> Result<(), OpenError> {
    let lost = match audit.flush() {
        Ok(_written) => return Ok(()),
        Err(lost) => lost,
    };
    if access == Access::Create {
        let undone = loaded
            .roots
            .get(grant.root)
            .map_err(OpenError::RootUnavailable)
            .and_then(|root| resolve::undo_create(root, grant.relative, &grant.options, meta));
        if !matches!(undone, Ok(true)) {
            tracing::warn!(
                ino = meta.ino,
                result = ?undone,
                "a file created for a request refused for its audit line could not be removed"
            );
        }
    }
    Err(OpenError::AuditUnwritable(lost.error))
}

/// Outside the policy the worker learns only "denied" (or that its path was not a
/// clean absolute path, which says nothing about the filesystem): never whether the
/// file exists.
pub(super) fn denial_to_wire(denial: &Denial) -> WireError {
    match denial {
        Denial::InvalidPath(e) => {
            WireError::new(Errno::EINVAL as i32, format!("invalid path: {e}"))
        }
        _ => WireError::new(
            Errno::EACCES as i32,
            "permission denied by the broker's policy",
        ),
    }
}
