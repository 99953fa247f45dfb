//! Serving the bound control socket: accepting connections, reading bounded request lines,
//! handing requests to the daemon and writing its answers, until shutdown.
//!
//! After mini-redis's `server.rs`: a `Semaphore` permit (a connection slot) is taken *before*
//! `accept` and moved into the connection's task, so that a client is never accepted that
//! cannot be served; clients beyond the limit wait in the kernel's backlog. Our additions are
//! the bounds on what one connection may cost (see [`Limits`]): each request line has a size
//! limit and a deadline, shortened to [`Limits::busy_grace`] while every slot is taken, so
//! that idle clients make room for those that talk. The accept loop and each connection are
//! separate functions because they have separate lifetimes: the loop ends at shutdown,
//! connections end when their client does, or at shutdown after a short grace for a pending
//! answer.
//!
//! Waiting is not asking. A `sync` with `wait` is answered when its updates end, hours later
//! perhaps; if it kept its slot meanwhile, 64 such clients would lock out `status` and the
//! hook. So while a connection only waits for that answer it is *parked*: it gives its slot
//! back and drops its read and line buffers, keeping only its socket and the channel its
//! answer comes on, and holds a waiting slot instead, of a pool of its own
//! ([`Limits::max_waiting`]). Both pools are bounded, so memory and file descriptors are too:
//! `max_connections` connections with their buffers, plus `max_waiting` parked ones with
//! none. A waiting request beyond the pool is answered `busy` at once (nothing is forced).
//! Once answered, a parked connection queues for a slot like a new client before it reads
//! its next request. Requests answered at once (`status`, `notify`, ...) keep their slot:
//! they hold it for milliseconds, and parking them would only add work.
//!
//! Memory is bounded in total, not only per connection: 64 clients each sending a line of
//! the 8 MiB limit would otherwise cost 512 MiB. Every connection may buffer
//! [`Limits::small_request_bytes`] (64 KiB, enough for every request of pushmirror's own
//! clients; the hook keeps its notifications within it); a line that grows past that first
//! takes one of [`Limits::large_requests`] slots (one), waiting for it within its read
//! deadline and getting `busy` (and the connection closed) if none comes free, and holds
//! it until its request is answered, so the decoded request the daemon works on is covered
//! too. A refused or finished line releases its buffer before its slot. At the defaults the
//! line buffers take at most 64 x 128 KiB + 1 x 16 MiB (a `Vec` grows by doubling, so twice
//! what it holds), and the read buffers 64 x 64 KiB: 28 MiB, plus the one large request
//! decoded, whatever the clients do. A small line never waits for a large one.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, instrument, warn};

use super::bind::remove_socket;
use super::{Incoming, Limits, Peer, peer};
use crate::protocol::{
    ErrorKind, LineRead, Request, Response, decode_request, encode_response, read_line_bounded,
};

/// How long a connection waiting for the daemon's answer still waits once shutdown began,
/// before it answers `shutting_down` itself. Short: the hook's whole budget is about a second.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Longest time spent discarding the rest of an oversized or forbidden request before the
/// connection is closed (see `close_after_reply`).
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Line buffers larger than this are released after their request, so that one large request
/// does not pin its memory for the rest of a long-lived connection.
const KEEP_BUFFER_BYTES: usize = 64 << 10;

/// How long the accept loop pauses after `accept` failed (EMFILE and friends), so that it
/// backs off instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
    /// Connection slots ([`Limits::max_connections`]): the accept loop takes one before
    /// `accept`; a connection parked on a waiting request gives its slot back.
    slots: Arc<Semaphore>,
    /// Waiting slots ([`Limits::max_waiting`]): one per parked connection.
    waiting: Arc<Semaphore>,
    /// Large-request slots ([`Limits::large_requests`]): one per line buffered past
    /// [`Limits::small_request_bytes`], held until its request is answered.
    large: Arc<Semaphore>,
}

