//! One client's rules as a trie keyed by path component.
//!
//! A decision walks the request path from `/` down, one hash lookup per component,
//! and only looks at rules attached to the nodes it passes: subtree rules on their
//! directory's node, exact rules on their own node, globs on the node of their literal
//! prefix (tested only against paths that reach it). The cost of a decision therefore
//! depends on the depth of the path and the rules along it, not on the size of the
//! policy, and the walk reports matches through a callback so that it never
//! allocates. The one cost that does grow is many globs sharing one literal prefix
//! (`/d/*.a`, `/d/*.b`, ...): those are tried one after another for paths under `/d`.

use std::cmp::Reverse;
use std::collections::HashMap;

use crate::path::component_at;
use crate::pattern::{Pattern, PatternKind, Segment, match_segments, segments_can_extend};
use crate::{Effect, RuleId};

/// Orders matching rules: more literal components first, then exact > glob >
/// subtree, then the rule written first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rank {
    specificity: usize,
    kind: u8,
    earlier: Reverse<usize>,
}

impl Rank {
    fn new(specificity: usize, kind: PatternKind, rule: RuleId) -> Rank {
        Rank {
            specificity,
            kind: kind.rank(),
            earlier: Reverse(rule.0),
        }
    }
}

/// A rule whose pattern matches the walked path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    pub rule: RuleId,
    pub rank: Rank,
    /// Byte offset in the request path where the path relative to the rule's root
    /// starts; `None` when the path is the root itself.
    pub relative: Option<usize>,
}

/// A node's children by component bytes.
///
/// Most nodes of a policy's trie have one child or a few (`/srv/mail/...`), and a
/// decision looks up one component per level: comparing a handful of byte strings is
/// cheaper than hashing one with SipHash. Past [`Children::FEW`] the lookup is a hash
/// map. SipHash with a random key stays there: the keys come from the policy, but
/// lookups are with bytes a hostile worker chose.
#[derive(Debug)]
enum Children {
    Few(Vec<(Box<[u8]>, u32)>),
    Many(HashMap<Box<[u8]>, u32>),
}

impl Default for Children {
    fn default() -> Self {
        Children::Few(Vec::new())
    }
}

impl Children {
    const FEW: usize = 16;

    fn get(&self, comp: &[u8]) -> Option<u32> {
        match self {
            Children::Few(v) => v.iter().find(|(k, _)| **k == *comp).map(|&(_, i)| i),
            Children::Many(m) => m.get(comp).copied(),
        }
    }

    /// Adds a child the caller checked is not there yet.
    fn insert(&mut self, comp: Box<[u8]>, index: u32) {
        match self {
            Children::Few(v) if v.len() < Children::FEW => v.push((comp, index)),
            Children::Few(v) => {
                let mut m: HashMap<Box<[u8]>, u32> = std::mem::take(v).into_iter().collect();
                m.insert(comp, index);
                *self = Children::Many(m);
            }
            Children::Many(m) => {
                m.insert(comp, index);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    children: Children,
    exact: Vec<RuleId>,
    subtree: Vec<RuleId>,
    globs: Vec<(RuleId, Box<[Segment]>)>,
    parent: Option<u32>,
    /// The first deny rule attached at this node or any node beneath it; lets load
    /// ask "is anything denied inside this root?" without searching the subtree.
    deny_below: Option<RuleId>,
}

#[derive(Debug)]
pub(crate) struct Index {
    /// `nodes[0]` is `/`; a child is always created after its parent.
    nodes: Vec<Node>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            nodes: vec![Node::default()],
        }
    }
}

impl Index {
    /// Attaches a rule. Rules must be inserted in id order so `deny_below` names the
    /// first deny.
    pub(crate) fn insert(&mut self, rule: RuleId, effect: Effect, pattern: &Pattern) {
        let mut at = 0usize;
        for comp in pattern.prefix() {
            let existing = self.nodes.get(at).and_then(|n| n.children.get(comp));
            at = match existing {
                Some(child) => child as usize,
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(Node {
                        parent: Some(at as u32),
                        ..Node::default()
                    });
                    if let Some(node) = self.nodes.get_mut(at) {
                        node.children.insert(comp.clone(), child as u32);
                    }
                    child
                }
            };
        }
        let Some(node) = self.nodes.get_mut(at) else {
            return;
        };
        match pattern.kind() {
            PatternKind::Exact => node.exact.push(rule),
            PatternKind::Subtree => node.subtree.push(rule),
            PatternKind::Glob => node.globs.push((rule, pattern.segments().into())),
        }
        if effect == Effect::Deny {
            // Propagate to ancestors that do not know a deny yet; those that do know
            // an earlier one already, as are all of theirs.
            let mut cursor = Some(at);
            while let Some(i) = cursor {
                let Some(n) = self.nodes.get_mut(i) else {
                    break;
                };
                if n.deny_below.is_some() {
                    break;
                }
                n.deny_below = Some(rule);
                cursor = n.parent.map(|p| p as usize);
            }
        }
    }

