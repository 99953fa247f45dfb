//! The control socket: a Unix-socket listener that turns request lines into [`Incoming`]
//! values for the daemon and writes its answers back.
//!
//! Shaped after pueue's `socket/unix.rs` (stale-socket check, permissions set at creation)
//! and mini-redis's `server.rs` (a `Semaphore` permit taken *before* `accept` and moved into
//! the connection's task, so the number of connections is bounded without ever accepting one
//! that cannot be served). What neither has and this adds: every request line is bounded in
//! size ([`Limits::max_request_bytes`], never buffered past it, and only
//! [`Limits::large_requests`] lines past [`Limits::small_request_bytes`] at once, so that
//! the bytes buffered across all connections are bounded too) and in time
//! ([`Limits::read_timeout`], so an idle or slow client cannot hold a permit forever; once
//! every permit is taken, [`Limits::busy_grace`], so idle clients are shed quickly while
//! others wait in the backlog); a client waiting hours for its updates gives its permit back
//! meanwhile ([`Limits::max_waiting`]); and the peer's credentials are checked on top of the
//! socket's mode 0660 (SPEC.md section 8).
//!
//! Framing is here, handling is not: this module only knows lines,
//! [`decode_request`](crate::protocol::decode_request) and
//! [`encode_response`](crate::protocol::encode_response); what a request does is decided by
//! the daemon, which receives [`Incoming`] values on a channel and answers through each one's
//! `reply`.
//!
//! Two halves with different lifetimes, one file each, and a third for the peer check that
//! both use:
//! - [`bind`](fn@bind) (`bind.rs`) is synchronous and runs in `main` before the tokio
//!   runtime starts (it touches the process umask, which is only safe while the process has
//!   one thread).
//! - [`serve`](fn@serve) (`serve.rs`) runs in the daemon until its `shutdown` token is
//!   cancelled; it then stops accepting, removes the socket file (only if it is still the one
//!   it listens on), ends idle connections, answers `shutting_down` to those still waiting on
//!   the daemon, and returns once every connection task has ended. [`remove_socket`] is for a
//!   daemon that bound the socket but fails before it could run [`serve`](fn@serve).
//! - `peer.rs` reads who is at the other end of a connection (`SO_PEERCRED`, the groups in
//!   `/proc/<pid>/status`) and decides whether they may use the socket.
//!
//! This file is the public face: the limits, the values handed to the daemon, the error of
//! [`bind`](fn@bind), and the re-exports that keep `control::bind`, `control::serve` and
//! `control::group_id` one path away for the daemon.

mod bind;
mod peer;
mod serve;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::protocol::{MAX_REQUEST_BYTES, Request, Response, SMALL_REQUEST_BYTES};

pub use bind::{bind, group_id, remove_socket};
pub use serve::serve;

/// Connections served at once unless [`Limits`] says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// How long a connection may take to send one complete request line unless [`Limits`] says
/// otherwise. Also bounds writing one reply.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may wait for its request line while the connection limit is
/// reached, unless [`Limits`] says otherwise.
pub const DEFAULT_BUSY_GRACE: Duration = Duration::from_millis(500);

/// Request lines longer than [`Limits::small_request_bytes`] buffered at once unless
/// [`Limits`] says otherwise.
pub const DEFAULT_LARGE_REQUESTS: usize = 1;

/// Connections waiting for updates at once (`sync` with `wait`) unless [`Limits`] says
/// otherwise. With [`DEFAULT_MAX_CONNECTIONS`], 320 sockets: well within the usual limit of
/// 1024 open files, leaving room for the daemon's files and git children.
pub const DEFAULT_MAX_WAITING: usize = 256;

