//! The control socket: a Unix-socket listener that turns request lines into [`Incoming`]
//! values for the daemon and writes its answers back.
//!
//! Shaped after pueue's `socket/unix.rs` (stale-socket check, permissions set at creation)
//! and mini-redis's `server.rs` (a `Semaphore` permit taken *before* `accept` and moved into
//! the connection's task, so the number of connections is bounded without ever accepting one
//! that cannot be served). What neither has and this adds: every request line is bounded in
//! size ([`Limits::max_request_bytes`], never buffered past it) and in time
//! ([`Limits::read_timeout`], so an idle or slow client cannot hold a permit forever; once
//! every permit is taken, [`Limits::busy_grace`], so idle clients are shed quickly while
//! others wait in the backlog), and the peer's credentials are checked on top of the
//! socket's mode 0660 (SPEC.md section 8).
//!
//! Framing is here, handling is not: this module only knows lines, [`decode_request`] and
//! [`encode_response`]; what a request does is decided by the daemon, which receives
//! [`Incoming`] values on a channel and answers through each one's `reply`.
//!
//! Two halves with different lifetimes:
//! - [`bind`] is synchronous and runs in `main` before the tokio runtime starts (it touches
//!   the process umask, which is only safe while the process has one thread).
//! - [`serve`] runs in the daemon until its `shutdown` token is cancelled; it then stops
//!   accepting, removes the socket file (only if it is still the one it listens on), ends
//!   idle connections, answers `shutting_down` to those still waiting on the daemon, and
//!   returns once every connection task has ended. [`remove_socket`] is for a daemon that
//!   bound the socket but fails before it could run [`serve`].

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, instrument, warn};

use crate::protocol::{
    ErrorKind, LineRead, MAX_REQUEST_BYTES, Request, Response, decode_request, encode_response,
    read_line_bounded,
};

/// Connections served at once unless [`Limits`] says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// How long a connection may take to send one complete request line unless [`Limits`] says
/// otherwise. Also bounds writing one reply.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may wait for its request line while the connection limit is
/// reached, unless [`Limits`] says otherwise.
pub const DEFAULT_BUSY_GRACE: Duration = Duration::from_millis(500);

/// The mode of the socket file: owner and socket group may connect (SPEC.md section 8).
pub const SOCKET_MODE: u32 = 0o660;

/// The mode of a socket directory that [`bind`] creates: the group must be able to traverse
/// it to reach the socket; nobody else needs to.
const SOCKET_DIR_MODE: u32 = 0o750;

/// How long a connection waiting for the daemon's answer still waits once shutdown began,
/// before it answers `shutting_down` itself. Short: the hook's whole budget is about a second.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Longest time spent discarding the rest of an oversized or forbidden request before the
/// connection is closed (see `close_after_reply`).
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Line buffers larger than this are released after their request, so that one large request
/// does not pin its memory for the rest of a long-lived connection.
const KEEP_BUFFER_BYTES: usize = 64 << 10;

/// How long [`bind`] waits for an existing socket to accept a probe connection before
/// concluding that a (busy) daemon is alive behind it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

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

/// Bounds on what clients of [`serve`] may cost the daemon.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; further clients wait in the kernel's listen backlog until
    /// a connection ends. Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
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
            read_timeout: DEFAULT_READ_TIMEOUT,
            busy_grace: DEFAULT_BUSY_GRACE,
            max_request_bytes: MAX_REQUEST_BYTES,
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

/// Returns the gid of group `name` (the `socket_group` of the configuration).
pub fn group_id(name: &str) -> Result<u32, ControlError> {
    let unknown = || ControlError::UnknownGroup {
        group: name.to_owned(),
    };
    let c_name = CString::new(name).map_err(|_| unknown())?;
    let mut buffer: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: an all-zero `group` is a valid value for this plain C struct.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the duration of the call, and `buffer.len()` is
        // the true size of `buffer`; getgrnam_r writes only inside `group` and `buffer`.
        let rc = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                &mut group,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buffer.len() < (1 << 20) {
            buffer.resize(buffer.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(ControlError::LookupGroup {
                group: name.to_owned(),
                source: io::Error::from_raw_os_error(rc),
            });
        }
        if found.is_null() {
            return Err(unknown());
        }
        return Ok(group.gr_gid);
    }
}

