//! `fdbroker run`: the spawn broker, the worker it starts, and the processes around it
//! (the PID namespace's init, the scratch directory's remover).

pub mod broker;
pub mod pidns;
