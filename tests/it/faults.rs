//! Network faults between the daemon and its remote: a [`FaultProxy`] in front of a real
//! `git daemon` cuts, stalls, refuses and garbles the daemon's connections, and loses the
//! answer to a push that landed, while pushes arrive through the installed hook. Throughout, `status` must answer at once; nothing partial or
//! corrupt may land downstream; once the network heals, one forced sync must converge.
//!
//! `PUSHMIRROR_FAULTS_ROUNDS` cycles through the faults that many times (default 1).
//! RELIABILITY.md at the repository root describes this trial and its figures.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pushmirror::protocol::{Request, Response};
use serde_json::Value;

use crate::engine::mirror_toml;
use crate::support::{
    Fault, FaultKind, FaultProxy, GitDaemon, TestEnv, ask, env_number, wait_until,
};

/// Generous deadline for anything that should happen "soon" (2 shared cores).
const SOON: Duration = Duration::from_secs(30);
/// `status` must answer within this, whatever the remote does: under the mirror's `timeout`
/// (5 s), so a status that waited for a stalled update would fail. (The proof that it does
/// not wait is that it answers `started` while the update hangs; this bound only catches a
/// status that became slow.)
const STATUS_BOUND: Duration = Duration::from_secs(4);
/// Bytes of each pushed file: random hex, so the pack (about half of it after zlib) is much
/// larger than the thresholds of the mid-pack faults below.
const PUSHED_BYTES: usize = 96 * 1024;

/// The faults cycled through, in order, each with true when it must hit the push (its pack)
/// rather than the listing. The listing (`git ls-remote`, well under 1 KiB each way) passes
/// the mid-pack ones untouched; the push's pack (about 48 KiB) does not.
const FAULTS: [(Fault, bool); 6] = [
    // In the first exchange: the listing is cut.
    (Fault::Cut { after: 100 }, false),
    // Mid-pack: the listing passes, the push is cut inside its pack.
    (Fault::Cut { after: 16 * 1024 }, true),
    (Fault::Stall, false),
    (Fault::Refuse, false),
    // Everything, from the first byte.
    (Fault::Garble { after: 0 }, false),
    // Only the pack: the listing and the ref advertisement pass untouched.
    (Fault::Garble { after: 8 * 1024 }, true),
];

/// The reply to the push (once its pack went up) is lost; the listing passes.
const LOSE_REPLY: Fault = Fault::LoseReply { upload: 16 * 1024 };

/// A server for the proxy's own test: sends [`BANNER`](Self::BANNER) on each connection,
/// records what it receives until EOF, then answers [`REPLY`](Self::REPLY). `Drop` stops it.
struct Recorder {
    port: u16,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    const BANNER: &'static [u8] = b"banner";
    const REPLY: &'static [u8] = b"bye";

    fn start() -> Recorder {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::spawn({
            let (received, stop) = (received.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            stream.set_read_timeout(Some(SOON)).unwrap();
                            let _ = stream.write_all(Recorder::BANNER);
                            let mut bytes = Vec::new();
                            let _ = stream.read_to_end(&mut bytes);
                            received.lock().unwrap().push(bytes);
                            let _ = stream.write_all(Recorder::REPLY);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
        });
        Recorder {
            port,
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until it has recorded `n` connections; returns what each received.
    fn wait_for(&self, n: usize) -> Vec<Vec<u8>> {
        wait_until(&format!("{n} connections recorded"), SOON, || {
            let received = self.received.lock().unwrap().clone();
            if received.len() >= n {
                Ok(received)
            } else {
                Err(format!("{received:?}"))
            }
        })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn inverted(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|b| b ^ 0xFF).collect()
}

/// Connects to the proxy with a read timeout (a stalled read must end).
fn dial(proxy: &FaultProxy) -> TcpStream {
    let stream = crate::support::connect(proxy.port()).expect("connect to the proxy");
    stream.set_read_timeout(Some(SOON)).unwrap();
    stream
}

/// Reads exactly `n` bytes.
fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).expect("read through the proxy");
    buf
}

/// Reads until EOF or an error (a cut or a reset); returns what came.
fn read_rest(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    bytes
}

#[test]
fn fault_proxy_modes_do_what_they_say() {
    let server = Recorder::start();
    let proxy = FaultProxy::start(server.port);

    // Pass-through: both directions intact, half-close passed on.
    let mut c = dial(&proxy);
    assert_eq!(read_n(&mut c, 6), Recorder::BANNER);
    c.write_all(b"hello").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_rest(&mut c), Recorder::REPLY);
    assert_eq!(server.wait_for(1)[0], b"hello");

    // Cut after 8 bytes: the 6-byte banner passes, then only 2 bytes of "hello".
    proxy.set(Fault::Cut { after: 8 });
    let mut c = dial(&proxy);
    assert_eq!(read_n(&mut c, 6), Recorder::BANNER);
    c.write_all(b"hello").unwrap();
    assert_eq!(read_rest(&mut c), b"", "cut: nothing more arrives");
    assert_eq!(server.wait_for(2)[1], b"he");

    // Garble after 2 bytes of each direction.
    proxy.set(Fault::Garble { after: 2 });
    let mut c = dial(&proxy);
    let banner = read_n(&mut c, 6);
    assert_eq!(banner[..2], Recorder::BANNER[..2]);
    assert_eq!(banner[2..], inverted(&Recorder::BANNER[2..]));
    c.write_all(b"hello").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_rest(&mut c), inverted(Recorder::REPLY));
    let received = server.wait_for(3)[2].clone();
    assert_eq!(received[..2], *b"he");
    assert_eq!(received[2..], inverted(b"llo"));

