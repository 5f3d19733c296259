//! From the raw file to a [`Policy`]: validation, name resolution, and building the
//! per-client indexes.
//!
//! Every check that can be done before the broker runs is done here, and each failure
//! points at the key or value responsible. The first error is reported; fixing it and
//! loading again finds the next, which keeps each message precise.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::{Group, User};
use toml::Spanned;

use crate::file::{
    AllowTable, BrokerTable, ClientTable, DenyTable, NameOrId, PolicyFile, SandboxTable,
};
use crate::index::Index;
use crate::location::LineIndex;
use crate::path;
use crate::pattern::{Pattern, join};
use crate::{
    Access, AccessSet, AuditFailure, BrokerSettings, Client, ClientId, Effect, IdKind, LoadError,
    LoadErrorKind, Location, ModeError, PatternKind, Policy, RootId, Rule, RuleId, RuleOptions,
    SandboxSettings, Symlinks, UidRange, UserSpec,
};

/// `sizeof(sockaddr_un.sun_path)` is 108, including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The largest policy file load reads, in bytes (4 MiB): far above any policy written
/// by hand or generated for a real deployment (a rule is a few lines), and small enough
/// that parsing one takes well under a second and a few tens of MiB. A bigger file is
/// refused before it is parsed ([`LoadErrorKind::TooLarge`]), so a mistake (a log or a
/// generated list pointed at by `--policy`) costs neither time nor memory.
pub const MAX_POLICY_BYTES: u64 = 4 << 20;

/// The most rules (`[[client.allow]]` and `[[client.deny]]` of every client together) a
/// policy may have: generous for generated policies, bounded so that checking and
/// indexing a policy stays quick ([`LoadErrorKind::TooManyRules`]).
pub const MAX_RULES: usize = 20_000;

/// The highest id load accepts: `(uid_t)-1` means "no id" to the kernel.
const MAX_ID: i64 = u32::MAX as i64 - 1;

/// Where errors point: the file name and a way to turn byte offsets into positions.
struct Context<'a> {
    origin: &'a Path,
    lines: LineIndex<'a>,
}

impl Context<'_> {
    fn at(&self, offset: usize) -> Location {
        self.lines.location(offset)
    }

    fn error(&self, location: Location, kind: LoadErrorKind) -> LoadError {
        LoadError::new(self.origin, Some(location), kind)
    }

    /// An error pointing at the start of a spanned value.
    fn at_value<T>(&self, value: &Spanned<T>, kind: LoadErrorKind) -> LoadError {
        self.error(self.at(value.span().start), kind)
    }
}

