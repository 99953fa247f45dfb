//! Property tests of the scheduler (SPEC.md section 4).
//!
//! Random sequences of pushes, forced updates, starts, endings, cancellations and time steps
//! drive one [`MirrorSchedule`] the way the daemon's driver does: it keeps a heap of the due
//! times returned to it and starts the update once the earliest one still equal to
//! `next_due()` has passed (at once, or late when the loop was busy). The resulting traces are
//! checked against a reference model written from the SPEC's rules, and separately against
//! each invariant the SPEC states, so that a failure names the rule it breaks.
//!
//! Case counts are set explicitly so that all the property tests of the crate run in a few
//! seconds; `PROPTEST_CASES=100000 cargo nextest run proptests` runs longer and
//! `PROPTEST_RNG_SEED=<n>` repeats a run. Failures are not persisted to files: proptest prints
//! the shrunk input.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tokio::time::Instant;

use super::*;

const CASES: u32 = 512;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One step of a random sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// This many seconds pass.
    Wait(u64),
    Notify,
    Force,
    /// The driver starts the update if it is due now.
    Start,
    /// The driver sleeps until the update is due, then starts it.
    StartWhenDue,
    /// The running update ends (nothing happens if none runs).
    End(Ended),
    /// The mirror is disabled (a reload, or found disabled when due).
    Cancel,
    /// A reload sets `retries`, as `install_mirrors` does (only in [`reload_case`]).
    Reload(u32),
}

#[derive(Debug, Clone)]
struct Case {
    window: Duration,
    retries: u32,
    ops: Vec<Op>,
}

fn wait() -> impl Strategy<Value = Op> {
    prop_oneof![Just(0u64), 1..5u64, 5..400u64, 400..8000u64].prop_map(Op::Wait)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => wait(),
        3 => Just(Op::Notify),
        1 => Just(Op::Force),
        2 => Just(Op::Start),
        2 => Just(Op::StartWhenDue),
        1 => Just(Op::End(Ended::Finished)),
        2 => Just(Op::End(Ended::Transient)),
        1 => Just(Op::End(Ended::Permanent)),
        1 => Just(Op::Cancel),
    ]
}

fn window() -> impl Strategy<Value = Duration> {
    // Zero, short, the two defaults, and one longer than the longest backoff.
    prop_oneof![Just(0u64), Just(1), Just(60), Just(300), Just(7200)].prop_map(Duration::from_secs)
}

fn retries() -> impl Strategy<Value = u32> {
    prop_oneof![3 => 0..=3u32, 1 => 4..=20u32]
}

fn case() -> impl Strategy<Value = Case> {
    (window(), retries(), prop::collection::vec(op(), 1..60)).prop_map(|(window, retries, ops)| {
        Case {
            window,
            retries,
            ops,
        }
    })
}

/// Sequences in which a reload may change `retries` at any time, also during an update.
fn reload_case() -> impl Strategy<Value = Case> {
    let op = prop_oneof![4 => op(), 1 => (0..=3u32).prop_map(Op::Reload)];
    (window(), 0..=3u32, prop::collection::vec(op, 1..60)).prop_map(|(window, retries, ops)| Case {
        window,
        retries,
        ops,
    })
}

/// What was done to the schedule in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Did {
    Wait,
    Notify,
    Force,
    /// `retries_left` is what the job was told: whether a transient failure becomes `to_retry`.
    Start {
        retries_left: bool,
    },
    End(Ended),
    Cancel,
    Reload(u32),
}

#[derive(Debug)]
struct Record {
    did: Did,
    now: Instant,
    returned: Option<Instant>,
    before: MirrorSchedule,
    after: MirrorSchedule,
    /// The driver's heap holds the schedule's due time after the step, so it will start it.
    heap_has_due: bool,
}

struct Trace {
    t0: Instant,
    window: Duration,
    retries: u32,
    records: Vec<Record>,
}

impl Trace {
    /// Returns `t` as seconds after the start of the sequence, for messages.
    fn at(&self, t: Instant) -> f64 {
        t.duration_since(self.t0).as_secs_f64()
    }

    fn at_opt(&self, t: Option<Instant>) -> Option<f64> {
        t.map(|t| self.at(t))
    }