/// The mode of the socket file: owner and socket group may connect (SPEC.md section 8).
pub const SOCKET_MODE: u32 = 0o660;

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another pushmirror daemon is listening on {path}{}", pid_suffix(*.pid))]
    InUse { path: PathBuf, pid: Option<u32> },
    #[error("{path} exists and is not a socket; refusing to remove it")]
    NotASocket { path: PathBuf },
    #[error("cannot inspect the existing control socket {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove the stale control socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the socket directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the mode of {path}")]
    SetMode {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot give {path} to group {group}")]
    Chown {
        path: PathBuf,
        group: String,
        #[source]
        source: io::Error,
    },
    #[error("socket_group {group:?} does not exist")]
    UnknownGroup { group: String },
    #[error("cannot look up socket_group {group:?}")]
    LookupGroup {
        group: String,
        #[source]
        source: io::Error,
    },
}

fn pid_suffix(pid: Option<u32>) -> String {
    pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
}

/// Bounds on what clients of [`serve`](fn@serve) may cost the daemon.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; further clients wait in the kernel's listen backlog until
    /// a connection ends. A connection that only waits for updates does not count (see
    /// `max_waiting`). Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Connections waiting at once for the answer to a request that waits for updates
    /// (`sync` with `wait`, which can take hours). While it waits, such a connection gives
    /// its connection slot back and holds no buffer, so waiting clients never lock out those
    /// that ask something now; one more waiting request is answered `busy` at once.
    /// Default [`DEFAULT_MAX_WAITING`].
    pub max_waiting: usize,
    /// Longest wait for one complete request line (idle connections are closed when it
    /// passes, so they cannot hold a permit forever) and for writing one reply.
    /// Default [`DEFAULT_READ_TIMEOUT`].
    pub read_timeout: Duration,
    /// Once every permit is taken, a connection that has waited this long for its request
    /// line is closed to make room: idle clients beyond the limit are shed quickly instead
    /// of holding the backlog for a whole read timeout each. A client that sends its request
    /// right after connecting (as every pushmirror client does) is never shed.
    /// Default [`DEFAULT_BUSY_GRACE`].
    pub busy_grace: Duration,
    /// Longest request line; a longer one gets a `too_large` reply and the connection is
    /// closed. Default [`MAX_REQUEST_BYTES`].
    pub max_request_bytes: usize,
    /// Bytes of a request line that every connection may buffer; every request of
    /// pushmirror's own clients fits (the hook keeps its notifications within it). A longer
    /// line needs a large-request slot (`large_requests`). Default [`SMALL_REQUEST_BYTES`].
    pub small_request_bytes: usize,
    /// Connections that may buffer a line longer than `small_request_bytes` (up to
    /// `max_request_bytes`) at once, each until its request is answered; others wait for a
    /// slot within their read deadline, then get a `busy` reply and are closed. This bounds
    /// the bytes buffered across all connections, not only per connection.
    /// Default [`DEFAULT_LARGE_REQUESTS`].
    pub large_requests: usize,
    /// Peers whose primary or supplementary groups include this gid may use the socket,
    /// besides root and the daemon's own user: the gid of `socket_group` (see [`group_id`]),
    /// else the daemon's effective gid (the default).
    pub allowed_gid: Option<u32>,
}

impl Default for Limits {
    fn default() -> Limits {
        // SAFETY: getegid has no preconditions and cannot fail.
        let egid = unsafe { libc::getegid() };
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_waiting: DEFAULT_MAX_WAITING,
            read_timeout: DEFAULT_READ_TIMEOUT,
            busy_grace: DEFAULT_BUSY_GRACE,
            max_request_bytes: MAX_REQUEST_BYTES,
            small_request_bytes: SMALL_REQUEST_BYTES,
            large_requests: DEFAULT_LARGE_REQUESTS,
            allowed_gid: Some(egid),
        }
    }
}

/// Who is on the other end of a connection, from `SO_PEERCRED` at connect time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: Option<u32>,
    pub uid: u32,
    pub gid: u32,
}

/// One valid request from an allowed peer, handed to the daemon. The daemon answers by
/// sending on `reply`; dropping `reply` unanswered makes the client see `shutting_down`.
#[derive(Debug)]
pub struct Incoming {
    pub request: Request,
    pub peer: Peer,
    pub reply: oneshot::Sender<Response>,
}