impl Context {
    fn new(
        limits: Limits,
        requests: mpsc::Sender<Incoming>,
        shutdown: CancellationToken,
    ) -> Context {
        Context {
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            waiting: Arc::new(Semaphore::new(limits.max_waiting.max(1))),
            large: Arc::new(Semaphore::new(limits.large_requests.max(1))),
            limits,
            requests,
            shutdown,
            // SAFETY: geteuid has no preconditions and cannot fail.
            daemon_uid: unsafe { libc::geteuid() },
            pressure: watch::Sender::new(false),
        }
    }
}

/// Serves the control socket until `shutdown` is cancelled; returns after the socket file is
/// removed and every connection has ended (see the module docs).
pub async fn serve(
    listener: tokio::net::UnixListener,
    limits: Limits,
    requests: mpsc::Sender<Incoming>,
    shutdown: CancellationToken,
) {
    serve_with(listener, Arc::new(Context::new(limits, requests, shutdown))).await;
}

/// Serves as [`serve`] does, with a context the caller made (tests look at its slots).
async fn serve_with(listener: tokio::net::UnixListener, context: Arc<Context>) {
    let shutdown = context.shutdown.clone();
    // Remember which file we listen on, so that shutdown never removes the socket of a
    // daemon that replaced ours.
    let socket = SocketFile::of(&listener);
    let connections = TaskTracker::new();

    // The permit comes first: while every permit is taken, new clients wait in the kernel's
    // backlog instead of being accepted and starved.
    while let Some(permit) = next_permit(&context).await {
        let stream = match accept(&listener, &shutdown).await {
            Accepted::Stream(stream) => stream,
            // The permit is released when it drops here.
            Accepted::Retry => continue,
            Accepted::Shutdown => break,
        };
        connections.spawn(handle_connection(stream, context.clone(), permit));
    }

    drop(listener);
    if let Some(socket) = socket {
        socket.remove_if_unchanged();
    }
    connections.close();
    connections.wait().await;
    debug!("control socket closed");
}

/// The socket file [`serve`] listens on, identified by device and inode so that a file that
/// replaced it is recognised as someone else's.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Returns the file that `listener` is bound to, if it has a path that still exists.
    fn of(listener: &tokio::net::UnixListener) -> Option<SocketFile> {
        let addr = listener.local_addr().ok()?;
        let path = addr.as_pathname().map(Path::to_owned)?;
        let meta = fs::symlink_metadata(&path).ok()?;
        Some(SocketFile {
            dev: meta.dev(),
            ino: meta.ino(),
            path,
        })
    }

    /// Removes the socket file if it is still the one we bound.
    fn remove_if_unchanged(self) {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                remove_socket(&self.path)
            }
            _ => debug!(socket = %self.path.display(), "socket file replaced or gone; left alone"),
        }
    }
}

/// Returns a permit for the next connection, waiting while every permit is taken; `None`
/// once shutdown begins.
///
/// While it waits, connections that hold a permit without sending a request are told to make
/// room (see [`Context::pressure`]), so that a flood of idle clients delays the others by
/// rounds of `busy_grace`, not of `read_timeout` (the backlog is served in order).
async fn next_permit(context: &Context) -> Option<OwnedSemaphorePermit> {
    let permits = &context.slots;
    if let Ok(permit) = permits.clone().try_acquire_owned() {
        return Some(permit);
    }
    debug!(
        limit = context.limits.max_connections,
        "connection limit reached; shedding connections that send nothing"
    );
    context.pressure.send_replace(true);
    let permit = tokio::select! {
        _ = context.shutdown.cancelled() => return None,
        // The semaphore is never closed; stop rather than spin if it were.
        permit = permits.clone().acquire_owned() => permit.ok()?,
    };
    context.pressure.send_replace(false);
    Some(permit)
}

/// What one `accept` on the listener came to.
enum Accepted {
    Stream(UnixStream),
    /// `accept` failed and the loop backed off; try again with a fresh permit.
    Retry,
    Shutdown,
}

