//! What `fdbroker run` says at exit about what the policy refused its worker, and
//! `--fail-on-denial` (`[sandbox] fail_on_denial = true`): a refusal must not end as a
//! clean run. A program sees a refusal only as an errno, which many programs skip (a
//! scanner that cannot open one directory still prints `Infected files: 0` and exits 0),
//! and a listing the broker answers simply lacks what a deny rule hides; the operator
//! learns of both here (counted in [`crate::audit::refused`]).

use crate::audit::Escaped;
use crate::audit::refused::Refused;
use std::fmt::Write as _;

/// The exit status of a run whose program exited 0 but was refused something, when
/// failing on denials: the program's own non-zero status is kept.
pub const DENIED_EXIT: u8 = 1;

/// The line printed at exit, or `None` when nothing was refused.
pub fn summary(refused: &Refused) -> Option<String> {
    if refused.is_empty() {
        return None;
    }
    let mut line = format!(
        "fdbroker run: the policy refused {} request{}",
        refused.requests,
        plural(refused.requests)
    );
    if refused.hidden > 0 {
        let _ = write!(
            line,
            " and hid {} name{} from listings",
            refused.hidden,
            plural(refused.hidden)
        );
    }
    line.push_str("; first:");
    for (i, path) in refused.first.iter().enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        let _ = write!(line, "{sep}{}", Escaped(path));
    }
    line.push_str(" (the audit log has each decision)");
    Some(line)
}

/// The run's exit status: the program's, unless it is 0, the run fails on denials and
/// something was refused.
pub fn exit_code(program: u8, fail_on_denial: bool, refused: &Refused) -> u8 {
    if program == 0 && fail_on_denial && !refused.is_empty() {
        DENIED_EXIT
    } else {
        program
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(requests: u64, hidden: u64, first: &[&[u8]]) -> Refused {
        Refused {
            requests,
            hidden,
            first: first.iter().map(|p| p.to_vec()).collect(),
        }
    }

    #[test]
    fn the_summary_counts_and_names_the_first_paths_escaped() {
        assert_eq!(summary(&Refused::default()), None);
        assert_eq!(
            summary(&refused(1, 0, &[b"/srv/a"])).as_deref(),
            Some(
                "fdbroker run: the policy refused 1 request; first: \"/srv/a\" \
                 (the audit log has each decision)"
            )
        );
        assert_eq!(
            summary(&refused(3, 2, &[b"/srv/a", b"/srv/\nb"])).as_deref(),
            Some(
                "fdbroker run: the policy refused 3 requests and hid 2 names from listings; \
                 first: \"/srv/a\", \"/srv/\\x0ab\" (the audit log has each decision)"
            )
        );
    }

    #[test]
    fn only_a_clean_exit_becomes_a_failure_and_only_when_asked() {
        let some = refused(1, 0, &[b"/x"]);
        assert_eq!(exit_code(0, true, &some), DENIED_EXIT);
        assert_eq!(exit_code(0, false, &some), 0);
        assert_eq!(exit_code(2, true, &some), 2);
        assert_eq!(exit_code(0, true, &Refused::default()), 0);
    }
}