    /// Describes step `index` and the schedule after it, times in seconds from the start.
    fn step(&self, index: usize) -> String {
        let r = &self.records[index];
        let phase = match r.after.phase {
            Phase::Waiting { due, retry } => {
                format!("Waiting {{ due: {}s, retry: {retry} }}", self.at(due))
            }
            other => format!("{other:?}"),
        };
        format!(
            "step {index} ({:?} at {}s, returned {:?}, then {phase}, retries_used {})",
            r.did,
            self.at(r.now),
            self.at_opt(r.returned),
            r.after.retries_used,
        )
    }
}

/// Runs `case` as the daemon's driver would.
fn run(case: &Case) -> Trace {
    let t0 = Instant::now();
    let mut schedule = MirrorSchedule::new(case.window, case.retries);
    let mut now = t0;
    let mut heap: Vec<Instant> = Vec::new();
    let mut running = false;
    let mut records = Vec::new();
    for &op in &case.ops {
        let before = schedule.clone();
        let (did, returned) = match op {
            Op::Wait(secs) => {
                now += Duration::from_secs(secs);
                (Did::Wait, None)
            }
            Op::Notify => (Did::Notify, schedule.notify(now)),
            Op::Force => (Did::Force, schedule.force(now)),
            Op::Start | Op::StartWhenDue => {
                // The daemon's `next_due`: a heap entry is valid while it equals the schedule's.
                let Some(due) = schedule.next_due().filter(|d| heap.contains(d)) else {
                    continue;
                };
                if due > now {
                    if op == Op::Start {
                        continue;
                    }
                    now = due;
                }
                heap.retain(|d| *d != due);
                let retries_left = schedule.retries_left();
                schedule.start(now);
                running = true;
                (Did::Start { retries_left }, None)
            }
            Op::End(ended) => {
                if !running {
                    continue;
                }
                running = false;
                (Did::End(ended), schedule.end(now, ended))
            }
            Op::Cancel => {
                schedule.cancel();
                (Did::Cancel, None)
            }
            Op::Reload(retries) => {
                schedule.retries = retries;
                (Did::Reload(retries), None)
            }
        };
        heap.extend(returned);
        records.push(Record {
            did,
            now,
            returned,
            heap_has_due: schedule.next_due().is_some_and(|d| heap.contains(&d)),
            before,
            after: schedule.clone(),
        });
    }
    Trace {
        t0,
        window: case.window,
        retries: case.retries,
        records,
    }
}

fn holds(result: Result<(), String>) -> Result<(), TestCaseError> {
    result.map_err(TestCaseError::fail)
}

/// The SPEC's rules written out on their own: what the scheduler must answer at each step.
struct Model {
    window: Duration,
    retries: u32,
    last_start: Option<Instant>,
    /// The update waiting: when it is due and whether it retries a transient failure.
    waiting: Option<(Instant, bool)>,
    /// While an update runs: (a push came in meanwhile, a forced update came in meanwhile).
    running: Option<(bool, bool)>,
    /// Transient failures retried since the last fresh trigger.
    failures: u32,
}

impl Model {
    /// "If no update of the mirror started within the last W, the update starts at once.
    /// Otherwise it starts at (last start + W)."
    fn pace(&self, now: Instant) -> Instant {
        match self.last_start {
            Some(start) if now < start + self.window => start + self.window,
            _ => now,
        }
    }

    /// Retry number `nth` (from 1) waits the window, doubled for each retry before it,
    /// but at least 1 s and at most 1 h.
    fn backoff(&self, nth: u32) -> Duration {
        let millis = self.window.as_millis() << (nth - 1).min(64);
        Duration::from_millis(millis.clamp(1_000, 3_600_000) as u64)
    }

    fn notify(&mut self, now: Instant) -> Option<Instant> {
        if let Some((pushed, _)) = &mut self.running {
            *pushed = true;
            return None;
        }
        let due = match self.waiting {
            // Coalesced into the update already waiting.
            Some((_, false)) => return None,
            // A fresh start, not later than the retry it replaces, and not in the past.
            Some((retry_due, true)) => self.pace(now).min(retry_due).max(now),
            None => self.pace(now),
        };
        self.failures = 0;
        self.waiting = Some((due, false));
        Some(due)
    }

    fn force(&mut self, now: Instant) -> Option<Instant> {
        if let Some((_, forced)) = &mut self.running {
            *forced = true;
            return None;
        }
        self.failures = 0;
        self.waiting = Some((now, false));
        Some(now)
    }

    fn start(&mut self, now: Instant) -> Result<(), String> {
        match self.waiting.take() {
            Some((due, _)) if due <= now => {}
            other => return Err(format!("started while the model waits for {other:?}")),
        }
        self.last_start = Some(now);
        self.running = Some((false, false));
        Ok(())
    }