/// Accepts the next connection, unless shutdown begins first.
async fn accept(listener: &tokio::net::UnixListener, shutdown: &CancellationToken) -> Accepted {
    tokio::select! {
        _ = shutdown.cancelled() => Accepted::Shutdown,
        accepted = listener.accept() => match accepted {
            Ok((stream, _)) => Accepted::Stream(stream),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(cause = %e, "cannot accept a control connection");
                tokio::select! {
                    _ = shutdown.cancelled() => Accepted::Shutdown,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => Accepted::Retry,
                }
            }
        },
    }
}

/// Reads request lines from one client and answers each, until it closes, stays idle past
/// the read timeout, sends an oversized line, or the daemon shuts down.
#[instrument(name = "control", skip_all, fields(peer_pid, peer_uid))]
async fn handle_connection(stream: UnixStream, context: Arc<Context>, slot: OwnedSemaphorePermit) {
    let peer = match peer::connected_peer(&stream) {
        Ok(peer) => peer,
        Err(e) => {
            debug!(cause = %e, "cannot read peer credentials; closing");
            return;
        }
    };
    record_peer(&peer);
    let allowed = peer::may_use_socket(&peer, context.daemon_uid, context.limits.allowed_gid);
    if !allowed {
        warn!("peer may not use the control socket");
    }

    let limits = &context.limits;
    let (reader, writer) = stream.into_split();
    let mut connection = Connection::new(reader, writer, slot);
    loop {
        reuse_line_buffer(&mut connection.line);
        let read = read_request_line(
            &mut connection.reader,
            &mut connection.line,
            &context,
            allowed,
        )
        .await;
        let large = match read {
            LineOutcome::End | LineOutcome::Eof => return,
            LineOutcome::Line { large } if allowed => large,
            refused => {
                let reply = refusal(&refused, allowed, &peer, limits);
                return refuse(connection, &reply, limits.read_timeout).await;
            }
        };
        let response = match decode_request(&connection.line) {
            Err(reply) => {
                debug!("malformed request line");
                release_line(&mut connection.line, large);
                reply
            }
            Ok(request) if waits_for_updates(&request) => {
                release_line(&mut connection.line, large);
                match wait_parked(connection, request, peer, &context).await {
                    Some(next) => {
                        connection = next;
                        continue;
                    }
                    None => return,
                }
            }
            Ok(request) => {
                // The large-request slot is held until the answer, so that it also bounds
                // the memory of the decoded request, which the daemon holds until then.
                reuse_line_buffer(&mut connection.line);
                let response = dispatch(request, peer, &context).await;
                drop(large);
                response
            }
        };
        if let Err(e) = write_response(&mut connection.writer, &response, limits.read_timeout).await
        {
            debug!(cause = %e, "cannot write the reply; closing");
            return;
        }
    }
}

/// Returns the reply that ends a connection whose line cannot be served: from a forbidden
/// peer (which never takes a large-request slot, so its first line is refused once it
/// outgrows the small allowance), too large, or with no room for a long line.
fn refusal(read: &LineOutcome, allowed: bool, peer: &Peer, limits: &Limits) -> Response {
    match read {
        LineOutcome::TooLarge if allowed => {
            warn!(
                limit = limits.max_request_bytes,
                "request too large; closing"
            );
            too_large(limits.max_request_bytes)
        }
        LineOutcome::Busy => no_room_for_long_lines(limits.small_request_bytes),
        _ => forbidden(peer.uid),
    }
}

/// One client's connection while it is served: its socket, its buffers, and the connection
/// slot it holds meanwhile.
struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// The request line being read.
    line: Vec<u8>,
    /// The permit of the accept loop's semaphore: held while the connection reads a request
    /// or is answered at once, given back while it waits for updates.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    fn new(
        reader: OwnedReadHalf,
        writer: OwnedWriteHalf,
        slot: OwnedSemaphorePermit,
    ) -> Connection {
        Connection {
            reader: BufReader::with_capacity(KEEP_BUFFER_BYTES, reader),
            writer,
            line: Vec::new(),
            _slot: slot,
        }
    }
}

