//! The daemon's handlers, tested in process: [`run_with`] on a socket of a temporary
//! directory, with a shutdown future the test holds, tokio's paused clock, and a scripted
//! [`Updater`] whose updates last until the test ends them (after mini-redis `tests/server.rs`).
//!
//! Time moves only when a test says so: auto-advance of the paused clock is inhibited for the
//! whole test (a blocking task stays in flight, see [`Harness`]), so that the real disk writes
//! of the queue never make virtual minutes pass behind the test's back. Requests go through
//! the real control socket and client.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::driver::{UpdateFuture, UpdateJob};
use super::{DaemonError, Updater, control, run_with};
use crate::client::ClientError;
use crate::config::Config;
use crate::mirror::job::JobOutcome;
use crate::protocol::{
    MirrorStatus, Notification, RefChange, Request, Response, SyncResult, SyncStatus, SyncTarget,
};
use crate::store::queue::Queue;
use crate::store::state::{Ending, RefCounts, Timestamp, Trigger, UpdateStatus};

const WINDOW: Duration = Duration::from_secs(300);
/// Only a bound against a wedged test: the paused clock never reaches it by itself.
const CALL_TIMEOUT: Duration = Duration::from_secs(3600);

/// How a scripted update ends.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Finished,
    Failed,
    /// Another process held the mirror's lock: nothing was done (a transient end).
    Busy,
}

/// A scripted update that has started: its mirror, trigger and start, and the handle that
/// ends it.
struct Started {
    name: String,
    trigger: Trigger,
    at: Instant,
    /// Whether the update was let past the mass-change guard.
    allow_mass_change: bool,
    end: oneshot::Sender<Outcome>,
}

impl Started {
    fn finish(self) {
        let _ = self.end.send(Outcome::Finished);
    }

    fn fail(self) {
        let _ = self.end.send(Outcome::Failed);
    }

    fn busy(self) {
        let _ = self.end.send(Outcome::Busy);
    }
}

/// Reports each update to the test and lasts until the test ends it; records its state as
/// `job::run` does.
struct Scripted {
    started: mpsc::UnboundedSender<Started>,
}

impl Updater for Scripted {
    fn update(&self, job: UpdateJob) -> UpdateFuture {
        let started = self.started.clone();
        Box::pin(async move {
            let (mut state, _) = job.store.load(&job.mirror.name)?;
            state.start(Timestamp::now());
            job.store.save(&job.mirror.name, &state)?;
            let (end, ended) = oneshot::channel();
            let _ = started.send(Started {
                name: job.mirror.name.to_string(),
                trigger: job.trigger,
                at: Instant::now(),
                allow_mass_change: job.allow_mass_change,
                end,
            });
            let ending = match ended.await.unwrap_or(Outcome::Failed) {
                Outcome::Busy => return Ok(JobOutcome::Busy),
                Outcome::Finished => Ending::Finished { fingerprint: None },
                Outcome::Failed => Ending::Failed {
                    error: "scripted failure".into(),
                    retry: false,
                    divergent_refs: Vec::new(),
                    rejected_refs: Vec::new(),
                },
            };
            state.end(Timestamp::now(), job.trigger, RefCounts::default(), ending);
            job.store.save(&job.mirror.name, &state)?;
            Ok(JobOutcome::Ran {
                state: Box::new(state),
                unsaved: None,
            })
        })
    }
}

/// One daemon in process, on a temporary directory.
struct Harness {
    dir: tempfile::TempDir,
    socket: PathBuf,
    started: mpsc::UnboundedReceiver<Started>,
    shutdown: Option<oneshot::Sender<()>>,
    daemon: JoinHandle<Result<(), DaemonError>>,
    /// Dropped with the harness: ends the blocking task that keeps the clock still.
    _still: std::sync::mpsc::Sender<()>,
}

impl Harness {
    /// Starts a daemon on a configuration of `mirrors` (name, repository directory, more
    /// option lines) with
    /// `max_parallel_pushes = parallel`; every repository is made, empty.
    async fn start(mirrors: &[(&str, &str, &str)], parallel: usize) -> Harness {
        Harness::start_with(mirrors, parallel, |_| {}).await
    }

