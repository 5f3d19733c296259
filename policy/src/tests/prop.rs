//! Property tests: `decide` never panics, every grant reassembles into the request
//! path, and the trie agrees with a plain scan over all rules.

use std::cmp::Reverse;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use proptest::prelude::*;

use super::fixture;
use crate::pattern::Pattern;
use crate::{Access, ClientId, Decision, Denial, Effect, Policy, RuleId, path};

/// Path bytes that hit the fixture's rules and the path checks often.
fn interesting_path() -> impl Strategy<Value = Vec<u8>> {
    let component = prop::sample::select(vec![
        &b"in"[..],
        b"private",
        b"a.key",
        b"x.db",
        b"data",
        b"etc",
        b"scanner",
        b"a.conf",
        b".conf",
        b"out",
        b"report.txt",
        b"\xff",
        b"..",
        b".",
        b"",
        b"inbox",
        b"*",
        b"a",
        b"b",
        b"c.txt",
    ]);
    (
        prop::collection::vec(component, 0..7),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(comps, absolute, trailing)| {
            let mut out = Vec::new();
            for (i, c) in comps.iter().enumerate() {
                if absolute || i > 0 {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
            if trailing || out.is_empty() {
                out.push(b'/');
            }
            out
        })
}

fn any_path() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        interesting_path(),
        prop::collection::vec(
            prop::sample::select(vec![b'/', b'a', b'.', b'*', 0, 0xff]),
            0..40
        ),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn any_access() -> impl Strategy<Value = Access> {
    prop::sample::select(Access::ALL.to_vec())
}

/// Root joined with relative, the way the broker's `openat` sees it.
fn rejoin(p: &Policy, root: crate::RootId, relative: &[u8]) -> Vec<u8> {
    let mut out = p.roots()[root.0].as_os_str().as_bytes().to_vec();
    if !relative.is_empty() {
        if out != b"/" {
            out.push(b'/');
        }
        out.extend_from_slice(relative);
    }
    out
}

/// The decision by definition: scan every rule of the client.
fn reference(p: &Policy, client: ClientId, path: &[u8], access: Access) -> Result<RuleId, Denial> {
    if let Err(e) = path::check(path) {
        return Err(Denial::InvalidPath(e));
    }
    let rank = |id: RuleId, pat: &Pattern| (pat.prefix().len(), pat.kind().rank(), Reverse(id.0));
    let (mut deny, mut granting, mut matching) = (None, None, None);
    for &id in &p.client(client).rules {
        let rule = p.rule(id);
        let pat = Pattern::parse(&rule.pattern).unwrap();
        if !pat.matches(path) {
            continue;
        }
        let r = Some((rank(id, &pat), id.0));
        match rule.effect {
            Effect::Deny => deny = deny.max(r),
            Effect::Allow => {
                matching = matching.max(r);
                if rule.access.grants(access) {
                    granting = granting.max(r);
                }
            }
        }
    }
    match (deny, granting, matching) {
        (Some((_, id)), _, _) => Err(Denial::DeniedBy(RuleId(id))),
        (None, Some((_, id)), _) => Ok(RuleId(id)),
        (None, None, Some((_, id))) => Err(Denial::AccessNotGranted(RuleId(id))),
        (None, None, None) => Err(Denial::NoRule),
    }
}

fn check_against_reference(
    p: &Policy,
    client: ClientId,
    path: &[u8],
    access: Access,
) -> Result<(), TestCaseError> {
    let got = p.decide(client, path, access);
    let want = reference(p, client, path, access);
    match got {
        Decision::Allow(g) => {
            prop_assert_eq!(Ok(g.rule), want);
            prop_assert_eq!(rejoin(p, g.root, g.relative), path.to_vec());
            prop_assert_eq!(Some(g.root), p.rule(g.rule).root);
            prop_assert!(p.rule(g.rule).access.grants(access));
        }
        Decision::Deny(d) => prop_assert_eq!(Err(d), want),
    }
    Ok(())
}

/// Rule paths from a small vocabulary, so that random rules overlap a lot.
fn rule_path() -> impl Strategy<Value = String> {
    let component = prop::sample::select(vec!["a", "b", "c.txt", "*", "*.txt", "**", "?", "a*"]);
    (prop::collection::vec(component, 0..4), any::<bool>()).prop_map(|(comps, trailing)| {
        let mut out = String::new();
        for c in &comps {
            out.push('/');
            out.push_str(c);
        }
        if trailing || out.is_empty() {
            out.push('/');
        }
        out
    })
}

fn rule_table() -> impl Strategy<Value = String> {
    let words = prop::sample::subsequence(vec!["read", "write", "create", "directory"], 1..=4);
    (prop::bool::weighted(0.25), rule_path(), words).prop_map(|(deny, path, words)| {
        if deny {
            format!("[[client.deny]]\npath = \"{path}\"\n")
        } else {
            let words: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
            format!(
                "[[client.allow]]\npath = \"{path}\"\naccess = [{}]\n",
                words.join(", ")
            )
        }
    })
}

fn small_path() -> impl Strategy<Value = Vec<u8>> {
    let component = prop::sample::select(vec![
        &b"a"[..],
        b"b",
        b"c.txt",
        b"x.txt",
        b"ab",
        b"\xff",
        b"?",
    ]);
    prop::collection::vec(component, 0..5).prop_map(|comps| {
        let mut out = Vec::new();
        for c in comps {
            out.push(b'/');
            out.extend_from_slice(c);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        max_global_rejects: 20_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn decide_never_panics_and_grants_reassemble(path in any_path(), access in any_access(), client in 0usize..3) {
        let p = fixture();
        let client = ClientId(client);
        if client.0 < p.clients().len() {
            check_against_reference(&p, client, &path, access)?;
        } else {
            prop_assert!(!p.decide(client, &path, access).is_allow());
        }
        let _ = p.explain(1001, 0, &path, access).to_string();
    }

    #[test]
    fn trie_agrees_with_a_scan_over_all_rules(
        rules in prop::collection::vec(rule_table(), 1..12),
        paths in prop::collection::vec(small_path(), 1..20),
        access in any_access(),
    ) {
        let text = format!("[[client]]\nname = \"c\"\nusers = [1]\n{}", rules.concat());
        // Random rules may be refused (e.g. an allow fully covered by a deny); too many
        // refusals fail the test, so it cannot pass vacuously.
        let parsed = Policy::parse(&text, Path::new("random.toml"));
        prop_assume!(parsed.is_ok());
        let Ok(p) = parsed else { return Ok(()) };
        for path in &paths {
            check_against_reference(&p, ClientId(0), path, access)?;
        }
    }
}

/// Rules whose first two components come from 40 names, so trie nodes grow past the
/// few children compared directly and into a hash map, with globs and denies among
/// them.
fn wide_rule() -> impl Strategy<Value = String> {
    let name = (0..40usize).prop_map(|i| format!("n{i}"));
    let last = prop::sample::select(vec!["", "x", "*", "**", "n1*"]);
    (prop::bool::weighted(0.25), name.clone(), name, last).prop_map(|(deny, a, b, last)| {
        let path = format!("/{a}/{b}/{last}");
        if deny {
            format!("[[client.deny]]\npath = \"{path}\"\n")
        } else {
            format!("[[client.allow]]\npath = \"{path}\"\naccess = [\"read\"]\n")
        }
    })
}

fn wide_path() -> impl Strategy<Value = Vec<u8>> {
    let comp = prop::sample::select(vec![
        "n0", "n1", "n15", "n16", "n17", "n39", "n40", "n", "x",
    ]);
    prop::collection::vec(comp, 1..4).prop_map(|c| format!("/{}", c.join("/")).into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        max_global_rejects: 20_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn wide_trie_nodes_agree_with_a_scan_over_all_rules(
        rules in prop::collection::vec(wide_rule(), 10..80),
        paths in prop::collection::vec(wide_path(), 1..30),
        access in any_access(),
    ) {
        let text = format!("[[client]]\nname = \"c\"\nusers = [1]\n{}", rules.concat());
        let parsed = Policy::parse(&text, Path::new("wide.toml"));
        prop_assume!(parsed.is_ok());
        let Ok(p) = parsed else { return Ok(()) };
        for path in &paths {
            check_against_reference(&p, ClientId(0), path, access)?;
        }
    }
}
