//! Positions in a policy file, as operators and editors count them.
//!
//! The TOML parser reports byte offsets; an operator needs `line:col` to find the
//! mistake. Columns count characters (Unicode scalar values), not bytes, so a path
//! with non-ASCII names still points at the right place in an editor.

use std::fmt;

/// A 1-based line and column in the policy file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

impl Location {
    /// The first character of the file: where whole-file problems are reported.
    pub const START: Location = Location { line: 1, col: 1 };
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// Byte offset to [`Location`] conversion for one text, built once per load so that
/// each conversion is a binary search instead of a rescan.
#[derive(Debug)]
pub(crate) struct LineIndex<'t> {
    text: &'t str,
    /// Byte offset at which each line starts; the first entry is always 0.
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { text, starts }
    }

    /// The location of byte `offset`; offsets past the end clamp to the end.
    pub(crate) fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        // `starts[0] == 0 <= offset`, so the partition point is at least 1.
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts.get(line.wrapping_sub(1)).copied().unwrap_or(0);
        let col = match self.text.get(start..offset) {
            Some(prefix) => prefix.chars().count(),
            // Not on a character boundary (never produced by the parser): count bytes.
            None => offset - start,
        };
        Location { line, col: col + 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_one_based_line_and_column() {
        let idx = LineIndex::new("ab\ncdé\n\nx");
        assert_eq!(idx.location(0), Location { line: 1, col: 1 });
        assert_eq!(idx.location(1), Location { line: 1, col: 2 });
        assert_eq!(idx.location(2), Location { line: 1, col: 3 });
        assert_eq!(idx.location(3), Location { line: 2, col: 1 });
        // 'é' is two bytes but one column.
        assert_eq!(idx.location(7), Location { line: 2, col: 4 });
        assert_eq!(idx.location(8), Location { line: 3, col: 1 });
        assert_eq!(idx.location(9), Location { line: 4, col: 1 });
        assert_eq!(idx.location(99), Location { line: 4, col: 2 });
    }

    #[test]
    fn empty_text_is_line_one() {
        assert_eq!(LineIndex::new("").location(0), Location::START);
    }
}
