//! pushmirror: GitLab-style push mirroring for bare repositories.
pub mod cli;
pub mod config;
pub mod error;
pub mod job;
pub mod mirror;
pub mod protocol;
pub mod queue;
pub mod scheduler;
pub mod state;
pub mod url;
