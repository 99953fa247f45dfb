//! The daemon: wires the control socket, the scheduler, the durable queue and the update jobs
//! together, and owns shutdown.
//!
//! One task, the loop of [`run`], owns every mirror's [`scheduler::MirrorSchedule`] and `select!`s on
//! control requests, finished jobs, signals and the next due time, after mini-redis's server
//! loop. Jobs run as their own tasks, bounded by a semaphore of `max_parallel_pushes` permits
//! (tokio's semaphore is fair, so mirrors start in the order they became due and one slow
//! remote holds one permit, never the others'). Anything that blocks (fsync, reading many
//! state files, opening repositories) happens off the loop.
//!
//! The loop's work is spread by what starts it:
//! - [`handlers`]: one module per control request (notify, sync, status, reload, pause and
//!   resume) and per signal, each answering through the request's `reply`;
//! - [`alerts`]: the task that announces failure streaks beside the loop;
//! - [`driver`]: the scheduler's driver: the heap of due times, starting due updates behind
//!   the permits, and ending them (one follow-up, retries, compaction of the queue);
//! - [`resume`]: what start-up and reload pick up (pending work, the spool, changed refs);
//! - [`mirrors`]: the table of tracked mirrors, matched by repository and name;
//! - [`scheduler`]: the pure per-mirror state machine they all drive;
//! - [`control`]: the socket (bound before the runtime starts, then served) and its peer
//!   checks; [`provision`]: the demonstration repositories of `create = true` mirrors;
//!   `systemd`: the `READY=1` and watchdog messages of a `Type=notify` unit;
//! - `metrics`: the Prometheus series the loop records and the `metrics_listen` HTTP
//!   listener (`/metrics`, `/healthz`), which asks the loop through a channel, never
//!   running on it.
//!
//! Invariants: a notification is answered only once the queue has it on disk; at most one job
//! per mirror is in flight; a mirror that was pending, running or retrying when the daemon
//! stopped is scheduled again at start, and so is every mirror whose local refs changed since
//! its last successful update.

mod alerts;
pub mod control;
mod driver;
mod handlers;
mod metrics;
mod mirrors;
pub mod provision;
mod resume;
pub mod scheduler;
mod systemd;
mod templates;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, MirrorName};
use crate::error::chain;
use crate::store::paused::PausedStore;
use crate::store::queue::{Pending, Queue, QueueError};
use crate::store::state::{StateError, StateStore};
use crate::store::{self, spool};
use control::Incoming;
use driver::Done;
pub(crate) use driver::{GitUpdater, Updater};
use mirrors::Tracked;

/// How long running updates may go on after SIGTERM before their git children are killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cannot use the control socket")]
    Socket(#[source] std::io::Error),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Bind(#[from] control::ControlError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Metrics(#[from] metrics::ListenError),
}

/// Events from tasks the loop spawned.
enum Event {
    Done(Done),
    /// The start-up scan found these mirrors' local refs changed since their last success.
    Changed(Vec<MirrorName>),
    /// A queue append for these notified (or spooled) mirrors ended: they are marked now, after
    /// the hook got its answer, so that an update's git processes do not compete with it.
    Appended(Vec<MirrorName>),
}

/// Everything the daemon's loop owns.
struct Daemon {
    config: Arc<Config>,
    store: StateStore,
    queue: Queue,
    mirrors: HashMap<MirrorName, Tracked>,
    /// Canonical repository path -> names of the mirrors of that repository.
    by_repo: HashMap<PathBuf, Vec<MirrorName>>,
    /// Due times; stale entries are skipped when popped.
    due: BinaryHeap<Reverse<(Instant, MirrorName)>>,
    permits: Arc<Semaphore>,
    permits_total: usize,
    /// What runs an update: the mirror engine, or a test's stand-in.
    updater: Arc<dyn Updater>,
    events: mpsc::UnboundedSender<Event>,
    /// Cancelled after the shutdown grace: kills running git children.
    kill: CancellationToken,
    running: usize,
    /// Queue appends whose mirrors are not marked yet ([`Event::Appended`] pending): the queue
    /// must not be compacted meanwhile, or it could drop what they hold.
    unmarked_appends: usize,
    // Operations: silent mode and pause.
    /// The mirrors `pushmirror pause` paused (names, also of mirrors a reload removed, so
    /// that one added back is still paused), as on disk in `paused_store`.
    paused: BTreeSet<String>,
    paused_store: PausedStore,
    /// Bumped at each change of `paused`, so that writes land in order.
    paused_generation: u64,
    // Operations: alerts.
    /// The alerts task: told how each update ended, it announces streaks beside the loop.
    alerts: alerts::Alerts,
    // Metrics (issue 10).
    /// The series the loop records, and the `metrics_listen` listener serving them.
    exporter: metrics::Exporter,
}

