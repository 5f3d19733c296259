//! Decisions: every rule kind, deny precedence, specificity, access mapping, invalid
//! and non-UTF-8 request paths, client matching.

use std::path::PathBuf;

use super::{fixture, parse};
use crate::{Access, ClientId, Decision, Denial, PathError, RootId, RuleId};

const SCANNER: ClientId = ClientId(0);
const ADMIN: ClientId = ClientId(1);

/// `(rule, root, relative)` of an allow, or the denial.
fn outcome(d: Decision<'_>) -> Result<(usize, usize, &[u8]), Denial> {
    match d {
        Decision::Allow(g) => Ok((g.rule.0, g.root.0, g.relative)),
        Decision::Deny(denial) => Err(denial),
    }
}

#[test]
fn roots_are_the_distinct_static_roots_in_file_order() {
    let p = fixture();
    let want: Vec<PathBuf> = ["/in", "/etc/scanner", "/data", "/out", "/"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(p.roots(), want);
    assert_eq!(p.rule(RuleId(3)).root, Some(RootId(3)));
    assert_eq!(p.rule(RuleId(4)).root, Some(RootId(3)));
}

#[test]
fn exact_rules() {
    let p = fixture();
    let d = p.decide(SCANNER, b"/out/report.txt", Access::Read);
    assert_eq!(outcome(d), Ok((4, 3, &b"report.txt"[..])));
    let Decision::Allow(g) = d else {
        unreachable!()
    };
    assert_eq!(g.options.create_mode, 0o600);
    assert_eq!(
        outcome(p.decide(SCANNER, b"/out/report.txt/x", Access::Read)),
        Err(Denial::AccessNotGranted(RuleId(3)))
    );
}

#[test]
fn subtree_rules_cover_the_directory_and_everything_beneath() {
    let p = fixture();
    assert_eq!(
        outcome(p.decide(SCANNER, b"/in/a/b.txt", Access::Read)),
        Ok((0, 0, &b"a/b.txt"[..]))
    );
    assert_eq!(
        outcome(p.decide(SCANNER, b"/in/a", Access::Directory)),
        Ok((0, 0, &b"a"[..]))
    );
    // The root itself: an empty relative path.
    assert_eq!(
        outcome(p.decide(SCANNER, b"/in", Access::Directory)),
        Ok((0, 0, &b""[..]))
    );
}

#[test]
fn sibling_prefixes_do_not_match() {
    let p = fixture();
    for path in [
        &b"/inbox"[..],
        b"/inbox/a",
        b"/i",
        b"/in.d/x",
        b"/outx",
        b"/etc/scannerx/a.conf",
    ] {
        assert_eq!(
            outcome(p.decide(SCANNER, path, Access::Read)),
            Err(Denial::NoRule),
            "{}",
            path.escape_ascii()
        );
    }
}

#[test]
fn star_globs_stay_within_one_component() {
    let p = fixture();
    assert_eq!(
        outcome(p.decide(SCANNER, b"/etc/scanner/a.conf", Access::Read)),
        Ok((1, 1, &b"a.conf"[..]))
    );
    // `*` matches a leading dot and the empty string.
    assert_eq!(
        outcome(p.decide(SCANNER, b"/etc/scanner/.conf", Access::Read)),
        Ok((1, 1, &b".conf"[..]))
    );
    assert_eq!(
        outcome(p.decide(SCANNER, b"/etc/scanner/.x.conf", Access::Read)),
        Ok((1, 1, &b".x.conf"[..]))
    );
    for path in [
        &b"/etc/scanner/sub/a.conf"[..],
        b"/etc/scanner/a.confx",
        b"/etc/scanner",
        b"/etc/a.conf",
    ] {
        assert_eq!(
            outcome(p.decide(SCANNER, path, Access::Read)),
            Err(Denial::NoRule),
            "{}",
            path.escape_ascii()
        );
    }
    assert_eq!(
        outcome(p.decide(SCANNER, b"/etc/scanner/a.conf", Access::Write)),
        Err(Denial::AccessNotGranted(RuleId(1)))
    );
}

#[test]
fn double_star_globs_span_components() {
    let p = fixture();
    assert_eq!(
        outcome(p.decide(SCANNER, b"/data/x.db", Access::Read)),
        Ok((2, 2, &b"x.db"[..]))
    );
    assert_eq!(
        outcome(p.decide(SCANNER, b"/data/a/b/c/x.db", Access::ReadWrite)),
        Ok((2, 2, &b"a/b/c/x.db"[..]))
    );
    for path in [&b"/data"[..], b"/data/a/x.dbx", b"/data/x.db/y", b"/data/a"] {
        assert_eq!(
            outcome(p.decide(SCANNER, path, Access::Read)),
            Err(Denial::NoRule),
            "{}",
            path.escape_ascii()
        );
    }
}

#[test]
fn deny_wins_over_allow() {
    let p = fixture();
    assert_eq!(
        outcome(p.decide(SCANNER, b"/in/private", Access::Directory)),
        Err(Denial::DeniedBy(RuleId(5)))
    );
    assert_eq!(
        outcome(p.decide(SCANNER, b"/in/private/a/b", Access::Read)),
        Err(Denial::DeniedBy(RuleId(5)))
    );
    assert_eq!(
        outcome(p.decide(SCANNER, b"/in/a.key", Access::Read)),
        Err(Denial::DeniedBy(RuleId(6)))
    );
    // A deny is a deny whatever the access, even one no allow grants.
    assert_eq!(
        outcome(p.decide(SCANNER, b"/in/a.key", Access::Create)),
        Err(Denial::DeniedBy(RuleId(6)))
    );
    // Deny rules are as precise as allow rules.
    assert_eq!(
        outcome(p.decide(SCANNER, b"/in/privatex", Access::Read)),
        Ok((0, 0, &b"privatex"[..]))
    );
    assert_eq!(
        outcome(p.decide(SCANNER, b"/in/sub/a.key", Access::Read)),
        Ok((0, 0, &b"sub/a.key"[..]))
    );
}

#[test]
fn the_most_specific_granting_rule_wins() {
    let p = fixture();
    // The exact rule matches but grants only read; the subtree grants write.
    assert_eq!(
        outcome(p.decide(SCANNER, b"/out/report.txt", Access::Write)),
        Ok((3, 3, &b"report.txt"[..]))
    );
    // Nothing grants `directory` there: the most specific match is named.
    assert_eq!(
        outcome(p.decide(SCANNER, b"/out/report.txt", Access::Directory)),
        Err(Denial::AccessNotGranted(RuleId(4)))
    );
    let d = p.decide(SCANNER, b"/out/new.txt", Access::Create);
    assert_eq!(outcome(d), Ok((3, 3, &b"new.txt"[..])));
    let Decision::Allow(g) = d else {
        unreachable!()
    };
    assert_eq!(g.options.create_mode, 0o640);
}

#[test]
fn specificity_then_kind_then_file_order() {
    let p = parse(
        r#"
[[client]]
name = "t"
users = [1]
[[client.allow]]
path = "/t/"
[[client.allow]]
path = "/t/*.c"
[[client.allow]]
path = "/t/a/"
[[client.allow]]
path = "/t/a/**"
[[client.allow]]
path = "/t/a"
[[client.allow]]
path = "/u/"
[[client.allow]]
path = "/u/"
access = ["read", "write"]
[[client.allow]]
path = "/v/*/x"
access = ["read", "write"]
[[client.allow]]
path = "/v/w/"
"#,
    );
    let c = ClientId(0);
    let rule = |path: &[u8], access| p.decide(c, path, access).rule().map(|r| r.0);
    // Same specificity (1): glob beats subtree.
    assert_eq!(rule(b"/t/x.c", Access::Read), Some(1));
    // Specificity 2 beats 1; at 2, exact beats glob beats subtree.
    assert_eq!(rule(b"/t/a", Access::Read), Some(4));
    assert_eq!(rule(b"/t/a/b", Access::Read), Some(3));
    assert_eq!(rule(b"/t/b", Access::Read), Some(0));
    // Identical rank: the rule written first, unless only a later one grants.
    assert_eq!(rule(b"/u/x", Access::Read), Some(5));
    assert_eq!(rule(b"/u/x", Access::Write), Some(6));
    // More literal components win even against a deeper-matching glob...
    assert_eq!(rule(b"/v/w/x", Access::Read), Some(8));
    // ...but only among rules that grant the access.
    assert_eq!(rule(b"/v/w/x", Access::ReadWrite), Some(7));
    assert_eq!(
        p.decide(c, b"/v/w/x", Access::Directory),
        Decision::Deny(Denial::AccessNotGranted(RuleId(8)))
    );
}

#[test]
fn access_mapping() {
    let p = fixture();
    let allowed = |path: &[u8], access| p.decide(SCANNER, path, access).is_allow();
    // /in/: read + directory.
    assert!(allowed(b"/in/a", Access::Read));
    assert!(allowed(b"/in/a", Access::Directory));
    assert!(!allowed(b"/in/a", Access::Write));
    assert!(!allowed(b"/in/a", Access::ReadWrite));
    assert!(!allowed(b"/in/a", Access::Create));
    // /out/: create + write.
    assert!(allowed(b"/out/a", Access::Create));
    assert!(allowed(b"/out/a", Access::Write));
    assert!(!allowed(b"/out/a", Access::Read));
    assert!(!allowed(b"/out/a", Access::ReadWrite));
    assert!(!allowed(b"/out/a", Access::Directory));
    // /data/**/x.db: read + write, so read-write too.
    assert!(allowed(b"/data/x.db", Access::ReadWrite));
    assert!(!allowed(b"/data/x.db", Access::Create));
}

#[test]
fn invalid_request_paths() {
    let p = fixture();
    let mut long = b"/in/".to_vec();
    long.resize(4096, b'a');
    let cases: [(&[u8], PathError); 10] = [
        (b"", PathError::Empty),
        (b"in/a", PathError::NotAbsolute),
        (b"/in/../etc/shadow", PathError::DotComponent),
        (b"/in/..", PathError::DotComponent),
        (b"/in/.", PathError::DotComponent),
        (b"/in//a", PathError::EmptyComponent),
        (b"/in/a/", PathError::TrailingSlash),
        (b"/in/a\0.key", PathError::Nul),
        (&long, PathError::TooLong),
        (b"//in", PathError::EmptyComponent),
    ];
    for (path, e) in cases {
        assert_eq!(
            p.decide(SCANNER, path, Access::Read),
            Decision::Deny(Denial::InvalidPath(e)),
            "{}",
            path.escape_ascii()
        );
    }
    long.pop();
    assert!(p.decide(SCANNER, &long, Access::Read).is_allow());
}

#[test]
fn non_utf8_paths_match_as_bytes() {
    let p = fixture();
    assert_eq!(
        outcome(p.decide(SCANNER, b"/in/\xff\xfe/\x80", Access::Read)),
        Ok((0, 0, &b"\xff\xfe/\x80"[..]))
    );
    assert_eq!(
        outcome(p.decide(SCANNER, b"/etc/scanner/\xff.conf", Access::Read)),
        Ok((1, 1, &b"\xff.conf"[..]))
    );
    assert_eq!(
        outcome(p.decide(SCANNER, b"/in/\xc3(.key", Access::Read)),
        Err(Denial::DeniedBy(RuleId(6)))
    );
    assert_eq!(
        outcome(p.decide(SCANNER, b"/\xffin/a", Access::Read)),
        Err(Denial::NoRule)
    );
}

#[test]
fn a_root_wide_rule() {
    let p = fixture();
    assert_eq!(
        outcome(p.decide(ADMIN, b"/", Access::Directory)),
        Ok((7, 4, &b""[..]))
    );
    assert_eq!(
        outcome(p.decide(ADMIN, b"/etc/passwd", Access::Read)),
        Ok((7, 4, &b"etc/passwd"[..]))
    );
    // The scanner's deny rules are not the admin's.
    assert_eq!(
        outcome(p.decide(ADMIN, b"/in/a.key", Access::Read)),
        Ok((7, 4, &b"in/a.key"[..]))
    );
    assert_eq!(
        outcome(p.decide(ADMIN, b"/in/a.key", Access::Write)),
        Err(Denial::AccessNotGranted(RuleId(7)))
    );
    // And the admin's rules are not the scanner's.
    assert_eq!(
        outcome(p.decide(SCANNER, b"/etc/passwd", Access::Read)),
        Err(Denial::NoRule)
    );
}

#[test]
fn unknown_client_ids_are_denied() {
    let p = fixture();
    assert_eq!(
        p.decide(ClientId(99), b"/in/a", Access::Read),
        Decision::Deny(Denial::NoRule)
    );
}

#[test]
fn client_for_prefers_uid_over_gid() {
    let p = fixture();
    assert_eq!(p.client_for(1001, 0), Some(SCANNER));
    assert_eq!(p.client_for(0, 0), Some(ADMIN));
    // uid 0 is the admin's even with the scanner's group.
    assert_eq!(p.client_for(0, 65534), Some(ADMIN));
    // No client lists uid 5: the group decides.
    assert_eq!(p.client_for(5, 65534), Some(SCANNER));
    assert_eq!(p.client_for(5, 5), None);
    assert_eq!(p.client_by_name("admin"), Some(ADMIN));
    assert_eq!(p.client_by_name("nobody"), None);
    assert_eq!(p.client(SCANNER).name, "scanner");
    assert_eq!(p.clients().len(), 2);
}

#[test]
fn grants_any_reflects_allow_rules_only() {
    let p = fixture();
    for access in Access::ALL {
        assert!(p.grants_any(access), "{access}");
    }
    let p = parse(
        "[[client]]\nname = \"r\"\nusers = [1]\n[[client.allow]]\npath = \"/r/\"\n[[client.deny]]\npath = \"/r/x\"\n",
    );
    assert!(p.grants_any(Access::Read));
    assert!(!p.grants_any(Access::Write));
    assert!(!p.grants_any(Access::ReadWrite));
    assert!(!p.grants_any(Access::Create));
    assert!(!p.grants_any(Access::Directory));
}

#[test]
fn grants_any_needs_one_rule_granting_the_whole_access() {
    let p = parse(
        "[[client]]\nname = \"r\"\nusers = [1]\n[[client.allow]]\npath = \"/r/\"\n\
         [[client.allow]]\npath = \"/w/\"\naccess = [\"write\"]\n",
    );
    assert!(p.grants_any(Access::Read));
    assert!(p.grants_any(Access::Write));
    assert!(!p.grants_any(Access::ReadWrite));
}

#[test]
fn denial_display_is_short() {
    assert_eq!(
        Denial::InvalidPath(PathError::DotComponent).to_string(),
        "invalid path: path has a `.` or `..` component"
    );
    assert_eq!(Denial::NoRule.to_string(), "no rule allows this path");
    assert_eq!(
        Denial::DeniedBy(RuleId(3)).to_string(),
        "denied by a deny rule"
    );
    assert_eq!(
        Denial::AccessNotGranted(RuleId(1)).to_string(),
        "the matching rule does not grant this access"
    );
}

#[test]
fn policy_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<crate::Policy>();
}
