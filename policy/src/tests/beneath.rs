//! `Policy::hidden_beneath` and `Policy::visible`: when a directory descriptor would
//! show more than the policy lets a worker see.

use super::{fixture, parse};
use crate::{ClientId, HiddenBeneath, Policy};

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

/// A `listed` deny rule shows the carve-out's name in listings and answers a stat of
/// the carve-out itself under the allow rule it overrides; beneath it, and where its
/// parent cannot be listed, it is refused as any deny is; unlisted denies stay hidden.
#[test]
fn a_listed_deny_shows_its_name_and_metadata_only() {
    let p = parse(
        r#"
[[client]]
name = "scanner"
users = [1]
  [[client.allow]]
  path = "/in/"
  access = ["read", "directory"]
  [[client.allow]]
  path = "/files/*"
  [[client.deny]]
  path = "/in/quarantine/"
  listed = true
  [[client.deny]]
  path = "/in/hidden/"
  [[client.deny]]
  path = "/files/x.key"
  listed = true
"#,
    );
    let v = |path: &str| p.visible(SCANNER, path.as_bytes());
    fn stat<'a>(p: &Policy, path: &'a str) -> Option<crate::Grant<'a>> {
        p.listed_grant(SCANNER, path.as_bytes())
    }
    assert!(v("/in/quarantine"));
    assert!(!v("/in/hidden"));
    let g = stat(&p, "/in/quarantine").expect("the carve-out itself is described");
    assert_eq!(g.relative, b"quarantine");
    // Nothing beneath it, nothing unlisted, nothing a deny does not refuse.
    assert!(stat(&p, "/in/quarantine/eicar.com").is_none());
    assert!(stat(&p, "/in/hidden").is_none());
    assert!(stat(&p, "/in/a.txt").is_none());
    // Its parent cannot be listed (a glob of files, no `directory`): not described.
    assert!(stat(&p, "/files/x.key").is_none());
    // Still refused for every access.
    for access in crate::Access::ALL {
        assert!(matches!(
            p.decide(SCANNER, b"/in/quarantine", access),
            crate::Decision::Deny(crate::Denial::DeniedBy(_))
        ));
    }
    // `policy diff` says when a carve-out starts or stops being seen.
    let unlisted = parse(
        "[[client]]\nname = \"scanner\"\nusers = [1]\n[[client.allow]]\npath = \"/in/\"\n\
         [[client.deny]]\npath = \"/in/q/\"\n",
    );
    let listed = parse(
        "[[client]]\nname = \"scanner\"\nusers = [1]\n[[client.allow]]\npath = \"/in/\"\n\
         [[client.deny]]\npath = \"/in/q/\"\nlisted = true\n",
    );
    let said: Vec<String> = crate::diff::diff(&unlisted, &listed)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].starts_with("+ client \"scanner\": sees that \"/in/q/\" exists"),
        "{said:?}"
    );
    // `listed` is a deny rule's word only.
    let err = Policy::parse(
        "[[client]]\nname = \"c\"\nusers = [1]\n[[client.allow]]\npath = \"/a\"\nlisted = true\n",
        std::path::Path::new("p.toml"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("listed"), "{err}");
}

/// F1: a `listed` deny does not reveal a name that another, unlisted deny rule of the
/// same client also refuses: hiding is the default and `listed` an opt-in, so the
/// operator's unlisted `/in/sec*` keeps `/in/secret` hidden even though the listed
/// `/in/secret/` is more specific.
#[test]
fn an_unlisted_deny_that_also_matches_keeps_a_listed_carve_out_hidden() {
    let p = parse(
        r#"
[[client]]
name = "scanner"
users = [1]
  [[client.allow]]
  path = "/in/"
  access = ["read", "directory"]
  [[client.deny]]
  path = "/in/sec*"
  [[client.deny]]
  path = "/in/secret/"
  listed = true
"#,
    );
    assert!(!p.visible(SCANNER, b"/in/secrets.txt"));
    assert!(
        !p.visible(SCANNER, b"/in/secret"),
        "an unlisted deny matches /in/secret: it stays hidden"
    );
    assert!(p.listed_grant(SCANNER, b"/in/secret").is_none());
}

/// F3: a learning client stats a listed carve-out: the grant it is answered under must
/// not be the learning scope's, or the run "learns" a rule for the denied name: an allow
/// rule for `/in/q`, which the deny covers, so the learned policy does not load.
#[test]
fn a_listed_carve_out_is_not_learned_under_a_learning_scope() {
    let text = r#"
[[client]]
name = "scanner"
users = [1]
  [[client.allow]]
  path = "/in/a.txt"
  [[client.deny]]
  path = "/in/q/"
  listed = true
"#;
    let p = Policy::parse_learning(
        text,
        std::path::Path::new("p.toml"),
        "scanner",
        &["/in/".to_owned()],
    )
    .unwrap();
    // What such a learning would write does not load.
    let learned = format!("{text}  [[client.allow]]\n  path = \"/in/q\"\n");
    let err = Policy::parse(&learned, std::path::Path::new("p.toml")).unwrap_err();
    assert!(err.to_string().contains("fully denied"), "{err}");
    if let Some(g) = p.listed_grant(SCANNER, b"/in/q") {
        assert!(
            !p.rule(g.rule).learning,
            "a stat of the carve-out is answered under the learning scope"
        );
    }
}
