//! pushmirror: GitLab-style push mirroring for bare repositories.
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod error;
pub mod hook;
pub mod job;
pub mod mirror;
pub mod protocol;
pub mod provision;
pub mod queue;
pub mod scheduler;
pub mod spool;
pub mod state;
pub mod url;
