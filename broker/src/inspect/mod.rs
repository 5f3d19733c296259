//! `fdbroker policy ...`: answers about a policy file without a broker, run by the
//! operator as any user, unconfined. `check` and `explain` here; what a change would do
//! (`diff`), what the evidence says (`evidence`: `suggest`, `replay`), and what one
//! identity may do (`who`) in their own files.

pub mod diff;
pub mod evidence;
pub mod who;

use fdbroker_policy::{Access, Policy};
use std::path::Path;
use std::process::ExitCode;

/// `fdbroker policy check FILE`: exit 0 if the policy is valid (and, with `strict`,
/// draws no warning from [`crate::lint`]); else print `FILE:LINE:COL: message`.
/// The capabilities it needs are checked against the service unit at `unit`, else the
/// installed `fdbroker.service`, else the shipped one.
pub fn check_main(file: &Path, strict: bool, unit: Option<&Path>) -> ExitCode {
    let p = match Policy::load(file) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let unit = match unit {
        Some(path) => match crate::lint::unit::Unit::read(path) {
            Ok(u) => u,
            Err(e) => return fail(format!("{}: {e}", path.display())),
        },
        None => crate::lint::unit::Unit::installed_or_shipped(),
    };
    let warnings = crate::lint::check(&p, &unit);
    for w in &warnings {
        crate::log::say(&format!("{w}"));
    }
    let noun = if warnings.len() == 1 {
        "warning"
    } else {
        "warnings"
    };
    if strict && !warnings.is_empty() {
        crate::log::say(&format!(
            "fdbroker: {}: {} {noun} (--strict)",
            file.display(),
            warnings.len()
        ));
        return ExitCode::FAILURE;
    }
    println!(
        "{}: ok ({} clients, {} roots, {} {noun})",
        file.display(),
        p.clients().len(),
        p.roots().len(),
        warnings.len()
    );
    ExitCode::SUCCESS
}

/// Who `explain` asks for.
pub enum Asker {
    /// A peer of `fdbroker serve`, by uid (number or name).
    Peer(String),
    /// The worker of `fdbroker run`, served as this client (or the only one).
    Spawn(Option<String>),
}

/// `fdbroker policy explain`: the decision for one request and the rule that made it;
/// exit 0 granted, 1 denied, 2 on errors.
pub fn explain_main(
    file: &Path,
    who: Asker,
    gid: Option<&str>,
    access: Access,
    path: &Path,
) -> ExitCode {
    use std::os::unix::ffi::OsStrExt;
    let policy = match Policy::load(file) {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    let path = path.as_os_str().as_bytes();
    let uid = match who {
        Asker::Peer(uid) => uid,
        Asker::Spawn(client) => {
            let id = match crate::spawn::broker::pick_client(&policy, client.as_deref()) {
                Ok(id) => id,
                Err(e) => return error(e),
            };
            // The worker's own ids do not matter: a transient uid, or the [sandbox] user.
            let explanation = policy.explain_spawn(id, 0, 0, path, access);
            println!("{explanation}");
            return if explanation.is_allow() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    let (uid, primary) = match resolve_user(&uid) {
        Ok(u) => u,
        Err(e) => {
            crate::log::say(&format!("fdbroker: {e}"));
            return ExitCode::from(2);
        }
    };
    let gid = match gid.map(resolve_group).transpose() {
        Ok(g) => g.or(primary).unwrap_or(uid),
        Err(e) => {
            crate::log::say(&format!("fdbroker: {e}"));
            return ExitCode::from(2);
        }
    };
    let explanation = policy.explain(uid, gid, path, access);
    println!("{explanation}");
    let granted = policy.client_for(uid, gid).is_some_and(|c| {
        matches!(
            policy.decide(c, path, access),
            fdbroker_policy::Decision::Allow(_)
        )
    });
    if granted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A uid by number or name, with the user's primary gid when known.
pub(crate) fn resolve_user(s: &str) -> Result<(u32, Option<u32>), String> {
    use nix::unistd::{Uid, User};
    match s.parse::<u32>() {
        Ok(n) => {
            let primary = User::from_uid(Uid::from_raw(n))
                .ok()
                .flatten()
                .map(|u| u.gid.as_raw());
            Ok((n, primary))
        }
        Err(_) => match User::from_name(s) {
            Ok(Some(u)) => Ok((u.uid.as_raw(), Some(u.gid.as_raw()))),
            _ => Err(format!("no such user: {s}")),
        },
    }
}

pub(crate) fn resolve_group(s: &str) -> Result<u32, String> {
    use nix::unistd::Group;
    match s.parse::<u32>() {
        Ok(n) => Ok(n),
        Err(_) => match Group::from_name(s) {
            Ok(Some(g)) => Ok(g.gid.as_raw()),
            _ => Err(format!("no such group: {s}")),
        },
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    crate::log::say(&format!("fdbroker: {msg}"));
    ExitCode::FAILURE
}

/// An error of a command whose 1 means an answer (denied, differs, flips): exit 2.
pub(crate) fn error(msg: impl std::fmt::Display) -> ExitCode {
    crate::log::say(&format!("fdbroker: {msg}"));
    ExitCode::from(2)
}