/// Read the policy file at `path`, never more than [`MAX_POLICY_BYTES`] of it.
pub(crate) fn read(path: &Path) -> Result<String, LoadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt as _;
    let fail = |e| LoadError::new(path, None, LoadErrorKind::Read(e));
    // Never waits: a FIFO (or a device) named as the policy would hold up whoever reads
    // it (a broker's reload, root's `reload --replay` of another user's `serve`), so
    // only a regular file is read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(path)
        .map_err(fail)?;
    if !file.metadata().map_err(fail)?.is_file() {
        return Err(fail(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    too_large(path, bytes.len())?;
    String::from_utf8(bytes).map_err(|_| {
        fail(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })
}

fn too_large(origin: &Path, len: usize) -> Result<(), LoadError> {
    if u64::try_from(len).map_or(true, |n| n > MAX_POLICY_BYTES) {
        return Err(LoadError::new(
            origin,
            None,
            LoadErrorKind::TooLarge {
                max: MAX_POLICY_BYTES,
            },
        ));
    }
    Ok(())
}

/// The first rule beyond [`MAX_RULES`], if there are that many.
fn too_many_rules(cx: &Context<'_>, clients: &[Spanned<ClientTable>]) -> Result<(), LoadError> {
    let clients = || clients.iter().map(Spanned::get_ref);
    let count: usize = clients().map(|c| c.allow.len() + c.deny.len()).sum();
    if count <= MAX_RULES {
        return Ok(());
    }
    let spans = clients().flat_map(|c| {
        c.allow
            .iter()
            .map(|a| a.path.span().start)
            .chain(c.deny.iter().map(|d| d.path.span().start))
    });
    let at = spans.skip(MAX_RULES).min().unwrap_or(0);
    Err(cx.error(
        cx.at(at),
        LoadErrorKind::TooManyRules {
            count,
            max: MAX_RULES,
        },
    ))
}

pub(crate) fn parse(text: &str, origin: &Path) -> Result<Policy, LoadError> {
    parse_with(text, origin, None)
}

/// Parse, with `learn` = (client name, directories) set as that client's `learn_scope`
/// (`fdbroker run --learn`), as if the file said so; the file's own rules keep their
/// positions.
pub(crate) fn parse_with(
    text: &str,
    origin: &Path,
    learn: Option<(&str, &[String])>,
) -> Result<Policy, LoadError> {
    too_large(origin, text.len())?;
    let cx = Context {
        origin,
        lines: LineIndex::new(text),
    };
    let file: PolicyFile = toml::from_str(text).map_err(|e| {
        let location = e.span().map(|s| cx.at(s.start));
        LoadError::new(
            origin,
            location,
            LoadErrorKind::Toml(e.message().to_owned()),
        )
    })?;
    too_many_rules(&cx, &file.client)?;
    let broker = broker_settings(&cx, file.broker)?;
    let sandbox = sandbox_settings(&cx, file.sandbox)?;
    if file.client.is_empty() {
        return Err(cx.error(Location::START, LoadErrorKind::NoClients));
    }
    let mut clients = file.client;
    if let Some((name, scope)) = learn {
        for table in clients.iter_mut() {
            let span = table.span();
            let table = table.get_mut();
            if table.name.get_ref() == name {
                table.learn_scope = Some(
                    scope
                        .iter()
                        .map(|d| Spanned::new(span.start..span.start, d.clone()))
                        .collect(),
                );
            }
        }
    }
    let mut builder = Builder::default();
    for table in clients {
        builder.client(&cx, table)?;
    }
    Ok(builder.finish(origin, broker, sandbox))
}

fn broker_settings(
    cx: &Context<'_>,
    table: Option<BrokerTable>,
) -> Result<BrokerSettings, LoadError> {
    let mut settings = BrokerSettings::default();
    let Some(table) = table else {
        return Ok(settings);
    };
    if let Some(socket) = table.socket {
        let bytes = socket.get_ref().as_bytes();
        path::check(bytes).map_err(|reason| {
            cx.at_value(
                &socket,
                LoadErrorKind::BadSettingPath {
                    what: "socket path",
                    path: socket.get_ref().clone(),
                    reason,
                },
            )
        })?;
        if bytes.len() > MAX_SOCKET_PATH {
            return Err(cx.at_value(
                &socket,
                LoadErrorKind::SocketPathTooLong {
                    path: socket.get_ref().clone(),
                    len: bytes.len(),
                },
            ));
        }
        settings.socket = Some(PathBuf::from(socket.into_inner()));
    }
    if let Some(mode) = table.socket_mode {
        settings.socket_mode = octal_mode(cx, &mode, "socket_mode", false)?;
    }
    if let Some(group) = table.socket_group {
        settings.socket_group = Some(resolve(cx, IdKind::Gid, &group)?);
    }
    if let Some(v) = table.max_connections {
        settings.max_connections = count(cx, &v, "max_connections", 1, i64::MAX, "at least 1")?;
    }
    if let Some(v) = table.max_connections_per_uid {
        settings.max_connections_per_uid =
            count(cx, &v, "max_connections_per_uid", 1, i64::MAX, "at least 1")?;
    }
    if let Some(v) = table.max_batch {
        settings.max_batch = count(
            cx,
            &v,
            "max_batch",
            1,
            BrokerSettings::MAX_BATCH as i64,
            "between 1 and 128",
        )?;
    }
    if let Some(v) = table.idle_timeout {
        let secs = count(
            cx,
            &v,
            "idle_timeout",
            0,
            i64::MAX,
            "0 (never) or a number of seconds",
        )?;
        settings.idle_timeout = (secs > 0).then(|| Duration::from_secs(secs as u64));
    }
    if let Some(confine) = table.confine {
        settings.confine = confine;
    }
    if let Some(v) = table.audit_failure {
        settings.audit_failure = match v.get_ref().as_str() {
            "refuse" => AuditFailure::Refuse,
            "serve" => AuditFailure::Serve,
            other => {
                return Err(cx.at_value(&v, LoadErrorKind::UnknownAuditFailure(other.to_owned())));
            }
        };
    }
    Ok(settings)
}

fn sandbox_settings(
    cx: &Context<'_>,
    table: Option<SandboxTable>,
) -> Result<SandboxSettings, LoadError> {
    let mut settings = SandboxSettings::default();
    let Some(table) = table else {
        return Ok(settings);
    };
    settings.limits = sandbox_limits(cx, &table)?;
    if let Some(paths) = table.read_only {
        settings.read_only = paths
            .into_iter()
            .map(|p| {
                path::check(p.get_ref().as_bytes()).map_err(|reason| {
                    cx.at_value(
                        &p,
                        LoadErrorKind::BadSettingPath {
                            what: "sandbox path",
                            path: p.get_ref().clone(),
                            reason,
                        },
                    )
                })?;
                Ok(PathBuf::from(p.into_inner()))
            })
            .collect::<Result<_, LoadError>>()?;
    }
    if let Some(user) = table.user {
        settings.user = match user.get_ref() {
            NameOrId::Id(0) => return Err(cx.at_value(&user, LoadErrorKind::SandboxRoot)),
            NameOrId::Name(name) if name == "root" => {
                return Err(cx.at_value(&user, LoadErrorKind::SandboxRoot));
            }
            NameOrId::Id(n) => UserSpec::Id(id_in_range(cx, &user, IdKind::Uid, *n)?),
            NameOrId::Name(name) if name == UserSpec::DYNAMIC => UserSpec::Dynamic,
            NameOrId::Name(name) => UserSpec::Name(name.clone()),
        };
    }
    if let Some(range) = table.uid_range {
        settings.uid_range = uid_range(range.get_ref()).ok_or_else(|| {
            cx.at_value(&range, LoadErrorKind::BadUidRange(range.get_ref().clone()))
        })?;
    }
    if let Some(fail) = table.fail_on_denial {
        settings.fail_on_denial = fail;
    }
    Ok(settings)
}

/// The `[sandbox]` limits, each checked where it is written.
fn sandbox_limits(cx: &Context<'_>, table: &SandboxTable) -> Result<crate::Limits, LoadError> {
    use crate::limits::{self, LimitError};
    let text = |key: &'static str,
                v: &Option<toml::Spanned<String>>,
                parse: fn(&str) -> Result<u64, LimitError>|
     -> Result<Option<u64>, LoadError> {
        v.as_ref()
            .map(|v| {
                parse(v.get_ref()).map_err(|reason| {
                    cx.at_value(
                        v,
                        LoadErrorKind::BadLimit {
                            key,
                            value: v.get_ref().clone(),
                            reason,
                        },
                    )
                })
            })
            .transpose()
    };
    let count =
        |key: &'static str, v: &Option<toml::Spanned<i64>>| -> Result<Option<u64>, LoadError> {
            v.as_ref()
                .map(|v| match u64::try_from(*v.get_ref()) {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(cx.at_value(
                        v,
                        LoadErrorKind::OutOfRange {
                            key,
                            value: *v.get_ref(),
                            expected: "a positive number",
                        },
                    )),
                })
                .transpose()
        };
    let millis = |v: Option<u64>| v.map(std::time::Duration::from_millis);
    Ok(crate::Limits {
        time: millis(text("time_limit", &table.time_limit, limits::duration_ms)?),
        cpu: millis(text("cpu_limit", &table.cpu_limit, limits::duration_ms)?),
        memory: text("memory_limit", &table.memory_limit, limits::size)?,
        pids: count("pids_limit", &table.pids_limit)?,
        file_size: text("file_size_limit", &table.file_size_limit, limits::size)?,
        nofile: count("nofile_limit", &table.nofile_limit)?,
        output: text("output_limit", &table.output_limit, limits::size)?,
    })
}

/// `"FIRST-LAST"`, each a decimal or `0x` hexadecimal id, `FIRST <= LAST`, neither 0
/// (root) nor `(uid_t)-1`, and not holding 65534 (`nobody`, shared by other programs).
fn uid_range(text: &str) -> Option<UidRange> {
    let (first, last) = text.split_once('-')?;
    let id = |s: &str| -> Option<u32> {
        let s = s.trim();
        match s.strip_prefix("0x") {
            Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                u32::from_str_radix(hex, 16).ok()
            }
            Some(_) => None,
            None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
            None => None,
        }
    };
    let range = UidRange {
        first: id(first)?,
        last: id(last)?,
    };
    let nobody = 65534;
    (range.first > 0
        && range.first <= range.last
        && range.last < u32::MAX
        && !range.contains(nobody))
    .then_some(range)
}

/// An integer setting within `min..=max`.
fn count(
    cx: &Context<'_>,
    value: &Spanned<i64>,
    key: &'static str,
    min: i64,
    max: i64,
    expected: &'static str,
) -> Result<usize, LoadError> {
    let v = *value.get_ref();
    match usize::try_from(v) {
        Ok(n) if (min..=max).contains(&v) => Ok(n),
        _ => Err(cx.at_value(
            value,
            LoadErrorKind::OutOfRange {
                key,
                value: v,
                expected,
            },
        )),
    }
}

/// Parses `"0640"`-style modes. Create modes additionally refuse the setuid, setgid
/// and sticky bits by name, since a worker must never be able to make such a file.
fn octal_mode(
    cx: &Context<'_>,
    value: &Spanned<String>,
    what: &'static str,
    create: bool,
) -> Result<u32, LoadError> {
    let text = value.get_ref();
    let parsed = if text.is_empty() || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        Err(ModeError::NotOctal)
    } else {
        match u32::from_str_radix(text, 8) {
            Err(_) => Err(ModeError::TooLarge),
            Ok(n) if create && n <= 0o7777 && n & 0o7000 != 0 => Err(ModeError::SpecialBits),
            Ok(n) if n > 0o777 => Err(ModeError::TooLarge),
            Ok(n) => Ok(n),
        }
    };
    parsed.map_err(|reason| {
        cx.at_value(
            value,
            LoadErrorKind::BadMode {
                what,
                value: text.clone(),
                reason,
            },
        )
    })
}

