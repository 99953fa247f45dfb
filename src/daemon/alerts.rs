//! Alerts, once per failure streak (SPEC.md section 11): when a mirror enters `failed` (after
//! its retries: `to_retry` is not announced), one `mirror_failed` event; when it next
//! finishes, one `mirror_recovered`. Failures in between send nothing.
//!
//! One task of its own, beside the loop: the loop only sends it how each update ended
//! ([`Alerts::ended`], never waiting), and it keeps the streaks, writes them with the
//! undelivered events (`store::alerts`, one atomic file per mirror), and delivers them, each
//! delivery a task of its own with bounded retries and backoff, so a dead or slow receiver
//! never delays an update or a `sync --wait`. A mirror's events are delivered in order, one
//! at a time; different mirrors' in parallel.
//!
//! Crash safety comes from the state files: at start, every configured mirror's stored
//! `update_status` is compared with its streak, so a failure recorded just before a crash
//! is announced after the restart (and one announced before it is not announced again), and
//! undelivered events are delivered. A delivery cut short by a crash may be made twice;
//! none is lost.
//!
//! Receivers get exactly [`AlertEvent`]: the URL masked, the error as the status shows it
//! (credentials masked). The webhook's bearer token is read from `webhook_token_file` at
//! each delivery (the `password_file` rules) and only ever put in the `Authorization`
//! header; the command runs with an empty environment but `PATH`, the event on its stdin.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::{AlertsConfig, Config, Mirror, MirrorName};
use crate::error::chain;
use crate::mirror::credentials::too_open;
use crate::store::alerts::{AlertEvent, AlertKind, AlertStore, MirrorAlerts, PendingAlert};
use crate::store::state::{MirrorState, StateStore, Timestamp, UpdateStatus};

/// Attempts of one delivery before it is given up (and logged).
const ATTEMPTS: u32 = 5;
/// The wait before the second attempt; doubled before each further one.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How long one webhook request may take, connection included.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the alert command may run before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Sink {
    Webhook,
    Command,
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sink::Webhook => "webhook",
            Sink::Command => "command",
        })
    }
}

enum Message {
    /// An update of this mirror ended with this state.
    Ended(Arc<Mirror>, Box<MirrorState>),
    /// A reload: the new `[alerts]`.
    Configure(Option<AlertsConfig>),
    /// A delivery ended (delivered, or given up after its attempts).
    Delivered {
        mirror: MirrorName,
        id: u64,
        sink: Sink,
    },
}

/// The handle the daemon's loop holds.
pub(super) struct Alerts {
    tx: mpsc::UnboundedSender<Message>,
}

impl Alerts {
    /// Starts the alerts task for `config`: it first reconciles every mirror's streak with
    /// its stored state, then delivers what is undelivered.
    pub(super) fn start(config: &Config, states: StateStore) -> Alerts {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Task {
            store: None,
            states,
            config: config.alerts.clone(),
            files: HashMap::new(),
            in_flight: HashSet::new(),
            tx: tx.clone(),
            client: None,
        };
        let mirrors: Vec<Arc<Mirror>> = config.mirrors.iter().cloned().map(Arc::new).collect();
        let state_dir = config.daemon.state_dir.clone();
        tokio::spawn(task.run(rx, state_dir, mirrors));
        Alerts { tx }
    }

    /// Tells the task how an update of `mirror` ended.
    pub(super) fn ended(&self, mirror: &Arc<Mirror>, state: &MirrorState) {
        let _ = self
            .tx
            .send(Message::Ended(mirror.clone(), Box::new(state.clone())));
    }

    /// Gives the task the `[alerts]` of a reloaded configuration.
    pub(super) fn configure(&self, config: &Config) {
        let _ = self.tx.send(Message::Configure(config.alerts.clone()));
    }
}

struct Task {
    /// `None` when the alerts directory cannot be made: streaks are then kept in memory.
    store: Option<AlertStore>,
    states: StateStore,
    config: Option<AlertsConfig>,
    /// The alert files read so far (this task is their only writer).
    files: HashMap<MirrorName, MirrorAlerts>,
    /// Mirrors and receivers with a delivery running: the next event waits for it.
    in_flight: HashSet<(MirrorName, Sink)>,
    tx: mpsc::UnboundedSender<Message>,
    /// Made at the first webhook delivery.
    client: Option<reqwest::Client>,
}