/// Runs `pushmirror daemon` on `config` until SIGTERM or SIGINT.
///
/// The socket is bound before the runtime starts: a second daemon stops here, and the umask
/// that gives the socket its mode is set while no other thread runs.
pub fn main(config: Config) -> Result<(), DaemonError> {
    let listener = control::bind(&config.daemon.socket, config.daemon.socket_group.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    runtime.block_on(async {
        // The handlers are in place before the socket is served: a SIGTERM as soon as the
        // daemon answers is a graceful stop, never the default action.
        let shutdown = shutdown_signal();
        run(config, listener, shutdown).await
    })
}

/// Runs the daemon until `shutdown` completes, then stops gracefully.
///
/// `listener` is the control socket, bound by the caller (see `control::bind`), so that a
/// second daemon fails before anything else happens.
pub async fn run(
    config: Config,
    listener: std::os::unix::net::UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    run_with(config, listener, shutdown, Arc::new(GitUpdater)).await
}

/// Runs the daemon as [`run`] does, with `updater` running the updates.
pub(crate) async fn run_with(
    config: Config,
    listener: std::os::unix::net::UnixListener,
    shutdown: impl Future<Output = ()>,
    updater: Arc<dyn Updater>,
) -> Result<(), DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};

    let (mut daemon, pending, mut event_rx) = Daemon::open(config, updater)?;
    let config = daemon.config.clone();
    let mut probes = daemon.exporter.take_probes();
    daemon.exporter.listen(config.daemon.metrics_listen)?;
    daemon.install_mirrors(&config);
    daemon.resume(pending).await;
    // Fleet: a mirror whose repository has no hook silently stops; say so at every start.
    let hooks_of = config.clone();
    tokio::task::spawn_blocking(move || {
        for forgotten in crate::hook::install::forgotten_hooks(&hooks_of.mirrors) {
            warn!(repo = %forgotten.repo.display(), "{forgotten}");
        }
    });

    // Before the socket is served: a signal as soon as the daemon answers is handled, not
    // the default action (which ends the process).
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut user1 = signal(SignalKind::user_defined1()).map_err(DaemonError::Signals)?;
    listener
        .set_nonblocking(true)
        .map_err(DaemonError::Socket)?;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(DaemonError::Socket)?;
    let (request_tx, mut requests) = mpsc::channel::<Incoming>(256);
    let stop_accepting = CancellationToken::new();
    let server = tokio::spawn(control::serve(
        listener,
        limits(config.daemon.socket_group.as_deref()),
        request_tx,
        stop_accepting.clone(),
    ));

    tokio::pin!(shutdown);
    info!(
        mirrors = daemon.mirrors.len(),
        socket = %config.daemon.socket.display(),
        pid = std::process::id(),
        silent = config.daemon.silent,
        paused = daemon.paused.len(),
        "daemon ready"
    );
    if let Err(e) = systemd::notify("READY=1") {
        warn!(cause = %e, "cannot tell systemd that the daemon is ready");
    }
    // Under a unit with `WatchdogSec=`, the loop itself proves it is alive: a wedged loop
    // misses its beats and systemd restarts the daemon.
    let mut watchdog = systemd::watchdog_interval().map(tokio::time::interval);

    loop {
        daemon.dispatch_due(Instant::now());
        let next = daemon.next_due();
        // Biased: what spawned tasks reported is handled before the next request, so that an
        // answer reflects every event already reported (and tests can rely on it).
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(event) = event_rx.recv() => daemon.on_event(event),
            Some(incoming) = requests.recv() => daemon.handle(incoming),
            Some(probe) = probes.recv() => daemon.answer_probe(probe),
            _ = hangup.recv() => daemon.on_hangup(),
            _ = user1.recv() => daemon.on_user1(),
            () = sleep_until_opt(next) => {}
            () = watchdog_tick(watchdog.as_mut()) => {
                if let Err(e) = systemd::notify("WATCHDOG=1") {
                    warn!(cause = %e, "cannot send the watchdog keep-alive to systemd");
                }
            }
        }
    }

    info!(running = daemon.running, "shutting down");
    stop_accepting.cancel();
    daemon.exporter.stop();
    let _ = server.await;
    daemon.drain(&mut event_rx).await;
    daemon.queue.compact(daemon.pending()).await?;
    info!("stopped");
    Ok(())
}

