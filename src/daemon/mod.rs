//! The daemon: wires the control socket, the scheduler, the durable queue and the update jobs
//! together, and owns shutdown.
//!
//! One task, [`Daemon::run`], owns every mirror's [`MirrorSchedule`] and `select!`s on control
//! requests, finished jobs, signals and the next due time, after mini-redis's server loop. Jobs
//! run as their own tasks, bounded by a semaphore of `max_parallel_pushes` permits (tokio's
//! semaphore is fair, so mirrors start in the order they became due and one slow remote holds
//! one permit, never the others'). Anything that blocks (fsync, reading many state files,
//! opening repositories) happens off the loop.
//!
//! Invariants: a notification is answered only once the queue has it on disk; at most one job
//! per mirror is in flight; a mirror that was pending, running or retrying when the daemon
//! stopped is scheduled again at start, and so is every mirror whose local refs changed since
//! its last successful update.

pub mod control;
pub mod provision;
pub mod scheduler;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, Mirror};
use crate::daemon::scheduler::{Ended, MirrorSchedule, Phase};
use crate::mirror::job::{self, JobOutcome};
use crate::mirror::local::LocalRepo;
use crate::mirror::refdiff::is_mirrored;
use crate::protocol::{
    ErrorKind, MirrorStatus, Notification, PROTOCOL_VERSION, Request, Response, SyncResult,
    SyncTarget,
};
use crate::store::queue::{Entry, Pending, Queue, QueueError};
use crate::store::spool;
use crate::store::state::{
    Ending, MirrorState, RefCounts, StateError, StateStore, Timestamp, Trigger, UpdateStatus,
};
use control::Incoming;

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
    runtime.block_on(run(config, listener, shutdown_signal()))
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without handlers the default action (exit) still applies.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// What one job sends back when it ends.
struct Done {
    name: String,
    /// The mirror configuration the job ran with (a reload may have replaced it since).
    mirror: Arc<Mirror>,
    outcome: Result<JobOutcome, job::JobError>,
}

/// Events from tasks the loop spawned.
enum Event {
    Done(Done),
    /// The start-up scan found these mirrors' local refs changed since their last success.
    Changed(Vec<String>),
    /// A queue append for these notified (or spooled) mirrors ended: they are marked now, after
    /// the hook got its answer, so that an update's git processes do not compete with it.
    Appended(Vec<String>),
}

/// One mirror as the daemon tracks it.
struct Tracked {
    mirror: Arc<Mirror>,
    schedule: MirrorSchedule,
    /// What the next update is for (a retry is recognised from the schedule).
    next_trigger: Trigger,
    /// `sync --wait` callers of the next update, then of the running one.
    waiting_next: Vec<oneshot::Sender<SyncResult>>,
    waiting_running: Vec<oneshot::Sender<SyncResult>>,
    /// Set by the dispatched job once it holds a permit, before it reads any ref. Until then
    /// a trigger needs no follow-up update: the job will read the new refs anyway.
    reading: Arc<AtomicBool>,
}

impl Tracked {
    /// Returns true if an update was dispatched but has not read anything yet (it waits for
    /// a permit), so that a new trigger can fold into it.
    fn dispatched_unread(&self) -> bool {
        // SeqCst pairs with the job's store: if this reads false, the job's reads of the
        // repository come after this point, hence after the push being notified.
        matches!(self.schedule.phase, Phase::Running { .. }) && !self.reading.load(Ordering::SeqCst)
    }

    fn new(mirror: Arc<Mirror>) -> Tracked {
        let schedule = MirrorSchedule::new(mirror.window(), mirror.retries);
        Tracked {
            mirror,
            schedule,
            next_trigger: Trigger::Push,
            waiting_next: Vec::new(),
            waiting_running: Vec::new(),
            reading: Arc::new(AtomicBool::new(false)),
        }
    }
}

struct Daemon {
    config: Arc<Config>,
    store: StateStore,
    queue: Queue,
    mirrors: HashMap<String, Tracked>,
    /// Canonical repository path -> names of the mirrors of that repository.
    by_repo: HashMap<PathBuf, Vec<String>>,
    /// Due times; stale entries are skipped when popped.
    due: BinaryHeap<Reverse<(Instant, String)>>,
    permits: Arc<Semaphore>,
    permits_total: usize,
    events: mpsc::UnboundedSender<Event>,
    /// Cancelled after the shutdown grace: kills running git children.
    kill: CancellationToken,
    running: usize,
    /// Queue appends whose mirrors are not marked yet ([`Event::Appended`] pending): the queue
    /// must not be compacted meanwhile, or it could drop what they hold.
    unmarked_appends: usize,
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
    use tokio::signal::unix::{SignalKind, signal};

