//! `explain` output, line by line.

use super::fixture;
use crate::{Access, ClientId, Denial, MatchedBy, Verdict};

#[test]
fn allowed_by_uid() {
    let e = fixture().explain(1001, 1001, b"/in/a/b.txt", Access::Read);
    assert!(e.is_allow());
    assert_eq!(
        e.client.as_ref().map(|c| (c.id, c.by)),
        Some((ClientId(0), MatchedBy::Uid(1001)))
    );
    assert_eq!(
        e.to_string(),
        "request:  uid 1001 gid 1001 wants read of \"/in/a/b.txt\"\n\
         client:   \"scanner\" (fixture.toml:3:8), uid 1001 is in its `users`\n\
         decision: allow\n\
         rule:     fixture.toml:8:10: allow \"/in/\" [read, directory] (subtree)\n\
         root:     /in\n\
         relative: a/b.txt\n\
         options:  symlinks = none, devices = false, hardlinks = false, same_filesystem = false"
    );
}

#[test]
fn create_shows_the_mode() {
    let text = fixture()
        .explain(1001, 1001, b"/out/n", Access::Create)
        .to_string();
    assert!(text.contains("\nroot:     /out\nrelative: n\n"), "{text}");
    assert!(
        text.ends_with("same_filesystem = false, mode = 0640"),
        "{text}"
    );
}

#[test]
fn the_root_itself() {
    let text = fixture().explain(0, 0, b"/", Access::Directory).to_string();
    assert!(
        text.contains("\nroot:     /\nrelative: . (the root itself)\n"),
        "{text}"
    );
}

#[test]
fn no_client_means_connection_refused() {
    let e = fixture().explain(5, 5, b"/in/a", Access::Read);
    assert_eq!(e.verdict, Verdict::ConnectionRefused);
    assert_eq!(
        e.to_string(),
        "request:  uid 5 gid 5 wants read of \"/in/a\"\n\
         client:   none: no client lists uid 5 in `users` or gid 5 in `groups`\n\
         decision: deny: the broker refuses the connection"
    );
}

#[test]
fn denied_by_a_deny_rule_via_group() {
    let e = fixture().explain(5, 65534, b"/in/private/k", Access::Read);
    assert_eq!(
        e.to_string(),
        "request:  uid 5 gid 65534 wants read of \"/in/private/k\"\n\
         client:   \"scanner\" (fixture.toml:3:8), no client lists uid 5; gid 65534 is in its `groups`\n\
         decision: deny: a deny rule matches the path\n\
         rule:     fixture.toml:28:10: deny \"/in/private/\" (subtree)"
    );
}

#[test]
fn access_not_granted_names_the_rule_and_the_need() {
    let e = fixture().explain(1001, 1001, b"/out/report.txt", Access::Directory);
    assert_eq!(
        e.to_string(),
        "request:  uid 1001 gid 1001 wants directory of \"/out/report.txt\"\n\
         client:   \"scanner\" (fixture.toml:3:8), uid 1001 is in its `users`\n\
         decision: deny: the most specific matching rule does not grant directory (needs [directory])\n\
         rule:     fixture.toml:24:10: allow \"/out/report.txt\" [read] (exact)"
    );
    let text = fixture()
        .explain(1001, 1001, b"/in/x", Access::ReadWrite)
        .to_string();
    assert!(
        text.contains("does not grant read-write (needs [read, write])"),
        "{text}"
    );
}

#[test]
fn invalid_and_unmatched_paths() {
    let e = fixture().explain(1001, 1001, b"/in/\xff/../x", Access::Read);
    assert!(matches!(
        e.verdict,
        Verdict::Deny {
            reason: Denial::InvalidPath(_),
            rule: None
        }
    ));
    assert_eq!(
        e.to_string(),
        "request:  uid 1001 gid 1001 wants read of \"/in/\\xff/../x\"\n\
         client:   \"scanner\" (fixture.toml:3:8), uid 1001 is in its `users`\n\
         decision: deny: invalid path: path has a `.` or `..` component"
    );
    let text = fixture()
        .explain(1001, 1001, b"/srv/x", Access::Read)
        .to_string();
    assert!(
        text.ends_with("\ndecision: deny: no rule of this client matches the path"),
        "{text}"
    );
}

#[test]
fn a_directory_with_a_carve_out_beneath_is_listed_by_the_broker() {
    let p = fixture();
    let e = p.explain(1001, 1001, b"/in", Access::Directory);
    assert!(e.is_allow());
    let text = e.to_string();
    assert!(
        text.contains("no descriptor is passed for this directory: a deny rule lies beneath it"),
        "{text}"
    );
    assert!(text.contains("deny \"/in/"), "{text}");
    // Nothing hidden beneath: no such line; and only for `directory`.
    let sub = p
        .explain(1001, 1001, b"/in/sub", Access::Directory)
        .to_string();
    assert!(!sub.contains("listing:"), "{sub}");
    let read = p
        .explain(1001, 1001, b"/in/a.txt", Access::Read)
        .to_string();
    assert!(!read.contains("listing:"), "{read}");
}