    /// Calls `found` for every rule matching `path`, a path that passed
    /// [`crate::path::check`]. No allocation; one hash lookup per component.
    #[inline]
    pub(crate) fn walk(&self, path: &[u8], mut found: impl FnMut(Candidate)) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        let mut depth = 0usize;
        // Start of the first component not yet consumed, and of the last one consumed.
        let mut rest: Option<usize> = if path.len() > 1 { Some(1) } else { None };
        let mut last: Option<usize> = None;
        loop {
            for &rule in &node.subtree {
                found(Candidate {
                    rule,
                    rank: Rank::new(depth, PatternKind::Subtree, rule),
                    relative: rest,
                });
            }
            if !node.globs.is_empty() {
                let tail = rest.and_then(|s| path.get(s..)).unwrap_or_default();
                for (rule, segments) in &node.globs {
                    if match_segments(segments, tail) {
                        found(Candidate {
                            rule: *rule,
                            rank: Rank::new(depth, PatternKind::Glob, *rule),
                            relative: rest,
                        });
                    }
                }
            }
            let Some(start) = rest else {
                for &rule in &node.exact {
                    found(Candidate {
                        rule,
                        rank: Rank::new(depth, PatternKind::Exact, rule),
                        relative: last,
                    });
                }
                return;
            };
            let (comp, next) = component_at(path, start);
            let Some(child) = node
                .children
                .get(comp)
                .and_then(|c| self.nodes.get(c as usize))
            else {
                return;
            };
            node = child;
            depth += 1;
            last = Some(start);
            rest = next;
        }
    }

    /// Calls `found` for the subtree and glob rules on every node from `/` to
    /// `prefix` and for every rule on the `prefix` node itself: all the rules that
    /// could cover, equal or reach into that directory. Load-time only.
    pub(crate) fn along(&self, prefix: &[Box<[u8]>], mut found: impl FnMut(RuleId)) {
        let mut at = 0usize;
        let mut remaining = prefix.iter();
        loop {
            let Some(node) = self.nodes.get(at) else {
                return;
            };
            node.subtree.iter().for_each(|&r| found(r));
            node.globs.iter().for_each(|(r, _)| found(*r));
            let Some(comp) = remaining.next() else {
                node.exact.iter().for_each(|&r| found(r));
                return;
            };
            match node.children.get(comp) {
                Some(child) => at = child as usize,
                None => return,
            }
        }
    }

    /// What the rules say about the paths strictly beneath the directory `path` (one
    /// that passed [`crate::path::check`]): the first deny rule (by id) that could match
    /// `path` or anything beneath it, and whether one allow rule matches every path
    /// beneath it (a subtree rule, or a glob ending in `**`, that matches `path`).
    /// `effect` tells the two kinds of rule apart. Allocates only for globs along the way.
    pub(crate) fn beneath(
        &self,
        path: &[u8],
        effect: impl Fn(RuleId) -> Option<Effect>,
    ) -> (Option<RuleId>, bool) {
        let mut deny: Option<RuleId> = None;
        let mut covered = false;
        let mut note_deny = |id: RuleId| {
            if deny.is_none_or(|d| id.0 < d.0) {
                deny = Some(id);
            }
        };
        let Some(mut node) = self.nodes.first() else {
            return (None, false);
        };
        let mut rest: Option<usize> = if path.len() > 1 { Some(1) } else { None };
        loop {
            for &rule in &node.subtree {
                match effect(rule) {
                    Some(Effect::Deny) => note_deny(rule),
                    Some(Effect::Allow) => covered = true,
                    None => {}
                }
            }
            if !node.globs.is_empty() {
                let tail = rest.and_then(|s| path.get(s..)).unwrap_or_default();
                for (rule, segments) in &node.globs {
                    match effect(*rule) {
                        Some(Effect::Deny) => {
                            let inside: Vec<&[u8]> = crate::path::components_of(tail).collect();
                            if segments_can_extend(segments, &inside) {
                                note_deny(*rule);
                            }
                        }
                        Some(Effect::Allow)
                            if segments.last() == Some(&Segment::AnyDepth)
                                && match_segments(segments, tail) =>
                        {
                            covered = true;
                        }
                        Some(Effect::Allow) | None => {}
                    }
                }
            }
            let Some(start) = rest else {
                // The directory's own node: every rule attached here or beneath.
                if let Some(d) = node.deny_below {
                    note_deny(d);
                }
                return (deny, covered);
            };
            let (comp, next) = component_at(path, start);
            let Some(child) = node
                .children
                .get(comp)
                .and_then(|c| self.nodes.get(c as usize))
            else {
                // No rule is attached at or beneath the directory itself.
                return (deny, covered);
            };
            node = child;
            rest = next;
        }
    }

    /// The first deny rule attached at `dir` or beneath it.
    pub(crate) fn deny_within(&self, dir: &[Box<[u8]>]) -> Option<RuleId> {
        let mut at = 0usize;
        for comp in dir {
            at = self.nodes.get(at)?.children.get(comp)? as usize;
        }
        self.nodes.get(at)?.deny_below
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn index(rules: &[(&str, Effect)]) -> Index {
        let mut idx = Index::default();
        for (i, (text, effect)) in rules.iter().enumerate() {
            idx.insert(RuleId(i), *effect, &Pattern::parse(text).unwrap());
        }
        idx
    }

    fn matches(idx: &Index, path: &[u8]) -> Vec<(usize, Option<usize>)> {
        let mut out = Vec::new();
        idx.walk(path, |c| out.push((c.rule.0, c.relative)));
        out.sort();
        out
    }

    #[test]
    fn walk_reports_each_kind_with_its_relative_offset() {
        let idx = index(&[
            ("/a/", Effect::Allow),
            ("/a/b/c", Effect::Allow),
            ("/a/*/c", Effect::Allow),
            ("/a/**", Effect::Allow),
            ("/x/", Effect::Allow),
        ]);
        // "/a/b/c": "a" at 1, "b" at 3, "c" at 5.
        assert_eq!(
            matches(&idx, b"/a/b/c"),
            [(0, Some(3)), (1, Some(5)), (2, Some(3)), (3, Some(3))]
        );
        assert_eq!(matches(&idx, b"/a"), [(0, None), (3, None)]);
        assert_eq!(matches(&idx, b"/"), []);
        assert_eq!(matches(&idx, b"/ab"), []);
    }

    #[test]
    fn siblings_are_found_before_and_after_their_node_becomes_a_hash_map() {
        for n in [1, Children::FEW, Children::FEW + 1, 40] {
            let texts: Vec<String> = (0..n).map(|i| format!("/d/s{i}/")).collect();
            let rules: Vec<(&str, Effect)> =
                texts.iter().map(|t| (t.as_str(), Effect::Allow)).collect();
            let idx = index(&rules);
            for i in 0..n {
                let path = format!("/d/s{i}/f");
                assert_eq!(matches(&idx, path.as_bytes()), [(i, Some(5 + digits(i)))]);
            }
            assert_eq!(matches(&idx, b"/d/s/f"), []);
            assert_eq!(matches(&idx, format!("/d/s{n}/f").as_bytes()), []);
        }
    }

    fn digits(i: usize) -> usize {
        i.to_string().len()
    }

    #[test]
    fn deny_below_names_the_first_deny_in_a_subtree() {
        let idx = index(&[
            ("/a/b/", Effect::Allow),
            ("/a/b/c/d", Effect::Deny),
            ("/a/b/e/", Effect::Deny),
            ("/z/*.key", Effect::Deny),
        ]);
        let dir = |s: &str| -> Vec<Box<[u8]>> {
            crate::path::components(s.as_bytes())
                .map(Box::from)
                .collect()
        };
        assert_eq!(idx.deny_within(&dir("/a")), Some(RuleId(1)));
        assert_eq!(idx.deny_within(&dir("/a/b/e")), Some(RuleId(2)));
        assert_eq!(idx.deny_within(&dir("/a/b/c")), Some(RuleId(1)));
        assert_eq!(idx.deny_within(&dir("/z")), Some(RuleId(3)));
        assert_eq!(idx.deny_within(&dir("/q")), None);
        assert_eq!(idx.deny_within(&dir("/")), Some(RuleId(1)));
    }

    #[test]
    fn along_visits_ancestors_and_the_node_itself() {
        let idx = index(&[
            ("/", Effect::Deny),
            ("/a/*.c", Effect::Deny),
            ("/a/b", Effect::Deny),
            ("/a/b/c/", Effect::Deny),
            ("/a/b/", Effect::Deny),
        ]);
        let mut seen = Vec::new();
        let dir: Vec<Box<[u8]>> = vec![Box::from(&b"a"[..]), Box::from(&b"b"[..])];
        idx.along(&dir, |r| seen.push(r.0));
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 4]);
    }
}