    let store = StateStore::open(&config.daemon.state_dir)?;
    if let Err(e) = spool::prepare(&config.daemon.state_dir) {
        warn!(error = %crate::error::chain(&e), "cannot prepare the spool directory");
    }
    provision(&config);
    let (queue, pending) = Queue::open(&config.daemon.state_dir)?;
    let (events, mut event_rx) = mpsc::unbounded_channel();
    let permits_total = config.daemon.max_parallel_pushes;
    let mut daemon = Daemon {
        config: Arc::new(config),
        store,
        queue,
        mirrors: HashMap::new(),
        by_repo: HashMap::new(),
        due: BinaryHeap::new(),
        permits: Arc::new(Semaphore::new(permits_total)),
        permits_total,
        events,
        kill: CancellationToken::new(),
        running: 0,
        unmarked_appends: 0,
    };
    let config = daemon.config.clone();
    daemon.install_mirrors(&config);
    daemon.resume(pending).await;

    listener
        .set_nonblocking(true)
        .map_err(DaemonError::Socket)?;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(DaemonError::Socket)?;
    let socket_path = daemon.config.daemon.socket.clone();
    let (request_tx, mut requests) = mpsc::channel::<Incoming>(256);
    let stop_accepting = CancellationToken::new();
    let server = tokio::spawn(control::serve(
        listener,
        limits(daemon.config.daemon.socket_group.as_deref()),
        request_tx,
        stop_accepting.clone(),
    ));

    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut user1 = signal(SignalKind::user_defined1()).map_err(DaemonError::Signals)?;
    tokio::pin!(shutdown);
    info!(
        mirrors = daemon.mirrors.len(),
        socket = %socket_path.display(),
        pid = std::process::id(),
        "daemon ready"
    );

    loop {
        daemon.dispatch_due(Instant::now());
        let next = daemon.next_due();
        tokio::select! {
            () = &mut shutdown => break,
            Some(incoming) = requests.recv() => daemon.handle(incoming),
            Some(event) = event_rx.recv() => daemon.on_event(event),
            _ = hangup.recv() => {
                if let Err(message) = daemon.reload() {
                    error!(error = %message, "configuration not reloaded; the old one stays in force");
                }
            }
            _ = user1.recv() => {
                info!("SIGUSR1: forcing an update of every enabled mirror");
                daemon.force_all();
            }
            () = sleep_until_opt(next) => {}
        }
    }

    info!(running = daemon.running, "shutting down");
    stop_accepting.cancel();
    let _ = server.await;
    let grace = tokio::time::sleep(SHUTDOWN_GRACE);
    tokio::pin!(grace);
    // Running jobs end, and acknowledged notifications get marked, before the last snapshot.
    while daemon.running > 0 || daemon.unmarked_appends > 0 {
        tokio::select! {
            Some(event) = event_rx.recv() => daemon.on_event(event),
            () = &mut grace, if !daemon.kill.is_cancelled() => {
                warn!(running = daemon.running, "grace period over; killing running updates");
                daemon.kill.cancel();
            }
        }
    }
    daemon.queue.compact(daemon.pending()).await?;
    info!("stopped");
    Ok(())
}

