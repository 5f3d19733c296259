//! `fdbroker serve` answering workers: the basics of granting and refusing
//! (`basics`), and how it opens its policy roots (`roots`).
//!
//! Grouped because neither touches anything process-wide: each test starts its own
//! broker on its own temporary tree and socket, so running them side by side in one
//! binary is what already happened within each. Suites that do touch shared state
//! (rlimits, terminals and process groups, mount namespaces, systemd, sustained load
//! under time limits) stay binaries of their own.
#![allow(clippy::unwrap_used)]

mod basics;
mod roots;
