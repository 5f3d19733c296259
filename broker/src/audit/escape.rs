//! Worker-supplied bytes in a log line: quoted, escaped so nothing a worker sends can
//! forge a line or a field, and bounded so a long path cannot flood the log.

use std::fmt;

/// Longest escaped text (between the quotes) written whole.
pub const WHOLE: usize = 256;
/// How much of a longer text's escaped form is written before the cut.
pub const PREFIX: usize = 200;

/// A worker-supplied byte string, printed quoted with everything but printable ASCII
/// escaped as `\xNN` (and `\"`, `\\`).
///
/// Bounded: when the escaped text would be longer than [`WHOLE`] characters, only as
/// many bytes as fit in [`PREFIX`] escaped characters are written (never half an
/// escape), then `…(len=BYTES, fnv1a64=HASH)` inside the quotes: the length in bytes
/// of the whole string and its 64-bit FNV-1a hash ([`fnv1a64`]) in 16 hex digits, so
/// lines about the same long path can be matched. The `…` cannot come from the
/// string itself (every non-ASCII byte is escaped), so a cut is never ambiguous. At
/// most 240 characters are written between the quotes for anything up to 99,999 bytes
/// (a message is at most 64 KiB).
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        write!(f, "{}", Bare(self.0))?;
        f.write_str("\"")
    }
}

/// The text of [`Escaped`] without its quotes: for a format that quotes strings itself
/// (the JSON audit line's `path`), so a reader gets the escaped path, not the path
/// wrapped in literal quote characters.
pub struct Bare<'a>(pub &'a [u8]);

impl fmt::Display for Bare<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        if fitting(bytes, WHOLE) == bytes.len() {
            escape(f, bytes)
        } else {
            escape(f, &bytes[..fitting(bytes, PREFIX)])?;
            write!(
                f,
                "\u{2026}(len={}, fnv1a64={:016x})",
                bytes.len(),
                fnv1a64(bytes)
            )
        }
    }
}

impl Escaped<'_> {
    /// Append the same text as [`fmt::Display`] to `out`, without going through the
    /// formatter for the common case of a short path of plain ASCII (the audit line's
    /// fast path writes every request's path this way).
    pub fn push_to(&self, out: &mut Vec<u8>) {
        let bytes = self.0;
        if bytes.len() <= WHOLE && bytes.iter().all(|&b| escaped_width(b) == 1) {
            out.push(b'"');
            out.extend_from_slice(bytes);
            out.push(b'"');
        } else {
            use std::io::Write as _;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{self}");
        }
    }
}

/// How many characters `b` takes escaped.
fn escaped_width(b: u8) -> usize {
    match b {
        b'"' | b'\\' => 2,
        0x20..0x7f => 1,
        _ => 4,
    }
}

/// The length of the longest prefix of `bytes` whose escaped form fits in `budget`
/// characters (looks at no more than `budget + 1` bytes).
fn fitting(bytes: &[u8], budget: usize) -> usize {
    let mut used = 0;
    for (i, &b) in bytes.iter().enumerate() {
        used += escaped_width(b);
        if used > budget {
            return i;
        }
    }
    bytes.len()
}

fn escape(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if escaped_width(b) == 1 {
            continue;
        }
        // Runs of plain bytes are ASCII, so from_utf8 cannot fail on them.
        f.write_str(std::str::from_utf8(&bytes[start..i]).unwrap_or(""))?;
        match b {
            b'"' => f.write_str("\\\"")?,
            b'\\' => f.write_str("\\\\")?,
            _ => write!(f, "\\x{b:02x}")?,
        }
        start = i + 1;
    }
    f.write_str(std::str::from_utf8(&bytes[start..]).unwrap_or(""))
}

/// 64-bit FNV-1a of `bytes` (offset basis `0xcbf29ce484222325`, prime
/// `0x100000001b3`): a well-known hash anyone can recompute from a path, so a cut
/// path in the log can be matched with a file name. Not a security feature: a worker
/// can make two paths with the same hash; it only helps an operator correlate lines.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_forge_a_line() {
        assert_eq!(Escaped(b"/a b").to_string(), "\"/a b\"");
        for bytes in [
            &b"/a b"[..],
            b"",
            b"/x\nINFO fake\x1b[2J\"\\\xff",
            &[b'a'; WHOLE],
            &[b'a'; WHOLE + 1],
            &[0xff; WHOLE],
        ] {
            let mut pushed = Vec::new();
            Escaped(bytes).push_to(&mut pushed);
            assert_eq!(pushed, Escaped(bytes).to_string().into_bytes());
        }
        assert_eq!(
            Escaped(b"/x\nINFO fake\x1b[2J\"\\\xff").to_string(),
            "\"/x\\x0aINFO fake\\x1b[2J\\\"\\\\\\xff\""
        );
    }
}

#[cfg(test)]
mod bounded {
    use super::*;

    #[test]
    fn fnv1a64_is_the_published_function() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn long_strings_are_cut_with_their_length_and_hash() {
        // Up to WHOLE escaped characters: whole.
        let plain = vec![b'a'; WHOLE];
        assert_eq!(
            Escaped(&plain).to_string(),
            format!("\"{}\"", "a".repeat(WHOLE))
        );
        let escaped = [0xffu8; WHOLE / 4];
        assert_eq!(Escaped(&escaped).to_string().len(), WHOLE + 2);
        // One more: cut at PREFIX characters, never inside an escape.
        let mut long = vec![b'/'];
        long.extend_from_slice(&[0xfe; 4095]);
        let text = Escaped(&long).to_string();
        let want = format!(
            "\"/{}\u{2026}(len=4096, fnv1a64={:016x})\"",
            "\\xfe".repeat((PREFIX - 1) / 4),
            fnv1a64(&long)
        );
        assert_eq!(text, want);
        let mut over = plain.clone();
        over.push(b'"');
        let text = Escaped(&over).to_string();
        assert!(text.starts_with(&format!("\"{}\u{2026}(len=257, ", "a".repeat(PREFIX))));
        // The longest possible output, whatever the input.
        let huge = vec![b'a'; 65_536];
        let text = Escaped(&huge).to_string();
        assert!(text.chars().count() <= 240 + 2, "{text}");
    }
}
