//! When each mirror is updated (SPEC section 4): a pure state machine per mirror.
//!
//! Every transition takes `now` and returns what to do; nothing here sleeps, spawns or reads
//! a clock, so the rules are unit-tested with made-up instants. The daemon owns one
//! [`MirrorSchedule`] per mirror and keeps a heap of due times (see `daemon.rs`).
//!
//! Invariant: at most one update of a mirror is in flight; a notification or a forced update
//! during it causes exactly one more.

use std::time::Duration;

use tokio::time::Instant;

use crate::clock;

/// Longest backoff between retries of a transient failure.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Shortest backoff, so that a zero window does not spin.
const MIN_BACKOFF: Duration = Duration::from_secs(1);

/// What follows the running update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Again {
    /// Nothing.
    No,
    /// A push was notified during the update: one more, at the window's pace.
    Notified,
    /// A forced update was asked for during the update: one more, at once.
    Forced,
}

/// Where a mirror is in its window and update cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing pending.
    Idle,
    /// An update is due at `due`; `retry` says it is a retry of a transient failure.
    Waiting { due: Instant, retry: bool },
    /// An update is in flight.
    Running { again: Again },
}

/// How an update ended, as the scheduler needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Finished,
    /// A transient failure (network, timeout, server error, lock).
    Transient,
    /// A permanent failure: no retry; the next push or forced update starts afresh.
    Permanent,
}

/// The schedule of one mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSchedule {
    /// The window W (`delay`, or `protected_delay` for protected-only mirrors).
    pub window: Duration,
    /// Retries allowed after a transient failure.
    pub retries: u32,
    pub phase: Phase,
    /// When the last update started.
    pub last_start: Option<Instant>,
    /// Retries used since the last fresh trigger.
    pub retries_used: u32,
    /// Whether the running update was told that a transient failure may be retried
    /// ([`MirrorSchedule::retries_left`] at its start). Its end follows that word, so that a
    /// reload changing `retries` meanwhile cannot make status and schedule disagree.
    pub may_retry: bool,
}

impl MirrorSchedule {
    pub fn new(window: Duration, retries: u32) -> MirrorSchedule {
        MirrorSchedule {
            window,
            retries,
            phase: Phase::Idle,
            last_start: None,
            retries_used: 0,
            may_retry: false,
        }
    }

    /// Returns when a push notified at `now` may start: at once after a quiet window,
    /// else at the last start plus the window (at most `clock::FAR_FUTURE` after it).
    fn window_due(&self, now: Instant) -> Instant {
        match self.last_start {
            Some(start) => clock::later(start, self.window).max(now),
            None => now,
        }
    }

    /// A push touched this mirror's refs. Returns the new due time, if it changed.
    pub fn notify(&mut self, now: Instant) -> Option<Instant> {
        match self.phase {
            Phase::Idle => {
                self.retries_used = 0;
                let due = self.window_due(now);
                self.phase = Phase::Waiting { due, retry: false };
                Some(due)
            }
            Phase::Waiting { due, retry } => {
                // Coalesced into the update already due. A push during a retry's backoff
                // starts afresh, at the window's pace if that is sooner.
                if !retry {
                    return None;
                }
                self.retries_used = 0;
                // An overdue retry is due now, not when it should have started.
                let fresh = self.window_due(now).min(due).max(now);
                self.phase = Phase::Waiting {
                    due: fresh,
                    retry: false,
                };
                Some(fresh)
            }
            Phase::Running { again } => {
                self.phase = Phase::Running {
                    again: again.max(Again::Notified),
                };
                None
            }
        }
    }

    /// An update was forced (`sync`, SIGUSR1, startup). Returns the new due time, if any.
    pub fn force(&mut self, now: Instant) -> Option<Instant> {
        match self.phase {
            Phase::Idle | Phase::Waiting { .. } => {
                self.retries_used = 0;
                self.phase = Phase::Waiting {
                    due: now,
                    retry: false,
                };
                Some(now)
            }
            Phase::Running { .. } => {
                self.phase = Phase::Running {
                    again: Again::Forced,
                };
                None
            }
        }
    }

