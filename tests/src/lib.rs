//! Harness for the end-to-end tests: temporary trees, a real `fdbroker serve` process,
//! and unprivileged children. Nothing here mocks the kernel.
//!
//! One home per helper, by theme; the most used are re-exported here so call sites stay
//! short (`use fdbroker_tests::{Broker, TempDir, ...}`).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod bins;
pub mod broker;
pub mod each;
pub mod fds;
pub mod frames;
pub mod manager;
pub mod nobody;
pub mod output;
pub mod process;
pub mod transparent;
pub mod tree;
pub mod wait;

pub use bins::{fdbroker_bin, repo_root, sibling_bin};
pub use broker::{Broker, stop_child};
pub use fds::{dev_ino, fd_count_of, path_dev_ino, read_all, read_text, settled_fd_count};
pub use frames::{
    assert_dropped, hello_frame, many_frame, open_frame, raw_session, recv_reply, request_frame,
};
pub use nobody::{cat_as_nobody, nobody_gid, nobody_uid, run_as_nobody};
pub use output::{errno_of, show, status_field, text};
pub use process::{children_of, fdbroker, open_pty, run_with_input, run_with_timeout, wait_exit};
pub use tree::{TempDir, run_policy};
pub use wait::{HANG, eventually, wait_until};
