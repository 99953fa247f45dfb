//! A TCP proxy on 127.0.0.1 that injects network faults between a client (the daemon's `git`)
//! and a server (a [`GitDaemon`](super::GitDaemon)), switchable at run time.
//!
//! Each connection takes the [`Fault`] in force when it is accepted and keeps it to its end, so
//! the counters say exactly which connections met which fault. Threads and `std` only: one
//! thread accepts, two pump the bytes of each forwarded connection (one per direction). `Drop`
//! stops accepting, shuts down every socket it still has (which wakes the pumps), and joins
//! every thread, so nothing of it outlives the value.
//!
//! ```ignore
//! let proxy = FaultProxy::start(git_daemon.port());
//! proxy.set(Fault::Cut { after: 8192 });
//! // ... the mirror's url is proxy.git_url("down.git") ...
//! assert!(proxy.injected(Fault::Cut { after: 0 }.kind()) > 0);
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// What the proxy does to a connection accepted while it is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards every byte both ways, untouched.
    PassThrough,
    /// Forwards, then closes both sides once `after` bytes (both directions together) have
    /// passed: the byte that would cross the limit is never forwarded.
    Cut { after: usize },
    /// Accepts and then does nothing: never connects to the server, never reads or writes,
    /// holds the connection open until the proxy drops (or the client gives up).
    Stall,
    /// Accepts and closes at once with a reset (`SO_LINGER` 0): the client's first read or
    /// write fails with "connection reset by peer".
    Refuse,
    /// Forwards, inverting (XOR 0xFF) every byte after the first `after` of each direction.
    Garble { after: usize },
    /// Forwards until the client has sent at least `upload` bytes, then closes both sides
    /// instead of forwarding the server's next answer: the server did the work (a push
    /// landed), the client never hears how it went.
    LoseReply { upload: usize },
}

/// A fault without its parameters, to count by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    PassThrough,
    Cut,
    Stall,
    Refuse,
    Garble,
    LoseReply,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::PassThrough,
        FaultKind::Cut,
        FaultKind::Stall,
        FaultKind::Refuse,
        FaultKind::Garble,
        FaultKind::LoseReply,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

impl Fault {
    /// The fault without its parameters.
    pub fn kind(self) -> FaultKind {
        match self {
            Fault::PassThrough => FaultKind::PassThrough,
            Fault::Cut { .. } => FaultKind::Cut,
            Fault::Stall => FaultKind::Stall,
            Fault::Refuse => FaultKind::Refuse,
            Fault::Garble { .. } => FaultKind::Garble,
            Fault::LoseReply { .. } => FaultKind::LoseReply,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::PassThrough => write!(f, "pass-through"),
            Fault::Cut { after } => write!(f, "cut after {after} bytes"),
            Fault::Stall => write!(f, "stall"),
            Fault::Refuse => write!(f, "refuse"),
            Fault::Garble { after } => write!(f, "garble after {after} bytes"),
            Fault::LoseReply { upload } => write!(f, "lose the reply to {upload} bytes"),
        }
    }
}

/// Counters, per [`FaultKind`].
#[derive(Default)]
struct Counters {
    /// Connections accepted while the kind was in force.
    accepted: [AtomicUsize; 6],
    /// Connections the fault was actually applied to: cut (the limit was reached), garbled (at
    /// least one byte inverted), stalled, refused, reply lost. Pass-through connections never
    /// count here.
    injected: [AtomicUsize; 6],
    /// Bytes forwarded, all connections and directions together.
    forwarded: AtomicUsize,
}

/// What the proxy saw of one connection (see [`FaultProxy::connections`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The fault in force when it was accepted.
    pub fault: Fault,
    /// The first bytes the client sent (at most [`OPENING_BYTES`], lossy UTF-8, NULs as
    /// spaces), before any garbling: a git request names its service, e.g.
    /// `0032git-upload-pack /down.git host=127.0.0.1:4242`. Empty when stalled or refused.
    pub opening: String,
    /// True if the fault was actually applied to it.
    pub injected: bool,
}

/// How many of the client's first bytes [`Seen::opening`] keeps.
pub const OPENING_BYTES: usize = 64;

/// The shared, growing record behind a [`Seen`].
struct Record {
    fault: Fault,
    opening: Mutex<Vec<u8>>,
    injected: AtomicBool,
}

impl Record {
    fn new(fault: Fault, injected: bool) -> Arc<Record> {
        Arc::new(Record {
            fault,
            opening: Mutex::new(Vec::new()),
            injected: AtomicBool::new(injected),
        })
    }

