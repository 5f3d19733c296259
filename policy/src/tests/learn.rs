//! `learn_scope`: learn mode's rules, for one client at a time, never wider than named.

use std::path::Path;

use super::{load_err, parse};
use crate::{Access, AccessSet, ClientId, Decision, LoadErrorKind, PatternKind, Policy};

#[test]
fn a_scope_is_a_subtree_of_every_word_beneath_its_own_root() {
    let p = parse(
        "[[client]]\nname = \"c\"\nusers = [1]\nlearn_scope = [\"/srv/in\"]\n[[client.deny]]\npath = \"/srv/in/keys/\"\n",
    );
    assert!(p.client(ClientId(0)).learning);
    let learn: Vec<_> = p.rules().iter().filter(|r| r.learning).collect();
    assert_eq!(learn.len(), 1);
    assert_eq!(learn[0].pattern, "/srv/in/");
    assert_eq!(learn[0].kind, PatternKind::Subtree);
    assert!(
        learn[0].access.contains(
            AccessSet::READ | AccessSet::WRITE | AccessSet::CREATE | AccessSet::DIRECTORY
        )
    );
    let c = ClientId(0);
    assert!(p.decide(c, b"/srv/in/a", Access::Create).is_allow());
    // Not a string prefix: the sibling `/srv/in-other` is outside.
    assert!(!p.decide(c, b"/srv/in-other/a", Access::Read).is_allow());
    assert!(!p.decide(c, b"/srv/in/../x", Access::Read).is_allow());
    // The client's own deny still wins.
    assert!(matches!(
        p.decide(c, b"/srv/in/keys/k", Access::Read),
        Decision::Deny(_)
    ));
}

#[test]
fn learn_mode_is_for_one_client_and_a_real_directory() {
    let two = "[[client]]\nname = \"a\"\nusers = [1]\nlearn_scope = [\"/x\"]\n[[client]]\nname = \"b\"\nusers = [2]\nlearn_scope = [\"/y\"]\n";
    assert!(matches!(
        load_err(two).kind(),
        LoadErrorKind::LearnTwice { .. }
    ));
    for bad in ["/", "/a/*", "relative", "/a/../b", ""] {
        let text = format!("[[client]]\nname = \"a\"\nusers = [1]\nlearn_scope = [\"{bad}\"]\n");
        assert!(
            matches!(load_err(&text).kind(), LoadErrorKind::BadLearnScope { .. }),
            "{bad:?}"
        );
    }
    let empty = "[[client]]\nname = \"a\"\nusers = [1]\nlearn_scope = []\n";
    assert!(matches!(
        load_err(empty).kind(),
        LoadErrorKind::BadLearnScope { .. }
    ));
    // `run --learn` sets it from outside; the file's rules keep their positions.
    let text =
        "[[client]]\nname = \"a\"\nusers = [1]\n[[client.allow]]\npath = \"/etc/hostname\"\n";
    let p = Policy::parse_learning(text, Path::new("p.toml"), "a", &["/srv/in".to_owned()])
        .expect("learning");
    assert!(p.client(ClientId(0)).learning);
    let own = p.rules().iter().find(|r| !r.learning).expect("own rule");
    assert_eq!((own.location.line, own.location.col), (5, 8));
}