    /// Returns true if an update is due at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        matches!(self.phase, Phase::Waiting { due, .. } if due <= now)
    }

    /// Returns true if the update about to start is a retry.
    pub fn is_retry(&self) -> bool {
        matches!(self.phase, Phase::Waiting { retry: true, .. })
    }

    /// Returns true if a transient failure of the update about to start may still be retried.
    pub fn retries_left(&self) -> bool {
        self.retries_used < self.retries
    }

    /// The update starts now.
    pub fn start(&mut self, now: Instant) {
        self.last_start = Some(now);
        self.may_retry = self.retries_left();
        self.phase = Phase::Running { again: Again::No };
    }

    /// The running update ended. Returns when the next one is due, if one is.
    pub fn end(&mut self, now: Instant, ended: Ended) -> Option<Instant> {
        let again = match self.phase {
            Phase::Running { again } => again,
            // Not running (e.g. dropped by a reload meanwhile): nothing follows.
            _ => Again::No,
        };
        let retry_due = match ended {
            Ended::Transient if self.may_retry => {
                self.retries_used += 1;
                Some(clock::later(now, self.backoff()))
            }
            _ => {
                self.retries_used = 0;
                None
            }
        };
        let follow_up = match again {
            Again::No => None,
            Again::Notified => Some(self.window_due(now)),
            Again::Forced => Some(now),
        };
        let (due, retry) = match (follow_up, retry_due) {
            (None, None) => {
                self.phase = Phase::Idle;
                return None;
            }
            (Some(due), None) => (due, false),
            (None, Some(due)) => (due, true),
            // A fresh trigger came in during the failed update: it starts afresh.
            (Some(fresh), Some(_)) => {
                self.retries_used = 0;
                (fresh, false)
            }
        };
        self.phase = Phase::Waiting { due, retry };
        Some(due)
    }

    /// Returns the wait before retry number `retries_used`: the window, doubling each time,
    /// between 1 s and 1 h.
    fn backoff(&self) -> Duration {
        let factor = 1u32 << self.retries_used.saturating_sub(1).min(16);
        self.window
            .saturating_mul(factor)
            .clamp(MIN_BACKOFF, MAX_BACKOFF)
    }

    /// Drops what was waiting (the mirror was disabled); a running update is not affected.
    pub fn cancel(&mut self) {
        if let Phase::Waiting { .. } = self.phase {
            self.phase = Phase::Idle;
            self.retries_used = 0;
        }
    }

    /// Returns when the next update is due, if one is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting { due, .. } => Some(due),
            _ => None,
        }
    }

    /// Returns true if the mirror has work pending or in flight (what a restart must redo).
    pub fn is_pending(&self) -> bool {
        !matches!(self.phase, Phase::Idle)
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(300);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn push_after_a_quiet_window_starts_at_once() {
        let t0 = Instant::now();
        let mut m = MirrorSchedule::new(W, 3);
        assert_eq!(m.notify(t0), Some(t0));
        assert!(m.is_due(t0));
    }

    #[test]
    fn pushes_inside_the_window_coalesce_at_its_end() {
        let t0 = Instant::now();
        let mut m = MirrorSchedule::new(W, 3);
        m.notify(t0);
        m.start(t0);
        assert_eq!(m.end(t0 + secs(2), Ended::Finished), None);
        // Two pushes inside the window: one update, at last start + W.
        assert_eq!(m.notify(t0 + secs(10)), Some(t0 + W));
        assert_eq!(m.notify(t0 + secs(20)), None);
        assert!(!m.is_due(t0 + W - secs(1)));
        assert!(m.is_due(t0 + W));
    }

    #[test]
    fn notification_during_an_update_causes_exactly_one_more() {
        let t0 = Instant::now();
        let mut m = MirrorSchedule::new(W, 3);
        m.notify(t0);
        m.start(t0);
        m.notify(t0 + secs(1));
        m.notify(t0 + secs(2));
        assert_eq!(m.end(t0 + secs(3), Ended::Finished), Some(t0 + W));
        m.start(t0 + W);
        assert_eq!(m.end(t0 + W + secs(1), Ended::Finished), None);
        assert_eq!(m.phase, Phase::Idle);
    }

    #[test]
    fn forced_updates_bypass_the_window() {
        let t0 = Instant::now();
        let mut m = MirrorSchedule::new(W, 3);
        m.notify(t0);
        m.start(t0);
        m.end(t0 + secs(1), Ended::Finished);
        m.notify(t0 + secs(5));
        assert_eq!(m.force(t0 + secs(6)), Some(t0 + secs(6)));
        // Forced while running: one more as soon as it ends.
        m.start(t0 + secs(6));
        assert_eq!(m.force(t0 + secs(7)), None);
        m.notify(t0 + secs(8));
        assert_eq!(m.end(t0 + secs(9), Ended::Finished), Some(t0 + secs(9)));
    }

    #[test]
    fn transient_failures_retry_with_backoff_then_stop() {
        let t0 = Instant::now();
        let mut m = MirrorSchedule::new(secs(10), 2);
        m.notify(t0);
        m.start(t0);
        assert!(m.retries_left());
        assert_eq!(m.end(t0 + secs(1), Ended::Transient), Some(t0 + secs(11)));
        assert!(m.is_retry());
        m.start(t0 + secs(11));
        assert!(m.retries_left());
        assert_eq!(m.end(t0 + secs(12), Ended::Transient), Some(t0 + secs(32)));
        m.start(t0 + secs(32));
        assert!(!m.retries_left(), "the last attempt fails for good");
        assert_eq!(m.end(t0 + secs(33), Ended::Transient), None);
        assert_eq!(m.phase, Phase::Idle);
        // The next push starts afresh.
        assert_eq!(m.notify(t0 + secs(100)), Some(t0 + secs(100)));
        assert!(m.retries_left());
    }

    #[test]
    fn permanent_failures_do_not_retry() {
        let t0 = Instant::now();
        let mut m = MirrorSchedule::new(W, 3);
        m.force(t0);
        m.start(t0);
        assert_eq!(m.end(t0 + secs(1), Ended::Permanent), None);
    }

    #[test]
    fn a_push_during_backoff_starts_afresh() {
        let t0 = Instant::now();
        let mut m = MirrorSchedule::new(secs(10), 3);
        m.force(t0);
        m.start(t0);
        m.end(t0 + secs(1), Ended::Transient);
        assert_eq!(m.retries_used, 1);
        assert_eq!(m.notify(t0 + secs(5)), Some(t0 + secs(10)));
        assert_eq!(m.retries_used, 0);
        assert!(!m.is_retry());
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let mut m = MirrorSchedule::new(secs(0), 30);
        m.retries_used = 1;
        assert_eq!(m.backoff(), MIN_BACKOFF);
        let mut m = MirrorSchedule::new(W, 30);
        m.retries_used = 3;
        assert_eq!(m.backoff(), W * 4);
        m.retries_used = 30;
        assert_eq!(m.backoff(), MAX_BACKOFF);
    }
}