/// Returns true for the requests whose answer waits for updates to end (`sync` with `wait`)
/// or for remotes to be read (`plan`): their connections wait parked (see [`wait_parked`]).
fn waits_for_updates(request: &Request) -> bool {
    matches!(
        request,
        Request::Sync { wait: true, .. } | Request::Plan { .. }
    )
}

/// Hands a request that waits for updates to the daemon and writes its answer, with the
/// connection parked meanwhile: it gives its connection slot back and drops its buffers,
/// holding a waiting slot instead ([`Limits::max_waiting`]; when none is free the answer is
/// `busy` at once). Returns the connection, with a connection slot again, for its next
/// request; `None` when it ended.
///
/// A client that sent more before its answer broke the protocol's turn-taking: what it sent
/// is not kept while waiting, so the connection ends after the answer.
async fn wait_parked(
    connection: Connection,
    request: Request,
    peer: Peer,
    context: &Context,
) -> Option<Connection> {
    let timeout = context.limits.read_timeout;
    let Ok(_waiting) = context.waiting.clone().try_acquire_owned() else {
        warn!(
            limit = context.limits.max_waiting,
            "too many clients wait for updates; answering busy"
        );
        let mut connection = connection;
        let reply = too_many_waiting(context.limits.max_waiting);
        write_response(&mut connection.writer, &reply, timeout)
            .await
            .ok()?;
        return Some(connection);
    };
    let Connection {
        reader,
        mut writer,
        line,
        _slot: slot,
    } = connection;
    drop((line, slot));
    let sent_ahead = !reader.buffer().is_empty();
    // Frees the read buffer.
    let reader = reader.into_inner();

    let response = dispatch(request, peer, context).await;
    let written = write_response(&mut writer, &response, timeout).await;
    if sent_ahead {
        debug!("the client sent more before its answer; closing");
        close_after_reply(&mut BufReader::new(reader), &mut writer, timeout).await;
        return None;
    }
    if let Err(e) = written {
        debug!(cause = %e, "cannot write the reply; closing");
        return None;
    }
    // In line with new clients for the next slot (the semaphore is fair).
    let slot = tokio::select! {
        _ = context.shutdown.cancelled() => return None,
        slot = context.slots.clone().acquire_owned() => slot.ok()?,
    };
    Some(Connection::new(reader, writer, slot))
}

/// Records the peer's pid and uid on the connection's span.
fn record_peer(peer: &Peer) {
    let span = tracing::Span::current();
    if let Some(pid) = peer.pid {
        span.record("peer_pid", pid);
    }
    span.record("peer_uid", peer.uid);
}

/// Empties `line` (releasing a large buffer), then gives back the large-request slot it
/// took, if any: in this order, so that the slot never admits another large line while this
/// one's memory is still held.
fn release_line(line: &mut Vec<u8>, large: Option<OwnedSemaphorePermit>) {
    reuse_line_buffer(line);
    drop(large);
}

/// Empties `line` for the next request, releasing its memory if one large request grew it
/// past [`KEEP_BUFFER_BYTES`].
fn reuse_line_buffer(line: &mut Vec<u8>) {
    line.clear();
    if line.capacity() > KEEP_BUFFER_BYTES {
        *line = Vec::new();
    }
}

/// Writes `reply` and ends the connection (see [`close_after_reply`]), its line buffer
/// released first.
async fn refuse(mut connection: Connection, reply: &Response, timeout: Duration) {
    connection.line = Vec::new();
    let _ = write_response(&mut connection.writer, reply, timeout).await;
    close_after_reply(&mut connection.reader, &mut connection.writer, timeout).await;
}

/// What waiting for one request line came to.
enum LineOutcome {
    /// A complete line is in the buffer. `large` is the large-request slot it took if it
    /// outgrew [`Limits::small_request_bytes`]; hold it until the request is answered.
    Line { large: Option<OwnedSemaphorePermit> },
    /// The client closed the connection before sending anything more.
    Eof,
    /// The line is longer than it may be: [`Limits::max_request_bytes`], or the small
    /// allowance for a peer that may not take a large-request slot.
    TooLarge,
    /// The line outgrew the small allowance and no large-request slot came free before the
    /// deadline.
    Busy,
    /// The connection ends without an answer: shutdown, a read error, or no complete line in
    /// time.
    End,
}

