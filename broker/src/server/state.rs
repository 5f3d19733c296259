//! What the broker serves from: the policy and its opened roots, swapped as one unit.
//!
//! A request takes an `Arc<Loaded>` snapshot at its start and finishes under it, so a
//! reload never shows a request half the old rules and half the new; connections pick
//! up the new rules on their next request.

use crate::request::loaded::Loaded;
use fdbroker_policy::Policy;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::SystemTime;

/// Why a reload left the policy in force as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    #[error("this broker was not started from a policy file")]
    NoPolicyFile,
    /// The file cannot be read, parsed or validated (`FILE:LINE:COL: ...`).
    #[error(transparent)]
    Policy(#[from] fdbroker_policy::LoadError),
    /// It would need more than the broker kept when it confined itself (a root outside
    /// the confined ones, writes when none were kept): restart the broker to widen it.
    #[error("{}: {why}", path.display())]
    OutsideConfinement { path: PathBuf, why: String },
}

/// When the policy in force was loaded, and how the last reload went.
#[derive(Debug, Clone)]
pub struct History {
    pub loaded: SystemTime,
    pub last_reload: Option<Reload>,
}

/// One reload: when, and why it was refused (`None`: applied).
#[derive(Debug, Clone)]
pub struct Reload {
    pub at: SystemTime,
    pub refused: Option<String>,
}

/// Counters for status lines and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub connections: AtomicU64,
}

/// State shared by every thread of one broker.
#[derive(Debug)]
pub struct Shared {
    current: RwLock<Arc<Loaded>>,
    /// Where the policy came from, for reloads.
    pub policy_path: Option<PathBuf>,
    pub stats: Stats,
    /// Descriptors passed and not yet received, charged per peer uid.
    pub inflight: Arc<crate::server::inflight::InFlight>,
    last_reload_error: RwLock<Option<String>>,
    /// When the policy in force was loaded, and the last reload's outcome (for
    /// `fdbroker status`).
    history: RwLock<History>,
    /// What the broker kept when it confined itself; reloads must fit inside it.
    confinement: OnceLock<crate::confine::Confinement>,
}

impl Shared {
    pub fn new(policy: Policy, policy_path: Option<PathBuf>) -> Shared {
        Shared {
            current: RwLock::new(Arc::new(Loaded::new(policy, 1))),
            policy_path,
            stats: Stats::default(),
            inflight: Arc::new(crate::server::inflight::InFlight::for_this_process()),
            last_reload_error: RwLock::new(None),
            history: RwLock::new(History {
                loaded: SystemTime::now(),
                last_reload: None,
            }),
            confinement: OnceLock::new(),
        }
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Loaded> {
        // The lock only guards an Arc swap; a poisoned lock still holds a valid Arc.
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Parse, validate and open the policy file again, then swap it in. On any error
    /// the policy in force stays, and the error is returned (and kept for status).
    pub fn reload(&self) -> Result<Arc<Loaded>, ReloadError> {
        let Some(path) = &self.policy_path else {
            return Err(ReloadError::NoPolicyFile);
        };
        let result = match Policy::load(path) {
            Err(e) => Err(ReloadError::Policy(e)),
            Ok(policy) => match self.refused_by_confinement(&policy) {
                Some(why) => Err(ReloadError::OutsideConfinement {
                    path: path.clone(),
                    why,
                }),
                None => {
                    let generation = self.current().generation + 1;
                    let loaded = Arc::new(Loaded::new(policy, generation));
                    *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&loaded);
                    Ok(loaded)
                }
            },
        };
        *self
            .last_reload_error
            .write()
            .unwrap_or_else(|p| p.into_inner()) = result.as_ref().err().map(ToString::to_string);
        self.note_reload(result.as_ref().err().map(ToString::to_string));
        result
    }

    /// Record a reload's outcome: `None` applied (the policy in force was loaded now),
    /// else why it was refused. A server the monitor started for a reload notes its own
    /// start as applied; the monitor tells the serving one of a refusal.
    pub fn note_reload(&self, refused: Option<String>) {
        let mut h = self.history.write().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now();
        if refused.is_none() {
            h.loaded = now;
        }
        h.last_reload = Some(Reload { at: now, refused });
    }

    /// When the policy in force was loaded, and the last reload.
    pub fn history(&self) -> History {
        self.history
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Record the confinement the broker applied (once).
    pub fn set_confinement(&self, c: crate::confine::Confinement) {
        let _ = self.confinement.set(c);
    }

    pub fn confinement(&self) -> Option<&crate::confine::Confinement> {
        self.confinement.get()
    }

    fn refused_by_confinement(&self, policy: &Policy) -> Option<String> {
        self.confinement.get().and_then(|c| c.refuses(policy))
    }

    pub fn last_reload_error(&self) -> Option<String> {
        self.last_reload_error
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn count_request(&self) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
    }
}
