//! The control socket of the real `pushmirror daemon` under misbehaving clients: garbage,
//! an oversized request, a crowd of idle connections; its mode, the stale-socket check, and
//! its removal at shutdown (SPEC.md section 8).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use pushmirror::protocol::{ErrorKind, MAX_REQUEST_BYTES, Request, Response};

use crate::support::{Background, HangingServer, TestEnv, ZERO_OID, ask, wait_until};

/// Generous deadline for the daemon to start or stop.
const SOON: Duration = Duration::from_secs(30);

/// A daemon without mirrors, its state (and socket) in the test's directory.
struct Running {
    env: TestEnv,
    daemon: Background,
    socket: PathBuf,
}

fn start_daemon(env: TestEnv) -> Running {
    env.write_config("[daemon]\nstate_dir = \"state\"\n");
    launch(env)
}

/// Starts the daemon on the configuration `env` already has (its state in `state`).
fn launch(env: TestEnv) -> Running {
    let socket = env.path("state/control.sock");
    let mut daemon = env.spawn_pushmirror(&["daemon"]);
    wait_until("the daemon answers a ping", SOON, || {
        if let Some(status) = daemon.try_wait() {
            panic!(
                "the daemon exited ({status})\n--- daemon log ---\n{}",
                daemon.log()
            );
        }
        match ask(&socket, &Request::Ping) {
            Ok(Response::Pong { .. }) => Ok(()),
            other => Err(format!("{other:?}\n--- daemon log ---\n{}", daemon.log())),
        }
    });
    Running {
        env,
        daemon,
        socket,
    }
}

fn start() -> Running {
    start_daemon(TestEnv::new())
}

