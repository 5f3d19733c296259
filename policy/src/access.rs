//! What a rule grants, as a small bit set.
//!
//! Policies speak in four words (`read`, `write`, `create`, `directory`) while
//! requests carry an [`Access`]; `ReadWrite` is not a word of its own so that granting
//! it always means granting both halves explicitly.

use std::fmt;
use std::ops::BitOr;

use crate::Access;

/// The access words a rule grants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AccessSet(u8);

impl AccessSet {
    pub const EMPTY: AccessSet = AccessSet(0);
    pub const READ: AccessSet = AccessSet(1);
    pub const WRITE: AccessSet = AccessSet(2);
    pub const CREATE: AccessSet = AccessSet(4);
    pub const DIRECTORY: AccessSet = AccessSet(8);

    /// Every word with its set, in display order.
    pub const WORDS: [(&'static str, AccessSet); 4] = [
        ("read", AccessSet::READ),
        ("write", AccessSet::WRITE),
        ("create", AccessSet::CREATE),
        ("directory", AccessSet::DIRECTORY),
    ];

    /// The set for one policy word (`read`, `write`, `create`, `directory`).
    pub fn from_word(word: &str) -> Option<AccessSet> {
        AccessSet::WORDS
            .iter()
            .find(|(w, _)| *w == word)
            .map(|&(_, set)| set)
    }

    /// The words a rule must grant for a request with this access.
    pub const fn required(access: Access) -> AccessSet {
        match access {
            Access::Read => AccessSet::READ,
            Access::Write => AccessSet::WRITE,
            Access::ReadWrite => AccessSet(AccessSet::READ.0 | AccessSet::WRITE.0),
            Access::Create => AccessSet::CREATE,
            Access::Directory => AccessSet::DIRECTORY,
        }
    }

    pub const fn union(self, other: AccessSet) -> AccessSet {
        AccessSet(self.0 | other.0)
    }

    pub const fn contains(self, other: AccessSet) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Does a rule with this set allow a request with `access`?
    pub const fn grants(self, access: Access) -> bool {
        self.contains(AccessSet::required(access))
    }
}

impl BitOr for AccessSet {
    type Output = AccessSet;
    fn bitor(self, rhs: AccessSet) -> AccessSet {
        self.union(rhs)
    }
}

impl fmt::Display for AccessSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        let mut first = true;
        for (word, set) in AccessSet::WORDS {
            if self.contains(set) {
                if !first {
                    f.write_str(", ")?;
                }
                f.write_str(word)?;
                first = false;
            }
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_mapping() {
        let rw = AccessSet::READ | AccessSet::WRITE;
        assert!(AccessSet::READ.grants(Access::Read));
        assert!(!AccessSet::READ.grants(Access::Write));
        assert!(!AccessSet::READ.grants(Access::ReadWrite));
        assert!(!AccessSet::WRITE.grants(Access::ReadWrite));
        assert!(rw.grants(Access::ReadWrite));
        assert!(rw.grants(Access::Read));
        assert!(rw.grants(Access::Write));
        assert!(!rw.grants(Access::Create));
        assert!(!rw.grants(Access::Directory));
        assert!(AccessSet::CREATE.grants(Access::Create));
        assert!(!AccessSet::CREATE.grants(Access::Write));
        assert!(AccessSet::DIRECTORY.grants(Access::Directory));
        assert!(!AccessSet::DIRECTORY.grants(Access::Read));
        assert!(!AccessSet::EMPTY.grants(Access::Read));
    }

    #[test]
    fn display_lists_words_in_order() {
        assert_eq!(AccessSet::EMPTY.to_string(), "[]");
        assert_eq!(
            (AccessSet::WRITE | AccessSet::READ).to_string(),
            "[read, write]"
        );
        assert_eq!(
            (AccessSet::DIRECTORY | AccessSet::CREATE).to_string(),
            "[create, directory]"
        );
    }

    #[test]
    fn words_round_trip() {
        for (word, set) in AccessSet::WORDS {
            assert_eq!(AccessSet::from_word(word), Some(set));
        }
        assert_eq!(AccessSet::from_word("read-write"), None);
        assert_eq!(AccessSet::from_word("READ"), None);
    }
}