    /// Starts a daemon as [`Harness::start`] does, on the configuration as `edit` leaves it
    /// (values that validation would refuse, for instance).
    async fn start_with(
        mirrors: &[(&str, &str, &str)],
        parallel: usize,
        edit: impl FnOnce(&mut Config),
    ) -> Harness {
        let dir = tempfile::tempdir().expect("temporary directory");
        Harness::start_in(dir, mirrors, parallel, edit).await
    }

    /// Like [`Harness::start_with`], in `dir` (which may hold state already).
    async fn start_in(
        dir: tempfile::TempDir,
        mirrors: &[(&str, &str, &str)],
        parallel: usize,
        edit: impl FnOnce(&mut Config),
    ) -> Harness {
        let (still, hold) = std::sync::mpsc::channel::<()>();
        // A blocking task in flight inhibits the paused clock's auto-advance.
        tokio::task::spawn_blocking(move || hold.recv());
        write_config(dir.path(), mirrors, parallel);
        let mut config = Config::load(&dir.path().join("pushmirror.toml")).expect("valid config");
        edit(&mut config);
        let socket = config.daemon.socket.clone();
        let listener = control::bind(&socket, None).expect("bind the control socket");
        let (started_tx, started) = mpsc::unbounded_channel();
        let (shutdown, stop) = oneshot::channel::<()>();
        let updater = Arc::new(Scripted {
            started: started_tx,
        });
        let daemon = tokio::spawn(run_with(
            config,
            listener,
            async move {
                let _ = stop.await;
            },
            updater,
        ));
        Harness {
            dir,
            socket,
            started,
            shutdown: Some(shutdown),
            daemon,
            _still: still,
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    async fn ask(&self, request: Request) -> Response {
        crate::client::call(&self.socket, &request, CALL_TIMEOUT)
            .await
            .expect("the daemon answers")
    }

    /// Notifies a push to `refs/heads/main` of `repo`; returns the mirrors marked.
    async fn push(&self, repo: &str) -> Vec<String> {
        match self
            .ask(Request::Notify(push_to_main(self.path(repo))))
            .await
        {
            Response::Notified { mirrors } => mirrors,
            other => panic!("notify: {other:?}"),
        }
    }

    async fn sync(&self, name: &str, wait: bool) -> Vec<SyncResult> {
        let request = Request::Sync {
            target: SyncTarget::Mirrors(vec![name.into()]),
            wait,
            allow_mass_change: false,
        };
        match self.ask(request).await {
            Response::Synced { mirrors } => mirrors,
            other => panic!("sync: {other:?}"),
        }
    }

    /// Starts a `sync --wait` of `name` and returns its answer's future.
    fn sync_waiting(&self, name: &str) -> JoinHandle<Result<Response, ClientError>> {
        let socket = self.socket.clone();
        let request = Request::Sync {
            target: SyncTarget::Mirrors(vec![name.into()]),
            wait: true,
            allow_mass_change: false,
        };
        tokio::spawn(async move { crate::client::call(&socket, &request, CALL_TIMEOUT).await })
    }

    async fn status(&self, name: &str) -> MirrorStatus {
        let request = Request::Status {
            name: Some(name.into()),
        };
        match self.ask(request).await {
            Response::Status { mirrors } if mirrors.len() == 1 => {
                mirrors.into_iter().next().expect("one mirror")
            }
            other => panic!("status: {other:?}"),
        }
    }

    /// Returns once the daemon's loop has run a full turn after this call: due updates are
    /// dispatched at the top of each turn, so two answered pings span one whole turn.
    async fn settle(&self) {
        for _ in 0..2 {
            assert!(matches!(
                self.ask(Request::Ping).await,
                Response::Pong { .. }
            ));
        }
        tokio::task::yield_now().await;
    }

    /// Waits for the next update to start.
    async fn next_start(&mut self) -> Started {
        self.started.recv().await.expect("the daemon runs")
    }

    /// Asserts that no update started.
    async fn assert_no_start(&mut self) {
        self.settle().await;
        if let Ok(started) = self.started.try_recv() {
            panic!(
                "unexpected update of {} ({:?})",
                started.name, started.trigger
            );
        }
    }

    /// Advances the paused clock by `by` and lets the daemon act on it.
    async fn advance(&self, by: Duration) {
        tokio::time::advance(by).await;
        self.settle().await;
    }

    /// Stops the daemon gracefully (no update may be running).
    async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        (&mut self.daemon)
            .await
            .expect("the daemon task ends")
            .expect("the daemon stops cleanly");
    }
}

/// Returns a push to `refs/heads/main` of the repository at `repo`.
fn push_to_main(repo: PathBuf) -> Notification {
    Notification {
        repo,
        refs: vec![RefChange {
            old: "0".repeat(40),
            new: "1".repeat(40),
            name: "refs/heads/main".into(),
        }],
        all_refs: false,
    }
}

fn write_config(dir: &Path, mirrors: &[(&str, &str, &str)], parallel: usize) {
    let mut text = format!("[daemon]\nstate_dir = \"state\"\nmax_parallel_pushes = {parallel}\n");
    for (name, repo, extra) in mirrors {
        let path = dir.join(repo);
        if !path.exists() {
            git2::Repository::init_bare(&path).expect("init bare repository");
        }
        text.push_str(&format!(
            "\n[[mirror]]\nname = \"{name}\"\nrepo = \"{repo}\"\nurl = \"file:///nowhere/{name}.git\"\n{extra}\n"
        ));
    }
    std::fs::write(dir.join("pushmirror.toml"), text).expect("write the configuration");
}

#[tokio::test(start_paused = true)]
async fn a_trigger_folds_into_a_dispatched_update_that_has_not_read_yet() {
    let mut h = Harness::start(&[("a", "ra.git", ""), ("b", "rb.git", "")], 1).await;
    assert_eq!(h.push("ra.git").await, ["a"]);
    let a = h.next_start().await;
    // b is dispatched but waits for a's permit: it has read nothing yet.
    assert_eq!(h.push("rb.git").await, ["b"]);
    h.settle().await;
    assert_eq!(h.status("b").await.update_status, UpdateStatus::Started);
    // This push folds into b's waiting update instead of asking for another.
    assert_eq!(h.push("rb.git").await, ["b"]);
    a.finish();
    let b = h.next_start().await;
    assert_eq!((b.name.as_str(), b.trigger), ("b", Trigger::Push));
    b.finish();
    h.settle().await;
    let status = h.status("b").await;
    assert_eq!(status.update_status, UpdateStatus::Finished);
    assert_eq!(status.next_update_at, None);
    h.advance(WINDOW * 3).await;
    h.assert_no_start().await;
    h.stop().await;
}

/// `sync --allow-mass-change` lets exactly one update past the guard: the next to start, not
/// one dispatched before the request (it took its word already), nor any later one.
#[tokio::test(start_paused = true)]
async fn a_mass_change_allowance_goes_to_the_next_update_only() {
    let mut h = Harness::start(&[("a", "ra.git", ""), ("b", "rb.git", "")], 1).await;
    h.push("ra.git").await;
    let a = h.next_start().await;
    h.push("rb.git").await;
    h.settle().await;
    // b is dispatched, waiting for a's permit: the allowance does not fold into it.
    let request = Request::Sync {
        target: SyncTarget::Mirrors(vec!["b".into()]),
        wait: true,
        allow_mass_change: true,
    };
    let socket = h.socket.clone();
    let waiting =
        tokio::spawn(async move { crate::client::call(&socket, &request, CALL_TIMEOUT).await });
    h.settle().await;
    a.finish();
    let first = h.next_start().await;
    assert_eq!((first.name.as_str(), first.allow_mass_change), ("b", false));
    first.finish();
    let allowed = h.next_start().await;
    assert_eq!(
        (
            allowed.name.as_str(),
            allowed.trigger,
            allowed.allow_mass_change
        ),
        ("b", Trigger::Forced, true)
    );
    allowed.finish();
    match waiting.await.expect("joined") {
        Ok(Response::Synced { mirrors }) => {
            assert_eq!(mirrors[0].update_status, SyncStatus::Finished)
        }
        other => panic!("{other:?}"),
    }
    h.sync("b", false).await;
    let later = h.next_start().await;
    assert!(!later.allow_mass_change);
    later.finish();
    h.settle().await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn pushes_during_an_update_cause_exactly_one_more_at_the_windows_pace() {
    let mut h = Harness::start(&[("a", "ra.git", "")], 1).await;
    h.push("ra.git").await;
    let first = h.next_start().await;
    for _ in 0..3 {
        assert_eq!(h.push("ra.git").await, ["a"]);
    }
    h.advance(Duration::from_secs(10)).await;
    let first_at = first.at;
    first.finish();
    h.settle().await;
    let status = h.status("a").await;
    assert_eq!(status.update_status, UpdateStatus::Scheduled);
    assert!(status.next_update_at.is_some(), "{status:?}");
    // The follow-up waits for the window that began with the first update's start.
    h.advance(WINDOW - Duration::from_secs(11)).await;
    h.assert_no_start().await;
    h.advance(Duration::from_secs(2)).await;
    let second = h.next_start().await;
    assert_eq!(second.trigger, Trigger::Push);
    assert!(second.at - first_at >= WINDOW, "{:?}", second.at - first_at);
    second.finish();
    h.advance(WINDOW * 3).await;
    h.assert_no_start().await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_forced_sync_during_an_update_follows_at_once_and_waiters_get_its_end() {
    let mut h = Harness::start(&[("a", "ra.git", "")], 1).await;
    h.push("ra.git").await;
    let first = h.next_start().await;
    let scheduled = h.sync("a", false).await;
    assert_eq!(scheduled[0].update_status, SyncStatus::Scheduled);
    // A waiting caller that comes during the update waits for the next one.
    let waiter = h.sync_waiting("a");
    h.settle().await;
    let first_at = first.at;
    first.finish();
    // No window: the forced update starts as soon as the first ends.
    let second = h.next_start().await;
    assert_eq!(second.trigger, Trigger::Forced);
    assert_eq!(second.at, first_at);
    second.fail();
    match waiter.await.expect("the waiter runs") {
        Ok(Response::Synced { mirrors }) => {
            assert_eq!(mirrors.len(), 1);
            assert_eq!(mirrors[0].update_status, SyncStatus::Failed);
            assert_eq!(mirrors[0].last_error.as_deref(), Some("scripted failure"));
        }
        other => panic!("sync --wait: {other:?}"),
    }
    h.advance(WINDOW * 3).await;
    h.assert_no_start().await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn compaction_never_erases_an_acknowledged_entry() {
    let mut h = Harness::start(&[("a", "ra.git", ""), ("b", "rb.git", "")], 2).await;
    h.push("ra.git").await;
    let a = h.next_start().await;
    // b's notification is in flight while a ends and the daemon finds itself idle.
    let socket = h.socket.clone();
    let repo = h.path("rb.git");
    let notify = tokio::spawn(async move {
        crate::client::call(&socket, &Request::Notify(push_to_main(repo)), CALL_TIMEOUT).await
    });
    a.finish();
    match notify.await.expect("the notifier runs") {
        Ok(Response::Notified { mirrors }) => assert_eq!(mirrors, ["b"]),
        other => panic!("notify: {other:?}"),
    }
    let b = h.next_start().await;
    // A crash now, while b's update runs: its acknowledged notification must be on disk.
    h.daemon.abort();
    let _ = (&mut h.daemon).await;
    drop(b);
    let (_queue, pending) = Queue::open(&h.path("state")).expect("open the queue");
    assert!(pending.contains_key("b"), "{pending:?}");
}

#[tokio::test(start_paused = true)]
async fn reload_keeps_schedules_and_tells_waiters_of_removed_mirrors() {
    let mut h = Harness::start(&[("a", "ra.git", ""), ("gone", "rg.git", "")], 2).await;
    h.push("ra.git").await;
    h.next_start().await.finish();
    h.advance(Duration::from_secs(60)).await;
    h.push("ra.git").await;
    h.settle().await;
    let before = h.status("a").await;
    assert_eq!(before.update_status, UpdateStatus::Scheduled);
    // A caller waiting on a mirror that the reload removes is told so.
    h.push("rg.git").await;
    let gone = h.next_start().await;
    let waiter = h.sync_waiting("gone");
    h.settle().await;

    write_config(h.dir.path(), &[("a", "ra.git", ""), ("c", "rc.git", "")], 2);
    assert!(matches!(
        h.ask(Request::Reload).await,
        Response::Reloaded { mirrors: 2 }
    ));
    match waiter.await.expect("the waiter runs") {
        Ok(Response::Synced { mirrors }) => {
            assert_eq!(mirrors[0].update_status, SyncStatus::Removed)
        }
        other => panic!("sync --wait: {other:?}"),
    }
    gone.finish();
    let after = h.status("a").await;
    assert_eq!(after.update_status, UpdateStatus::Scheduled);
    // The same due time (next_update_at is wall time, read a moment apart).
    let (before_at, after_at) = (before.next_update_at, after.next_update_at);
    let (before_at, after_at) = (before_at.expect("due").0, after_at.expect("due").0);
    let drift = after_at
        .duration_since(before_at)
        .unwrap_or_else(|e| e.duration());
    assert!(drift < Duration::from_secs(1), "{drift:?}");
    assert_eq!(h.status("c").await.update_status, UpdateStatus::None);
    // a still starts when its window, begun before the reload, ends.
    h.advance(WINDOW - Duration::from_secs(61)).await;
    h.assert_no_start().await;
    h.advance(Duration::from_secs(2)).await;
    let a = h.next_start().await;
    assert_eq!((a.name.as_str(), a.trigger), ("a", Trigger::Push));
    a.finish();
    h.settle().await;
    h.stop().await;
}

/// The guard itself, without a socket: between a notification's append and the marking of
/// its mirrors, the daemon may find nothing pending; it must not compact the queue then.
#[tokio::test(start_paused = true)]
async fn the_queue_is_not_compacted_while_an_append_is_unmarked() {
    let dir = tempfile::tempdir().expect("temporary directory");
    write_config(dir.path(), &[("b", "rb.git", "")], 1);
    let config = Config::load(&dir.path().join("pushmirror.toml")).expect("valid config");
    let (started, _) = mpsc::unbounded_channel();
    let (mut daemon, _, _events) =
        super::Daemon::open(config, Arc::new(Scripted { started })).expect("open");
    let config = daemon.config.clone();
    daemon.install_mirrors(&config);
    let (reply, answer) = oneshot::channel();
    daemon.notify(push_to_main(dir.path().join("rb.git")), reply);
    // Another update ending now finds nothing running and nothing pending yet.
    daemon.compact_if_idle();
    assert!(matches!(
        answer.await.expect("answered"),
        Response::Notified { .. }
    ));
    // Everything sent to the queue's writer before this append is on disk when it returns.
    daemon
        .queue
        .append(crate::store::queue::Entry {
            mirrors: Vec::new(),
            forced: false,
        })
        .await
        .expect("append");
    let (_queue, pending) = Queue::open(&dir.path().join("state")).expect("open the queue");
    assert!(pending.contains_key("b"), "{pending:?}");
}

#[tokio::test(start_paused = true)]
async fn a_disabled_mirror_cut_short_by_a_crash_is_never_left_started() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).expect("mkdir");
    // A crash during b's update left it `started`; then b was disabled.
    let store = crate::store::state::StateStore::open(&state_dir).expect("store");
    let name = crate::config::MirrorName::new("b").expect("name");
    let (mut state, _) = store.load(&name).expect("load");
    state.start(Timestamp::now());
    store.save(&name, &state).expect("save");
    let mut h = Harness::start_in(dir, &[("b", "rb.git", "enabled = false")], 1, |_| {}).await;
    let status = h.status("b").await;
    assert_eq!(status.update_status, UpdateStatus::ToRetry, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("interrupted")),
        "{status:?}"
    );
    // Enabled again, it resumes at once.
    write_config(h.dir.path(), &[("b", "rb.git", "")], 1);
    assert!(matches!(
        h.ask(Request::Reload).await,
        Response::Reloaded { mirrors: 1 }
    ));
    let b = h.next_start().await;
    assert_eq!((b.name.as_str(), b.trigger), ("b", Trigger::Startup));
    b.finish();
    h.settle().await;
    assert_eq!(h.status("b").await.update_status, UpdateStatus::Finished);
    h.stop().await;
}

/// `max_parallel_pushes` past what tokio's semaphore holds (as if it slipped past validation)
/// is clamped at start and at reload instead of panicking the daemon.
#[tokio::test(start_paused = true)]
async fn a_permit_count_past_the_semaphore_limit_is_clamped() {
    assert_eq!(super::permit_count(usize::MAX), Semaphore::MAX_PERMITS);
    assert_eq!(super::permit_count(0), 1);
    assert_eq!(super::permit_count(4), 4);
    let mut h = Harness::start_with(&[("a", "ra.git", "")], 1, |config| {
        config.daemon.max_parallel_pushes = usize::MAX;
    })
    .await;
    h.push("ra.git").await;
    h.next_start().await.finish();
    // The file says 1: the reload forgets all but one permit.
    assert!(matches!(
        h.ask(Request::Reload).await,
        Response::Reloaded { mirrors: 1 }
    ));
    h.sync("a", false).await;
    h.next_start().await.finish();
    h.settle().await;
    h.stop().await;
}

/// Every number and duration of the configuration at its type's largest, as if it had slipped
/// past validation: the daemon starts, schedules far ahead, answers `status`, and reloads.
#[tokio::test(start_paused = true)]
async fn values_past_every_bound_never_panic_the_daemon() {
    let mut h = Harness::start_with(&[("a", "ra.git", "")], 1, |config| {
        config.daemon.max_parallel_pushes = usize::MAX;
        for mirror in &mut config.mirrors {
            mirror.delay = Duration::MAX;
            mirror.protected_delay = Duration::MAX;
            mirror.timeout = Some(Duration::MAX);
            mirror.retries = u32::MAX;
            mirror.refs_per_push = usize::MAX;
        }
    })
    .await;
    h.push("ra.git").await;
    h.next_start().await.finish();
    h.settle().await;
    // The window after that start ends beyond any clock: the next push waits "forever".
    h.push("ra.git").await;
    h.settle().await;
    let status = h.status("a").await;
    assert_eq!(status.update_status, UpdateStatus::Scheduled);
    let due = status.next_update_at.expect("a due time");
    let ahead = due.0.duration_since(std::time::SystemTime::now());
    assert!(
        ahead.is_ok_and(|ahead| ahead > Duration::from_secs(10 * 365 * 86_400)),
        "{status:?}"
    );
    h.advance(WINDOW * 3).await;
    h.assert_no_start().await;
    // A forced update still starts at once.
    h.sync("a", false).await;
    h.next_start().await.finish();
    h.settle().await;
    // A reload brings the file's own values back, and shrinks the huge number of permits.
    assert!(matches!(
        h.ask(Request::Reload).await,
        Response::Reloaded { mirrors: 1 }
    ));
    h.push("ra.git").await;
    h.settle().await;
    assert_eq!(h.status("a").await.update_status, UpdateStatus::Scheduled);
    h.stop().await;
}

/// A transient end with a retry left: the waiting caller hears `to_retry` and when the retry
/// comes, the time `status` shows too.
#[tokio::test(start_paused = true)]
async fn a_waiter_of_a_transient_end_with_retries_hears_when_it_retries() {
    let mut h = Harness::start(&[("a", "ra.git", "retries = 2")], 1).await;
    let waiter = h.sync_waiting("a");
    h.next_start().await.busy();
    let result = match waiter.await.expect("the waiter runs") {
        Ok(Response::Synced { mirrors }) => mirrors.into_iter().next().expect("one mirror"),
        other => panic!("sync --wait: {other:?}"),
    };
    assert_eq!(result.update_status, SyncStatus::ToRetry, "{result:?}");
    let at = result.next_update_at.expect("next_update_at of a retry");
    let status = h.status("a").await;
    let shown = status.next_update_at.expect("status shows the retry");
    // Both read the wall clock at slightly different moments.
    let apart = shown
        .0
        .duration_since(at.0)
        .unwrap_or_else(|e| e.duration());
    assert!(apart < Duration::from_secs(5), "{at:?} {shown:?}");
    h.stop().await;
}

/// A transient end with no retry left is the end: a waiting caller hears `failed`, not
/// `to_retry` (nothing more will run for it).
#[tokio::test(start_paused = true)]
async fn a_waiter_of_a_transient_end_without_retries_hears_failed() {
    let mut h = Harness::start(&[("a", "ra.git", "retries = 0")], 1).await;
    let waiter = h.sync_waiting("a");
    h.next_start().await.busy();
    match waiter.await.expect("the waiter runs") {
        Ok(Response::Synced { mirrors }) => {
            assert_eq!(mirrors[0].update_status, SyncStatus::Failed, "{mirrors:?}");
            assert_eq!(
                mirrors[0].last_error.as_deref(),
                Some("another process was updating this mirror")
            );
        }
        other => panic!("sync --wait: {other:?}"),
    }
    h.advance(WINDOW * 3).await;
    h.assert_no_start().await;
    h.stop().await;
}

/// A notification of all refs (what the hook sends for a push too large for one request)
/// marks every enabled mirror of its repository, whatever their filters and the sample.
#[tokio::test]
async fn a_notification_of_all_refs_marks_every_mirror_of_its_repository() {
    let dir = tempfile::tempdir().expect("temporary directory");
    write_config(
        dir.path(),
        &[
            ("all", "r.git", ""),
            ("other", "o.git", ""),
            ("main-only", "r.git", "mirror_branch_regex = \"^main$\""),
        ],
        1,
    );
    let path = dir.path().join("pushmirror.toml");
    let config = Config::load(&path).expect("valid config");
    let (started, _) = mpsc::unbounded_channel();
    let (mut daemon, _, _events) =
        super::Daemon::open(config, Arc::new(Scripted { started })).expect("open");
    let config = daemon.config.clone();
    daemon.install_mirrors(&config);
    let mut notification = Notification {
        repo: dir.path().join("r.git"),
        refs: vec![RefChange {
            old: "0".repeat(40),
            new: "1".repeat(40),
            name: "refs/heads/feature/1".into(),
        }],
        all_refs: false,
    };
    let names = |daemon: &super::Daemon, notification: &Notification| -> Vec<String> {
        daemon
            .matching_mirrors(notification)
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(names(&daemon, &notification), ["all"]);
    notification.all_refs = true;
    assert_eq!(names(&daemon, &notification), ["all", "main-only"]);
}

// Operations: silent mode and pause.

#[tokio::test(start_paused = true)]
async fn a_paused_mirror_holds_its_updates_and_resume_runs_them_at_once() {
    let mut h = Harness::start(&[("a", "ra.git", ""), ("b", "rb.git", "")], 2).await;
    h.push("ra.git").await;
    h.next_start().await.finish();
    let pause = Request::Pause {
        target: SyncTarget::Mirrors(vec!["a".into()]),
    };
    assert_eq!(
        h.ask(pause).await,
        Response::Paused {
            mirrors: vec!["a".into()],
            silent: false
        }
    );
    h.push("ra.git").await;
    let results = h.sync("a", true).await;
    assert_eq!(results[0].update_status, SyncStatus::Paused);
    h.advance(WINDOW * 3).await;
    h.assert_no_start().await;
    let status = h.status("a").await;
    assert!(status.paused && !status.silent, "{status:?}");
    assert_eq!(status.update_status, UpdateStatus::Scheduled);
    assert_eq!(status.next_update_at, None);
    // Another mirror is not held.
    h.push("rb.git").await;
    h.next_start().await.finish();

    let resume = Request::Resume {
        target: SyncTarget::All,
    };
    assert_eq!(
        h.ask(resume).await,
        Response::Resumed {
            mirrors: vec!["a".into()],
            started: vec!["a".into()],
            silent: false
        }
    );
    let a = h.next_start().await;
    assert_eq!((a.name.as_str(), a.trigger), ("a", Trigger::Forced));
    a.finish();
    h.settle().await;
    assert!(!h.status("a").await.paused);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn pause_and_what_is_pending_survive_a_restart() {
    let mut h = Harness::start(&[("a", "ra.git", "")], 1).await;
    h.push("ra.git").await;
    h.next_start().await.finish();
    let pause = Request::Pause {
        target: SyncTarget::All,
    };
    assert!(matches!(h.ask(pause).await, Response::Paused { .. }));
    h.push("ra.git").await;
    h.settle().await;
    let dir = {
        let Harness {
            dir,
            shutdown,
            daemon,
            ..
        } = h;
        let _ = shutdown.map(|s| s.send(()));
        daemon.await.expect("ends").expect("stops");
        dir
    };
    let mut h = Harness::start_in(dir, &[("a", "ra.git", "")], 1, |_| {}).await;
    h.advance(WINDOW * 3).await;
    h.assert_no_start().await;
    assert_eq!(h.status("a").await.update_status, UpdateStatus::Scheduled);
    let resume = Request::Resume {
        target: SyncTarget::Mirrors(vec!["a".into()]),
    };
    assert!(matches!(h.ask(resume).await, Response::Resumed { .. }));
    let a = h.next_start().await;
    assert_eq!(a.trigger, Trigger::Startup);
    a.finish();
    h.settle().await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn unknown_names_are_refused_and_nothing_is_paused() {
    let mut h = Harness::start(&[("a", "ra.git", "")], 1).await;
    let pause = Request::Pause {
        target: SyncTarget::Mirrors(vec!["a".into(), "nope".into()]),
    };
    assert!(matches!(
        h.ask(pause).await,
        Response::Error {
            kind: crate::protocol::ErrorKind::NotFound,
            ..
        }
    ));
    h.push("ra.git").await;
    h.next_start().await.finish();
    h.settle().await;
    h.stop().await;
}