/// Waits for one request line within the connection's deadline (see [`LineDeadline`]).
///
/// Every connection may buffer [`Limits::small_request_bytes`] of a line; a longer line
/// (only when `may_grow`) first takes one of the [`Limits::large_requests`] slots, waiting
/// for it within the same deadline, and may then grow to [`Limits::max_request_bytes`]. So
/// the bytes buffered across all connections are bounded, not only those of each (see the
/// module docs). A line that is refused is released here, before its slot.
async fn read_request_line(
    reader: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
    context: &Context,
    may_grow: bool,
) -> LineOutcome {
    let limits = &context.limits;
    let small = limits.small_request_bytes.min(limits.max_request_bytes);
    let mut deadline = LineDeadline::start(context);
    match deadline.run(read_line_bounded(reader, line, small)).await {
        Waited::Done(Ok(LineRead::TooLarge)) if may_grow && small < limits.max_request_bytes => {}
        read => return line_outcome(read, None),
    }
    let large = match deadline.run(context.large.clone().acquire_owned()).await {
        Waited::Done(Ok(large)) => large,
        Waited::Expired => {
            debug!(
                allowance = small,
                "no large-request slot came free in time; answering busy"
            );
            *line = Vec::new();
            return LineOutcome::Busy;
        }
        // The semaphore is never closed.
        Waited::Done(Err(_)) | Waited::Shutdown => return LineOutcome::End,
    };
    let read = deadline
        .run(read_line_bounded(reader, line, limits.max_request_bytes))
        .await;
    if !matches!(read, Waited::Done(Ok(LineRead::Line))) {
        *line = Vec::new();
    }
    line_outcome(read, Some(large))
}

fn line_outcome(
    read: Waited<io::Result<LineRead>>,
    large: Option<OwnedSemaphorePermit>,
) -> LineOutcome {
    match read {
        Waited::Done(Ok(LineRead::Line)) => LineOutcome::Line { large },
        Waited::Done(Ok(LineRead::Eof)) => LineOutcome::Eof,
        Waited::Done(Ok(LineRead::TooLarge)) => LineOutcome::TooLarge,
        Waited::Done(Err(e)) => {
            debug!(cause = %e, "read failed; closing");
            LineOutcome::End
        }
        Waited::Shutdown | Waited::Expired => LineOutcome::End,
    }
}

/// What running one step of a line read under its [`LineDeadline`] came to.
enum Waited<T> {
    Done(T),
    Shutdown,
    Expired,
}

/// The deadline of one request line: [`Limits::read_timeout`] from the start of the wait,
/// shortened to [`Limits::busy_grace`] (counted from the same start) while the accept loop
/// reports that every connection slot is taken. One deadline covers every step of the line
/// (reading, waiting for a large-request slot, reading on).
struct LineDeadline<'a> {
    context: &'a Context,
    started: tokio::time::Instant,
    at: tokio::time::Instant,
    pressure: watch::Receiver<bool>,
    /// Still watching the pressure: it has not shortened the deadline yet.
    watching: bool,
    /// The deadline was shortened by the pressure.
    shedding: bool,
}