impl Task {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Message>,
        state_dir: std::path::PathBuf,
        mirrors: Vec<Arc<Mirror>>,
    ) {
        self.store = match blocking(move || AlertStore::open(&state_dir)).await {
            Some(Ok(store)) => Some(store),
            Some(Err(e)) => {
                error!(error = %chain(&e), "cannot keep alert streaks on disk");
                None
            }
            None => None,
        };
        self.reconcile(mirrors).await;
        while let Some(message) = rx.recv().await {
            match message {
                Message::Ended(mirror, state) => self.ended(&mirror, &state).await,
                Message::Configure(config) => {
                    self.config = config;
                    self.deliver_all();
                }
                Message::Delivered { mirror, id, sink } => {
                    self.delivered(&mirror, id, sink).await;
                }
            }
        }
    }

    /// At start: announces what the stored states say and no streak records (a crash came
    /// between the two), and delivers what was undelivered.
    async fn reconcile(&mut self, mirrors: Vec<Arc<Mirror>>) {
        let states = self.states.clone();
        let store = self.store.clone();
        let loaded = blocking(move || {
            let mut loaded = Vec::new();
            for mirror in mirrors {
                let state = states
                    .load(&mirror.name)
                    .map(|(s, _)| s)
                    .unwrap_or_default();
                loaded.push((mirror, state));
            }
            let mut files = HashMap::new();
            if let Some(store) = &store {
                for name in store.names() {
                    match store.load(&name) {
                        Ok((file, aside)) => {
                            if let Some(aside) = aside {
                                warn!(mirror = %name, "{aside}");
                            }
                            files.insert(name, file);
                        }
                        Err(e) => warn!(mirror = %name, error = %chain(&e), "cannot read alerts"),
                    }
                }
            }
            (loaded, files)
        })
        .await;
        let Some((loaded, files)) = loaded else {
            return;
        };
        self.files = files;
        for (mirror, state) in loaded {
            self.ended(&mirror, &state).await;
        }
        info!(
            mirrors = self.files.len(),
            "alert streaks checked against the mirrors' states"
        );
        self.deliver_all();
    }

    /// Applies the end of an update to the mirror's streak; records and delivers the event
    /// it causes, if any.
    async fn ended(&mut self, mirror: &Mirror, state: &MirrorState) {
        let file = self.files.entry(mirror.name.clone()).or_default();
        let Some(event) = transition(file, mirror, state) else {
            return;
        };
        let (webhook, command) = match &self.config {
            Some(c) => (c.webhook_url.is_some(), !c.command.is_empty()),
            None => (false, false),
        };
        if webhook || command {
            let id = file.next_id;
            file.next_id += 1;
            file.pending.push(PendingAlert {
                id,
                event: event.clone(),
                webhook,
                command,
            });
        }
        info!(mirror = %mirror.name, event = ?event.event, "alert");
        let snapshot = file.clone();
        self.save(&mirror.name, snapshot).await;
        self.deliver_next(&mirror.name);
    }

    async fn delivered(&mut self, name: &MirrorName, id: u64, sink: Sink) {
        self.in_flight.remove(&(name.clone(), sink));
        let Some(file) = self.files.get_mut(name) else {
            return;
        };
        if let Some(pending) = file.pending.iter_mut().find(|p| p.id == id) {
            match sink {
                Sink::Webhook => pending.webhook = false,
                Sink::Command => pending.command = false,
            }
        }
        file.pending.retain(|p| p.webhook || p.command);
        let snapshot = file.clone();
        self.save(name, snapshot).await;
        self.deliver_next(name);
    }

    async fn save(&self, name: &MirrorName, file: MirrorAlerts) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let name = name.clone();
        let saved = blocking(move || store.save(&name, &file).map_err(|e| (name, e))).await;
        if let Some(Err((name, e))) = saved {
            warn!(mirror = %name, error = %chain(&e), "cannot record the alert streak");
        }
    }

    fn deliver_all(&mut self) {
        let names: Vec<MirrorName> = self.files.keys().cloned().collect();
        for name in names {
            self.deliver_next(&name);
        }
    }

    /// Starts, for each receiver, the delivery of `name`'s oldest event it has not had,
    /// unless a delivery of `name` to that receiver runs: each receiver gets a mirror's events
    /// in order, and a dead webhook never holds up the command (nor the reverse).
    fn deliver_next(&mut self, name: &MirrorName) {
        for sink in [Sink::Webhook, Sink::Command] {
            if self.in_flight.contains(&(name.clone(), sink)) {
                continue;
            }
            let Some(pending) = self
                .files
                .get(name)
                .and_then(|f| {
                    f.pending.iter().find(|p| match sink {
                        Sink::Webhook => p.webhook,
                        Sink::Command => p.command,
                    })
                })
                .cloned()
            else {
                continue;
            };
            let target = match (&self.config, sink) {
                (Some(c), Sink::Webhook) => c.webhook_url.clone().map(|url| Target::Webhook {
                    url,
                    token_file: c.webhook_token_file.clone(),
                }),
                (Some(c), Sink::Command) if !c.command.is_empty() => {
                    Some(Target::Command(c.command.clone()))
                }
                _ => None,
            };
            let tx = self.tx.clone();
            let (mirror, id) = (name.clone(), pending.id);
            self.in_flight.insert((name.clone(), sink));
            let Some(target) = target else {
                // The receiver is no longer configured (a reload): nothing to deliver to.
                let _ = tx.send(Message::Delivered { mirror, id, sink });
                continue;
            };
            if matches!(target, Target::Webhook { .. }) && self.client.is_none() {
                self.client = webhook_client();
            }
            let client = self.client.clone();
            tokio::spawn(async move {
                deliver(&mirror, &pending.event, &target, client.as_ref()).await;
                let _ = tx.send(Message::Delivered { mirror, id, sink });
            });
        }
    }
}