/// A raw connection with a read timeout, for sending what no client would.
fn raw(socket: &Path) -> UnixStream {
    let stream = UnixStream::connect(socket).expect("connect to the control socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

/// Writes `bytes` and reads one response line.
fn exchange(stream: &mut UnixStream, bytes: &[u8]) -> Response {
    stream.write_all(bytes).expect("write");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("a response line in time");
    serde_json::from_str(line.trim_end()).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

fn kind(response: &Response) -> Option<ErrorKind> {
    match response {
        Response::Error { kind, .. } => Some(*kind),
        _ => None,
    }
}

impl Running {
    #[track_caller]
    fn assert_alive(&mut self) {
        assert!(
            self.daemon.try_wait().is_none(),
            "the daemon exited\n{}",
            self.daemon.log()
        );
        let pong = ask(&self.socket, &Request::Ping);
        assert!(
            matches!(pong, Ok(Response::Pong { .. })),
            "{pong:?}\n--- daemon log ---\n{}",
            self.daemon.log()
        );
    }
}

#[test]
fn garbage_gets_error_replies_and_the_connection_stays_usable() {
    let mut running = start();
    let mut stream = raw(&running.socket);
    let cases: [(&[u8], ErrorKind); 5] = [
        (b"hello\n", ErrorKind::BadRequest),
        (b"\xff\xfe\x00garbage\n", ErrorKind::BadRequest),
        (b"{\"op\":\"ping\"}\n", ErrorKind::BadRequest),
        (
            b"{\"v\":2,\"op\":\"ping\"}\n",
            ErrorKind::UnsupportedVersion,
        ),
        (b"{\"v\":1,\"op\":\"launch\"}\n", ErrorKind::BadRequest),
    ];
    for (line, expected) in cases {
        let reply = exchange(&mut stream, line);
        assert_eq!(kind(&reply), Some(expected), "{line:?}: {reply:?}");
    }
    let reply = exchange(&mut stream, b"{\"v\":1,\"op\":\"ping\"}\n");
    assert!(matches!(reply, Response::Pong { .. }), "{reply:?}");
    running.assert_alive();
}

#[test]
fn an_oversized_request_is_refused_and_the_daemon_carries_on() {
    let mut running = start();
    let stream = raw(&running.socket);
    let mut writer = stream.try_clone().expect("clone");
    // Streamed from one reused buffer; the daemon stops reading at the limit, so this
    // writer may end with a broken pipe.
    let streamer = thread::spawn(move || {
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0;
        while sent <= MAX_REQUEST_BYTES + chunk.len() {
            if writer.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
    });
    let mut text = String::new();
    (&stream)
        .read_to_string(&mut text)
        .expect("the answer, then end of stream");
    streamer.join().expect("streamer");
    let reply: Response = serde_json::from_str(text.trim_end())
        .unwrap_or_else(|e| panic!("{e}: {text:?}\n{}", running.daemon.log()));
    assert_eq!(kind(&reply), Some(ErrorKind::TooLarge), "{reply:?}");
    running.assert_alive();
}

#[test]
fn many_idle_connections_do_not_lock_out_status() {
    let mut running = start();
    let idle: Vec<UnixStream> = (0..200).map(|_| raw(&running.socket)).collect();
    let started = Instant::now();
    let out = running.env.pushmirror(&["status", "--json"]);
    let elapsed = started.elapsed();
    out.assert_success();
    let doc: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{out}\n--- daemon log ---\n{}", running.daemon.log()));
    assert!(doc["mirrors"].is_array(), "{out}");
    // Far below 200 / 64 connections x the 10 s read timeout: idle connections are shed
    // while clients wait.
    assert!(
        elapsed < Duration::from_secs(10),
        "status took {elapsed:?}\n--- daemon log ---\n{}",
        running.daemon.log()
    );
    let started = Instant::now();
    running.assert_alive();
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(idle);
}

#[test]
fn the_socket_is_0660_and_removed_at_shutdown() {
    let mut running = start();
    let meta = fs::metadata(&running.socket).expect("socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    running.daemon.signal(libc::SIGTERM);
    let status = running.daemon.wait_for_exit(SOON);
    assert!(status.success(), "{status}\n{}", running.daemon.log());
    assert!(!running.socket.exists(), "{}", running.daemon.log());
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let env = TestEnv::new();
    fs::create_dir_all(env.path("state")).unwrap();
    let socket = env.path("state/control.sock");
    // What a daemon killed with SIGKILL leaves behind: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists());
    let mut running = start_daemon(env);
    running.assert_alive();

    let mut second = running.env.spawn_pushmirror(&["daemon"]);
    let status = second.wait_for_exit(SOON);
    assert_eq!(status.code(), Some(2), "{}", second.log());
    assert!(
        second.log().contains(&format!(
            "another pushmirror daemon is listening on {}",
            socket.display()
        )),
        "{}",
        second.log()
    );
    running.assert_alive();
}

/// More `sync --wait` clients than the connection limit (64), waiting on an update that hangs
/// on its remote: `status` and the hook are still answered at once, because a connection that
/// only waits for its update gives its connection slot back.
#[test]
fn waiting_syncs_do_not_lock_out_status_or_the_hook() {
    const WAITERS: usize = 80;
    let env = TestEnv::new();
    let repo = env.bare_repo("app.git");
    let commit = env.make_commit_on(&repo, None, "c1");
    env.set_ref(&repo, "refs/heads/main", &commit);
    let hanging = HangingServer::start();
    env.write_config(&format!(
        "[daemon]\nstate_dir = \"state\"\n\n[[mirror]]\nname = \"m\"\nrepo = \"{}\"\nurl = \"{}\"\ntimeout = \"10m\"\n",
        repo.display(),
        hanging.git_url("m.git")
    ));
    let running = launch(env);
    // The start-up scan finds m never synced: its update starts and hangs on the remote.
    wait_until("the update of m reaches the remote", SOON, || {
        if hanging.accepted() > 0 {
            Ok(())
        } else {
            Err(running.daemon.log())
        }
    });

    let line = b"{\"v\":1,\"op\":\"sync\",\"target\":{\"mirrors\":[\"m\"]},\"wait\":true}\n";
    let waiters: Vec<UnixStream> = (0..WAITERS)
        .map(|_| {
            let mut stream = raw(&running.socket);
            stream.write_all(line).expect("send sync --wait");
            stream
        })
        .collect();

    let started = Instant::now();
    let out = running.env.pushmirror(&["status", "--json", "m"]);
    let took = started.elapsed();
    out.assert_success();
    assert!(
        took < Duration::from_secs(5),
        "status took {took:?}\n{out}\n--- daemon log ---\n{}",
        running.daemon.log()
    );

    // The hook is answered within its one-second budget: it prints nothing, spools nothing.
    let mut hook = running.env.pushmirror_command(&["notify"]);
    hook.current_dir(&repo).env("GIT_DIR", ".");
    let input = format!("{ZERO_OID} {commit} refs/heads/main\n");
    let out = running.env.run_with_stdin(&mut hook, input.as_bytes());
    out.assert_success();
    assert_eq!(
        out.stderr,
        "",
        "{out}\n--- daemon log ---\n{}",
        running.daemon.log()
    );
    let spool = running.env.path("state/spool");
    let spooled = fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    assert_eq!(spooled, 0, "the hook spooled its notification");

    // The waiters still wait: their update has not ended.
    for mut waiter in waiters {
        waiter.set_nonblocking(true).expect("non-blocking");
        let mut byte = [0u8; 1];
        let read = waiter.read(&mut byte);
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{read:?}"
        );
    }
}
/// Returns the peak resident set of process `pid` in bytes (`VmHWM` in `/proc/<pid>/status`).
fn peak_resident_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("a VmHWM line");
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmHWM in kB");
    kib * 1024
}

/// Connects to `socket`, streams one request line of `len` bytes (`x`s from one reused
/// buffer, so the client stays small) and returns what came back before the daemon closed
/// the connection: a response, or a description of how the connection ended.
fn stream_one_line(socket: &Path, len: usize) -> Result<Response, String> {
    let stream = raw(socket);
    let mut writer = stream.try_clone().expect("clone");
    // The daemon may stop reading early (too large, busy): the writer then ends with a
    // broken pipe or a reset, which is expected.
    let streamer = thread::spawn(move || {
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0;
        while sent < len {
            if writer.write_all(&chunk).is_err() {
                return;
            }
            sent += chunk.len();
        }
        let _ = writer.write_all(b"\n");
    });
    let mut text = String::new();
    let read = (&stream).read_to_string(&mut text);
    streamer.join().expect("streamer");
    match read {
        Ok(_) if text.is_empty() => Err("closed without an answer".into()),
        Ok(_) => serde_json::from_str(text.trim_end()).map_err(|e| format!("{e}: {text:?}")),
        Err(e) => Err(format!("{e}")),
    }
}

/// Many clients sending requests larger than the limit at once: the daemon buffers a bounded
/// number of bytes across all connections, not one limit's worth per connection (64 served
/// at once x 8 MiB: a peak of 420-520 MiB before the bound). The documented bound
/// (`control/serve.rs`) on line buffers is 64 x 128 KiB + 1 x 16 MiB, plus 64 x 64 KiB of
/// read buffers: 28 MiB; the daemon's peak resident set (startup included, about 12 MiB)
/// must stay under 128 MiB.
#[test]
fn many_large_requests_at_once_keep_the_daemon_small() {
    const CLIENTS: usize = 80;
    const LINE: usize = 12 << 20;
    const BOUND: u64 = 128 << 20;
    let mut running = start();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let socket = running.socket.clone();
            thread::spawn(move || stream_one_line(&socket, LINE))
        })
        .collect();
    let outcomes: Vec<String> = clients
        .into_iter()
        .map(|client| match client.join().expect("client thread") {
            Ok(reply) => format!("{:?}", kind(&reply)),
            Err(ended) => ended,
        })
        .collect();
    let peak = peak_resident_bytes(running.daemon.pid());
    assert!(
        peak < BOUND,
        "peak resident set {} MiB (bound {} MiB); outcomes: {outcomes:?}\n--- daemon log ---\n{}",
        peak >> 20,
        BOUND >> 20,
        running.daemon.log()
    );
    // Every client was told something or cut off; none was answered as if its line were fine.
    assert!(
        outcomes.iter().all(|o| !o.contains("BadRequest")),
        "{outcomes:?}"
    );
    running.assert_alive();
}
