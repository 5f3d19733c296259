//! Lexical checks on request paths, on raw bytes.
//!
//! The policy decides on the string alone and the broker then opens it beneath a held
//! root with `RESOLVE_BENEATH`, so the string must mean one thing only: absolute, no
//! `.`/`..` that could climb out of a root lexically, no `//` or trailing `/` that two
//! readers could split differently, and no NUL that C would cut short. Linux names
//! need not be UTF-8, so nothing here assumes they are.

/// `PATH_MAX` (4096) counts the terminating NUL; a request path has at most this many
/// bytes.
pub const MAX_PATH_LEN: usize = 4095;

/// Why a request path is refused before any rule is consulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PathError {
    #[error("path is not absolute")]
    NotAbsolute,
    #[error("path is empty")]
    Empty,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("path has an empty component (`//`)")]
    EmptyComponent,
    #[error("path has a `.` or `..` component")]
    DotComponent,
    #[error("path ends with `/`")]
    TrailingSlash,
}

/// Accepts exactly the paths `/` and `/c1/.../cn` with every component non-empty and
/// neither `.` nor `..`. Runs in one pass and never allocates: it is on the hot path.
pub fn check(path: &[u8]) -> Result<(), PathError> {
    let Some((&first, body)) = path.split_first() else {
        return Err(PathError::Empty);
    };
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if first != b'/' {
        return Err(PathError::NotAbsolute);
    }
    if path.contains(&0) {
        return Err(PathError::Nul);
    }
    if body.is_empty() {
        return Ok(());
    }
    let mut rest = body;
    loop {
        let (component, next) = match rest.iter().position(|&b| b == b'/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        match component {
            b"" if next.is_none() => return Err(PathError::TrailingSlash),
            b"" => return Err(PathError::EmptyComponent),
            b"." | b".." => return Err(PathError::DotComponent),
            _ => {}
        }
        match next {
            Some(n) => rest = n,
            None => return Ok(()),
        }
    }
}

/// The components of a path that passed [`check`]; none for `/`.
pub(crate) fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = path.get(1..).unwrap_or_default();
    body.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// The components of a relative tail (`a/b/c`, no leading slash; empty for none).
pub(crate) fn components_of(tail: &[u8]) -> impl Iterator<Item = &[u8]> {
    tail.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// The component starting at byte `start` of `path`, and where the next one starts
/// (`None` after the last). Used by the index walk and glob matching to step through
/// a path by offsets instead of collecting components.
#[inline]
pub(crate) fn component_at(path: &[u8], start: usize) -> (&[u8], Option<usize>) {
    let tail = path.get(start..).unwrap_or_default();
    match tail.iter().position(|&b| b == b'/') {
        Some(i) => (&tail[..i], Some(start + i + 1)),
        None => (tail, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_clean_absolute_paths() {
        for p in [
            &b"/"[..],
            b"/a",
            b"/a/b",
            b"/a/.b",
            b"/a/..b",
            b"/a/b\xff\xfe",
            b"/...",
        ] {
            assert_eq!(check(p), Ok(()), "{:?}", p.escape_ascii().to_string());
        }
    }

    #[test]
    fn refuses_each_kind_of_unclean_path() {
        let cases: &[(&[u8], PathError)] = &[
            (b"", PathError::Empty),
            (b"a/b", PathError::NotAbsolute),
            (b"./a", PathError::NotAbsolute),
            (b"/a\0b", PathError::Nul),
            (b"//", PathError::EmptyComponent),
            (b"/a//b", PathError::EmptyComponent),
            (b"//a", PathError::EmptyComponent),
            (b"/a/", PathError::TrailingSlash),
            (b"/a/.", PathError::DotComponent),
            (b"/a/../b", PathError::DotComponent),
            (b"/..", PathError::DotComponent),
            (b"/./a", PathError::DotComponent),
        ];
        for (p, e) in cases {
            assert_eq!(check(p), Err(*e), "{:?}", p.escape_ascii().to_string());
        }
    }

    #[test]
    fn length_limit_is_path_max_minus_nul() {
        let mut p = vec![b'/'];
        p.resize(MAX_PATH_LEN, b'a');
        assert_eq!(check(&p), Ok(()));
        p.push(b'a');
        assert_eq!(p.len(), 4096);
        assert_eq!(check(&p), Err(PathError::TooLong));
    }

    #[test]
    fn components_and_offsets_agree() {
        let comps: Vec<&[u8]> = components(b"/a/bc/d").collect();
        assert_eq!(comps, [&b"a"[..], b"bc", b"d"]);
        assert_eq!(components(b"/").count(), 0);
        assert_eq!(component_at(b"/a/bc/d", 1), (&b"a"[..], Some(3)));
        assert_eq!(component_at(b"/a/bc/d", 3), (&b"bc"[..], Some(6)));
        assert_eq!(component_at(b"/a/bc/d", 6), (&b"d"[..], None));
    }
}