    fn end(&mut self, now: Instant, ended: Ended) -> Option<Instant> {
        let (pushed, forced) = self
            .running
            .take()
            .expect("the driver ends only a running update");
        let follow_up = if forced {
            Some(now)
        } else if pushed {
            Some(self.pace(now))
        } else {
            None
        };
        if let Some(due) = follow_up {
            // A trigger during the update: one more, afresh, whatever the ending.
            self.failures = 0;
            self.waiting = Some((due, false));
            return Some(due);
        }
        if ended == Ended::Transient && self.failures < self.retries {
            self.failures += 1;
            let due = now + self.backoff(self.failures);
            self.waiting = Some((due, true));
            return Some(due);
        }
        self.failures = 0;
        None
    }

    fn cancel(&mut self) {
        if self.running.is_none() {
            self.waiting = None;
            self.failures = 0;
        }
    }
}

fn follows_the_model(trace: &Trace) -> Result<(), String> {
    let mut model = Model {
        window: trace.window,
        retries: trace.retries,
        last_start: None,
        waiting: None,
        running: None,
        failures: 0,
    };
    for (i, r) in trace.records.iter().enumerate() {
        let expected = match r.did {
            Did::Wait => None,
            Did::Notify => model.notify(r.now),
            Did::Force => model.force(r.now),
            Did::Start { retries_left } => {
                if retries_left != (model.failures < model.retries) {
                    return Err(format!(
                        "{}: the job was told retries_left = {retries_left}",
                        trace.step(i)
                    ));
                }
                model
                    .start(r.now)
                    .map_err(|e| format!("{}: {e}", trace.step(i)))?;
                None
            }
            Did::End(ended) => model.end(r.now, ended),
            Did::Cancel => {
                model.cancel();
                None
            }
            Did::Reload(retries) => {
                model.retries = retries;
                None
            }
        };
        let s = &r.after;
        let checks = [
            (
                "returned",
                format!("{:?}", trace.at_opt(r.returned)),
                format!("{:?}", trace.at_opt(expected)),
            ),
            (
                "next_due",
                format!("{:?}", trace.at_opt(s.next_due())),
                format!("{:?}", trace.at_opt(model.waiting.map(|(due, _)| due))),
            ),
            (
                "is_retry",
                s.is_retry().to_string(),
                model.waiting.is_some_and(|(_, retry)| retry).to_string(),
            ),
            (
                "running",
                matches!(s.phase, Phase::Running { .. }).to_string(),
                model.running.is_some().to_string(),
            ),
            (
                "retries_left",
                s.retries_left().to_string(),
                (model.failures < model.retries).to_string(),
            ),
        ];
        for (what, got, want) in checks {
            if got != want {
                return Err(format!(
                    "{}: {what} is {got}, the model says {want}",
                    trace.step(i)
                ));
            }
        }
    }
    Ok(())
}

/// At most one update runs: while one does, nothing is due and the driver starts no other.
fn one_at_a_time(trace: &Trace) -> Result<(), String> {
    let mut running = false;
    for (i, r) in trace.records.iter().enumerate() {
        match r.did {
            Did::Start { .. } if running => {
                return Err(format!("{}: started while an update runs", trace.step(i)));
            }
            Did::Start { .. } => running = true,
            Did::End(_) => running = false,
            _ => {}
        }
        let s = &r.after;
        let far = r.now + Duration::from_secs(1 << 40);
        if running && (s.next_due().is_some() || s.is_due(r.now) || s.is_due(far)) {
            return Err(format!(
                "{}: an update is due while one runs",
                trace.step(i)
            ));
        }
        if running && !s.is_pending() {
            return Err(format!(
                "{}: a running update is not pending",
                trace.step(i)
            ));
        }
    }
    Ok(())
}

