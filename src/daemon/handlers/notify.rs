//! `notify`: a push changed refs of a repository. Answered once the queue has the marked
//! mirrors on disk; they are marked for an update only after that, so that an update's git
//! processes do not compete with the hook.

use std::time::SystemTime;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::info;

use super::super::scheduler::Phase;
use super::super::{Daemon, Event};
use crate::config::MirrorName;
use crate::error::chain;
use crate::protocol::{ErrorKind, Notification, Response};
use crate::store::queue::Entry;
use crate::store::state::Trigger;

impl Daemon {
    pub(in crate::daemon) fn notify(
        &mut self,
        notification: Notification,
        reply: oneshot::Sender<Response>,
    ) {
        // Fleet: a repository created after the load gets its templated mirrors first.
        self.adopt_new_repository(&notification.repo);
        self.exporter.metrics.notifications(1);
        let names = self.matching_mirrors(&notification);
        // One line per push taken in, so an operator can tell "the hook never called" from
        // "the daemon ignored it". With `all_refs`, `refs` counts only the sample sent.
        info!(
            repo = %notification.repo.display(),
            refs = notification.refs.len(),
            all_refs = notification.all_refs,
            mirrors = names.len(),
            "notification taken in"
        );
        // Hooks that could not reach the daemon left work in the spool.
        self.take_spool();
        if names.is_empty() {
            let _ = reply.send(Response::Notified {
                mirrors: Vec::new(),
            });
            return;
        }
        let durable = self.queue.append(Entry {
            mirrors: names.iter().map(MirrorName::to_string).collect(),
            forced: false,
        });
        self.unmarked_appends += 1;
        let events = self.events.clone();
        tokio::spawn(async move {
            let response = match durable.await {
                Ok(()) => Response::Notified {
                    mirrors: names.iter().map(MirrorName::to_string).collect(),
                },
                Err(e) => Response::Error {
                    kind: ErrorKind::Unavailable,
                    message: chain(&e),
                },
            };
            let _ = reply.send(response);
            // Marked even if the append failed: the hook spools too, and an extra update is
            // harmless.
            let _ = events.send(Event::Appended(names));
        });
    }

    /// Marks mirrors notified by a push, once their queue entry was appended. A mirror whose
    /// update was dispatched but has not read its refs yet needs nothing more: that update
    /// will see the push.
    pub(in crate::daemon) fn mark_notified(&mut self, names: Vec<MirrorName>) {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        for name in names {
            let Some(tracked) = self.mirrors.get_mut(&name) else {
                continue;
            };
            if tracked.dispatched_unread() {
                self.exporter.metrics.unmirrored(&name, wall_now, false);
                continue;
            }
            let after_read = matches!(tracked.schedule.phase, Phase::Running { .. });
            self.exporter
                .metrics
                .unmirrored(&name, wall_now, after_read);
            if !matches!(tracked.schedule.phase, Phase::Waiting { .. }) {
                tracked.next_trigger = Trigger::Push;
            }
            let due = tracked.schedule.notify(now);
            self.schedule_at(name, due);
        }
    }
}