    // Lose the reply once 3 bytes went up: the banner (before any upload) passes, the server
    // gets everything, its answer is dropped.
    proxy.set(Fault::LoseReply { upload: 3 });
    let mut c = dial(&proxy);
    assert_eq!(read_n(&mut c, 6), Recorder::BANNER);
    c.write_all(b"hello").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_rest(&mut c), b"", "the reply is lost");
    assert_eq!(server.wait_for(4)[3], b"hello");

    // Refuse: reset at once, the server never sees it.
    proxy.set(Fault::Refuse);
    let mut c = dial(&proxy);
    let mut buf = [0u8; 1];
    let read = c.read(&mut buf);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "refused connection gave {read:?}"
    );

    // Stall: accepted, nothing ever comes, the server never sees it.
    proxy.set(Fault::Stall);
    let mut stalled = dial(&proxy);
    stalled
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    stalled.write_all(b"anyone?").unwrap();
    let read = stalled.read(&mut buf);
    assert!(
        read.as_ref().is_err_and(|e| matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )),
        "stalled connection gave {read:?}"
    );

    wait_until("every connection counted", SOON, || {
        let accepted = FaultKind::ALL.map(|k| proxy.accepted(k));
        let injected = FaultKind::ALL.map(|k| proxy.injected(k));
        if accepted == [1; 6] && injected == [0, 1, 1, 1, 1, 1] {
            Ok(())
        } else {
            Err(proxy.stats())
        }
    });
    assert_eq!(
        server.received.lock().unwrap().len(),
        4,
        "{}",
        proxy.stats()
    );

    // What each connection opened with, as the client sent it (before any garbling).
    let openings: Vec<String> = proxy.connections().into_iter().map(|c| c.opening).collect();
    assert_eq!(openings, ["hello", "hello", "hello", "hello", "", ""]);

    // Drop: the port closes and the stalled connection is released.
    let port = proxy.port();
    drop(proxy);
    stalled.set_read_timeout(Some(SOON)).unwrap();
    let read = stalled.read(&mut buf);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "after drop the stalled connection gave {read:?}"
    );
    assert!(
        crate::support::connect(port).is_err(),
        "the proxy's port still accepts after drop"
    );
}

/// Random hex text of `len` bytes from `seed` (xorshift64*): incompressible enough that the
/// pack stays about half its size.
fn random_hex(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut s = String::with_capacity(len + 1);
    while s.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.push_str(&format!("{:016x}", x.wrapping_mul(0x2545_F491_4F6C_DD1D)));
    }
    s.truncate(len);
    s.push('\n');
    s
}

/// What `status` answered during the faults.
#[derive(Default)]
struct StatusCalls {
    calls: usize,
    slowest: Duration,
}