/// Returns the event the end of an update causes, and moves the streak in `file`.
fn transition(file: &mut MirrorAlerts, mirror: &Mirror, state: &MirrorState) -> Option<AlertEvent> {
    let at = state.last_update_at.unwrap_or_else(Timestamp::now);
    let event = |kind, error, failing_since| AlertEvent {
        event: kind,
        mirror: mirror.name.to_string(),
        repo: mirror.repo.display().to_string(),
        url: mirror.display_url(),
        update_status: state.update_status,
        error,
        failing_since,
        at,
    };
    match state.update_status {
        UpdateStatus::Failed if !file.failing => {
            let since = failing_since(state).unwrap_or(at);
            file.failing = true;
            file.streak_since = Some(since);
            Some(event(
                AlertKind::MirrorFailed,
                state
                    .last_error
                    .as_deref()
                    .map(crate::mirror::url::mask_credentials),
                Some(since),
            ))
        }
        UpdateStatus::Finished if file.failing => {
            let since = file.streak_since.take();
            file.failing = false;
            Some(event(AlertKind::MirrorRecovered, None, since))
        }
        _ => None,
    }
}

/// Returns when the current run of failed attempts began: the end of the oldest attempt
/// after the last success that the history still holds.
fn failing_since(state: &MirrorState) -> Option<Timestamp> {
    let first = state
        .history
        .iter()
        .rev()
        .take_while(|h| h.outcome != UpdateStatus::Finished)
        .last()?;
    Some(
        first
            .started_at
            .saturating_add(Duration::from_millis(first.duration_ms)),
    )
}

/// A receiver, as configured when the delivery starts.
#[derive(Debug, Clone)]
enum Target {
    Webhook {
        url: String,
        token_file: Option<std::path::PathBuf>,
    },
    Command(Vec<String>),
}

