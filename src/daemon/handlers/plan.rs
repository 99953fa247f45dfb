//! `plan`: dry runs of the selected mirrors' next updates, on the configuration the daemon
//! runs on (so `pushmirror plan` and `verify` work while the file is mid-edit, and show what
//! the daemon would really do). Nothing here touches a schedule, a status or the queue.
//!
//! The remotes are read off the loop, at most `max_parallel_pushes` at once (a permit pool of
//! the request's own, so a dry run never delays an update and a `verify --all` over many
//! mirrors does not open a connection to each at once).

use std::sync::Arc;

use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use super::super::Daemon;
use crate::config::Mirror;
use crate::mirror::preview;
use crate::protocol::{ErrorKind, MirrorPlan, Response, SyncTarget};

impl Daemon {
    pub(super) fn plan(&self, target: SyncTarget, reply: oneshot::Sender<Response>) {
        let mirrors = match self.plan_target(&target) {
            Ok(mirrors) => mirrors,
            Err(response) => {
                let _ = reply.send(response);
                return;
            }
        };
        let permits = Arc::new(Semaphore::new(
            self.config.daemon.max_parallel_pushes.clamp(1, 1024),
        ));
        let git_config = self.config.daemon.git_config;
        let cancel = self.kill.child_token();
        // A dry run reads the remote: not while nothing may talk to it (silent mode, pause).
        let held: Vec<Option<String>> = mirrors
            .iter()
            .map(|m| self.held_reason(m.name.as_str()))
            .collect();
        let metrics = self.exporter.metrics.clone();
        tokio::spawn(async move {
            let mut previews = JoinSet::new();
            for (index, mirror) in mirrors.iter().enumerate() {
                let (mirror, permits) = (mirror.clone(), permits.clone());
                if let Some(reason) = held[index].clone() {
                    previews.spawn(async move {
                        let mut plan = MirrorPlan::from_preview(&mirror, Ok(Default::default()));
                        plan.error = Some(reason);
                        (index, plan)
                    });
                    continue;
                }
                let ctx = preview::context(git_config, cancel.clone());
                previews.spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let result = preview::preview(&mirror, &ctx).await;
                    (index, MirrorPlan::from_preview(&mirror, result))
                });
            }
            let mut plans: Vec<Option<MirrorPlan>> = vec![None; mirrors.len()];
            while let Some(joined) = previews.join_next().await {
                if let Ok((index, plan)) = joined {
                    plans[index] = Some(plan);
                }
            }
            let plans = plans
                .into_iter()
                .zip(&mirrors)
                .map(|(plan, mirror)| {
                    plan.unwrap_or_else(|| {
                        let panicked = Err(crate::mirror::UpdateError::Panicked);
                        MirrorPlan::from_preview(mirror, panicked)
                    })
                })
                .collect::<Vec<MirrorPlan>>();
            // The drift metric: what this plan (or `verify`) found, per mirror read.
            let now = std::time::SystemTime::now();
            for (plan, mirror) in plans.iter().zip(&mirrors) {
                if let Some(differing) = plan.differing() {
                    metrics.drift(&mirror.name, differing, now);
                }
            }
            let _ = reply.send(Response::Planned { mirrors: plans });
        });
    }

    /// Returns why `name`'s remote may not be read now, if it may not.
    fn held_reason(&self, name: &str) -> Option<String> {
        if self.config.daemon.silent {
            Some(
                "not read: silent mode is on ([daemon] silent = true), nothing talks to remotes"
                    .into(),
            )
        } else if self.is_paused(name) {
            Some(format!(
                "not read: the mirror is paused, nothing talks to its remote (pushmirror resume {name})"
            ))
        } else {
            None
        }
    }

    /// Returns the mirrors a plan request selects: named ones whether enabled or not (a plan
    /// is how an operator looks before enabling one), else the enabled ones.
    fn plan_target(&self, target: &SyncTarget) -> Result<Vec<Arc<Mirror>>, Response> {
        let names = match target {
            SyncTarget::Mirrors(names) => {
                return names
                    .iter()
                    .map(|name| match self.mirrors.get(name.as_str()) {
                        Some(t) => Ok(t.mirror.clone()),
                        None => Err(Response::Error {
                            kind: ErrorKind::NotFound,
                            message: format!("no mirror named {name:?}"),
                        }),
                    })
                    .collect();
            }
            other => self.resolve_target(other)?,
        };
        Ok(names
            .iter()
            .filter_map(|name| self.mirrors.get(name).map(|t| t.mirror.clone()))
            .collect())
    }
}