/// Creates the control socket at `path`, mode 0660, owned by `socket_group` when given, and
/// returns it listening. Call before the tokio runtime starts (see the module docs).
///
/// An existing socket file is probed: if a daemon answers, this fails with
/// [`ControlError::InUse`]; if the connection is refused (a daemon that crashed), the file is
/// removed. Anything else at `path` is left alone and reported. A missing parent directory
/// is created with mode 0750 and given to `socket_group`.
pub fn bind(
    path: &Path,
    socket_group: Option<&str>,
) -> Result<std::os::unix::net::UnixListener, ControlError> {
    let gid = socket_group.map(group_id).transpose()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        create_socket_dir(dir, socket_group, gid)?;
    }
    remove_stale_socket(path)?;

    // Sockets are created with mode 0777 & !umask. Keep "other" out from the start, so the
    // socket is never reachable by others even before the chmod below; only bits are
    // removed, so other threads (tests) at worst create files less open to others.
    // SAFETY: umask has no preconditions; it is restored right after `bind`.
    let previous = unsafe { libc::umask(0o007) };
    // SAFETY: as above.
    unsafe { libc::umask(previous | 0o007) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    let listener = bound.map_err(|source| ControlError::Bind {
        path: path.to_owned(),
        source,
    })?;

    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE)).map_err(|source| {
        ControlError::SetMode {
            path: path.to_owned(),
            source,
        }
    })?;
    if let (Some(group), Some(gid)) = (socket_group, gid) {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|source| ControlError::Chown {
            path: path.to_owned(),
            group: group.to_owned(),
            source,
        })?;
    }
    info!(socket = %path.display(), "control socket bound");
    Ok(listener)
}