fn id_in_range<T>(
    cx: &Context<'_>,
    at: &Spanned<T>,
    kind: IdKind,
    value: i64,
) -> Result<u32, LoadError> {
    match u32::try_from(value) {
        Ok(id) if value <= MAX_ID => Ok(id),
        _ => Err(cx.at_value(at, LoadErrorKind::IdOutOfRange { kind, value })),
    }
}

/// A user or group name or number to an id. Names are looked up once, here, so the
/// running broker never consults NSS on behalf of a peer.
fn resolve(cx: &Context<'_>, kind: IdKind, entry: &Spanned<NameOrId>) -> Result<u32, LoadError> {
    let name = match entry.get_ref() {
        NameOrId::Id(n) => return id_in_range(cx, entry, kind, *n),
        NameOrId::Name(name) => name,
    };
    let found = match kind {
        IdKind::Uid => User::from_name(name).map(|u| u.map(|u| u.uid.as_raw())),
        IdKind::Gid => Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw())),
    };
    match found {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(cx.at_value(
            entry,
            match kind {
                IdKind::Uid => LoadErrorKind::UnknownUser(name.clone()),
                IdKind::Gid => LoadErrorKind::UnknownGroup(name.clone()),
            },
        )),
        Err(errno) => Err(cx.at_value(
            entry,
            LoadErrorKind::Lookup {
                kind,
                name: name.clone(),
                errno,
            },
        )),
    }
}