impl Daemon {
    /// Opens the state store, the spool and the queue of `config`; returns the daemon with no
    /// mirror tracked yet, what the queue held, and the receiver of its events.
    fn open(
        config: Config,
        updater: Arc<dyn Updater>,
    ) -> Result<(Daemon, Pending, mpsc::UnboundedReceiver<Event>), DaemonError> {
        let store = StateStore::open(&config.daemon.state_dir)?;
        if let Err(e) = spool::prepare(&config.daemon.state_dir) {
            warn!(error = %chain(&e), "cannot prepare the spool directory");
        }
        sweep(&config.daemon.state_dir);
        provision(&config);
        let (queue, pending) = Queue::open(&config.daemon.state_dir)?;
        let (events, event_rx) = mpsc::unbounded_channel();
        let permits_total = permit_count(config.daemon.max_parallel_pushes);
        let paused_store = PausedStore::new(&config.daemon.state_dir);
        let paused = load_paused(&paused_store);
        let alerts = alerts::Alerts::start(&config, store.clone());
        let daemon = Daemon {
            config: Arc::new(config),
            store,
            queue,
            mirrors: HashMap::new(),
            by_repo: HashMap::new(),
            due: BinaryHeap::new(),
            permits: Arc::new(Semaphore::new(permits_total)),
            permits_total,
            updater,
            events,
            kill: CancellationToken::new(),
            running: 0,
            unmarked_appends: 0,
            paused,
            paused_store,
            paused_generation: 0,
            alerts,
            exporter: metrics::Exporter::new(),
        };
        Ok((daemon, pending, event_rx))
    }

    /// Handles what a spawned task reports.
    fn on_event(&mut self, event: Event) {
        match event {
            Event::Done(done) => self.finish(done),
            Event::Changed(names) => self.on_changed(names),
            Event::Appended(names) => {
                self.unmarked_appends = self.unmarked_appends.saturating_sub(1);
                self.mark_notified(names);
            }
        }
    }

    /// Lets running jobs end, and acknowledged notifications get marked, before the last
    /// snapshot; running jobs get [`SHUTDOWN_GRACE`], then their git children are killed.
    async fn drain(&mut self, event_rx: &mut mpsc::UnboundedReceiver<Event>) {
        let grace = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(grace);
        while self.running > 0 || self.unmarked_appends > 0 {
            tokio::select! {
                Some(event) = event_rx.recv() => self.on_event(event),
                () = &mut grace, if !self.kill.is_cancelled() => {
                    warn!(running = self.running, "grace period over; killing running updates");
                    self.kill.cancel();
                }
            }
        }
    }
}

/// Returns the mirrors paused at the last stop; a file that cannot be read is reported and
/// nothing is paused (it was written atomically, so this takes a damaged disk).
fn load_paused(store: &PausedStore) -> BTreeSet<String> {
    match store.load() {
        Ok((paused, aside)) => {
            if let Some(aside) = aside {
                error!(moved_to = %aside.moved_to.display(), reason = %aside.reason,
                    "the paused mirrors' file is corrupt and was set aside; no mirror is paused");
            }
            if !paused.is_empty() {
                info!(
                    mirrors = paused.len(),
                    "mirrors paused at the last stop stay paused"
                );
            }
            paused
        }
        Err(e) => {
            error!(error = %chain(&e), "cannot read the paused mirrors; no mirror is paused");
            BTreeSet::new()
        }
    }
}

/// Returns how many updates may run at once for `max_parallel_pushes`. Validation allows 1 to
/// 1024; the clamp only keeps a value that slipped past it from panicking the semaphore, which
/// holds at most `Semaphore::MAX_PERMITS` and would never hand out a permit at zero.
fn permit_count(max_parallel_pushes: usize) -> usize {
    max_parallel_pushes.clamp(1, Semaphore::MAX_PERMITS)
}

/// Creates what `create = true` mirrors lack; a failure is logged and left to the update to
/// report.
fn provision(config: &Config) {
    for mirror in config.mirrors.iter().filter(|m| m.create) {
        if let Err(e) = provision::ensure(mirror, &config.path) {
            error!(mirror = %mirror.name, error = %chain(&e), "cannot create the repositories");
        }
    }
}

/// Removes what atomic writes interrupted by a crash left in the state directory.
fn sweep(state_dir: &Path) {
    let dirs = [
        state_dir.to_owned(),
        state_dir.join(store::state::MIRRORS_DIR),
        spool::spool_dir(state_dir),
        state_dir.join(store::alerts::ALERTS_DIR),
    ];
    let removed: usize = dirs.iter().map(|dir| store::sweep_temporaries(dir)).sum();
    if removed > 0 {
        info!(removed, "removed temporary files of interrupted writes");
    }
}

/// Returns the socket limits, allowing members of `socket_group` (checked at bind time).
fn limits(socket_group: Option<&str>) -> control::Limits {
    let mut limits = control::Limits::default();
    if let Some(gid) = socket_group.and_then(|group| control::group_id(group).ok()) {
        limits.allowed_gid = Some(gid);
    }
    limits
}

/// Completes at the next tick of `watchdog`; never when there is none.
async fn watchdog_tick(watchdog: Option<&mut tokio::time::Interval>) {
    match watchdog {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Installs handlers for SIGTERM and SIGINT now (inside the runtime) and returns a future
/// that completes on either.
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            // Without handlers the default action (exit) still applies.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
