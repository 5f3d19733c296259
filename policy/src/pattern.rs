//! Rule paths: what one `path = "..."` in the policy means, and glob matching.
//!
//! A rule path obeys the request-path rules (see [`crate::path`]) so that the same
//! bytes cannot be read two ways, except that a trailing `/` marks a subtree rule.
//! Globs are deliberately small: `*` and `?` within one component, `**` as a whole
//! component. Character classes, braces and escapes are reserved so that a later
//! version can give them a meaning without silently changing what an existing policy
//! allows.
//!
//! Matching is on bytes: `?` matches exactly one byte (a multi-byte UTF-8 character
//! needs as many `?`, which fails closed), and `*`/`?` also match a leading `.`, unlike
//! a shell: a policy that allows `/etc/x/*` allows `/etc/x/.hidden` too.

use crate::path::{self, PathError, component_at};

/// Why a rule path in the file is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PatternError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("`{0}` is reserved glob syntax")]
    Reserved(char),
    #[error("`**` must be a whole path component")]
    PartialDoubleStar,
}

/// The shape of a rule path; it decides where the rule sits in the index and breaks
/// ties between equally specific rules (exact > glob > subtree).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatternKind {
    /// A literal path: that file or directory only.
    Exact,
    /// A literal path with a trailing `/`: the directory and everything beneath it.
    Subtree,
    /// At least one component with `*`, `?` or `**`.
    Glob,
}

impl PatternKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PatternKind::Exact => "exact",
            PatternKind::Subtree => "subtree",
            PatternKind::Glob => "glob",
        }
    }

    /// Tie-break order among rules with equally many literal components.
    pub(crate) fn rank(self) -> u8 {
        match self {
            PatternKind::Exact => 2,
            PatternKind::Glob => 1,
            PatternKind::Subtree => 0,
        }
    }
}

/// One component of a glob after its literal prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Segment {
    /// A component without metacharacters (after the first glob component).
    Literal(Box<[u8]>),
    /// A component with `*` and/or `?`.
    Wild(Box<[u8]>),
    /// `**`: zero or more whole components.
    AnyDepth,
}

impl Segment {
    fn matches_one(&self, name: &[u8]) -> bool {
        match self {
            Segment::Literal(lit) => **lit == *name,
            Segment::Wild(pat) => wild_match(pat, name),
            Segment::AnyDepth => false,
        }
    }
}

/// A parsed, validated rule path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pattern {
    kind: PatternKind,
    /// The literal components before the first glob component (all of them for exact
    /// and subtree rules). Their count is the rule's specificity.
    prefix: Vec<Box<[u8]>>,
    /// For globs: the components from the first glob component on; empty otherwise.
    segments: Box<[Segment]>,
}

fn is_glob_component(c: &[u8]) -> bool {
    c.iter().any(|&b| b == b'*' || b == b'?')
}

impl Pattern {
    pub(crate) fn parse(text: &str) -> Result<Pattern, PatternError> {
        let bytes = text.as_bytes();
        let (body, subtree) = match bytes.strip_suffix(b"/") {
            Some(body) if !body.is_empty() => (body, true),
            _ => (bytes, bytes == b"/"),
        };
        path::check(body).map_err(|e| match e {
            // `/a//` reaches here as `/a/`: the real mistake is the doubled slash.
            PathError::TrailingSlash => PathError::EmptyComponent,
            other => other,
        })?;
        if let Some(c) = text
            .chars()
            .find(|c| matches!(c, '[' | ']' | '{' | '}' | '\\'))
        {
            return Err(PatternError::Reserved(c));
        }
        let comps: Vec<&[u8]> = path::components(body).collect();
        if comps
            .iter()
            .any(|c| *c != b"**" && c.windows(2).any(|w| w == b"**"))
        {
            return Err(PatternError::PartialDoubleStar);
        }
        let owned = |c: &&[u8]| Box::<[u8]>::from(*c);
        let Some(first_glob) = comps.iter().position(|c| is_glob_component(c)) else {
            let kind = if subtree {
                PatternKind::Subtree
            } else {
                PatternKind::Exact
            };
            return Ok(Pattern {
                kind,
                prefix: comps.iter().map(owned).collect(),
                segments: Box::default(),
            });
        };
        let (prefix, globbed) = comps.split_at(first_glob);
        let mut segments: Vec<Segment> = Vec::with_capacity(globbed.len() + 1);
        let tail = if subtree { Some(&b"**"[..]) } else { None };
        for c in globbed.iter().copied().chain(tail) {
            let seg = if c == b"**" {
                // `**/**` means the same as `**`; one keeps matching linear.
                if segments.last() == Some(&Segment::AnyDepth) {
                    continue;
                }
                Segment::AnyDepth
            } else if is_glob_component(c) {
                Segment::Wild(c.into())
            } else {
                Segment::Literal(c.into())
            };
            segments.push(seg);
        }
        Ok(Pattern {
            kind: PatternKind::Glob,
            prefix: prefix.iter().map(owned).collect(),
            segments: segments.into(),
        })
    }