/// An allow or deny table, to be numbered in file order.
enum RawRule {
    Allow(Box<AllowTable>),
    Deny(DenyTable),
    /// An allow rule made from a `learn_scope` entry.
    Learn(Box<AllowTable>),
}

impl RawRule {
    fn path(&self) -> &Spanned<String> {
        match self {
            RawRule::Allow(t) => &t.path,
            RawRule::Learn(t) => &t.path,
            RawRule::Deny(t) => &t.path,
        }
    }
}

#[derive(Default)]
struct Builder {
    clients: Vec<Client>,
    names: HashMap<String, Location>,
    rules: Vec<Rule>,
    /// Parsed pattern of each rule, by `RuleId`.
    patterns: Vec<Pattern>,
    indexes: Vec<Index>,
    by_uid: HashMap<u32, ClientId>,
    by_gid: HashMap<u32, ClientId>,
    roots: Vec<PathBuf>,
    root_ids: HashMap<Vec<Box<[u8]>>, RootId>,
    granted: Vec<Access>,
    /// The client with a `learn_scope`, if one has it.
    learner: Option<String>,
}

impl Builder {
    fn client(&mut self, cx: &Context<'_>, table: Spanned<ClientTable>) -> Result<(), LoadError> {
        let id = ClientId(self.clients.len());
        let header = cx.at(table.span().start);
        let table = table.into_inner();
        let name = table.name.get_ref().clone();
        let location = cx.at(table.name.span().start);
        if name.trim().is_empty() {
            return Err(cx.error(location, LoadErrorKind::EmptyClientName));
        }
        if let Some(&first) = self.names.get(&name) {
            return Err(cx.error(location, LoadErrorKind::DuplicateClient { name, first }));
        }
        let users = self.ids(cx, IdKind::Uid, table.users.unwrap_or_default(), id, &name)?;
        let groups = self.ids(cx, IdKind::Gid, table.groups.unwrap_or_default(), id, &name)?;
        if users.is_empty() && groups.is_empty() {
            return Err(cx.error(header, LoadErrorKind::MatchesNoOne { client: name }));
        }

        let learning = self.learning(cx, &name, table.learn_scope.as_deref())?;
        let mut raw: Vec<RawRule> = table
            .allow
            .into_iter()
            .map(|t| RawRule::Allow(Box::new(t)))
            .collect();
        raw.extend(table.deny.into_iter().map(RawRule::Deny));
        raw.extend(learning.into_iter().map(|t| RawRule::Learn(Box::new(t))));
        raw.sort_by_key(|r| r.path().span().start);
        let mut index = Index::default();
        let mut rule_ids = Vec::with_capacity(raw.len());
        for r in raw {
            let (rule, pattern) = self.rule(cx, id, r)?;
            index.insert(rule.id, rule.effect, &pattern);
            rule_ids.push(rule.id);
            self.rules.push(rule);
            self.patterns.push(pattern);
        }
        self.check_client_rules(cx, &index, &rule_ids)?;

        self.names.insert(name.clone(), location);
        self.indexes.push(index);
        self.clients.push(Client {
            name,
            users,
            groups,
            rules: rule_ids,
            learning: table.learn_scope.is_some(),
            location,
        });
        Ok(())
    }

