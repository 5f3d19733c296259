//! `fdbroker serve`: the monitor, the confined servers it starts, and the `reload`
//! requester that talks to a running monitor.

pub mod monitor;
pub mod reload;
pub mod server;
pub mod target;