/// A push or forced update during an update causes exactly one more after it: the schedule
/// waits for a fresh update when the update ends, and an update with no trigger during it is
/// followed by nothing but its own retry.
fn exactly_one_more(trace: &Trace) -> Result<(), String> {
    let mut triggered_during: Option<bool> = None;
    for (i, r) in trace.records.iter().enumerate() {
        match r.did {
            Did::Start { .. } => triggered_during = Some(false),
            Did::Notify | Did::Force => {
                if let Some(triggered) = &mut triggered_during {
                    *triggered = true;
                }
            }
            Did::End(ended) => {
                let triggered = triggered_during.take().unwrap_or(false);
                let s = &r.after;
                let fresh = s.next_due().is_some() && !s.is_retry();
                if triggered && !fresh {
                    return Err(format!(
                        "{}: a trigger during the update was not followed by one more",
                        trace.step(i)
                    ));
                }
                if !triggered && fresh {
                    return Err(format!(
                        "{}: an update without a trigger during it is followed by another",
                        trace.step(i)
                    ));
                }
                if !triggered && ended != Ended::Transient && s.is_pending() {
                    return Err(format!(
                        "{}: something follows an update that ended {ended:?} with no trigger \
                         during it",
                        trace.step(i)
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// No trigger is lost: until an update starts after it, something is due, no later than the
/// trigger's time plus the window (a push), its time (a forced update), or, for a trigger
/// during an update, the later of that and the update's end (or at once, once that passed
/// with the driver late); a push after a quiet window is due at once. Whatever is due was
/// returned to the driver, which will start it.
fn no_trigger_is_lost(trace: &Trace) -> Result<(), String> {
    let w = trace.window;
    // (trigger time, deadline) of the triggers no update started after yet.
    let mut unserved: Vec<(Instant, Instant)> = Vec::new();
    let mut during: Vec<(Instant, bool)> = Vec::new();
    let mut running = false;
    let mut last_start: Option<Instant> = None;
    for (i, r) in trace.records.iter().enumerate() {
        let s = &r.after;
        match r.did {
            Did::Notify | Did::Force if running => during.push((r.now, r.did == Did::Force)),
            Did::Notify => {
                let quiet = last_start.is_none_or(|start| start + w <= r.now);
                if r.before.phase == Phase::Idle && quiet && s.next_due() != Some(r.now) {
                    return Err(format!(
                        "{}: a push after a quiet window is not due at once",
                        trace.step(i)
                    ));
                }
                unserved.push((r.now, r.now + w));
            }
            Did::Force => {
                if s.next_due() != Some(r.now) {
                    return Err(format!(
                        "{}: a forced update is not due at once",
                        trace.step(i)
                    ));
                }
                unserved.push((r.now, r.now));
            }
            Did::Start { .. } => {
                unserved.clear();
                running = true;
                last_start = Some(r.now);
            }
            Did::End(_) => {
                running = false;
                for (at, forced) in during.drain(..) {
                    let deadline = if forced { r.now } else { (at + w).max(r.now) };
                    unserved.push((at, deadline));
                }
            }
            // The mirror was disabled: what waited is dropped on purpose.
            Did::Cancel if !running => unserved.clear(),
            _ => {}
        }
        if s.next_due().is_some() && !r.heap_has_due {
            return Err(format!(
                "{}: the due time was never returned to the driver, which will not start it",
                trace.step(i)
            ));
        }
        if running {
            continue;
        }
        if let Some(&(at, deadline)) = unserved.iter().min_by_key(|(_, deadline)| *deadline) {
            match s.next_due() {
                None => {
                    return Err(format!(
                        "{}: the trigger at {}s is lost, nothing is due",
                        trace.step(i),
                        trace.at(at)
                    ));
                }
                // A driver running late finds the update overdue: then it must be due now.
                Some(due) if due > deadline.max(r.now) => {
                    return Err(format!(
                        "{}: the trigger at {}s is due only at {}s, after {}s",
                        trace.step(i),
                        trace.at(at),
                        trace.at(due),
                        trace.at(deadline)
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Nothing is scheduled in the past: every due time returned is at or after the call that
/// returned it.
fn nothing_is_due_in_the_past(trace: &Trace) -> Result<(), String> {
    for (i, r) in trace.records.iter().enumerate() {
        if let Some(due) = r.returned
            && due < r.now
        {
            return Err(format!(
                "{}: returned a due time {}s before the call",
                trace.step(i),
                trace.at(r.now) - trace.at(due)
            ));
        }
    }
    Ok(())
}

/// A fresh trigger (a push or forced update, taken at once or when the update it came
/// during ends) resets the retries: what follows is not a retry and has every retry left.
fn fresh_trigger_resets_retries(trace: &Trace) -> Result<(), String> {
    let mut running = false;
    let mut triggered_during = false;
    for (i, r) in trace.records.iter().enumerate() {
        let fresh = match r.did {
            Did::Notify | Did::Force if running => {
                triggered_during = true;
                false
            }
            Did::Notify | Did::Force => true,
            Did::Start { .. } => {
                running = true;
                triggered_during = false;
                false
            }
            Did::End(_) => {
                running = false;
                triggered_during
            }
            _ => false,
        };
        let s = &r.after;
        if fresh && (s.retries_used != 0 || s.is_retry() || s.retries_left() != (trace.retries > 0))
        {
            return Err(format!(
                "{}: after a fresh trigger, retries_used = {}, is_retry = {}",
                trace.step(i),
                s.retries_used,
                s.is_retry()
            ));
        }
    }
    Ok(())
}

/// A transient failure with no trigger during its update is retried exactly while retries
/// are left (counted since the last fresh trigger), after a backoff between the window (or
/// 1 s) and 1 h; and the job, told at its start whether retries are left (`to_retry` or
/// `failed` in the status), agrees with the scheduler.
fn retries_while_left(trace: &Trace, check_count: bool) -> Result<(), String> {
    let mut used = 0;
    let mut running = false;
    let mut triggered_during = false;
    let mut told = false;
    for (i, r) in trace.records.iter().enumerate() {
        match r.did {
            Did::Notify | Did::Force if running => triggered_during = true,
            Did::Notify | Did::Force => used = 0,
            Did::Cancel if !running => used = 0,
            Did::Start { retries_left } => {
                running = true;
                triggered_during = false;
                told = retries_left;
            }
            Did::End(ended) => {
                running = false;
                let s = &r.after;
                let retried = s.is_retry() && s.next_due().is_some();
                if triggered_during || ended != Ended::Transient {
                    used = 0;
                    continue;
                }
                if check_count && retried != (used < trace.retries) {
                    return Err(format!(
                        "{}: after {used} of {} retries, retried = {retried}",
                        trace.step(i),
                        trace.retries
                    ));
                }
                if retried != told {
                    return Err(format!(
                        "{}: the job was told retries_left = {told}, so the status says {}, \
                         but the scheduler {}",
                        trace.step(i),
                        if told { "to_retry" } else { "failed" },
                        if retried {
                            "retries"
                        } else {
                            "schedules nothing"
                        }
                    ));
                }
                if retried {
                    used += 1;
                    let wait = s.next_due().expect("retried") - r.now;
                    let least = trace
                        .window
                        .clamp(Duration::from_secs(1), Duration::from_secs(3600));
                    if wait < least || wait > Duration::from_secs(3600) {
                        return Err(format!("{}: backoff {wait:?}", trace.step(i)));
                    }
                } else {
                    used = 0;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn schedule_follows_the_reference_model(case in case()) {
        holds(follows_the_model(&run(&case)))?;
    }

    #[test]
    fn at_most_one_update_runs(case in case()) {
        holds(one_at_a_time(&run(&case)))?;
    }

    #[test]
    fn a_trigger_during_an_update_causes_exactly_one_more(case in case()) {
        holds(exactly_one_more(&run(&case)))?;
    }

    #[test]
    fn no_trigger_is_lost_nor_late(case in case()) {
        holds(no_trigger_is_lost(&run(&case)))?;
    }

    #[test]
    fn a_fresh_trigger_resets_the_retries(case in case()) {
        holds(fresh_trigger_resets_retries(&run(&case)))?;
    }

    #[test]
    fn transient_failures_retry_only_while_retries_are_left(case in case()) {
        holds(retries_while_left(&run(&case), true))?;
    }

    #[test]
    fn nothing_is_scheduled_in_the_past(case in case()) {
        holds(nothing_is_due_in_the_past(&run(&case)))?;
    }

    /// A reload that changes `retries` while an update runs must not make the job and the
    /// schedule disagree: a `to_retry` status with no retry scheduled stays so until the
    /// next push, and a `failed` one is retried all the same.
    #[test]
    fn a_reload_keeps_the_job_and_the_schedule_agreed_on_retrying(case in reload_case()) {
        holds(retries_while_left(&run(&case), false))?;
    }

    /// Every window the configuration accepts (`delay` and `protected_delay` are any number
    /// of seconds that fits in 64 bits) can be scheduled with, without a panic.
    #[test]
    fn any_window_the_configuration_accepts_is_scheduled(
        secs in prop_oneof![Just(u64::MAX), (1u64 << 62).., 0..(1u64 << 40)],
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let window = crate::config::parse_duration(&format!("{secs}s"))
            .map_err(TestCaseError::reject)?;
        holds(one_at_a_time(&run(&Case { window, retries: 3, ops })))?;
    }
}
