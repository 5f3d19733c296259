//! `fdbroker each`: one fresh sandbox per file.
pub mod cli;
