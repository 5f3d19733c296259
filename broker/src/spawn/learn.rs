//! `fdbroker run --learn OUT.toml`: the spawn broker serves its worker with the chosen
//! client learning beneath the operator's `--learn-scope` directories, then writes the
//! narrowest policy that grants what the worker used. Runs inside the spawn broker
//! (root), before the worker starts ([`prepare`]) and after it has exited
//! ([`Prepared::finish`]).
//!
//! Learn mode grants nothing a rule could not: each scope is an allow rule of the
//! policy (`learn_scope`), held open as a root and opened beneath with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` like any other, so neither a symlink
//! nor `..` leads out of it, and the base policy's deny rules still win. What changes is
//! that every line says `mode="learn"` and the rule is labelled `learn_scope:DIR/`.
//! The output file is opened before the broker confines itself (Landlock would refuse
//! it later) and must not lie inside a scope, where the worker could reach it.

use crate::spawn::broker::SpawnError;
use fdbroker_policy::audit_log::{Evidence, Outcome};
use fdbroker_policy::replay::redecide;
use fdbroker_policy::suggest::{self, Suggestion};
use fdbroker_policy::{LoadError, Policy};
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What `--learn` asked for.
#[derive(Debug, Clone)]
pub struct Learn {
    pub out: PathBuf,
    pub scope: Vec<PathBuf>,
    /// Fold more than this many siblings with the same access into `DIR/*`.
    pub collapse: usize,
}

/// The policy text used when `--learn` is given no `--policy`: one client, the default
/// `[sandbox]`.
const BLANK: &str = "# Written by `fdbroker run --learn`: review it before use.\n\n\
[[client]]\nname = \"worker\"\nusers = [\"nobody\"]\n";