    /// The allow rules a `learn_scope` stands for: each directory as a subtree with
    /// every access word, opened beneath its own held root like any rule (so a symlink
    /// or `..` can no more leave it than any other rule's root).
    fn learning(
        &mut self,
        cx: &Context<'_>,
        name: &str,
        scope: Option<&[Spanned<String>]>,
    ) -> Result<Vec<AllowTable>, LoadError> {
        let Some(scope) = scope else {
            return Ok(Vec::new());
        };
        let Some(head) = scope.first() else {
            return Err(cx.error(
                Location::START,
                LoadErrorKind::BadLearnScope {
                    path: String::new(),
                },
            ));
        };
        if let Some(first) = &self.learner {
            let first = first.clone();
            return Err(cx.at_value(
                head,
                LoadErrorKind::LearnTwice {
                    first,
                    second: name.to_owned(),
                },
            ));
        }
        self.learner = Some(name.to_owned());
        let mut out = Vec::with_capacity(scope.len());
        for dir in scope {
            let text = dir.get_ref();
            let subtree = if text.ends_with('/') {
                text.clone()
            } else {
                format!("{text}/")
            };
            let bad = || cx.at_value(dir, LoadErrorKind::BadLearnScope { path: text.clone() });
            match Pattern::parse(&subtree) {
                Ok(p) if p.kind() == PatternKind::Subtree && !p.prefix().is_empty() => {}
                _ => return Err(bad()),
            }
            let span = dir.span();
            let words = ["read", "write", "create", "directory"]
                .map(|w| Spanned::new(span.clone(), w.to_owned()))
                .to_vec();
            out.push(AllowTable {
                path: Spanned::new(span.clone(), subtree),
                access: Some(Spanned::new(span, words)),
                symlinks: None,
                devices: None,
                hardlinks: None,
                mode: None,
                same_filesystem: None,
                owner: None,
                group: None,
                allow_reopen: None,
            });
        }
        Ok(out)
    }

