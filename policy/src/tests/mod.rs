//! Policy-level tests: loading (with exact error positions), decisions, explanations
//! and a model-based property test.
#![allow(clippy::unwrap_used)]

mod beneath;
mod decide;
mod explain;
mod learn;
mod load;
mod prop;

use std::path::Path;

use crate::{LoadError, Policy};

/// A policy exercising every rule kind, used by the decision, explain and property
/// tests. Names that exist on any Debian system keep it loadable anywhere.
pub(crate) const FIXTURE: &str = r#"
[[client]]
name = "scanner"
users = [1001]
groups = ["nogroup"]

  [[client.allow]]
  path = "/in/"
  access = ["read", "directory"]

  [[client.allow]]
  path = "/etc/scanner/*.conf"

  [[client.allow]]
  path = "/data/**/x.db"
  access = ["read", "write"]

  [[client.allow]]
  path = "/out/"
  access = ["create", "write"]
  mode = "0640"

  [[client.allow]]
  path = "/out/report.txt"
  access = ["read"]

  [[client.deny]]
  path = "/in/private/"

  [[client.deny]]
  path = "/in/*.key"

[[client]]
name = "admin"
users = ["root"]

  [[client.allow]]
  path = "/"
  access = ["read", "directory"]
"#;

pub(crate) fn fixture() -> Policy {
    Policy::parse(FIXTURE, Path::new("fixture.toml")).unwrap()
}

pub(crate) fn parse(text: &str) -> Policy {
    match Policy::parse(text, Path::new("p.toml")) {
        Ok(p) => p,
        Err(e) => panic!("unexpected load error: {e}"),
    }
}

pub(crate) fn load_err(text: &str) -> LoadError {
    match Policy::parse(text, Path::new("p.toml")) {
        Ok(_) => panic!("policy loaded but should not have:\n{text}"),
        Err(e) => e,
    }
}