/// Why learn mode cannot start or could not write its policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LearnError {
    #[error(
        "--learn needs at least one --learn-scope DIR: learn mode grants only beneath what you name"
    )]
    NoScope,
    #[error("--learn-scope {}: {source}", .dir.display())]
    Scope {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--learn-scope {} is not an absolute path of UTF-8 text", .0.display())]
    ScopeName(PathBuf),
    #[error("{} lies inside --learn-scope {}, where the worker could write it", .out.display(), .scope.display())]
    OutInsideScope { out: PathBuf, scope: PathBuf },
    #[error(
        "{} is not a regular file of this user's with one name (another user's file, a hard \
         link, a FIFO or a device): refusing to write the learned policy into it",
        .out.display()
    )]
    OutNotOurs { out: PathBuf },
    #[error("cannot open {}: {source}", .out.display())]
    Out {
        out: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the learned policy: {0}")]
    Render(#[from] suggest::RenderError),
    #[error("the learned policy does not load (please report this): {0}")]
    Invalid(#[source] LoadError),
    #[error("cannot write {}: {source}", .out.display())]
    Write {
        out: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Learn mode ready to run: the texts to build the learning policy from, and the
/// output file, already open.
pub struct Prepared {
    text: String,
    origin: PathBuf,
    client: String,
    scope: Vec<String>,
    collapse: usize,
    out_path: PathBuf,
    out: File,
}

/// Check the scope and the output file, and choose the client; before anything runs.
pub fn prepare(
    base: Option<&Path>,
    client: Option<&str>,
    learn: &Learn,
) -> Result<Prepared, SpawnError> {
    let (text, origin) = match base {
        Some(p) => (
            Policy::read_text(p).map_err(SpawnError::Policy)?,
            p.to_owned(),
        ),
        None => (BLANK.to_owned(), learn.out.clone()),
    };
    let policy = Policy::parse(&text, &origin).map_err(SpawnError::Policy)?;
    let id = crate::spawn::broker::pick_client(&policy, client)?;
    let client = policy.client(id).name.clone();
    if learn.scope.is_empty() {
        return Err(LearnError::NoScope.into());
    }
    let mut scope = Vec::with_capacity(learn.scope.len());
    let mut real_scope = Vec::with_capacity(learn.scope.len());
    for dir in &learn.scope {
        let name = dir
            .to_str()
            .filter(|_| dir.is_absolute())
            .ok_or_else(|| LearnError::ScopeName(dir.clone()))?;
        let real = std::fs::canonicalize(dir).map_err(|source| LearnError::Scope {
            dir: dir.clone(),
            source,
        })?;
        // The scope is the directory as the kernel resolves it now, not its spelling:
        // deny rules are matched on the text, and a link (or `/proc/self/root`) would
        // put the base's deny rules under another name, or make `/` of it. The broker
        // then opens it following no link, so a change after this check fails closed.
        let _ = name;
        let real_name = real
            .to_str()
            .ok_or_else(|| LearnError::ScopeName(dir.clone()))?;
        scope.push(real_name.trim_end_matches('/').to_owned());
        real_scope.push(real);
    }
    // The output's directory, as the kernel resolves it, must lie outside every scope.
    let out_dir = match learn.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let out_real = std::fs::canonicalize(&out_dir).map_err(|source| LearnError::Out {
        out: learn.out.clone(),
        source,
    })?;
    if let Some((i, _)) = real_scope
        .iter()
        .enumerate()
        .find(|(_, s)| out_real.starts_with(s))
    {
        return Err(LearnError::OutInsideScope {
            out: learn.out.clone(),
            scope: learn.scope.get(i).cloned().unwrap_or_default(),
        }
        .into());
    }
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&learn.out)
        .map_err(|source| LearnError::Out {
            out: learn.out.clone(),
            source,
        })?;
    // What was opened, not what was named: a file someone else made there first (a
    // shared directory such as /tmp) would stay theirs to edit before the operator
    // loads it, and a hard link would have root rewrite another file.
    {
        use std::os::unix::fs::MetadataExt;
        let meta = out.metadata().map_err(|source| LearnError::Out {
            out: learn.out.clone(),
            source,
        })?;
        let euid = nix::unistd::geteuid().as_raw();
        if !meta.file_type().is_file() || meta.nlink() != 1 || meta.uid() != euid {
            return Err(LearnError::OutNotOurs {
                out: learn.out.clone(),
            }
            .into());
        }
    }
    let prepared = Prepared {
        text,
        origin,
        client,
        scope,
        collapse: learn.collapse,
        out_path: learn.out.clone(),
        out,
    };
    // Fail now, not after the run, if the scope itself is refused (a deny covering it).
    prepared.policy()?;
    Ok(prepared)
}

/// What a learning run saw and wrote.
#[derive(Debug, Default)]
pub struct Learned {
    pub rules: usize,
    pub requests: u64,
    /// Requests refused: outside every scope, or denied by the base policy.
    pub refused: Vec<(String, u64)>,
    pub unwritable: usize,
}

impl Prepared {
    /// The policy the broker serves: the base, its client learning beneath the scope.
    pub fn policy(&self) -> Result<Policy, SpawnError> {
        Policy::parse_learning(&self.text, &self.origin, &self.client, &self.scope)
            .map_err(SpawnError::Policy)
    }

    pub fn client(&self) -> &str {
        &self.client
    }

    /// Say loudly what is about to happen.
    pub fn announce(&self) {
        tracing::warn!(
            client = %self.client,
            scope = ?self.scope,
            out = %self.out_path.display(),
            "LEARN MODE: requests beneath the learning scope that no rule grants are GRANTED \
             (any access, including write and create) and recorded with mode=\"learn\"; \
             do not run untrusted input this way"
        );
    }

    /// Turn `evidence` (what the tally kept) into rules and write the policy.
    pub fn finish(mut self, evidence: &Evidence) -> Result<Learned, LearnError> {
        let base = Policy::parse(&self.text, &self.origin).map_err(LearnError::Invalid)?;
        let mut learned = Learned::default();
        let mut needs = Vec::new();
        for (rec, count) in &evidence.records {
            if rec.client != self.client {
                continue;
            }
            match rec.outcome {
                // A request for a file that does not exist is learnt too: rerun, it
                // fails the same way (ENOENT) instead of being refused, which a program
                // probing for optional files treats differently. Other failures (a
                // symlink, a device) would fail again under any rule: not learnt.
                Outcome::Granted if !redecide(&base, rec).allowed() => {
                    needs.push((rec.path.clone(), rec.action, *count));
                }
                Outcome::Failed if rec.missing && !redecide(&base, rec).allowed() => {
                    needs.push((rec.path.clone(), rec.action, *count));
                }
                Outcome::Granted | Outcome::Failed => {}
                Outcome::Denied => learned.refused.push((
                    format!("{} {}", rec.action.as_str(), rec.path.escape_ascii()),
                    *count,
                )),
            }
        }
        let (rules, unwritable) = suggest::suggest(needs, self.collapse);
        learned.rules = rules.len();
        learned.requests = rules.iter().map(|r: &Suggestion| r.requests).sum();
        learned.unwritable = unwritable.paths.len();
        let text = suggest::render(&self.text, &self.client, &rules)?;
        let written = Policy::parse(&text, &self.out_path).map_err(LearnError::Invalid)?;
        // What `policy check --strict` would say about it (a root that a user other than
        // root could change, say), before the operator runs it.
        for w in crate::lint::check(&written, &crate::lint::unit::Unit::installed_or_shipped()) {
            crate::log::sink::eprint_user_line(&format!("fdbroker: learned policy: {w}"));
        }
        let write = |out: &mut File| -> std::io::Result<()> {
            out.set_len(0)?;
            // No fsync: the confined broker may not call it, and the file is closed
            // (its data reaches the page cache) before `fdbroker run` exits.
            out.write_all(text.as_bytes())
        };
        write(&mut self.out).map_err(|source| LearnError::Write {
            out: self.out_path.clone(),
            source,
        })?;
        Ok(learned)
    }

    pub fn out_path(&self) -> &Path {
        &self.out_path
    }
}

/// Write the learned policy and say what it holds (stderr: stdout is the worker's).
pub fn report(prepared: Prepared, evidence: &Evidence) -> Result<(), LearnError> {
    let out = prepared.out_path().to_owned();
    let learned = prepared.finish(evidence)?;
    let say = crate::log::sink::eprint_user_line;
    say(&format!(
        "fdbroker: learned {} rule(s) covering {} request(s) into {}; review it, then \
         `fdbroker policy check --strict {}`",
        learned.rules,
        learned.requests,
        out.display(),
        out.display()
    ));
    for (what, count) in learned.refused.iter().take(20) {
        say(&format!(
            "fdbroker: refused {count}x (outside the learning scope, or denied by the base policy): {what}"
        ));
    }
    if learned.unwritable > 0 {
        say(&format!(
            "fdbroker: {} path(s) cannot be written as a rule (not UTF-8; glob, control or invisible characters) \
             and were left out",
            learned.unwritable
        ));
    }
    if evidence.dropped > 0 {
        say(&format!(
            "fdbroker: {} decision(s) were not kept (past {} distinct ones or {} MiB of \
             paths): their rules are missing",
            evidence.dropped,
            fdbroker_policy::audit_log::MAX_RECORDS,
            fdbroker_policy::audit_log::MAX_BYTES >> 20
        ));
    }
    Ok(())
}
