//! `status`: each mirror's stored state with what only the daemon knows laid over it (an
//! update running, or waiting for its window, and when).

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::super::Daemon;
use super::super::scheduler::Phase;
use crate::config::Mirror;
use crate::protocol::{ErrorKind, MirrorStatus, Response};
use crate::store::state::{MirrorState, Timestamp, UpdateStatus};

impl Daemon {
    /// Answers a status request off the loop: reading thousands of state files takes a while.
    pub(super) fn status(&self, name: Option<String>, reply: oneshot::Sender<Response>) {
        let selected: Vec<(Arc<Mirror>, Phase, bool)> = match &name {
            Some(name) => match self.mirrors.get(name.as_str()) {
                Some(t) => vec![(t.mirror.clone(), t.schedule.phase, self.is_paused(name))],
                None => {
                    let _ = reply.send(Response::Error {
                        kind: ErrorKind::NotFound,
                        message: format!("no mirror named {name:?}"),
                    });
                    return;
                }
            },
            // In configuration order.
            None => self
                .config
                .mirrors
                .iter()
                .filter_map(|m| self.mirrors.get(&m.name))
                .map(|t| {
                    let paused = self.is_paused(t.mirror.name.as_str());
                    (t.mirror.clone(), t.schedule.phase, paused)
                })
                .collect(),
        };
        let (now, wall_now) = (Instant::now(), SystemTime::now());
        let silent = self.config.daemon.silent;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            // Fleet: each repository's hook is looked at once per request.
            let mut hooks = crate::hook::install::HookCache::default();
            let mirrors = selected
                .into_iter()
                .map(|(mirror, phase, paused)| {
                    let state = store
                        .load(&mirror.name)
                        .map(|(state, _)| state)
                        .unwrap_or_default();
                    let held = Held { paused, silent };
                    let mut status = live_status(&mirror, state, phase, held, now, wall_now);
                    status.hook_installed = hooks.runs_pushmirror(&mirror.repo);
                    status
                })
                .collect();
            let _ = reply.send(Response::Status { mirrors });
        });
    }
}

/// Whether a mirror's updates are held (operations: silent mode and pause).
#[derive(Debug, Clone, Copy)]
struct Held {
    paused: bool,
    silent: bool,
}

/// Returns the status of `mirror` from its stored state and its live schedule.
fn live_status(
    mirror: &Mirror,
    mut state: MirrorState,
    phase: Phase,
    held: Held,
    now: Instant,
    wall_now: SystemTime,
) -> MirrorStatus {
    match phase {
        Phase::Waiting { due, retry } => {
            let wait = due.saturating_duration_since(now);
            state.next_update_at = Some(Timestamp(wall_now).saturating_add(wait));
            if !retry && state.update_status != UpdateStatus::Started {
                state.update_status = UpdateStatus::Scheduled;
            }
        }
        Phase::Running { .. } => state.update_status = UpdateStatus::Started,
        Phase::Idle => state.next_update_at = None,
    }
    let on_hold = held.paused || held.silent;
    if on_hold && matches!(phase, Phase::Waiting { .. }) {
        // Pending, but at no known time: it runs when the mirror is released.
        state.next_update_at = None;
    }
    let mut status = MirrorStatus::from_state(mirror, state);
    status.paused = on_hold;
    status.silent = held.silent;
    status
}
