//! Every on-disk format of pushmirror, behind one invariant: a file is replaced atomically
//! (temporary file, fsync, rename, fsync of the directory) by [`write_atomically`], or
//! appended and fsynced before anyone is told it is there (the queue journal).
//!
//! - [`state`]: one JSON file per mirror (its status and history) and the per-mirror lock;
//! - [`queue`]: the daemon's durable queue of notified and forced mirrors;
//! - [`spool`]: notifications written by hooks that could not reach the daemon;
//! - [`paused`]: the mirrors `pushmirror pause` paused (operations: silent mode and pause);
//! - [`alerts`]: each mirror's failure streak and its undelivered alert events.

pub mod alerts;
mod atomic;
pub mod paused;
pub mod queue;
pub mod spool;
pub mod state;

pub use atomic::{sweep_temporaries, write_atomically};
