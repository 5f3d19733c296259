//! `Policy::hidden_beneath` and `Policy::visible`: when a directory descriptor would
//! show more than the policy lets a worker see.

use super::{fixture, parse};
use crate::{ClientId, HiddenBeneath};

const SCANNER: ClientId = ClientId(0);
const ADMIN: ClientId = ClientId(1);

fn hidden(client: ClientId, path: &str) -> Option<HiddenBeneath> {
    fixture().hidden_beneath(client, path.as_bytes())
}

#[test]
fn a_deny_beneath_a_directory_is_found_whatever_its_kind() {
    // `/in/private/` (a subtree) and `/in/*.key` (a glob) lie beneath `/in` and `/`.
    for dir in ["/in", "/"] {
        assert!(
            matches!(hidden(SCANNER, dir), Some(HiddenBeneath::DenyBeneath(_))),
            "{dir}"
        );
    }
    // `/in/*.key` cannot match beneath `/in/sub`, and nothing else is denied there.
    assert_eq!(hidden(SCANNER, "/in/sub"), None);
    assert_eq!(hidden(SCANNER, "/in/sub/deeper"), None);
    // Inside the carve-out itself.
    assert!(matches!(
        hidden(SCANNER, "/in/private/x"),
        Some(HiddenBeneath::DenyBeneath(_))
    ));
}

#[test]
fn a_glob_deny_at_an_ancestor_reaches_down_through_any_depth() {
    let p = parse(
        r#"
[[client]]
name = "c"
users = [1]
  [[client.allow]]
  path = "/t/"
  access = ["directory"]
  [[client.deny]]
  path = "/t/**/secret"
"#,
    );
    for dir in ["/t", "/t/a", "/t/a/b/c"] {
        assert!(
            matches!(
                p.hidden_beneath(ClientId(0), dir.as_bytes()),
                Some(HiddenBeneath::DenyBeneath(_))
            ),
            "{dir}"
        );
    }
}

#[test]
fn a_directory_no_subtree_rule_covers_hides_what_lies_outside_the_policy() {
    // `/out/` is a subtree: covered. `/etc/scanner` is only reached by a glob of files.
    assert_eq!(hidden(SCANNER, "/out"), None);
    assert_eq!(
        hidden(SCANNER, "/etc/scanner"),
        Some(HiddenBeneath::NotCovered)
    );
    assert_eq!(hidden(SCANNER, "/data"), Some(HiddenBeneath::NotCovered));
    assert_eq!(hidden(ADMIN, "/"), None);
    assert_eq!(hidden(ADMIN, "/in/private"), None);
    assert_eq!(hidden(ClientId(9), "/"), Some(HiddenBeneath::NotCovered));
    assert_eq!(
        hidden(SCANNER, "/in/../in"),
        Some(HiddenBeneath::NotCovered)
    );
}

#[test]
fn visible_is_some_access_granted() {
    let p = fixture();
    let v = |path: &str| p.visible(SCANNER, path.as_bytes());
    assert!(v("/in/a.txt"));
    assert!(v("/out/new"));
    assert!(v("/etc/scanner/a.conf"));
    assert!(!v("/in/private"));
    assert!(!v("/in/private/x"));
    assert!(!v("/in/a.key"));
    assert!(!v("/etc/scanner/a.txt"));
    assert!(!v("/elsewhere"));
}