/// Creates what `create = true` mirrors lack; a failure is logged and left to the update to
/// report.
fn provision(config: &Config) {
    for mirror in config.mirrors.iter().filter(|m| m.create) {
        if let Err(e) = crate::daemon::provision::ensure(mirror, &config.path) {
            error!(mirror = %mirror.name, error = %crate::error::chain(&e), "cannot create the repositories");
        }
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

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    /// Tracks the mirrors of `config`, keeping the schedule of those already tracked.
    fn install_mirrors(&mut self, config: &Config) {
        let mut mirrors = HashMap::new();
        let mut by_repo: HashMap<PathBuf, Vec<String>> = HashMap::new();
        for mirror in &config.mirrors {
            let name = mirror.name.to_string();
            let mirror = Arc::new(mirror.clone());
            let tracked = match self.mirrors.remove(&name) {
                Some(mut old) => {
                    old.schedule.window = mirror.window();
                    old.schedule.retries = mirror.retries;
                    old.mirror = mirror.clone();
                    old
                }
                None => Tracked::new(mirror.clone()),
            };
            by_repo
                .entry(crate::paths::canonical(&mirror.repo))
                .or_default()
                .push(name.clone());
            mirrors.insert(name, tracked);
        }
        for (name, dropped) in self.mirrors.drain() {
            info!(mirror = %name, "mirror removed from the configuration");
            for waiter in dropped
                .waiting_next
                .into_iter()
                .chain(dropped.waiting_running)
            {
                let _ = waiter.send(SyncResult {
                    name: name.clone(),
                    update_status: "removed".into(),
                    last_error: Some("the mirror was removed from the configuration".into()),
                });
            }
        }
        self.mirrors = mirrors;
        self.by_repo = by_repo;
    }

    /// Schedules what was pending when the daemon stopped, takes in the spool, and starts the
    /// scan for mirrors whose local refs changed while nobody watched.
    async fn resume(&mut self, pending: Pending) {
        let now = Instant::now();
        let mut resumed = BTreeSet::new();
        for (name, tracked) in &mut self.mirrors {
            let (mut state, _) = match self.store.load(&tracked.mirror.name) {
                Ok(loaded) => loaded,
                Err(e) => {
                    warn!(mirror = %name, error = %crate::error::chain(&e), "cannot read state");
                    continue;
                }
            };
            let interrupted = matches!(
                state.update_status,
                UpdateStatus::Started | UpdateStatus::Scheduled | UpdateStatus::ToRetry
            );
            if !(interrupted || pending.contains_key(name)) || !tracked.mirror.enabled {
                continue;
            }
            if state.update_status == UpdateStatus::Started {
                // The update was cut short by a stop or a crash: say so until it runs again.
                state.update_status = UpdateStatus::Scheduled;
                if let Err(e) = self.store.save(&tracked.mirror.name, &state) {
                    warn!(mirror = %name, error = %crate::error::chain(&e), "cannot write state");
                }
            }
            tracked.next_trigger = Trigger::Startup;
            if let Some(due) = tracked.schedule.force(now) {
                self.due.push(Reverse((due, name.clone())));
            }
            resumed.insert(name.clone());
        }
        if !resumed.is_empty() {
            info!(
                mirrors = resumed.len(),
                "resuming updates pending at the last stop"
            );
        }
        self.take_spool();
        self.scan_for_changes(resumed);
    }

    /// Compares each enabled mirror's local refs with the fingerprint of its last success, off
    /// the loop; the mirrors that differ come back as [`Event::Changed`].
    fn scan_for_changes(&self, skip: BTreeSet<String>) {
        let mut by_repo: HashMap<PathBuf, Vec<Arc<Mirror>>> = HashMap::new();
        for (name, tracked) in &self.mirrors {
            if tracked.mirror.enabled && !skip.contains(name) {
                by_repo
                    .entry(tracked.mirror.repo.clone())
                    .or_default()
                    .push(tracked.mirror.clone());
            }
        }
        let store = self.store.clone();
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let nothing = crate::mirror::fingerprint(
                &crate::mirror::refdiff::LocalRefs::default(),
                &crate::config::BranchFilter::All,
            );
            let mut changed = Vec::new();
            for (repo, mirrors) in by_repo {
                let local = LocalRepo::open(&repo).and_then(|r| r.refs());
                for mirror in mirrors {
                    let stored = store
                        .load(&mirror.name)
                        .ok()
                        .and_then(|(state, _)| state.fingerprint);
                    let current = local
                        .as_ref()
                        .ok()
                        .map(|refs| crate::mirror::fingerprint(refs, &mirror.branches));
                    // A mirror never synced (unless there is nothing to mirror yet), or whose
                    // repository cannot be read, is updated too: the update records why it
                    // fails.
                    let empty = stored.is_none() && current.as_deref() == Some(nothing.as_str());
                    if !empty && (current.is_none() || stored != current) {
                        changed.push(mirror.name.to_string());
                    }
                }
            }
            let _ = events.send(Event::Changed(changed));
        });
    }

    /// Takes in notifications spooled by hooks while the daemon was down or slow: into the
    /// queue first, then out of the spool.
    fn take_spool(&mut self) {
        let spooled = spool::read_all(&self.config.daemon.state_dir);
        if spooled.is_empty() {
            return;
        }
        let mut names = BTreeSet::new();
        for item in &spooled {
            names.extend(self.matching_mirrors(&item.notification));
        }
        let events = self.events.clone();
        let names: Vec<String> = names.into_iter().collect();
        let durable = self.queue.append(Entry {
            mirrors: names.clone(),
            forced: false,
        });
        self.unmarked_appends += 1;
        tokio::spawn(async move {
            match durable.await {
                Ok(()) => {
                    for item in &spooled {
                        if let Err(e) = spool::remove(item) {
                            // Taken in twice at worst: one more (no-op) update.
                            warn!(error = %crate::error::chain(&e), "cannot remove a spooled notification");
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %crate::error::chain(&e), "cannot take in the spool; will try again")
                }
            }
            let _ = events.send(Event::Appended(names));
        });
    }

    /// Returns the enabled mirrors of the notified repository whose filter admits one of the
    /// changed refs (tags always do).
    fn matching_mirrors(&self, notification: &Notification) -> Vec<String> {
        let repo = crate::paths::canonical(&notification.repo);
        let Some(names) = self.by_repo.get(&repo) else {
            return Vec::new();
        };
        let default_branch = read_default_branch(&repo);
        names
            .iter()
            .filter(|name| {
                self.mirrors.get(*name).is_some_and(|t| {
                    t.mirror.enabled
                        && notification.refs.iter().any(|r| {
                            is_mirrored(&r.name, &t.mirror.branches, default_branch.as_deref())
                        })
                })
            })
            .cloned()
            .collect()
    }

    fn handle(&mut self, incoming: Incoming) {
        let Incoming { request, reply, .. } = incoming;
        match request {
            Request::Ping => {
                let _ = reply.send(Response::Pong {
                    version: PROTOCOL_VERSION,
                    pid: std::process::id(),
                });
            }
            Request::Notify(notification) => self.notify(notification, reply),
            Request::Sync { target, wait } => self.sync(target, wait, reply),
            Request::Status { name } => self.status(name, reply),
            Request::Reload => {
                let response = match self.reload() {
                    Ok(mirrors) => Response::Reloaded { mirrors },
                    Err(message) => Response::Error {
                        kind: ErrorKind::BadConfig,
                        message,
                    },
                };
                let _ = reply.send(response);
            }
        }
    }

    fn notify(&mut self, notification: Notification, reply: oneshot::Sender<Response>) {
        let names = self.matching_mirrors(&notification);
        // Hooks that could not reach the daemon left work in the spool.
        self.take_spool();
        if names.is_empty() {
            let _ = reply.send(Response::Notified { mirrors: names });
            return;
        }
        let durable = self.queue.append(Entry {
            mirrors: names.clone(),
            forced: false,
        });
        self.unmarked_appends += 1;
        let events = self.events.clone();
        tokio::spawn(async move {
            let response = match durable.await {
                Ok(()) => Response::Notified {
                    mirrors: names.clone(),
                },
                Err(e) => Response::Error {
                    kind: ErrorKind::Unavailable,
                    message: crate::error::chain(&e),
                },
            };
            let _ = reply.send(response);
            // Marked even if the append failed: the hook spools too, and an extra update is
            // harmless.
            let _ = events.send(Event::Appended(names));
        });
    }

    /// Marks mirrors notified by a push, once their queue entry was appended.
    fn mark_notified(&mut self, names: Vec<String>) {
        let now = Instant::now();
        for name in names {
            if let Some(tracked) = self.mirrors.get_mut(&name) {
                if tracked.dispatched_unread() {
                    continue;
                }
                if !matches!(tracked.schedule.phase, Phase::Waiting { .. }) {
                    tracked.next_trigger = Trigger::Push;
                }
                if let Some(due) = tracked.schedule.notify(now) {
                    self.due.push(Reverse((due, name)));
                }
            }
        }
    }

    /// Resolves a sync target to mirror names, or the error to answer.
    fn resolve_target(&self, target: &SyncTarget) -> Result<Vec<String>, Response> {
        let not_found = |message: String| Response::Error {
            kind: ErrorKind::NotFound,
            message,
        };
        match target {
            SyncTarget::All => Ok(self
                .config
                .mirrors
                .iter()
                .filter(|m| m.enabled)
                .map(|m| m.name.to_string())
                .collect()),
            SyncTarget::Mirrors(names) => {
                for name in names {
                    match self.mirrors.get(name) {
                        None => return Err(not_found(format!("no mirror named {name:?}"))),
                        Some(t) if !t.mirror.enabled => {
                            return Err(not_found(format!("mirror {name:?} is disabled")));
                        }
                        Some(_) => {}
                    }
                }
                Ok(names.clone())
            }
            SyncTarget::Repo(repo) => {
                let names: Vec<String> = self
                    .by_repo
                    .get(&crate::paths::canonical(repo))
                    .into_iter()
                    .flatten()
                    .filter(|n| self.mirrors.get(*n).is_some_and(|t| t.mirror.enabled))
                    .cloned()
                    .collect();
                if names.is_empty() {
                    return Err(not_found(format!(
                        "no enabled mirror of repository {}",
                        repo.display()
                    )));
                }
                Ok(names)
            }
        }
    }

    fn sync(&mut self, target: SyncTarget, wait: bool, reply: oneshot::Sender<Response>) {
        let names = match self.resolve_target(&target) {
            Ok(names) => names,
            Err(response) => {
                let _ = reply.send(response);
                return;
            }
        };
        let mut waiters = Vec::new();
        for name in &names {
            let (tx, rx) = oneshot::channel();
            if wait {
                waiters.push(rx);
            }
            self.force(name, Trigger::Forced, wait.then_some(tx));
        }
        let durable = self.queue.append(Entry {
            mirrors: names.clone(),
            forced: true,
        });
        tokio::spawn(async move {
            if let Err(e) = durable.await {
                let _ = reply.send(Response::Error {
                    kind: ErrorKind::Unavailable,
                    message: crate::error::chain(&e),
                });
                return;
            }
            let mut results = Vec::new();
            if wait {
                for (name, rx) in names.iter().zip(waiters) {
                    results.push(rx.await.unwrap_or_else(|_| SyncResult {
                        name: name.clone(),
                        update_status: "cancelled".into(),
                        last_error: Some("the daemon stopped before the update ran".into()),
                    }));
                }
            } else {
                results = names
                    .into_iter()
                    .map(|name| SyncResult {
                        name,
                        update_status: UpdateStatus::Scheduled.as_str().into(),
                        last_error: None,
                    })
                    .collect();
            }
            let _ = reply.send(Response::Synced { mirrors: results });
        });
    }

    /// Forces an update of `name`, optionally registering a waiter for its end.
    fn force(&mut self, name: &str, trigger: Trigger, waiter: Option<oneshot::Sender<SyncResult>>) {
        let Some(tracked) = self.mirrors.get_mut(name) else {
            return;
        };
        if tracked.dispatched_unread() {
            tracked.waiting_running.extend(waiter);
            return;
        }
        tracked.next_trigger = trigger;
        tracked.waiting_next.extend(waiter);
        if let Some(due) = tracked.schedule.force(Instant::now()) {
            self.due.push(Reverse((due, name.to_owned())));
        }
    }

    fn force_all(&mut self) {
        let names: Vec<String> = self
            .mirrors
            .iter()
            .filter(|(_, t)| t.mirror.enabled)
            .map(|(n, _)| n.clone())
            .collect();
        for name in &names {
            self.force(name, Trigger::Forced, None);
        }
        let durable = self.queue.append(Entry {
            mirrors: names,
            forced: true,
        });
        tokio::spawn(async move {
            if let Err(e) = durable.await {
                warn!(error = %crate::error::chain(&e), "cannot record the forced updates");
            }
        });
    }

    /// Answers a status request off the loop: reading thousands of state files takes a while.
    fn status(&self, name: Option<String>, reply: oneshot::Sender<Response>) {
        let selected: Vec<&Tracked> = match &name {
            Some(name) => match self.mirrors.get(name) {
                Some(t) => vec![t],
                None => {
                    let _ = reply.send(Response::Error {
                        kind: ErrorKind::NotFound,
                        message: format!("no mirror named {name:?}"),
                    });
                    return;
                }
            },
            None => {
                // In configuration order.
                self.config
                    .mirrors
                    .iter()
                    .filter_map(|m| self.mirrors.get(m.name.as_str()))
                    .collect()
            }
        };
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let overlays: Vec<(Arc<Mirror>, Phase)> = selected
            .iter()
            .map(|t| (t.mirror.clone(), t.schedule.phase))
            .collect();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mirrors = overlays
                .into_iter()
                .map(|(mirror, phase)| {
                    let state = store
                        .load(&mirror.name)
                        .map(|(state, _)| state)
                        .unwrap_or_default();
                    live_status(&mirror, state, phase, now, wall_now)
                })
                .collect();
            let _ = reply.send(Response::Status { mirrors });
        });
    }

    /// Re-reads the configuration file; on error the old configuration stays in force.
    fn reload(&mut self) -> Result<usize, String> {
        let config = Config::load(&self.config.path).map_err(|e| e.to_string())?;
        provision(&config);
        if config.daemon.state_dir != self.config.daemon.state_dir
            || config.daemon.socket != self.config.daemon.socket
        {
            warn!("state_dir and socket changes take effect at the next daemon start");
        }
        let wanted = config.daemon.max_parallel_pushes;
        if wanted > self.permits_total {
            self.permits.add_permits(wanted - self.permits_total);
        } else {
            self.permits.forget_permits(self.permits_total - wanted);
        }
        self.permits_total = wanted;
        let known: BTreeSet<String> = self.mirrors.keys().cloned().collect();
        let config = Arc::new(config);
        self.install_mirrors(&config);
        self.config = config;
        let added: BTreeSet<String> = self
            .mirrors
            .keys()
            .filter(|n| !known.contains(*n))
            .cloned()
            .collect();
        let skip = self
            .mirrors
            .keys()
            .filter(|n| !added.contains(*n))
            .cloned()
            .collect();
        self.scan_for_changes(skip);
        info!(
            mirrors = self.mirrors.len(),
            added = added.len(),
            "configuration reloaded"
        );
        Ok(self.mirrors.len())
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Done(done) => self.finish(done),
            Event::Changed(names) => {
                if !names.is_empty() {
                    info!(
                        mirrors = names.len(),
                        "local refs changed since the last update"
                    );
                }
                for name in names {
                    if self
                        .mirrors
                        .get(&name)
                        .is_some_and(|t| !t.schedule.is_pending())
                    {
                        self.force(&name, Trigger::Startup, None);
                    }
                }
            }
            Event::Appended(names) => {
                self.unmarked_appends = self.unmarked_appends.saturating_sub(1);
                self.mark_notified(names);
            }
        }
    }

    /// Returns the earliest due time still valid.
    fn next_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((due, name))) = self.due.peek() {
            let valid = self
                .mirrors
                .get(name)
                .is_some_and(|t| t.schedule.next_due() == Some(*due));
            if valid {
                return Some(*due);
            }
            self.due.pop();
        }
        None
    }

    /// Starts every update due at `now`.
    fn dispatch_due(&mut self, now: Instant) {
        while let Some(due) = self.next_due() {
            if due > now {
                break;
            }
            let Some(Reverse((_, name))) = self.due.pop() else {
                break;
            };
            self.start(&name, now);
        }
    }

    fn start(&mut self, name: &str, now: Instant) {
        let Some(tracked) = self.mirrors.get_mut(name) else {
            return;
        };
        if !tracked.mirror.enabled {
            // Disabled by a reload while it waited.
            tracked.schedule.cancel();
            return;
        }
        let trigger = if tracked.schedule.is_retry() {
            Trigger::Retry
        } else {
            tracked.next_trigger
        };
        let retries_left = tracked.schedule.retries_left();
        tracked.schedule.start(now);
        tracked.next_trigger = Trigger::Push;
        tracked.waiting_running = std::mem::take(&mut tracked.waiting_next);
        tracked.reading = Arc::new(AtomicBool::new(false));
        let reading = tracked.reading.clone();
        self.running += 1;

        let mirror = tracked.mirror.clone();
        let config = self.config.clone();
        let store = self.store.clone();
        let permits = self.permits.clone();
        let kill = self.kill.child_token();
        let events = self.events.clone();
        let name = name.to_owned();
        let job = {
            let mirror = mirror.clone();
            let store = store.clone();
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                reading.store(true, Ordering::SeqCst);
                job::run(&config, &store, &mirror, trigger, retries_left, kill).await
            })
        };
        // A job that panicked comes back as a JoinError: record it as failed, so that neither
        // the status nor the schedule stays `started`.
        tokio::spawn(async move {
            let outcome = match job.await {
                Ok(outcome) => outcome,
                Err(panic) => {
                    error!(mirror = %mirror.name, error = %panic, "the update panicked");
                    record_panic(&store, &mirror, trigger)
                }
            };
            let _ = events.send(Event::Done(Done {
                name,
                mirror,
                outcome,
            }));
        });
    }

    fn finish(&mut self, done: Done) {
        self.running = self.running.saturating_sub(1);
        let Done {
            name,
            mirror,
            outcome,
        } = done;
        let (ended, result) = match &outcome {
            Ok(JobOutcome::Ran { state, .. }) => (
                match state.update_status {
                    UpdateStatus::Finished => Ended::Finished,
                    UpdateStatus::ToRetry => Ended::Transient,
                    _ => Ended::Permanent,
                },
                SyncResult {
                    name: name.clone(),
                    update_status: state.update_status.as_str().into(),
                    last_error: state.last_error.clone(),
                },
            ),
            Ok(JobOutcome::Busy) => (
                Ended::Transient,
                SyncResult {
                    name: name.clone(),
                    update_status: UpdateStatus::ToRetry.as_str().into(),
                    last_error: Some("another process was updating this mirror".into()),
                },
            ),
            Err(e) => {
                error!(mirror = %mirror.name, error = %crate::error::chain(e), "cannot record the update");
                (
                    Ended::Transient,
                    SyncResult {
                        name: name.clone(),
                        update_status: UpdateStatus::ToRetry.as_str().into(),
                        last_error: Some(crate::error::chain(e)),
                    },
                )
            }
        };
        let Some(tracked) = self.mirrors.get_mut(&name) else {
            return; // removed by a reload meanwhile
        };
        for waiter in tracked.waiting_running.drain(..) {
            let _ = waiter.send(result.clone());
        }
        if let Some(due) = tracked.schedule.end(Instant::now(), ended) {
            self.due.push(Reverse((due, name)));
        }
        if self.running == 0
            && self.unmarked_appends == 0
            && self.mirrors.values().all(|t| !t.schedule.is_pending())
        {
            // Everything is done: the queue can be emptied. Sent now, so that it cannot
            // overtake an entry appended for a later event.
            let compacted = self.queue.compact(Pending::new());
            tokio::spawn(async move {
                if let Err(e) = compacted.await {
                    warn!(error = %crate::error::chain(&e), "cannot compact the queue");
                }
            });
        }
    }

    /// Returns the mirrors with work waiting or in flight, for the queue at shutdown.
    fn pending(&self) -> Pending {
        self.mirrors
            .iter()
            .filter(|(_, t)| t.schedule.is_pending())
            .map(|(name, t)| (name.clone(), t.next_trigger == Trigger::Forced))
            .collect()
    }
}

