//! pushmirror: GitLab-style push mirroring for bare repositories.
pub mod config;
pub mod mirror;
pub mod url;