    /// Resolves a `users` or `groups` list, refusing an id listed twice in this client
    /// or already listed by another one.
    fn ids(
        &mut self,
        cx: &Context<'_>,
        kind: IdKind,
        entries: Vec<Spanned<NameOrId>>,
        client: ClientId,
        name: &str,
    ) -> Result<Vec<u32>, LoadError> {
        let mut out: Vec<u32> = Vec::with_capacity(entries.len());
        for entry in &entries {
            let id = resolve(cx, kind, entry)?;
            let owners = match kind {
                IdKind::Uid => &mut self.by_uid,
                IdKind::Gid => &mut self.by_gid,
            };
            match owners.get(&id) {
                None => {
                    owners.insert(id, client);
                    out.push(id);
                }
                Some(&owner) if owner == client => {
                    return Err(cx.at_value(
                        entry,
                        LoadErrorKind::RepeatedId {
                            kind,
                            id,
                            client: name.to_owned(),
                        },
                    ));
                }
                Some(&owner) => {
                    let first = self
                        .clients
                        .get(owner.0)
                        .map(|c| c.name.clone())
                        .unwrap_or_default();
                    return Err(cx.at_value(
                        entry,
                        LoadErrorKind::AmbiguousId {
                            kind,
                            id,
                            first,
                            second: name.to_owned(),
                        },
                    ));
                }
            }
        }
        Ok(out)
    }

    fn rule(
        &mut self,
        cx: &Context<'_>,
        client: ClientId,
        raw: RawRule,
    ) -> Result<(Rule, Pattern), LoadError> {
        let path = raw.path();
        let pattern = Pattern::parse(path.get_ref()).map_err(|reason| {
            cx.at_value(
                path,
                LoadErrorKind::BadPath {
                    path: path.get_ref().clone(),
                    reason,
                },
            )
        })?;
        let mut rule = Rule {
            id: RuleId(self.rules.len()),
            client,
            effect: Effect::Deny,
            pattern: path.get_ref().clone(),
            kind: pattern.kind(),
            access: AccessSet::EMPTY,
            options: RuleOptions::default(),
            root: None,
            location: cx.at(path.span().start),
            learning: matches!(raw, RawRule::Learn(_)),
            listed: matches!(&raw, RawRule::Deny(d) if d.listed),
        };
        let table = match raw {
            RawRule::Allow(table) => Some(*table),
            RawRule::Learn(table) => Some(*table),
            RawRule::Deny(_) => None,
        };
        if let Some(table) = table {
            rule.effect = Effect::Allow;
            rule.access = access(cx, table.access)?;
            // Ownership is given only to files the rule creates: an existing file's
            // owner is never changed.
            for (key, value) in [("owner", &table.owner), ("group", &table.group)] {
                if let Some(v) = value
                    && !rule.access.grants(Access::Create)
                {
                    return Err(cx.at_value(v, LoadErrorKind::OwnershipWithoutCreate(key)));
                }
            }
            let owner = match &table.owner {
                Some(v) => Some(resolve(cx, IdKind::Uid, v)?),
                None => None,
            };
            let group = match &table.group {
                Some(v) => Some(resolve(cx, IdKind::Gid, v)?),
                None => None,
            };
            rule.options = RuleOptions {
                symlinks: match table.symlinks {
                    None => Symlinks::None,
                    Some(s) => match s.get_ref().as_str() {
                        "none" => Symlinks::None,
                        "beneath" => Symlinks::Beneath,
                        other => {
                            return Err(
                                cx.at_value(&s, LoadErrorKind::UnknownSymlinks(other.to_owned()))
                            );
                        }
                    },
                },
                devices: table.devices.unwrap_or(false),
                hardlinks: table.hardlinks.unwrap_or(false),
                create_mode: match &table.mode {
                    Some(mode) => octal_mode(cx, mode, "mode", true)?,
                    None => RuleOptions::DEFAULT_CREATE_MODE,
                },
                same_filesystem: table.same_filesystem.unwrap_or(false),
                owner,
                group,
                allow_reopen: table.allow_reopen.unwrap_or(false),
            };
            rule.root = Some(self.root(pattern.root()));
            for access in Access::ALL {
                if rule.access.grants(access) && !self.granted.contains(&access) {
                    self.granted.push(access);
                }
            }
        }
        Ok((rule, pattern))
    }

