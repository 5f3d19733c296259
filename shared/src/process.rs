//! Process-level system calls both sides make (the broker's children before they exec
//! or exit, the transparent supervisor): one copy each, wrapped safe.
//!
//! The raw calls are in this crate's `sys`; this module is their public face.

pub use crate::sys::{cloexec_all_but, close_all_but, close_range, exit_now, pidfd_open};