impl StatusCalls {
    /// Runs `pushmirror status --json`, asserts that it succeeds within [`STATUS_BOUND`] and
    /// parses; returns mirror `m`'s entry.
    #[track_caller]
    fn check(&mut self, env: &TestEnv, proxy: &FaultProxy) -> Value {
        let started = Instant::now();
        let out = env.pushmirror(&["status", "--json"]);
        let took = started.elapsed();
        out.assert_success();
        assert!(
            took < STATUS_BOUND,
            "status took {took:?} while {}\n{out}",
            proxy.fault()
        );
        self.calls += 1;
        self.slowest = self.slowest.max(took);
        let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
        let mirror = doc["mirrors"][0].clone();
        assert_eq!(mirror["name"], "m", "{doc:#}");
        assert!(mirror["update_status"].is_string(), "{doc:#}");
        mirror
    }
}

fn commit_and_push(env: &TestEnv, work: &Path, n: u64) -> String {
    env.commit(
        work,
        "main",
        "data.txt",
        &random_hex(n, PUSHED_BYTES),
        &format!("push {n}"),
    )
}

#[test]
fn faults_between_daemon_and_remote_heal_and_converge() {
    let env = TestEnv::new();
    let repo = env.bare_repo("srv/app.git");
    let work = env.work_clone(&repo, "work");
    let git = GitDaemon::start(&env, "gd");
    let downstream = git.bare_repo(&env, "down.git");
    let proxy = FaultProxy::start(git.port());
    // Pushed at once (delay 0s); a transient failure is retried every second (the backoff's
    // floor) far more often than this test needs; a stall is killed after 5 s.
    let options = "delay = \"0s\"\nretries = 100\ntimeout = \"5s\"";
    env.write_config(&format!(
        "[daemon]\nstate_dir = \"state\"\n\n{}",
        mirror_toml("m", &repo, &proxy.git_url("down.git"), options)
    ));
    env.pushmirror(&["install-hook", &repo.display().to_string()])
        .assert_success();
    let daemon = env.spawn_pushmirror(&["daemon"]);
    let socket = env.path("state/control.sock");
    wait_until("the daemon answers a ping", SOON, || {
        match ask(&socket, &Request::Ping) {
            Ok(Response::Pong { .. }) => Ok(()),
            other => Err(format!("{other:?}\n--- daemon log ---\n{}", daemon.log())),
        }
    });
    let context = |what: &str| {
        format!(
            "{what}\nproxy: {}\n--- daemon log ---\n{}\n--- git daemon log ---\n{}",
            proxy.stats(),
            daemon.log(),
            git.log()
        )
    };
    let mut status = StatusCalls::default();

    // Healthy: the first push goes through the proxy.
    let mut pushes = 0;
    let healthy = commit_and_push(&env, &work, pushes);
    pushes += 1;
    wait_until("the first push mirrored", SOON, || {
        let st = status.check(&env, &proxy);
        let down = env.mirrored_refs(&downstream);
        if down.get("refs/heads/main") == Some(&healthy) && st["update_status"] == "finished" {
            Ok(())
        } else {
            Err(context(&format!("{down:?}\n{st:#}")))
        }
    });
    assert!(
        proxy.accepted(FaultKind::PassThrough) >= 2,
        "{}",
        proxy.stats()
    );

    // A lost reply: the push lands downstream but the daemon never hears how it went. The
    // retry reads the remote, finds it up to date and finishes with nothing to push, the
    // fault still in force.
    proxy.set(LOSE_REPLY);
    let landed = commit_and_push(&env, &work, pushes);
    pushes += 1;
    let st = wait_until("the retry to find that the push landed", SOON, || {
        let st = status.check(&env, &proxy);
        let down = env.mirrored_refs(&downstream);
        if proxy.injected(FaultKind::LoseReply) > 0
            && down.get("refs/heads/main") == Some(&landed)
            && st["update_status"] == "finished"
        {
            Ok(st)
        } else {
            Err(context(&format!("{down:?}\n{st:#}")))
        }
    });
    let history = st["history"].as_array().cloned().unwrap_or_default();
    let [.., lost, retry] = history.as_slice() else {
        panic!("two updates at least: {st:#}");
    };
    assert_eq!(lost["outcome"], "to_retry", "{st:#}");
    assert_eq!(
        (&retry["outcome"], &retry["created"], &retry["updated"]),
        (&Value::from("finished"), &Value::from(0), &Value::from(0)),
        "the retry pushed nothing: {st:#}"
    );

    // Each fault in turn, with a push to mirror through it, until the proxy applied it;
    // `PUSHMIRROR_FAULTS_ROUNDS` times over.
    let rounds = env_number("PUSHMIRROR_FAULTS_ROUNDS", 1).max(1);
    for (fault, mid_pack) in (0..rounds).flat_map(|_| FAULTS) {
        proxy.set(fault);
        let kind = fault.kind();
        let before = proxy.injected(kind);
        commit_and_push(&env, &work, pushes);
        pushes += 1;
        wait_until(&format!("the proxy to apply {fault}"), SOON, || {
            let st = status.check(&env, &proxy);
            if proxy.injected(kind) > before {
                Ok(())
            } else {
                Err(context(&format!("{st:#}")))
            }
        });
        if fault == Fault::Stall {
            // The update hangs in the stalled connection: status still answers, and says so.
            wait_until("status to show the stalled update", SOON, || {
                let st = status.check(&env, &proxy);
                if st["update_status"] == "started" {
                    Ok(())
                } else {
                    Err(context(&format!("{st:#}")))
                }
            });
            for _ in 0..5 {
                status.check(&env, &proxy);
            }
        }
        if mid_pack {
            // Only pushes met it: the listing before each passed untouched.
            let hit: Vec<_> = proxy
                .connections()
                .into_iter()
                .filter(|c| c.fault == fault && c.injected)
                .collect();
            assert!(
                !hit.is_empty() && hit.iter().all(|c| c.opening.contains("git-receive-pack")),
                "{fault} should hit pushes only: {hit:#?}"
            );
        }
    }
    // No fault let anything through: not a partial pack, not a corrupt one.
    assert_eq!(
        env.mirrored_refs(&downstream).get("refs/heads/main"),
        Some(&landed),
        "{}",
        context("a push got through a fault")
    );

    // Heal: one forced sync converges.
    proxy.set(Fault::PassThrough);
    let out = env.pushmirror(&["sync", "m", "--wait"]);
    assert!(out.success(), "{out}\n{}", context("sync after healing"));
    assert!(out.stdout.contains("m: finished"), "{out}");
    assert_eq!(
        env.mirrored_refs(&downstream),
        env.mirrored_refs(&repo),
        "{}",
        context("after healing")
    );
    let st = status.check(&env, &proxy);
    assert_eq!(st["update_status"], "finished", "{st:#}");
    env.git(
        &downstream,
        &["fsck", "--full", "--strict", "--no-progress"],
    );

    for kind in FaultKind::ALL {
        assert!(
            proxy.accepted(kind) > 0,
            "{kind:?} never met: {}",
            proxy.stats()
        );
    }
    // What the daemon made of the faults, for the figures: each distinct error, with how
    // often it was seen (first line only; git adds its own "fatal:" lines).
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for line in daemon.log().lines() {
        if let Some((_, error)) = line.split_once(" error=") {
            *errors.entry(error.to_owned()).or_default() += 1;
        }
    }
    let errors: Vec<String> = errors.iter().map(|(e, n)| format!("{n} x {e}")).collect();
    let hit: Vec<String> = FaultKind::ALL[1..]
        .iter()
        .map(|&kind| {
            let seen: Vec<_> = proxy
                .connections()
                .into_iter()
                .filter(|c| c.fault.kind() == kind && c.injected)
                .collect();
            let pushes = seen
                .iter()
                .filter(|c| c.opening.contains("git-receive-pack"))
                .count();
            let listings = seen
                .iter()
                .filter(|c| c.opening.contains("git-upload-pack"))
                .count();
            match kind {
                // Never read from: which service the client asked for is unknown.
                FaultKind::Stall | FaultKind::Refuse => format!("{kind:?} {}", seen.len()),
                _ => format!(
                    "{kind:?} {} ({listings} listing, {pushes} push)",
                    seen.len()
                ),
            }
        })
        .collect();
    eprintln!(
        "faults: {rounds} round(s), {pushes} pushes; proxy {}; faults injected per kind: {}; {} status calls, \
         slowest {:?}; the daemon logged:\n  {}",
        proxy.stats(),
        hit.join(", "),
        status.calls,
        status.slowest,
        errors.join("\n  ")
    );
}
