//! `fdbroker policy who FILE --uid U | --client NAME`: what one identity may access.

use super::{error, resolve_group, resolve_user};
use fdbroker_policy::Policy;
use fdbroker_policy::who::ListingText;
use std::path::Path;
use std::process::ExitCode;

/// Exit 0, 1 if the identity is no client, 2 on errors.
pub fn who_main(
    file: &Path,
    uid: Option<&str>,
    gid: Option<&str>,
    client: Option<&str>,
) -> ExitCode {
    let policy = match Policy::load(file) {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    let id = match (client, uid) {
        (Some(name), _) => match policy.client_by_name(name) {
            Some(id) => id,
            None => return error(format!("the policy has no client named {name:?}")),
        },
        (None, Some(uid)) => {
            let (uid, primary) = match resolve_user(uid) {
                Ok(u) => u,
                Err(e) => return error(e),
            };
            let gid = match gid.map(resolve_group).transpose() {
                Ok(g) => g.or(primary).unwrap_or(uid),
                Err(e) => return error(e),
            };
            match policy.client_for(uid, gid) {
                Some(id) => id,
                None => {
                    println!(
                        "uid {uid} gid {gid} is no client of {}: the broker refuses its connection",
                        file.display()
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
        (None, None) => return error("give --uid or --client"),
    };
    let listing = policy.who(id);
    print!(
        "{}",
        ListingText {
            policy: &policy,
            listing: &listing
        }
    );
    ExitCode::SUCCESS
}