    pub(crate) fn kind(&self) -> PatternKind {
        self.kind
    }

    /// Literal leading components; where the rule is attached in the index.
    pub(crate) fn prefix(&self) -> &[Box<[u8]>] {
        &self.prefix
    }

    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The directory the broker holds open for this rule: the longest glob-free
    /// directory prefix (an exact rule's parent; a subtree rule's own directory).
    pub(crate) fn root(&self) -> &[Box<[u8]>] {
        match self.kind {
            PatternKind::Exact => self
                .prefix
                .split_last()
                .map_or(&[][..], |(_, parent)| parent),
            PatternKind::Subtree | PatternKind::Glob => &self.prefix,
        }
    }

    /// The prefix as an absolute path (for an exact rule: the whole path).
    pub(crate) fn prefix_path(&self) -> Vec<u8> {
        join(&self.prefix)
    }

    /// Does this pattern match `path`, a path that passed [`path::check`]?
    pub(crate) fn matches(&self, path: &[u8]) -> bool {
        let mut next = if path.len() > 1 { Some(1) } else { None };
        for want in &self.prefix {
            let Some(start) = next else { return false };
            let (comp, after) = component_at(path, start);
            if comp != &**want {
                return false;
            }
            next = after;
        }
        match self.kind {
            PatternKind::Exact => next.is_none(),
            PatternKind::Subtree => true,
            PatternKind::Glob => {
                let rest = next.and_then(|s| path.get(s..)).unwrap_or_default();
                match_segments(&self.segments, rest)
            }
        }
    }

    /// If this pattern matches exactly a directory and everything beneath it, that
    /// directory's components (`/a/` and `/a/**` both qualify).
    pub(crate) fn covered_subtree(&self) -> Option<&[Box<[u8]>]> {
        match (self.kind, &*self.segments) {
            (PatternKind::Subtree, _) | (PatternKind::Glob, [Segment::AnyDepth]) => {
                Some(&self.prefix)
            }
            _ => None,
        }
    }

    /// Is every path `allow` could match also matched by `self` (a deny rule)?
    ///
    /// Exact for the cases an operator plausibly writes (a deny subtree over the
    /// allow's whole literal prefix, identical rules, a deny that matches an exact
    /// allow); a partial overlap between two globs is not reported.
    pub(crate) fn fully_denies(&self, allow: &Pattern) -> bool {
        if self == allow {
            return true;
        }
        if let Some(dir) = self.covered_subtree() {
            if allow.prefix.starts_with(dir) {
                return true;
            }
        }
        allow.kind == PatternKind::Exact && self.matches(&allow.prefix_path())
    }

    /// Could this pattern match `root` itself or some path beneath it? Used to find
    /// deny rules a symlink inside an allow rule's root could lead to.
    pub(crate) fn reaches_into(&self, root: &[Box<[u8]>]) -> bool {
        match self.kind {
            PatternKind::Exact => self.prefix.starts_with(root),
            PatternKind::Subtree => self.prefix.starts_with(root) || root.starts_with(&self.prefix),
            PatternKind::Glob => {
                if self.prefix.starts_with(root) {
                    // Every glob matches something beneath its own prefix.
                    return true;
                }
                match root.strip_prefix(&self.prefix[..]) {
                    Some(inside) => segments_can_extend(&self.segments, inside),
                    None => false,
                }
            }
        }
    }
}

