//! The data path of one request, one file per step: what the request is decided
//! against, the decision and the answer, opening beneath a root, listing a directory
//! (`list`), and the roots.
//!
//! Nothing here knows about connections, servers or processes: a request comes in as a
//! decoded value and leaves as a reply, its descriptors and its audit lines.

pub mod answer;
pub mod list;
pub mod loaded;
pub mod reach;
pub mod resolve;
pub mod roots;