    fn seen(&self) -> Seen {
        let opening = self.opening.lock().unwrap();
        Seen {
            fault: self.fault,
            opening: String::from_utf8_lossy(&opening).replace('\0', " "),
            injected: self.injected.load(Ordering::SeqCst),
        }
    }
}

/// One forwarded connection: the client's socket, the server's, and its fault.
struct Conn {
    client: TcpStream,
    server: TcpStream,
    fault: Fault,
    record: Arc<Record>,
    /// Bytes forwarded so far, both directions (for [`Fault::Cut`]).
    bytes: AtomicUsize,
    /// Bytes the client sent so far (for [`Fault::LoseReply`]).
    uploaded: AtomicUsize,
}

impl Conn {
    fn shutdown(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }

    /// Counts the fault as applied to this connection, once.
    fn mark_faulted(&self, counters: &Counters) {
        if !self.record.injected.swap(true, Ordering::SeqCst) {
            counters.injected[self.fault.kind().index()].fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// What the accept thread and the pumps share with the [`FaultProxy`].
struct Shared {
    fault: Mutex<Fault>,
    stop: AtomicBool,
    counters: Counters,
    /// Every forwarded connection, to shut down on drop (the pumps own them).
    live: Mutex<Vec<Weak<Conn>>>,
    /// Every connection accepted, in order.
    records: Mutex<Vec<Arc<Record>>>,
    /// Stalled connections, owned here until drop.
    held: Mutex<Vec<TcpStream>>,
    /// The pump threads.
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

/// A fault-injecting TCP proxy from 127.0.0.1:[`port`](Self::port) to 127.0.0.1:`target`.
pub struct FaultProxy {
    port: u16,
    target: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to 127.0.0.1:`target`, starting in
    /// [`Fault::PassThrough`].
    pub fn start(target: u16) -> FaultProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("local address").port();
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::PassThrough),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            live: Mutex::new(Vec::new()),
            records: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
            pumps: Mutex::new(Vec::new()),
        });
        let acceptor = thread::Builder::new()
            .name(format!("faultproxy-{port}"))
            .spawn({
                let shared = shared.clone();
                move || accept_loop(listener, target, &shared)
            })
            .expect("spawn the accept thread");
        FaultProxy {
            port,
            target,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port it forwards to.
    pub fn target(&self) -> u16 {
        self.target
    }

    /// `git://127.0.0.1:<port>/<name>`: a `git daemon` URL through the proxy.
    pub fn git_url(&self, name: &str) -> String {
        format!(
            "git://127.0.0.1:{}/{}",
            self.port,
            name.trim_start_matches('/')
        )
    }

    /// Puts `fault` in force for the connections accepted from now on.
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self.shared.fault.lock().unwrap()
    }

    /// Connections accepted while a fault of `kind` was in force.
    pub fn accepted(&self, kind: FaultKind) -> usize {
        self.shared.counters.accepted[kind.index()].load(Ordering::SeqCst)
    }

    /// Connections a fault of `kind` was actually applied to (see [`Fault`]).
    pub fn injected(&self, kind: FaultKind) -> usize {
        self.shared.counters.injected[kind.index()].load(Ordering::SeqCst)
    }

    /// Bytes forwarded so far, all connections and directions together.
    pub fn forwarded(&self) -> usize {
        self.shared.counters.forwarded.load(Ordering::SeqCst)
    }

    /// Every connection accepted so far, in order.
    pub fn connections(&self) -> Vec<Seen> {
        let records = self.shared.records.lock().unwrap();
        records.iter().map(|r| r.seen()).collect()
    }

    /// One line of counters, for messages: `pass-through 3/0 cut 2/2 ...` (accepted/injected).
    pub fn stats(&self) -> String {
        let mut s = format!("in force: {}; accepted/injected:", self.fault());
        for kind in FaultKind::ALL {
            s.push_str(&format!(
                " {kind:?} {}/{}",
                self.accepted(kind),
                self.injected(kind)
            ));
        }
        s.push_str(&format!("; {} bytes forwarded", self.forwarded()));
        s
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // The accept thread ends within one poll; the listener closes with it.
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // No new connection or pump can appear now. Shutting the sockets down wakes every
        // pump blocked in `read`; each then ends and drops its connection.
        for conn in self.shared.live.lock().unwrap().drain(..) {
            if let Some(conn) = conn.upgrade() {
                conn.shutdown();
            }
        }
        self.shared.held.lock().unwrap().clear();
        let pumps: Vec<_> = self.shared.pumps.lock().unwrap().drain(..).collect();
        for pump in pumps {
            // Do not panic while panicking: a pump's own panic is reported anyway.
            let _ = pump.join();
        }
    }
}

fn accept_loop(listener: TcpListener, target: u16, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                // Accepted sockets inherit non-blocking mode on some systems: make sure.
                client
                    .set_nonblocking(false)
                    .expect("blocking client socket");
                let fault = *shared.fault.lock().unwrap();
                shared.counters.accepted[fault.kind().index()].fetch_add(1, Ordering::SeqCst);
                handle(client, fault, target, shared);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("FaultProxy accept: {e}"),
        }
    }
}

