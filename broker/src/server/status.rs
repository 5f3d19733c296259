//! The report `fdbroker status` asks a server for (`Op::Status`): what it serves, whom,
//! and what it decided since the service started. Built by the event loop, which alone
//! sees every connection, on request of the broker's operator only (`Conn::is_operator`:
//! root or the broker's own user, by `SO_PEERCRED`); the requester deserializes the
//! same [`Report`].
//!
//! Counts come from `audit::counts` and survive reloads; connections and descriptors in
//! flight are this moment's.

use super::event_loop::Inner;
use super::lock;
use crate::audit::counts::{self, Counts};
use crate::audit::line::Utc;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most connections listed one by one; the rest are only counted (the report must fit
/// in one message).
pub const MAX_LISTED: usize = 256;
/// Most (client, rule) lines listed.
pub const MAX_RULES: usize = 256;

/// The whole report.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Report {
    /// The server process answering (the monitor's child under `fdbroker serve`).
    pub pid: u32,
    /// When the service started (its first server), UTC, and how long ago in seconds.
    pub started: String,
    pub uptime_s: u64,
    pub policy: PolicyInfo,
    /// The last reload since this server runs, `None` if there was none.
    pub last_reload: Option<ReloadInfo>,
    /// Open connections of policy clients that said hello (at most [`MAX_LISTED`];
    /// `connections_total` counts them all).
    pub connections: Vec<Peer>,
    pub connections_total: usize,
    /// Per client, since the service started.
    pub clients: Vec<ClientInfo>,
    /// Clients in all; `clients` lists fewer when the report would not fit in one
    /// message.
    #[serde(default)]
    pub clients_total: usize,
    /// Per client and rule, since the service started (at most [`MAX_RULES`]).
    pub rules: Vec<counts::RuleCount>,
    /// (client, rule) lines in all; `rules` lists fewer when cut.
    #[serde(default)]
    pub rules_total: usize,
    /// Descriptors passed and not yet received, per peer uid.
    pub in_flight: Vec<InFlightInfo>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PolicyInfo {
    /// The policy file, `None` for a policy given as a value (an embedding program).
    pub file: Option<String>,
    /// When the policy in force was loaded, UTC.
    pub loaded: String,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ReloadInfo {
    pub at: String,
    /// `applied` or `refused`.
    pub outcome: String,
    /// Why it was refused (`FILE:LINE:COL: ...`).
    pub error: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub client: String,
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ClientInfo {
    pub client: String,
    /// Open connections now.
    pub connections: usize,
    /// Decisions since the service started: each path of a batch, stat or listing is one.
    pub requests: u64,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct InFlightInfo {
    pub uid: u32,
    pub descriptors: usize,
}

fn utc(t: SystemTime) -> String {
    Utc(t).to_string()
}

impl Inner {
    /// The report, as JSON.
    pub(super) fn status_report(&self) -> String {
        let loaded = self.shared.current();
        let mut connections: Vec<Peer> = lock(&self.conns)
            .iter()
            .filter(|c| c.greeted())
            .filter_map(|c| {
                c.client_in(&loaded).map(|id| Peer {
                    client: loaded.policy.client(id).name.clone(),
                    uid: c.peer.uid,
                    gid: c.peer.gid,
                    pid: c.peer.pid,
                })
            })
            .collect();
        connections.sort_by(|a, b| (&a.client, a.uid, a.pid).cmp(&(&b.client, b.uid, b.pid)));
        let tally = counts::snapshot();
        // Every client of the policy in force, and those only the tally remembers.
        let mut clients: Vec<ClientInfo> = loaded
            .policy
            .clients()
            .iter()
            .map(|c| ClientInfo {
                client: c.name.clone(),
                connections: 0,
                requests: 0,
                counts: Counts::default(),
            })
            .collect();
        for (name, counts) in tally.per_client() {
            match clients.iter_mut().find(|c| c.client == name) {
                Some(c) => c.counts = counts,
                None => clients.push(ClientInfo {
                    client: name,
                    connections: 0,
                    requests: 0,
                    counts,
                }),
            }
        }
        for c in &mut clients {
            c.requests = c.counts.requests();
            c.connections = connections.iter().filter(|p| p.client == c.client).count();
        }
        let connections_total = connections.len();
        connections.truncate(MAX_LISTED);
        let mut rules = tally.rules;
        let rules_total = rules.len();
        rules.truncate(MAX_RULES);
        let clients_total = clients.len();
        let started = UNIX_EPOCH + Duration::from_secs(tally.started_unix);
        let history = self.shared.history();
        let report = Report {
            pid: std::process::id(),
            started: utc(started),
            uptime_s: SystemTime::now()
                .duration_since(started)
                .map_or(0, |d| d.as_secs()),
            policy: PolicyInfo {
                file: self
                    .shared
                    .policy_path
                    .as_ref()
                    .map(|p| p.display().to_string()),
                loaded: utc(history.loaded),
            },
            last_reload: history.last_reload.map(|r| ReloadInfo {
                at: utc(r.at),
                outcome: if r.refused.is_some() {
                    "refused"
                } else {
                    "applied"
                }
                .to_owned(),
                error: r.refused,
            }),
            connections,
            connections_total,
            clients,
            clients_total,
            rules,
            rules_total,
            in_flight: self
                .shared
                .inflight
                .by_uid()
                .into_iter()
                .map(|(uid, descriptors)| InFlightInfo { uid, descriptors })
                .collect(),
        };
        fit(report)
    }
}

/// Most bytes of the report's JSON: one reply, with room for its frame.
const MAX_REPORT: usize = fdbroker_shared::frame::MAX_MESSAGE - 1024;

/// The report as JSON, its lists halved (longest first) until it fits in one message:
/// a large policy or many connections cut the report, never refuse it.
fn fit(mut report: Report) -> String {
    loop {
        let text =
            serde_json::to_string(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        if text.len() <= MAX_REPORT {
            return text;
        }
        let longest = [
            report.connections.len(),
            report.clients.len(),
            report.rules.len(),
            report.in_flight.len(),
        ];
        match longest.into_iter().enumerate().max_by_key(|&(_, n)| n) {
            Some((_, 0)) | None => {
                // Only the fixed fields: cut the reload error, the one free text.
                if let Some(r) = &mut report.last_reload
                    && let Some(e) = &mut r.error
                    && e.len() > 256
                {
                    let mut at = 256;
                    while !e.is_char_boundary(at) {
                        at -= 1;
                    }
                    e.truncate(at);
                    continue;
                }
                return text;
            }
            Some((0, n)) => report.connections.truncate(n / 2),
            Some((1, n)) => report.clients.truncate(n / 2),
            Some((2, n)) => report.rules.truncate(n / 2),
            Some((_, n)) => report.in_flight.truncate(n / 2),
        }
    }
}