/// Creates the missing socket directory `dir` (mode 0750, given to the socket group).
fn create_socket_dir(
    dir: &Path,
    socket_group: Option<&str>,
    gid: Option<u32>,
) -> Result<(), ControlError> {
    let create_error = |source| ControlError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(SOCKET_DIR_MODE)
        .create(dir)
        .map_err(create_error)?;
    // The umask may have removed group bits at creation.
    fs::set_permissions(dir, fs::Permissions::from_mode(SOCKET_DIR_MODE)).map_err(create_error)?;
    if let (Some(group), Some(gid)) = (socket_group, gid) {
        std::os::unix::fs::chown(dir, None, Some(gid)).map_err(|source| ControlError::Chown {
            path: dir.to_owned(),
            group: group.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Removes the socket file a crashed daemon left at `path`; fails if a daemon answers there
/// or if `path` is not a socket.
fn remove_stale_socket(path: &Path) -> Result<(), ControlError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ControlError::Inspect {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotASocket {
            path: path.to_owned(),
        });
    }
    match probe(path) {
        Probe::Alive { pid } => Err(ControlError::InUse {
            path: path.to_owned(),
            pid,
        }),
        Probe::Refused => {
            warn!(socket = %path.display(), "removing the stale socket of a daemon that is gone");
            fs::remove_file(path).map_err(|source| ControlError::RemoveStale {
                path: path.to_owned(),
                source,
            })
        }
        Probe::Error(source) => Err(ControlError::Inspect {
            path: path.to_owned(),
            source,
        }),
    }
}

enum Probe {
    Alive { pid: Option<u32> },
    Refused,
    Error(io::Error),
}

/// Connects to the socket at `path` to see whether a daemon is behind it. A blocking
/// `connect` to a live daemon whose backlog is full waits; that wait runs on a helper thread
/// and counts as alive after [`PROBE_TIMEOUT`].
fn probe(path: &Path) -> Probe {
    let (sender, receiver) = std_mpsc::channel();
    let target = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("socket-probe".into())
        .spawn(move || {
            let outcome = match std::os::unix::net::UnixStream::connect(&target) {
                Ok(stream) => Probe::Alive {
                    pid: peer_pid(&stream),
                },
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Probe::Refused,
                Err(e) => Probe::Error(e),
            };
            let _ = sender.send(outcome);
        });
    if let Err(e) = spawned {
        return Probe::Error(e);
    }
    receiver
        .recv_timeout(PROBE_TIMEOUT)
        .unwrap_or(Probe::Alive { pid: None })
}

/// Returns the pid of the process at the other end of `stream` (`SO_PEERCRED`).
fn peer_pid(stream: &std::os::unix::net::UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` is the size of `cred`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid as u32)
}

/// Removes the socket file at `path` if it is a socket (errors other than "already gone" are
/// logged). [`serve`] does this itself on shutdown; call this when the daemon bound the
/// socket but stops before running [`serve`].
pub fn remove_socket(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if let Err(e) = fs::remove_file(path)
                && e.kind() != io::ErrorKind::NotFound
            {
                warn!(socket = %path.display(), cause = %e, "cannot remove the control socket");
            }
        }
        _ => {}
    }
}

/// Everything a connection task needs, shared.
struct Context {
    limits: Limits,
    requests: mpsc::Sender<Incoming>,
    shutdown: CancellationToken,
    daemon_uid: u32,
    /// True while the accept loop waits for a permit (every one is taken); connections
    /// waiting for a request meanwhile shorten their deadline to [`Limits::busy_grace`].
    /// A level, not an event: a connection that starts waiting while it is true sheds too.
    pressure: watch::Sender<bool>,
}

/// Serves the control socket until `shutdown` is cancelled; returns after the socket file is
/// removed and every connection has ended (see the module docs).
pub async fn serve(
    listener: tokio::net::UnixListener,
    limits: Limits,
    requests: mpsc::Sender<Incoming>,
    shutdown: CancellationToken,
) {
    // Remember which file we listen on, so that shutdown never removes the socket of a
    // daemon that replaced ours.
    let socket = listener
        .local_addr()
        .ok()
        .and_then(|addr| addr.as_pathname().map(Path::to_owned))
        .and_then(|path| {
            let meta = fs::symlink_metadata(&path).ok()?;
            Some((path, meta.dev(), meta.ino()))
        });
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let context = Arc::new(Context {
        limits,
        requests,
        shutdown: shutdown.clone(),
        // SAFETY: geteuid has no preconditions and cannot fail.
        daemon_uid: unsafe { libc::geteuid() },
        pressure: watch::Sender::new(false),
    });

    loop {
        // The permit comes first: while every permit is taken, new clients wait in the
        // kernel's backlog instead of being accepted and starved. Meanwhile connections
        // that hold a permit without sending a request are told to make room, so that a
        // flood of idle clients delays the others by rounds of `busy_grace`, not of
        // `read_timeout` (the backlog is served in order).
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                debug!(
                    limit = context.limits.max_connections,
                    "connection limit reached; shedding connections that send nothing"
                );
                context.pressure.send_replace(true);
                let permit = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        // The semaphore is never closed; stop rather than spin if it were.
                        Err(_) => break,
                    },
                };
                context.pressure.send_replace(false);
                permit
            }
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the permit is
                    // released when it drops here.
                    warn!(cause = %e, "cannot accept a control connection");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        connections.spawn(handle_connection(stream, context.clone(), permit));
    }

    drop(listener);
    if let Some((path, dev, ino)) = socket {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.dev() == dev && meta.ino() == ino => remove_socket(&path),
            _ => debug!(socket = %path.display(), "socket file replaced or gone; left alone"),
        }
    }
    connections.close();
    connections.wait().await;
    debug!("control socket closed");
}

/// Reads request lines from one client and answers each, until it closes, stays idle past
/// the read timeout, sends an oversized line, or the daemon shuts down.
#[instrument(name = "control", skip_all, fields(peer_pid, peer_uid))]
async fn handle_connection(
    stream: UnixStream,
    context: Arc<Context>,
    _permit: OwnedSemaphorePermit,
) {
    let peer = match stream.peer_cred() {
        Ok(cred) => Peer {
            pid: cred.pid().and_then(|pid| u32::try_from(pid).ok()),
            uid: cred.uid(),
            gid: cred.gid(),
        },
        Err(e) => {
            debug!(cause = %e, "cannot read peer credentials; closing");
            return;
        }
    };
    let span = tracing::Span::current();
    if let Some(pid) = peer.pid {
        span.record("peer_pid", pid);
    }
    span.record("peer_uid", peer.uid);
    let allowed = peer_allowed(
        &peer,
        context.daemon_uid,
        context.limits.allowed_gid,
        |pid| {
            fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|status| supplementary_groups(&status))
                .unwrap_or_default()
        },
    );
    if !allowed {
        warn!("peer may not use the control socket");
    }

    let limits = &context.limits;
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(KEEP_BUFFER_BYTES, reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        if line.capacity() > KEEP_BUFFER_BYTES {
            line = Vec::new();
        }
        let Some(read) = read_request_line(&mut reader, &mut line, &context).await else {
            return;
        };
        let response = match read {
            Err(e) => {
                debug!(cause = %e, "read failed; closing");
                return;
            }
            Ok(LineRead::Eof) => return,
            Ok(LineRead::TooLarge) => {
                warn!(
                    limit = limits.max_request_bytes,
                    "request too large; closing"
                );
                let reply = error_reply(
                    ErrorKind::TooLarge,
                    format!(
                        "request line longer than {} bytes",
                        limits.max_request_bytes
                    ),
                );
                let _ = write_response(&mut writer, &reply, limits.read_timeout).await;
                close_after_reply(&mut reader, &mut writer, limits.read_timeout).await;
                return;
            }
            Ok(LineRead::Line) if !allowed => {
                let reply = error_reply(
                    ErrorKind::Forbidden,
                    format!(
                        "uid {} may not use this socket (only root, the daemon's user and the socket group)",
                        peer.uid
                    ),
                );
                let _ = write_response(&mut writer, &reply, limits.read_timeout).await;
                close_after_reply(&mut reader, &mut writer, limits.read_timeout).await;
                return;
            }
            Ok(LineRead::Line) => match decode_request(&line) {
                Ok(request) => dispatch(request, peer, &context).await,
                Err(reply) => {
                    debug!("malformed request line");
                    reply
                }
            },
        };
        if let Err(e) = write_response(&mut writer, &response, limits.read_timeout).await {
            debug!(cause = %e, "cannot write the reply; closing");
            return;
        }
    }
}

/// Waits for one request line within the connection's deadline. Returns `None` when the
/// connection should end without an answer: shutdown, or no complete line in time. The
/// deadline is [`Limits::read_timeout`], shortened to [`Limits::busy_grace`] (counted from
/// the start of the wait) while the accept loop reports that every permit is taken.
async fn read_request_line(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    line: &mut Vec<u8>,
    context: &Context,
) -> Option<io::Result<LineRead>> {
    let limits = &context.limits;
    let started = tokio::time::Instant::now();
    let mut deadline = started + limits.read_timeout;
    let mut pressure = context.pressure.subscribe();
    let (mut watching, mut shedding) = (true, false);
    let read = read_line_bounded(reader, line, limits.max_request_bytes);
    tokio::pin!(read);
    loop {
        if watching && *pressure.borrow_and_update() {
            (watching, shedding) = (false, true);
            deadline = deadline.min(started + limits.busy_grace);
        }
        tokio::select! {
            _ = context.shutdown.cancelled() => return None,
            result = &mut read => return Some(result),
            _ = tokio::time::sleep_until(deadline) => {
                if shedding {
                    debug!("connection limit reached and no request yet; closing to make room");
                } else {
                    debug!("no complete request within the read timeout; closing");
                }
                return None;
            }
            // Looked at again at the top of the loop. The sender lives in `context`, so it
            // cannot be gone; stop watching rather than spin if it were.
            changed = pressure.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                }
            }
        }
    }
}

/// Ends a connection whose client may still be sending, so that it still reads the reply
/// just written: closing a Unix socket with unread input resets the connection, and the
/// client would see `ECONNRESET` instead of the reply. So: end our side, then read and
/// discard (never buffer) what is still coming until the client closes, for at most
/// `limit` (capped at [`DRAIN_LIMIT`]).
async fn close_after_reply(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: &mut tokio::net::unix::OwnedWriteHalf,
    limit: Duration,
) {
    let _ = writer.shutdown().await;
    let drain = async {
        loop {
            match reader.fill_buf().await {
                Ok([]) | Err(_) => break,
                Ok(chunk) => {
                    let n = chunk.len();
                    reader.consume(n);
                }
            }
        }
    };
    let _ = tokio::time::timeout(limit.min(DRAIN_LIMIT), drain).await;
}

/// Hands `request` to the daemon and waits for its answer.
async fn dispatch(request: Request, peer: Peer, context: &Context) -> Response {
    let op = op_name(&request);
    let (reply, answer) = oneshot::channel();
    let incoming = Incoming {
        request,
        peer,
        reply,
    };
    let sent = tokio::select! {
        _ = context.shutdown.cancelled() => return shutting_down(),
        sent = context.requests.send(incoming) => sent,
    };
    if sent.is_err() {
        return shutting_down();
    }
    let mut answer = answer;
    let response = tokio::select! {
        biased;
        response = &mut answer => response.ok(),
        _ = context.shutdown.cancelled() => {
            // The daemon may be finishing this very request (say, making a notification
            // durable); give it a moment before giving up on it.
            tokio::time::timeout(SHUTDOWN_GRACE, answer).await.ok().and_then(Result::ok)
        }
    };
    let response = response.unwrap_or_else(shutting_down);
    debug!(op, result = result_name(&response), "request answered");
    response
}

fn shutting_down() -> Response {
    error_reply(
        ErrorKind::ShuttingDown,
        "the daemon is shutting down".into(),
    )
}

fn error_reply(kind: ErrorKind, message: String) -> Response {
    Response::Error { kind, message }
}

fn op_name(request: &Request) -> &'static str {
    match request {
        Request::Ping => "ping",
        Request::Notify(_) => "notify",
        Request::Sync { .. } => "sync",
        Request::Status { .. } => "status",
        Request::Reload => "reload",
    }
}

fn result_name(response: &Response) -> &'static str {
    match response {
        Response::Pong { .. } => "pong",
        Response::Notified { .. } => "notified",
        Response::Synced { .. } => "synced",
        Response::Status { .. } => "status",
        Response::Reloaded { .. } => "reloaded",
        Response::Error { .. } => "error",
    }
}

async fn write_response(
    writer: &mut tokio::net::unix::OwnedWriteHalf,
    response: &Response,
    timeout: Duration,
) -> io::Result<()> {
    let line = encode_response(response);
    match tokio::time::timeout(timeout, writer.write_all(line.as_bytes())).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client does not read its reply",
        )),
    }
}

/// Returns true when `peer` may use the socket: root, the daemon's own user, or a member
/// (primary or supplementary group) of `allowed_gid`. `groups_of` returns the supplementary
/// groups of a pid; it is only asked when the cheaper checks fail.
///
/// The supplementary groups are read from `/proc/<pid>/status` after the connection was
/// made; a process that exits and whose pid is reused in between could be judged by
/// another's groups. The socket's mode 0660 is the first barrier; this is the second.
fn peer_allowed(
    peer: &Peer,
    daemon_uid: u32,
    allowed_gid: Option<u32>,
    groups_of: impl FnOnce(u32) -> Vec<u32>,
) -> bool {
    if peer.uid == 0 || peer.uid == daemon_uid {
        return true;
    }
    let Some(gid) = allowed_gid else {
        return false;
    };
    peer.gid == gid || peer.pid.is_some_and(|pid| groups_of(pid).contains(&gid))
}

/// Returns the gids of the `Groups:` line of a `/proc/<pid>/status` text.
fn supplementary_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Spawns [`serve`] on a listener made by [`bind`], for tests.
#[cfg(test)]
fn spawn_serve(
    listener: std::os::unix::net::UnixListener,
    limits: Limits,
    requests: mpsc::Sender<Incoming>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    listener
        .set_nonblocking(true)
        .expect("a fresh listener can be made non-blocking");
    let listener = tokio::net::UnixListener::from_std(listener).expect("inside a tokio runtime");
    tokio::spawn(serve(listener, limits, requests, shutdown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;
    use crate::protocol::PROTOCOL_VERSION;
    use tokio::io::AsyncReadExt;

    const T: Duration = Duration::from_secs(10);

    /// A fake daemon that answers every request with `Pong`.
    fn fake_daemon() -> mpsc::Sender<Incoming> {
        let (sender, mut receiver) = mpsc::channel::<Incoming>(16);
        tokio::spawn(async move {
            while let Some(incoming) = receiver.recv().await {
                let _ = incoming.reply.send(Response::Pong {
                    version: PROTOCOL_VERSION,
                    pid: 42,
                });
            }
        });
        sender
    }

    struct Server {
        _dir: tempfile::TempDir,
        path: PathBuf,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    fn start(limits: Limits, requests: mpsc::Sender<Incoming>) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        let listener = bind(&path, None).expect("bind");
        let shutdown = CancellationToken::new();
        let task = spawn_serve(listener, limits, requests, shutdown.clone());
        Server {
            _dir: dir,
            path,
            shutdown,
            task,
        }
    }

    async fn raw_line(stream: &mut UnixStream, text: &[u8]) -> Response {
        stream.write_all(text).await.expect("write");
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        let read = tokio::time::timeout(T, read_line_bounded(&mut reader, &mut line, 1 << 20))
            .await
            .expect("reply in time")
            .expect("read");
        assert_eq!(read, LineRead::Line);
        serde_json::from_slice(&line).expect("a response line")
    }

    fn kind(response: &Response) -> Option<ErrorKind> {
        match response {
            Response::Error { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    #[tokio::test]
    async fn ping_round_trip() {
        let server = start(Limits::default(), fake_daemon());
        let mut client = Client::connect(&server.path, T).await.expect("connect");
        let response = client.request(&Request::Ping, T).await.expect("answer");
        assert_eq!(
            response,
            Response::Pong {
                version: PROTOCOL_VERSION,
                pid: 42
            }
        );
        // A connection carries several requests in turn.
        let again = client.request(&Request::Ping, T).await.expect("answer");
        assert_eq!(again, response);
    }

    #[tokio::test]
    async fn garbage_gets_bad_request_and_the_connection_stays_usable() {
        let server = start(Limits::default(), fake_daemon());
        let mut stream = UnixStream::connect(&server.path).await.expect("connect");
        let reply = raw_line(&mut stream, b"hello there\n").await;
        assert_eq!(kind(&reply), Some(ErrorKind::BadRequest), "{reply:?}");
        let reply = raw_line(&mut stream, b"{\"v\":7,\"op\":\"ping\"}\n").await;
        assert_eq!(
            kind(&reply),
            Some(ErrorKind::UnsupportedVersion),
            "{reply:?}"
        );
        let reply = raw_line(&mut stream, b"{\"v\":1,\"op\":\"ping\"}\n").await;
        assert!(matches!(reply, Response::Pong { .. }), "{reply:?}");
    }

    #[tokio::test]
    async fn oversized_line_gets_too_large_and_is_never_buffered_whole() {
        let server = start(Limits::default(), fake_daemon());
        let stream = UnixStream::connect(&server.path).await.expect("connect");
        let (mut reader, mut writer) = stream.into_split();
        // Stream more than the limit from one reused buffer; the server stops reading, so
        // the writer ends with an error (broken pipe) that is expected here.
        let streamer = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 << 10];
            let mut sent = 0;
            while sent <= MAX_REQUEST_BYTES + chunk.len() {
                if writer.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += chunk.len();
            }
        });
        let mut text = String::new();
        tokio::time::timeout(T, reader.read_to_string(&mut text))
            .await
            .expect("answer and close in time")
            .expect("read");
        let reply: Response = serde_json::from_str(text.trim_end()).expect("one response line");
        assert_eq!(kind(&reply), Some(ErrorKind::TooLarge), "{reply:?}");
        streamer.await.expect("streamer ends");
    }

    #[tokio::test]
    async fn idle_connections_beyond_the_cap_time_out_and_a_new_client_is_served() {
        let limits = Limits {
            max_connections: 2,
            read_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let server = start(limits, fake_daemon());
        let mut idle = Vec::new();
        for _ in 0..6 {
            idle.push(UnixStream::connect(&server.path).await.expect("connect"));
        }
        let mut client = Client::connect(&server.path, T).await.expect("connect");
        let response = client.request(&Request::Ping, T).await.expect("answer");
        assert!(matches!(response, Response::Pong { .. }), "{response:?}");
        // The first idle connections were closed by the server (EOF, nothing sent).
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(T, idle[0].read(&mut byte))
            .await
            .expect("closed in time")
            .expect("read");
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn idle_connections_are_shed_quickly_when_the_limit_is_reached() {
        let limits = Limits {
            max_connections: 8,
            read_timeout: Duration::from_secs(60),
            busy_grace: Duration::from_millis(100),
            ..Limits::default()
        };
        let server = start(limits, fake_daemon());
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(UnixStream::connect(&server.path).await.expect("connect"));
        }
        let started = tokio::time::Instant::now();
        let mut client = Client::connect(&server.path, T).await.expect("connect");
        let response = client.request(&Request::Ping, T).await.expect("answer");
        assert!(matches!(response, Response::Pong { .. }), "{response:?}");
        // The backlog is served in order: 200 / 8 rounds of about 100 ms, far below the
        // 60 s read timeout each round would take without shedding.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn daemon_gone_means_shutting_down() {
        let (sender, receiver) = mpsc::channel::<Incoming>(1);
        drop(receiver);
        let server = start(Limits::default(), sender);
        let mut client = Client::connect(&server.path, T).await.expect("connect");
        let response = client.request(&Request::Ping, T).await.expect("answer");
        assert_eq!(
            kind(&response),
            Some(ErrorKind::ShuttingDown),
            "{response:?}"
        );
    }

    #[tokio::test]
    async fn shutdown_removes_the_socket_and_returns() {
        let server = start(Limits::default(), fake_daemon());
        let _idle = UnixStream::connect(&server.path).await.expect("connect");
        server.shutdown.cancel();
        tokio::time::timeout(T, server.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve does not panic");
        assert!(!server.path.exists());
    }

    #[tokio::test]
    async fn socket_mode_is_0660() {
        let server = start(Limits::default(), fake_daemon());
        let mode = fs::metadata(&server.path).expect("socket").mode();
        assert_eq!(mode & 0o777, SOCKET_MODE);
    }

    #[test]
    fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists(), "a dropped listener leaves its file behind");
        let listener = bind(&path, None).expect("stale socket replaced");
        drop(listener);
    }

    #[test]
    fn live_socket_is_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        let _live = bind(&path, None).expect("bind");
        match bind(&path, None) {
            Err(ControlError::InUse { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected InUse, got {other:?}"),
        }
        assert!(path.exists());
    }

    #[test]
    fn other_files_are_not_removed() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        fs::write(&path, "precious").expect("write");
        assert!(matches!(
            bind(&path, None),
            Err(ControlError::NotASocket { .. })
        ));
        assert_eq!(fs::read_to_string(&path).expect("still there"), "precious");
    }

    #[test]
    fn missing_directory_is_created_0750() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("run").join("control.sock");
        let _listener = bind(&path, None).expect("bind");
        let mode = fs::metadata(dir.path().join("run")).expect("dir").mode();
        assert_eq!(mode & 0o777, SOCKET_DIR_MODE);
    }

    #[test]
    fn unknown_group_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        let error = bind(&path, Some("no-such-group-pushmirror")).expect_err("unknown group");
        assert_eq!(
            error.to_string(),
            "socket_group \"no-such-group-pushmirror\" does not exist"
        );
        assert!(!path.exists());
    }

    #[test]
    fn own_group_can_be_set() {
        // SAFETY: getegid has no preconditions.
        let egid = unsafe { libc::getegid() };
        let name = group_name(egid);
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        let _listener = bind(&path, Some(&name)).expect("bind with own group");
        assert_eq!(fs::metadata(&path).expect("socket").gid(), egid);
    }

    fn group_name(gid: u32) -> String {
        let text = fs::read_to_string("/etc/group").expect("/etc/group");
        text.lines()
            .find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?;
                (id.parse::<u32>().ok()? == gid).then(|| name.to_owned())
            })
            .expect("own group listed in /etc/group")
    }

    #[test]
    fn peer_rules() {
        let peer = |uid, gid| Peer {
            pid: Some(1234),
            uid,
            gid,
        };
        let no_groups = |_| Vec::new();
        assert!(peer_allowed(&peer(0, 0), 1000, Some(50), no_groups));
        assert!(peer_allowed(&peer(1000, 7), 1000, Some(50), no_groups));
        assert!(peer_allowed(&peer(2000, 50), 1000, Some(50), no_groups));
        assert!(peer_allowed(&peer(2000, 7), 1000, Some(50), |_| vec![
            3, 50
        ]));
        assert!(!peer_allowed(&peer(2000, 7), 1000, Some(50), |_| vec![3]));
        assert!(!peer_allowed(&peer(2000, 50), 1000, None, no_groups));
    }

    #[test]
    fn groups_line_is_parsed() {
        let status = "Name:\tgit\nUid:\t1 1 1 1\nGroups:\t4 24 1000 \nNgid:\t0\n";
        assert_eq!(supplementary_groups(status), vec![4, 24, 1000]);
        assert_eq!(supplementary_groups("Groups:\n"), Vec::<u32>::new());
        assert_eq!(supplementary_groups(""), Vec::<u32>::new());
    }
}