    fn root(&mut self, components: &[Box<[u8]>]) -> RootId {
        if let Some(&id) = self.root_ids.get(components) {
            return id;
        }
        let id = RootId(self.roots.len());
        self.roots
            .push(PathBuf::from(OsStr::from_bytes(&join(components))));
        self.root_ids.insert(components.to_vec(), id);
        id
    }

    /// Refuses allow rules that can never grant anything because a deny of the same
    /// client covers them, and `symlinks = "beneath"` where a symlink could lead from
    /// the allowed name to a denied one. Uses the client's index, so a large policy
    /// costs the rules along each root, not every deny times every allow.
    fn check_client_rules(
        &self,
        cx: &Context<'_>,
        index: &Index,
        ids: &[RuleId],
    ) -> Result<(), LoadError> {
        let is_deny = |id: RuleId| {
            self.rules
                .get(id.0)
                .is_some_and(|r| r.effect == Effect::Deny)
        };
        let first = |found: &mut Option<RuleId>, id: RuleId| {
            if found.is_none_or(|f| id.0 < f.0) {
                *found = Some(id);
            }
        };
        for &id in ids {
            let (Some(rule), Some(pattern)) = (self.rules.get(id.0), self.patterns.get(id.0))
            else {
                continue;
            };
            if rule.effect != Effect::Allow {
                continue;
            }
            let mut denied_by = None;
            index.along(pattern.prefix(), |cand| {
                if is_deny(cand)
                    && self
                        .patterns
                        .get(cand.0)
                        .is_some_and(|d| d.fully_denies(pattern))
                {
                    first(&mut denied_by, cand);
                }
            });
            if let Some(deny) = denied_by.and_then(|d| self.rules.get(d.0)) {
                return Err(cx.error(
                    rule.location,
                    LoadErrorKind::FullyDenied {
                        allow: rule.pattern.clone(),
                        deny: deny.pattern.clone(),
                        deny_at: deny.location,
                    },
                ));
            }
            let symlinks = rule.options.symlinks == Symlinks::Beneath;
            if symlinks || rule.options.hardlinks {
                let root = pattern.root();
                let mut reached = index.deny_within(root);
                index.along(root, |cand| {
                    if is_deny(cand)
                        && self
                            .patterns
                            .get(cand.0)
                            .is_some_and(|d| d.reaches_into(root))
                    {
                        first(&mut reached, cand);
                    }
                });
                if let Some(deny) = reached.and_then(|d| self.rules.get(d.0)) {
                    let (allow, deny_at) = (rule.pattern.clone(), deny.location);
                    let (deny, root) = (
                        deny.pattern.clone(),
                        String::from_utf8_lossy(&join(root)).into_owned(),
                    );
                    // A hard link made under the root to a denied file is that file.
                    let kind = if symlinks {
                        LoadErrorKind::SymlinksReachDeny {
                            allow,
                            deny,
                            deny_at,
                            root,
                        }
                    } else {
                        LoadErrorKind::HardlinksReachDeny {
                            allow,
                            deny,
                            deny_at,
                            root,
                        }
                    };
                    return Err(cx.error(rule.location, kind));
                }
            }
        }
        Ok(())
    }

    fn finish(self, origin: &Path, broker: BrokerSettings, sandbox: SandboxSettings) -> Policy {
        Policy {
            origin: origin.to_owned(),
            broker,
            sandbox,
            clients: self.clients,
            rules: self.rules,
            roots: self.roots,
            indexes: self.indexes,
            by_uid: self.by_uid,
            by_gid: self.by_gid,
            granted: self.granted,
        }
    }
}

/// The `access` list of an allow rule; absent means `["read"]`, the least surprising
/// grant, but an explicitly empty list is a mistake.
fn access(
    cx: &Context<'_>,
    list: Option<Spanned<Vec<Spanned<String>>>>,
) -> Result<AccessSet, LoadError> {
    let Some(list) = list else {
        return Ok(AccessSet::READ);
    };
    if list.get_ref().is_empty() {
        return Err(cx.at_value(&list, LoadErrorKind::EmptyAccess));
    }
    list.get_ref()
        .iter()
        .try_fold(AccessSet::EMPTY, |set, word| {
            AccessSet::from_word(word.get_ref())
                .map(|w| set | w)
                .ok_or_else(|| {
                    cx.at_value(word, LoadErrorKind::UnknownAccess(word.get_ref().clone()))
                })
        })
}