/// Applies `fault` to a newly accepted `client`.
fn handle(client: TcpStream, fault: Fault, target: u16, shared: &Arc<Shared>) {
    let record = |injected: bool| {
        let record = Record::new(fault, injected);
        shared.records.lock().unwrap().push(record.clone());
        if injected {
            shared.counters.injected[fault.kind().index()].fetch_add(1, Ordering::SeqCst);
        }
        record
    };
    match fault {
        Fault::Stall => {
            shared.held.lock().unwrap().push(client);
            record(true);
        }
        Fault::Refuse => {
            reset_on_close(&client);
            drop(client);
            record(true);
        }
        Fault::PassThrough | Fault::Cut { .. } | Fault::Garble { .. } | Fault::LoseReply { .. } => {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, target));
            let Ok(server) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
                // The server is gone: the client sees its connection closed.
                return;
            };
            let conn = Arc::new(Conn {
                client,
                server,
                fault,
                record: record(false),
                bytes: AtomicUsize::new(0),
                uploaded: AtomicUsize::new(0),
            });
            let mut live = shared.live.lock().unwrap();
            // Forget connections that are over, so a long run does not accumulate them.
            live.retain(|c| c.strong_count() > 0);
            live.push(Arc::downgrade(&conn));
            drop(live);
            let mut pumps = shared.pumps.lock().unwrap();
            pumps.retain(|p| !p.is_finished());
            for to_server in [true, false] {
                let (conn, shared) = (conn.clone(), shared.clone());
                let pump = thread::Builder::new()
                    .name("faultproxy-pump".into())
                    .spawn(move || pump(&conn, to_server, &shared))
                    .expect("spawn a pump thread");
                pumps.push(pump);
            }
        }
    }
}

/// Copies one direction of `conn` (client to server when `to_server`), applying its fault.
fn pump(conn: &Conn, to_server: bool, shared: &Shared) {
    let (mut from, mut to) = if to_server {
        (&conn.client, &conn.server)
    } else {
        (&conn.server, &conn.client)
    };
    let mut buf = [0u8; 16 * 1024];
    // Bytes of this direction seen so far (for Garble's offset).
    let mut seen = 0usize;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            conn.shutdown();
            return;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                conn.shutdown();
                return;
            }
        };
        let chunk = &mut buf[..n];
        let before = conn.bytes.fetch_add(n, Ordering::SeqCst);
        if to_server {
            let uploaded = conn.uploaded.fetch_add(n, Ordering::SeqCst);
            if uploaded < OPENING_BYTES {
                let keep = (OPENING_BYTES - uploaded).min(n);
                conn.record
                    .opening
                    .lock()
                    .unwrap()
                    .extend_from_slice(&chunk[..keep]);
            }
        }
        match conn.fault {
            Fault::Cut { after } if before + n > after => {
                let keep = after.saturating_sub(before);
                let _ = to.write_all(&chunk[..keep]);
                shared.counters.forwarded.fetch_add(keep, Ordering::SeqCst);
                conn.mark_faulted(&shared.counters);
                conn.shutdown();
                return;
            }
            Fault::Garble { after } if seen + n > after => {
                for byte in &mut chunk[after.saturating_sub(seen)..] {
                    *byte ^= 0xFF;
                }
                conn.mark_faulted(&shared.counters);
            }
            Fault::LoseReply { upload }
                if !to_server && conn.uploaded.load(Ordering::SeqCst) >= upload =>
            {
                conn.mark_faulted(&shared.counters);
                conn.shutdown();
                return;
            }
            _ => {}
        }
        seen += n;
        if to.write_all(chunk).is_err() {
            conn.shutdown();
            return;
        }
        shared.counters.forwarded.fetch_add(n, Ordering::SeqCst);
    }
    // End of this direction: pass the half-close on; the other direction goes on.
    let _ = to.shutdown(Shutdown::Write);
}

/// Makes closing `stream` send a reset instead of an orderly FIN.
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: plain setsockopt on a socket we own, with a correctly sized `linger`.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}
