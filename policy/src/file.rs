//! The policy file exactly as written: serde structs that keep the span of every
//! value that a later check may need to point at.
//!
//! Nothing is interpreted here beyond TOML types; every table refuses unknown keys so
//! a misspelt option (`symlink = "beneath"`) is an error, not a silent default. Numbers
//! are read as `i64` so that a negative or huge value reaches validation with its
//! position instead of failing inside serde with a vaguer message.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    pub broker: Option<BrokerTable>,
    pub sandbox: Option<SandboxTable>,
    #[serde(default)]
    pub client: Vec<Spanned<ClientTable>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BrokerTable {
    pub socket: Option<Spanned<String>>,
    pub socket_mode: Option<Spanned<String>>,
    pub socket_group: Option<Spanned<NameOrId>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_connections_per_uid: Option<Spanned<i64>>,
    pub max_batch: Option<Spanned<i64>>,
    pub idle_timeout: Option<Spanned<i64>>,
    pub confine: Option<bool>,
    pub audit_failure: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SandboxTable {
    pub read_only: Option<Vec<Spanned<String>>>,
    pub user: Option<Spanned<NameOrId>>,
    pub uid_range: Option<Spanned<String>>,
    pub fail_on_denial: Option<bool>,
    pub time_limit: Option<Spanned<String>>,
    pub cpu_limit: Option<Spanned<String>>,
    pub memory_limit: Option<Spanned<String>>,
    pub pids_limit: Option<Spanned<i64>>,
    pub file_size_limit: Option<Spanned<String>>,
    pub nofile_limit: Option<Spanned<i64>>,
    pub output_limit: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientTable {
    pub name: Spanned<String>,
    pub users: Option<Vec<Spanned<NameOrId>>>,
    pub groups: Option<Vec<Spanned<NameOrId>>>,
    /// Learn mode for this client: requests beneath these directories that no rule
    /// grants are granted anyway (any access), and every line is marked
    /// `mode="learn"`. `fdbroker run --learn` sets it for its client.
    pub learn_scope: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub allow: Vec<AllowTable>,
    #[serde(default)]
    pub deny: Vec<DenyTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllowTable {
    pub path: Spanned<String>,
    pub access: Option<Spanned<Vec<Spanned<String>>>>,
    pub symlinks: Option<Spanned<String>>,
    pub devices: Option<bool>,
    pub hardlinks: Option<bool>,
    pub mode: Option<Spanned<String>>,
    pub same_filesystem: Option<bool>,
    pub owner: Option<Spanned<NameOrId>>,
    pub group: Option<Spanned<NameOrId>>,
    pub allow_reopen: Option<bool>,
}

/// Deny rules name paths (what is denied is denied for every access) and whether the
/// denied names show in listings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DenyTable {
    pub path: Spanned<String>,
    /// The carve-out's name shows in its parent's listings (its contents and metadata
    /// stay refused), as the kernel shows a directory that exists and cannot be opened.
    #[serde(default)]
    pub listed: bool,
}

/// A user or group as written: `"scanner"` or `1001`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NameOrId {
    Name(String),
    Id(i64),
}

impl<'de> Deserialize<'de> for NameOrId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameOrIdVisitor;

        impl Visitor<'_> for NameOrIdVisitor {
            type Value = NameOrId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name (string) or a numeric id (integer)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<NameOrId, E> {
                Ok(NameOrId::Name(v.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NameOrId, E> {
                Ok(NameOrId::Id(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NameOrId, E> {
                // Only reachable from non-TOML deserializers; saturate so the range
                // check still refuses it.
                Ok(NameOrId::Id(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }

        deserializer.deserialize_any(NameOrIdVisitor)
    }
}