impl LineDeadline<'_> {
    fn start(context: &Context) -> LineDeadline<'_> {
        let started = tokio::time::Instant::now();
        LineDeadline {
            context,
            started,
            at: started + context.limits.read_timeout,
            pressure: context.pressure.subscribe(),
            watching: true,
            shedding: false,
        }
    }

    /// Runs `work` until it completes, shutdown begins, or the deadline passes.
    async fn run<T>(&mut self, work: impl Future<Output = T>) -> Waited<T> {
        tokio::pin!(work);
        loop {
            if self.watching && *self.pressure.borrow_and_update() {
                (self.watching, self.shedding) = (false, true);
                self.at = self.at.min(self.started + self.context.limits.busy_grace);
            }
            tokio::select! {
                _ = self.context.shutdown.cancelled() => return Waited::Shutdown,
                result = &mut work => return Waited::Done(result),
                _ = tokio::time::sleep_until(self.at) => {
                    if self.shedding {
                        debug!("connection limit reached and no request yet; closing to make room");
                    } else {
                        debug!("no complete request within the read timeout; closing");
                    }
                    return Waited::Expired;
                }
                // Looked at again at the top of the loop. The sender lives in `context`, so
                // it cannot be gone; stop watching rather than spin if it were.
                changed = self.pressure.changed(), if self.watching => {
                    if changed.is_err() {
                        self.watching = false;
                    }
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
    reader: &mut BufReader<OwnedReadHalf>,
    writer: &mut OwnedWriteHalf,
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

/// Returns the reply to a request line longer than `max_request_bytes`.
fn too_large(max_request_bytes: usize) -> Response {
    error_reply(
        ErrorKind::TooLarge,
        format!("request line longer than {max_request_bytes} bytes"),
    )
}

/// Returns the reply to a request line that outgrew `small_request_bytes` while every
/// large-request slot stayed taken until its deadline.
fn no_room_for_long_lines(small_request_bytes: usize) -> Response {
    error_reply(
        ErrorKind::Busy,
        format!(
            "other long requests are being read; retry later, or send a line of at most {small_request_bytes} bytes"
        ),
    )
}

/// Returns the reply to a request that waits for updates while `max_waiting` others do.
fn too_many_waiting(max_waiting: usize) -> Response {
    error_reply(
        ErrorKind::Busy,
        format!(
            "{max_waiting} clients already wait for updates; retry later, or sync without waiting"
        ),
    )
}

/// Returns the reply to a request from `uid`, which may not use the socket.
fn forbidden(uid: u32) -> Response {
    error_reply(
        ErrorKind::Forbidden,
        format!(
            "uid {uid} may not use this socket (only root, the daemon's user and the socket group)"
        ),
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
        Request::Plan { .. } => "plan",
        Request::Pause { .. } => "pause",
        Request::Resume { .. } => "resume",
    }
}

fn result_name(response: &Response) -> &'static str {
    match response {
        Response::Pong { .. } => "pong",
        Response::Notified { .. } => "notified",
        Response::Synced { .. } => "synced",
        Response::Status { .. } => "status",
        Response::Reloaded { .. } => "reloaded",
        Response::Planned { .. } => "planned",
        Response::Paused { .. } => "paused",
        Response::Resumed { .. } => "resumed",
        Response::Error { .. } => "error",
    }
}

async fn write_response(
    writer: &mut OwnedWriteHalf,
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

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::client::Client;
    use crate::daemon::control::DEFAULT_MAX_CONNECTIONS;
    use crate::daemon::control::bind;
    use crate::protocol::{MAX_REQUEST_BYTES, PROTOCOL_VERSION, SMALL_REQUEST_BYTES, SyncTarget};

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

    /// A fake daemon that holds the answers to requests that wait for updates until
    /// `release` is sent (then answers them, and later ones at once, with an empty `Synced`),
    /// and answers everything else at once with `Pong`. Each request it holds is reported on
    /// `held`.
    struct HoldingDaemon {
        requests: mpsc::Sender<Incoming>,
        held: mpsc::UnboundedReceiver<()>,
        release: oneshot::Sender<()>,
    }

    fn holding_daemon() -> HoldingDaemon {
        let (requests, mut receiver) = mpsc::channel::<Incoming>(16);
        let (held_tx, held) = mpsc::unbounded_channel();
        let (release, mut released) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let synced = || Response::Synced {
                mirrors: Vec::new(),
            };
            let mut holding: Option<Vec<oneshot::Sender<Response>>> = Some(Vec::new());
            loop {
                tokio::select! {
                    _ = &mut released, if holding.is_some() => {
                        for reply in holding.take().into_iter().flatten() {
                            let _ = reply.send(synced());
                        }
                    }
                    incoming = receiver.recv() => {
                        let Some(incoming) = incoming else { return };
                        match (&incoming.request, &mut holding) {
                            (Request::Sync { wait: true, .. }, Some(held)) => {
                                held.push(incoming.reply);
                                let _ = held_tx.send(());
                            }
                            (Request::Sync { .. }, _) => {
                                let _ = incoming.reply.send(synced());
                            }
                            _ => {
                                let _ = incoming.reply.send(Response::Pong {
                                    version: PROTOCOL_VERSION,
                                    pid: 42,
                                });
                            }
                        }
                    }
                }
            }
        });
        HoldingDaemon {
            requests,
            held,
            release,
        }
    }

    fn sync_wait() -> Request {
        Request::Sync {
            target: SyncTarget::All,
            wait: true,
            allow_mass_change: false,
        }
    }

    struct Server {
        _dir: tempfile::TempDir,
        path: PathBuf,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    fn start(limits: Limits, requests: mpsc::Sender<Incoming>) -> Server {
        start_with(Arc::new(Context::new(
            limits,
            requests,
            CancellationToken::new(),
        )))
    }

    /// Starts serving with `context`, which the test keeps to look at its slots.
    fn start_with(context: Arc<Context>) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        let listener = bind(&path, None).expect("bind");
        listener
            .set_nonblocking(true)
            .expect("a fresh listener can be made non-blocking");
        let listener =
            tokio::net::UnixListener::from_std(listener).expect("inside a tokio runtime");
        let shutdown = context.shutdown.clone();
        let task = tokio::spawn(serve_with(listener, context));
        Server {
            _dir: dir,
            path,
            shutdown,
            task,
        }
    }

    /// Waits until every large-request slot of `context` is taken.
    async fn until_large_slots_taken(context: &Context) {
        let deadline = tokio::time::Instant::now() + T;
        while context.large.available_permits() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no large-request slot was taken"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
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

    /// More clients than connection slots wait for updates: each gives its slot back while
    /// it waits, so all of them reach the daemon and a client that asks something now is
    /// answered at once.
    #[tokio::test]
    async fn clients_waiting_for_updates_do_not_take_connection_slots() {
        const WAITERS: usize = DEFAULT_MAX_CONNECTIONS + 36;
        let mut daemon = holding_daemon();
        let server = start(Limits::default(), daemon.requests.clone());
        let waiters: Vec<_> = (0..WAITERS)
            .map(|_| {
                let path = server.path.clone();
                tokio::spawn(async move { crate::client::call(&path, &sync_wait(), T).await })
            })
            .collect();
        for n in 0..WAITERS {
            tokio::time::timeout(T, daemon.held.recv())
                .await
                .unwrap_or_else(|_| panic!("only {n} waiting requests reached the daemon"));
        }
        let response = crate::client::call(&server.path, &Request::Ping, T)
            .await
            .expect("answer");
        assert!(matches!(response, Response::Pong { .. }), "{response:?}");
        let _ = daemon.release.send(());
        for waiter in waiters {
            let response = waiter.await.expect("the waiter runs").expect("answer");
            assert!(matches!(response, Response::Synced { .. }), "{response:?}");
        }
    }

    /// Beyond `max_waiting`, a request that would wait is answered `busy` at once; one that
    /// waited keeps its connection for the next request.
    #[tokio::test]
    async fn waiting_clients_beyond_their_bound_get_busy() {
        let limits = Limits {
            max_waiting: 2,
            ..Limits::default()
        };
        let mut daemon = holding_daemon();
        let server = start(limits, daemon.requests.clone());
        let mut first = Client::connect(&server.path, T).await.expect("connect");
        let first = tokio::spawn(async move {
            let synced = first.request(&sync_wait(), T).await;
            let pong = first.request(&Request::Ping, T).await;
            (synced, pong)
        });
        let path = server.path.clone();
        let second = tokio::spawn(async move { crate::client::call(&path, &sync_wait(), T).await });
        for _ in 0..2 {
            tokio::time::timeout(T, daemon.held.recv())
                .await
                .expect("a waiting request reaches the daemon");
        }
        let third = crate::client::call(&server.path, &sync_wait(), T)
            .await
            .expect("answer");
        assert_eq!(kind(&third), Some(ErrorKind::Busy), "{third:?}");
        let _ = daemon.release.send(());
        let (synced, pong) = first.await.expect("the first client runs");
        assert!(matches!(synced, Ok(Response::Synced { .. })), "{synced:?}");
        assert!(matches!(pong, Ok(Response::Pong { .. })), "{pong:?}");
        let second = second.await.expect("the second client runs");
        assert!(matches!(second, Ok(Response::Synced { .. })), "{second:?}");
    }

    /// Returns a request line longer than the small allowance: a ping after `SMALL` spaces.
    fn long_ping() -> Vec<u8> {
        let mut line = vec![b' '; SMALL_REQUEST_BYTES];
        line.extend_from_slice(b"{\"v\":1,\"op\":\"ping\"}\n");
        line
    }

    /// One line longer than the small allowance takes the large-request slot; another waits
    /// for it, and short requests are answered meanwhile.
    #[tokio::test]
    async fn long_lines_take_turns_and_short_ones_do_not_wait() {
        let context = Arc::new(Context::new(
            Limits::default(),
            fake_daemon(),
            CancellationToken::new(),
        ));
        let server = start_with(context.clone());
        let line = long_ping();
        let (head, tail) = line.split_at(SMALL_REQUEST_BYTES + 1);
        let mut first = UnixStream::connect(&server.path).await.expect("connect");
        first.write_all(head).await.expect("write");
        until_large_slots_taken(&context).await;

        let mut second = UnixStream::connect(&server.path).await.expect("connect");
        let send_second = tokio::spawn(async move {
            second.write_all(&long_ping()).await.expect("write");
            second
        });
        let mut client = Client::connect(&server.path, T).await.expect("connect");
        let response = client.request(&Request::Ping, T).await.expect("answer");
        assert!(matches!(response, Response::Pong { .. }), "{response:?}");
        let mut second = send_second.await.expect("the second client runs");
        // The first still holds the only slot: the second cannot have been answered.
        let mut byte = [0u8; 1];
        let early = second.try_read(&mut byte);
        assert!(
            matches!(&early, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "the second long line was answered first: {early:?}"
        );

        let reply = raw_line(&mut first, tail).await;
        assert!(matches!(reply, Response::Pong { .. }), "{reply:?}");
        let reply = raw_line(&mut second, b"").await;
        assert!(matches!(reply, Response::Pong { .. }), "{reply:?}");
        assert_eq!(context.large.available_permits(), 1);
    }

    /// A long line that cannot have a large-request slot before its deadline is told `busy`.
    #[tokio::test]
    async fn a_long_line_without_a_slot_in_time_gets_busy() {
        // A daemon that takes requests and never answers: the first long request keeps the
        // slot until its answer.
        let (requests, _never_read) = mpsc::channel::<Incoming>(16);
        let limits = Limits {
            read_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let context = Arc::new(Context::new(limits, requests, CancellationToken::new()));
        let server = start_with(context.clone());
        let mut first = UnixStream::connect(&server.path).await.expect("connect");
        first.write_all(&long_ping()).await.expect("write");
        until_large_slots_taken(&context).await;

        let stream = UnixStream::connect(&server.path).await.expect("connect");
        let (mut reader, mut writer) = stream.into_split();
        let _ = writer.write_all(&long_ping()).await;
        let mut text = String::new();
        tokio::time::timeout(T, reader.read_to_string(&mut text))
            .await
            .expect("answer and close in time")
            .expect("read");
        let reply: Response = serde_json::from_str(text.trim_end()).expect("one response line");
        assert_eq!(kind(&reply), Some(ErrorKind::Busy), "{reply:?}");
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
}