fn webhook_client() -> Option<reqwest::Client> {
    match reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .connect_timeout(WEBHOOK_TIMEOUT)
        .user_agent(concat!("pushmirror/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => Some(client),
        Err(e) => {
            error!(error = %chain(&e.without_url()), "cannot make the webhook client");
            None
        }
    }
}

/// Delivers `event` to `target`, retrying with backoff; logs each failed attempt and a
/// delivery given up, with the reason.
async fn deliver(
    mirror: &MirrorName,
    event: &AlertEvent,
    target: &Target,
    client: Option<&reqwest::Client>,
) {
    let sink = match target {
        Target::Webhook { .. } => Sink::Webhook,
        Target::Command(_) => Sink::Command,
    };
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let result = match target {
            Target::Webhook { url, token_file } => match client {
                Some(client) => post(client, url, token_file.as_deref(), event).await,
                None => Err("no HTTP client".into()),
            },
            Target::Command(argv) => run_command(argv, event).await,
        };
        match result {
            Ok(()) => {
                info!(mirror = %mirror, receiver = %sink, event = ?event.event, "alert delivered");
                return;
            }
            Err(reason) if attempt < ATTEMPTS => {
                warn!(mirror = %mirror, receiver = %sink, attempt, reason = %reason,
                    retry_in = ?backoff, "alert delivery failed");
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
            Err(reason) => {
                error!(mirror = %mirror, receiver = %sink, attempts = ATTEMPTS, reason = %reason,
                    "alert not delivered; giving up");
            }
        }
    }
}

/// POSTs `event` as JSON, with the bearer token when one is configured.
async fn post(
    client: &reqwest::Client,
    url: &str,
    token_file: Option<&Path>,
    event: &AlertEvent,
) -> Result<(), String> {
    let mut request = client.post(url).json(event);
    if let Some(path) = token_file {
        let token = read_token(path)?;
        request = request.bearer_auth(token.expose_secret());
    }
    // Without the URL: it may carry credentials of its own.
    let response = request.send().await.map_err(|e| chain(&e.without_url()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {status}"))
    }
}

/// Reads the bearer token under the rules of `password_file`.
fn read_token(path: &Path) -> Result<SecretString, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read webhook_token_file {shown}: {e}"))?;
    if too_open(meta.permissions().mode()) {
        return Err(format!(
            "refusing webhook_token_file {shown}: it is readable by group or others; chmod 600 it"
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read webhook_token_file {shown}: {e}"))?;
    let token = text.trim_end_matches(['\n', '\r']);
    if token.is_empty() {
        return Err(format!("webhook_token_file {shown} is empty"));
    }
    Ok(SecretString::from(token.to_owned()))
}

/// Runs the alert command with `event` on stdin, an empty environment but `PATH`, for at
/// most [`COMMAND_TIMEOUT`].
async fn run_command(argv: &[String], event: &AlertEvent) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("the command is empty")?;
    let json = serde_json::to_vec(event).expect("alert events always serialize");
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its input still ran: not an error.
            let _ = stdin.write_all(&json).await;
            let _ = stdin.write_all(b"\n").await;
        }
        child.wait_with_output().await
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
        Err(_) => Err(format!(
            "{program} did not finish within {COMMAND_TIMEOUT:?}; killed"
        )),
        Ok(Err(e)) => Err(format!("cannot wait for {program}: {e}")),
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let first = stderr.lines().next().unwrap_or("").trim();
            Err(format!("{program} exited with {}: {first}", output.status))
        }
    }
}

/// Runs `work` on the blocking pool; `None` if it panicked.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::state::{Ending, RefCounts, Trigger};
    use std::time::SystemTime;

    fn mirror() -> Mirror {
        let text = "[[mirror]]\nname = \"m\"\nrepo = \"/nonexistent/r.git\"\nurl = \"https://u:sekrit@h.example/x.git\"\n";
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pm.toml");
        std::fs::write(&path, text).expect("write");
        let config = Config::load(&path).expect("loads");
        config.mirrors[0].clone()
    }

    fn failed(state: &mut MirrorState, at: u64, retry: bool) {
        let t = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(at));
        state.start(t);
        state.end(
            t.saturating_add(Duration::from_secs(1)),
            Trigger::Push,
            RefCounts::default(),
            Ending::Failed {
                error: "cannot reach https://u:sekrit@h.example/x.git".into(),
                retry,
                divergent_refs: Vec::new(),
                rejected_refs: Vec::new(),
            },
        );
    }

    #[test]
    fn one_event_per_streak_and_one_recovery() {
        let m = mirror();
        let mut file = MirrorAlerts::default();
        let mut state = MirrorState::default();
        failed(&mut state, 100, true);
        assert_eq!(
            transition(&mut file, &m, &state),
            None,
            "to_retry is not announced"
        );
        failed(&mut state, 200, false);
        let event = transition(&mut file, &m, &state).expect("failed is announced");
        assert_eq!(event.event, AlertKind::MirrorFailed);
        assert_eq!(
            event.failing_since.map(|t| t.rfc3339()).as_deref(),
            Some("1970-01-01T00:01:41.000Z")
        );
        assert_eq!(event.url, "https://*****:*****@h.example/x.git");
        assert!(
            !serde_json::to_string(&event)
                .expect("json")
                .contains("sekrit")
        );
        failed(&mut state, 300, false);
        assert_eq!(transition(&mut file, &m, &state), None, "same streak");
        let t = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(400));
        state.start(t);
        state.end(
            t,
            Trigger::Push,
            RefCounts::default(),
            Ending::Finished { fingerprint: None },
        );
        let event = transition(&mut file, &m, &state).expect("recovered");
        assert_eq!(event.event, AlertKind::MirrorRecovered);
        assert_eq!(event.error, None);
        assert_eq!(transition(&mut file, &m, &state), None);
    }
}