/// Records a panicked update of `mirror` as failed in its state (a small write, done in
/// place as `job::run` does its own).
fn record_panic(
    store: &StateStore,
    mirror: &Mirror,
    trigger: Trigger,
) -> Result<JobOutcome, job::JobError> {
    let (mut state, _) = store.load(&mirror.name)?;
    state.end(
        Timestamp::now(),
        trigger,
        RefCounts::default(),
        Ending::Failed {
            error: "internal error: the update panicked (see the daemon log)".into(),
            retry: false,
            divergent_refs: Vec::new(),
            rejected_refs: Vec::new(),
        },
    );
    let unsaved = store.save(&mirror.name, &state).err();
    Ok(JobOutcome::Ran {
        state: Box::new(state),
        unsaved,
    })
}

/// Returns the status of `mirror` from its stored state and its live schedule.
fn live_status(
    mirror: &Mirror,
    mut state: MirrorState,
    phase: Phase,
    now: Instant,
    wall_now: SystemTime,
) -> MirrorStatus {
    match phase {
        Phase::Waiting { due, retry } => {
            let wait = due.saturating_duration_since(now);
            state.next_update_at = Some(Timestamp(wall_now + wait));
            if !retry && state.update_status != UpdateStatus::Started {
                state.update_status = UpdateStatus::Scheduled;
            }
        }
        Phase::Running { .. } => state.update_status = UpdateStatus::Started,
        Phase::Idle => state.next_update_at = None,
    }
    MirrorStatus::from_state(mirror, state)
}

/// Returns the target of the repository's `HEAD` (e.g. `refs/heads/main`), read directly.
fn read_default_branch(repo: &Path) -> Option<String> {
    let head = std::fs::read_to_string(repo.join("HEAD")).ok()?;
    head.strip_prefix("ref: ").map(|r| r.trim().to_owned())
}