/// `/` followed by the components joined with `/`.
pub(crate) fn join(components: &[Box<[u8]>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + components.iter().map(|c| c.len() + 1).sum::<usize>());
    for c in components {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Does `segs` match the components of `rest` (components separated by `/`, no
/// leading slash; empty means no components)?
///
/// The classic wildcard algorithm lifted to whole components: `**` is the star, every
/// other segment consumes exactly one component. Only the latest `**` needs a
/// backtrack point, so the cost is at most components × segments and never
/// exponential, whatever a path looks like. No allocation.
pub(crate) fn match_segments(segs: &[Segment], rest: &[u8]) -> bool {
    let mut si = 0usize;
    let mut pos = if rest.is_empty() { None } else { Some(0) };
    // (segment after the latest `**`, position of the first component it does not
    // yet absorb)
    let mut star: Option<(usize, Option<usize>)> = None;
    loop {
        match (segs.get(si), pos) {
            (Some(Segment::AnyDepth), _) => {
                si += 1;
                star = Some((si, pos));
                continue;
            }
            (Some(seg), Some(p)) => {
                let (comp, next) = component_at(rest, p);
                if seg.matches_one(comp) {
                    si += 1;
                    pos = next;
                    continue;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => {}
        }
        match star {
            Some((after, Some(p))) => {
                let (_, next) = component_at(rest, p);
                star = Some((after, next));
                si = after;
                pos = next;
            }
            _ => return false,
        }
    }
}

/// `*` (any bytes) and `?` (one byte) within one component; the same single-backtrack
/// algorithm as [`match_segments`], linear in practice and quadratic at worst.
pub(crate) fn wild_match(pat: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pat.get(p) {
            Some(b'*') => {
                p += 1;
                star = Some((p, n));
                continue;
            }
            Some(&c) if c == b'?' || Some(&c) == name.get(n) => {
                p += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((after, absorbed)) => {
                star = Some((after, absorbed + 1));
                p = after;
                n = absorbed + 1;
            }
            None => return false,
        }
    }
    pat.get(p..).unwrap_or_default().iter().all(|&b| b == b'*')
}

/// Can `segs` match some path that starts with the components `inside`? A small
/// table instead of recursion keeps many `**` from going exponential at load time.
pub(crate) fn segments_can_extend<C: AsRef<[u8]>>(segs: &[Segment], inside: &[C]) -> bool {
    // reach[i][j]: segments[..i] can consume exactly inside[..j].
    let cols = inside.len() + 1;
    let mut reach = vec![false; (segs.len() + 1) * cols];
    reach[0] = true;
    for i in 0..=segs.len() {
        for j in 0..=inside.len() {
            if !reach[i * cols + j] {
                continue;
            }
            if j == inside.len() {
                // The rest of the glob can always match something below `inside`.
                return true;
            }
            match segs.get(i) {
                Some(Segment::AnyDepth) => {
                    reach[(i + 1) * cols + j] = true;
                    reach[i * cols + j + 1] = true;
                }
                Some(seg) if inside.get(j).is_some_and(|c| seg.matches_one(c.as_ref())) => {
                    reach[(i + 1) * cols + j + 1] = true
                }
                _ => {}
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(text: &str) -> Pattern {
        Pattern::parse(text).unwrap()
    }

    fn comps(path: &str) -> Vec<Box<[u8]>> {
        path::components(path.as_bytes()).map(Box::from).collect()
    }

    #[test]
    fn kinds_prefixes_and_roots() {
        let cases = [
            ("/a/b/", PatternKind::Subtree, "/a/b", "/a/b"),
            ("/a/b/c.conf", PatternKind::Exact, "/a/b/c.conf", "/a/b"),
            ("/etc/x/*.conf", PatternKind::Glob, "/etc/x", "/etc/x"),
            ("/data/**/x", PatternKind::Glob, "/data", "/data"),
            ("/", PatternKind::Subtree, "/", "/"),
            ("/x", PatternKind::Exact, "/x", "/"),
            ("/*.c", PatternKind::Glob, "/", "/"),
            ("/a/*/b/", PatternKind::Glob, "/a", "/a"),
        ];
        for (text, kind, prefix, root) in cases {
            let pat = p(text);
            assert_eq!(pat.kind(), kind, "{text}");
            assert_eq!(join(pat.prefix()), prefix.as_bytes(), "{text}");
            assert_eq!(join(pat.root()), root.as_bytes(), "{text}");
        }
    }

    #[test]
    fn refuses_bad_rule_paths() {
        let cases = [
            ("a/b", PatternError::Path(PathError::NotAbsolute)),
            ("", PatternError::Path(PathError::Empty)),
            ("/a//b", PatternError::Path(PathError::EmptyComponent)),
            ("/a//", PatternError::Path(PathError::EmptyComponent)),
            ("/a/../b", PatternError::Path(PathError::DotComponent)),
            ("/a/./", PatternError::Path(PathError::DotComponent)),
            ("/a\0", PatternError::Path(PathError::Nul)),
            ("/a/[ab]", PatternError::Reserved('[')),
            ("/a/b]", PatternError::Reserved(']')),
            ("/a/{x,y}", PatternError::Reserved('{')),
            ("/a/\\*", PatternError::Reserved('\\')),
            ("/a/**.c", PatternError::PartialDoubleStar),
            ("/a/x**", PatternError::PartialDoubleStar),
            ("/a/***/", PatternError::PartialDoubleStar),
        ];
        for (text, err) in cases {
            assert_eq!(Pattern::parse(text), Err(err), "{text:?}");
        }
    }

    #[test]
    fn wild_match_within_a_component() {
        assert!(wild_match(b"*.conf", b"a.conf"));
        assert!(wild_match(b"*.conf", b".conf"));
        assert!(wild_match(b"*", b".hidden"));
        assert!(wild_match(b"?", b"\xff"));
        assert!(!wild_match(b"?", b"\xc3\xa9"));
        assert!(wild_match(b"??", b"\xc3\xa9"));
        assert!(wild_match(b"a*b*c", b"aXbYbZc"));
        assert!(!wild_match(b"a*b*c", b"aXbYbZ"));
        assert!(wild_match(b"*a", b"*a"));
        assert!(wild_match(b"**x", b"yx"));
        assert!(!wild_match(b"x", b""));
        assert!(wild_match(b"*", b""));
        assert!(!wild_match(b"a?", b"a"));
    }

    #[test]
    fn glob_matching_across_components() {
        let g = p("/data/**/x");
        assert!(g.matches(b"/data/x"));
        assert!(g.matches(b"/data/a/x"));
        assert!(g.matches(b"/data/a/b/c/x"));
        assert!(!g.matches(b"/data/a/x/y"));
        assert!(!g.matches(b"/data"));
        assert!(!g.matches(b"/datax/x"));
        let g = p("/data/**");
        assert!(g.matches(b"/data"));
        assert!(g.matches(b"/data/a/b"));
        assert!(!g.matches(b"/"));
        let g = p("/a/**/b/**/c");
        assert!(g.matches(b"/a/b/c"));
        assert!(g.matches(b"/a/x/b/y/b/z/c"));
        assert!(!g.matches(b"/a/x/b/y/c/z"));
        let g = p("/a/*/c");
        assert!(g.matches(b"/a/\xff/c"));
        assert!(!g.matches(b"/a/b/d/c"));
        let g = p("/a/*/");
        assert!(g.matches(b"/a/b"));
        assert!(g.matches(b"/a/b/c/d"));
        assert!(!g.matches(b"/a"));
    }

    #[test]
    fn many_double_stars_stay_fast() {
        let text = format!("/{}x", "**/".repeat(40));
        let g = p(&text);
        let mut path = b"/".to_vec();
        path.extend(b"y/".repeat(1500));
        path.push(b'z');
        assert!(!g.matches(&path));
    }

    #[test]
    fn exact_and_subtree_matching() {
        assert!(p("/a/b").matches(b"/a/b"));
        assert!(!p("/a/b").matches(b"/a/b/c"));
        assert!(!p("/a/b").matches(b"/a"));
        assert!(p("/in/").matches(b"/in"));
        assert!(p("/in/").matches(b"/in/x/y"));
        assert!(!p("/in/").matches(b"/inbox"));
        assert!(p("/").matches(b"/"));
        assert!(p("/").matches(b"/anything/at/all"));
    }

    #[test]
    fn full_denial() {
        let deny = p("/q/keys/");
        for allow in [
            "/q/keys/x",
            "/q/keys/",
            "/q/keys/*.c",
            "/q/keys/**",
            "/q/keys",
        ] {
            assert!(deny.fully_denies(&p(allow)), "{allow}");
        }
        for allow in ["/q/", "/q/**/x", "/q/keysx", "/q/*/x"] {
            assert!(!deny.fully_denies(&p(allow)), "{allow}");
        }
        assert!(p("/q/*.c").fully_denies(&p("/q/a.c")));
        assert!(p("/q/*.c").fully_denies(&p("/q/*.c")));
        assert!(!p("/q/*.c").fully_denies(&p("/q/*")));
        assert!(p("/q/a.c").fully_denies(&p("/q/a.c")));
        assert!(p("/q/**").fully_denies(&p("/q/")));
        assert!(!p("/q/a").fully_denies(&p("/q/")));
    }

    #[test]
    fn reach_into_root() {
        let root = comps("/data/in");
        assert!(p("/data/in/secret").reaches_into(&root));
        assert!(p("/data/in").reaches_into(&root));
        assert!(!p("/data/secret").reaches_into(&root));
        assert!(p("/data/").reaches_into(&root));
        assert!(!p("/other/").reaches_into(&root));
        assert!(p("/**/secret").reaches_into(&root));
        assert!(p("/data/*/secret").reaches_into(&root));
        assert!(!p("/data/x*/secret").reaches_into(&root));
        assert!(!p("/data/*").reaches_into(&comps("/data/in/deeper")));
        assert!(p("/data/*").reaches_into(&root));
        assert!(p("/data/in/x/*.key").reaches_into(&root));
    }
}
