//! The series as the loop records them, read back from the encoded text (the format itself
//! is checked by `promtool` in the integration tests).

use std::time::{Duration, SystemTime};

use super::{LoopCounts, Metrics, is_failing};
use crate::config::MirrorName;
use crate::mirror::job::JobOutcome;
use crate::store::state::{
    MirrorState, RefCounts, Timestamp, Trigger, UpdateStatus, UpdateSummary,
};

fn name(text: &str) -> MirrorName {
    MirrorName::new(text).expect("a valid name")
}

/// Returns the value of the sample line `series` (name with its labels, as encoded).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == series).then(|| value.parse().expect("a number"))
    })
}

/// The encoded text of `metrics`.
fn encode(metrics: &Metrics, counts: Option<LoopCounts>, now: SystemTime) -> String {
    String::from_utf8(metrics.encode(counts, now).to_vec()).expect("UTF-8")
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// The outcome of an update that ended `status` at `end` seconds after it started at 1000.
fn ran(status: UpdateStatus, end: u64) -> JobOutcome {
    let mut state = MirrorState {
        update_status: status,
        ..MirrorState::default()
    };
    if status == UpdateStatus::Finished {
        state.last_successful_update_at = Some(Timestamp(at(1000 + end)));
    }
    state.history.push_back(UpdateSummary {
        trigger: Trigger::Push,
        started_at: Timestamp(at(1000)),
        duration_ms: end * 1000,
        counts: RefCounts::default(),
        outcome: status,
        error: None,
    });
    JobOutcome::Ran {
        state: Box::new(state),
        unsaved: None,
    }
}

#[test]
fn a_tracked_mirror_has_its_series_from_its_state() {
    let metrics = Metrics::new();
    let state = MirrorState {
        update_status: UpdateStatus::Failed,
        last_successful_update_at: Some(Timestamp(at(1_700_000_000))),
        ..MirrorState::default()
    };
    metrics.track(&name("a"), &state);
    metrics.track(&name("b"), &MirrorState::default());
    let text = encode(&metrics, None, at(1_700_000_100));
    // Unchanged since: the same text again.
    assert_eq!(encode(&metrics, None, at(1_700_000_100)), text);
    for outcome in ["finished", "failed", "retry"] {
        let series = format!("pushmirror_updates_total{{mirror=\"a\",outcome=\"{outcome}\"}}");
        assert_eq!(sample(&text, &series), Some(0.0), "{text}");
    }
    assert_eq!(
        sample(
            &text,
            "pushmirror_last_success_timestamp_seconds{mirror=\"a\"}"
        ),
        Some(1_700_000_000.0),
        "{text}"
    );
    // Never succeeded: no timestamp rather than 1970.
    assert_eq!(
        sample(
            &text,
            "pushmirror_last_success_timestamp_seconds{mirror=\"b\"}"
        ),
        None,
        "{text}"
    );
    assert_eq!(
        sample(&text, "pushmirror_mirror_failing{mirror=\"a\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "pushmirror_mirror_failing{mirror=\"b\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "pushmirror_lfs_uploaded_bytes_total{mirror=\"b\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "pushmirror_update_duration_seconds_count{mirror=\"a\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "pushmirror_oldest_pending_seconds"),
        Some(0.0)
    );
    assert!(
        text.contains("# TYPE pushmirror_updates_total counter"),
        "{text}"
    );
}

#[test]
fn update_ends_count_by_outcome_and_the_failing_gauge_follows_the_streak() {
    let metrics = Metrics::new();
    let m = name("m");
    metrics.track(&m, &MirrorState::default());
    let failing = |metrics: &Metrics| {
        sample(
            &encode(metrics, None, at(0)),
            "pushmirror_mirror_failing{mirror=\"m\"}",
        )
    };
    metrics.update_ended(&m, &Ok(ran(UpdateStatus::ToRetry, 2)));
    assert_eq!(failing(&metrics), Some(0.0), "retrying is not failing yet");
    metrics.update_ended(&m, &Ok(ran(UpdateStatus::Failed, 3)));
    assert_eq!(failing(&metrics), Some(1.0));
    metrics.update_ended(&m, &Ok(ran(UpdateStatus::ToRetry, 1)));
    assert_eq!(failing(&metrics), Some(1.0), "a retry keeps the streak");
    metrics.update_ended(&m, &Ok(JobOutcome::Busy));
    metrics.update_ended(&m, &Ok(ran(UpdateStatus::Finished, 20)));
    assert_eq!(failing(&metrics), Some(0.0));

    let text = encode(&metrics, None, at(0));
    let count = |outcome: &str| {
        sample(
            &text,
            &format!("pushmirror_updates_total{{mirror=\"m\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(count("finished"), Some(1.0), "{text}");
    assert_eq!(count("failed"), Some(1.0), "{text}");
    assert_eq!(count("retry"), Some(3.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "pushmirror_last_success_timestamp_seconds{mirror=\"m\"}"
        ),
        Some(1020.0)
    );
    // Busy ran nothing: four durations, 2 + 3 + 1 + 20 s.
    assert_eq!(
        sample(
            &text,
            "pushmirror_update_duration_seconds_count{mirror=\"m\"}"
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &text,
            "pushmirror_update_duration_seconds_sum{mirror=\"m\"}"
        ),
        Some(26.0)
    );
    assert_eq!(
        sample(
            &text,
            "pushmirror_update_duration_seconds_bucket{mirror=\"m\",le=\"5\"}"
        ),
        Some(3.0),
        "{text}"
    );
}

#[test]
fn the_lag_is_the_oldest_push_no_successful_update_covered() {
    let metrics = Metrics::new();
    let (a, b) = (name("a"), name("b"));
    let lag = |metrics: &Metrics, now: u64| {
        sample(
            &encode(metrics, None, at(now)),
            "pushmirror_oldest_pending_seconds",
        )
        .expect("always present")
    };
    assert_eq!(lag(&metrics, 100), 0.0);
    metrics.unmirrored(&a, at(100), false);
    metrics.unmirrored(&a, at(105), false);
    metrics.unmirrored(&b, at(103), false);
    assert_eq!(lag(&metrics, 110), 10.0, "the oldest push of all mirrors");
    // a's update read its refs; a push after that is for the next update.
    metrics.unmirrored(&a, at(107), true);
    metrics.update_ended(&a, &Ok(ran(UpdateStatus::Failed, 1)));
    assert_eq!(lag(&metrics, 110), 10.0, "a failed update mirrors nothing");
    metrics.unmirrored(&a, at(111), true);
    metrics.update_ended(&a, &Ok(ran(UpdateStatus::Finished, 1)));
    assert_eq!(lag(&metrics, 113), 10.0, "b's push of 103, then a's of 111");
    metrics.update_ended(&b, &Ok(ran(UpdateStatus::Finished, 1)));
    assert_eq!(lag(&metrics, 113), 2.0, "a's push after its update read");
    metrics.update_ended(&a, &Ok(ran(UpdateStatus::Finished, 1)));
    assert_eq!(lag(&metrics, 114), 0.0);

    // Disabled or removed: nothing will mirror the push, so nothing lags.
    metrics.unmirrored(&a, at(120), false);
    metrics.nothing_pending(&a);
    metrics.unmirrored(&b, at(120), false);
    metrics.forget(&b);
    assert_eq!(lag(&metrics, 130), 0.0);
}

#[test]
fn a_removed_mirror_has_no_series_left_and_counts_come_from_the_loop() {
    let metrics = Metrics::new();
    let (keep, gone) = (name("keep"), name("gone"));
    metrics.track(&keep, &MirrorState::default());
    metrics.track(&gone, &MirrorState::default());
    metrics.update_ended(&gone, &Ok(ran(UpdateStatus::Finished, 1)));
    metrics.record_lfs_upload(&gone, 5);
    metrics.record_lfs_upload(&keep, 7);
    metrics.notifications(3);
    metrics.forget(&gone);
    let text = encode(
        &metrics,
        Some(LoopCounts {
            pending: 4,
            running: 2,
        }),
        at(0),
    );
    assert!(!text.contains("\"gone\""), "{text}");
    assert_eq!(
        sample(
            &text,
            "pushmirror_lfs_uploaded_bytes_total{mirror=\"keep\"}"
        ),
        Some(7.0)
    );
    assert_eq!(sample(&text, "pushmirror_notifications_total"), Some(3.0));
    assert_eq!(sample(&text, "pushmirror_mirrors_pending"), Some(4.0));
    assert_eq!(sample(&text, "pushmirror_updates_running"), Some(2.0));
    // Without an answer from the loop, the last counts stay.
    let text = encode(&metrics, None, at(0));
    assert_eq!(sample(&text, "pushmirror_mirrors_pending"), Some(4.0));
}

#[test]
fn failing_at_start_is_read_from_the_streak_in_the_history() {
    let summary = |outcome| UpdateSummary {
        trigger: Trigger::Push,
        started_at: Timestamp(at(0)),
        duration_ms: 0,
        counts: RefCounts::default(),
        outcome,
        error: None,
    };
    let state = |status, outcomes: &[UpdateStatus]| MirrorState {
        update_status: status,
        history: outcomes.iter().copied().map(summary).collect(),
        ..MirrorState::default()
    };
    use UpdateStatus::{Failed, Finished, Scheduled, ToRetry};
    assert!(!is_failing(&state(UpdateStatus::None, &[])));
    assert!(is_failing(&state(Failed, &[Finished, Failed])));
    assert!(is_failing(&state(ToRetry, &[Failed, ToRetry, ToRetry])));
    assert!(!is_failing(&state(ToRetry, &[Failed, Finished, ToRetry])));
    // Cut short by a stop: the streak is what the history says.
    assert!(is_failing(&state(Scheduled, &[Failed])));
    assert!(!is_failing(&state(Scheduled, &[Finished])));
}

/// Sends `GET path` over a plain TCP connection and returns the whole answer.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_says_503_while_the_loop_does_not_answer_and_200_when_it_does() {
    use std::sync::Arc;
    let listener = super::server::bind("127.0.0.1:0".parse().expect("an address")).expect("bind");
    let addr = listener.local_addr().expect("address");
    let (probes, mut probe_rx) = tokio::sync::mpsc::channel(4);
    let server =
        super::server::spawn(addr, listener, Arc::new(Metrics::new()), probes).expect("serve");

    // Nobody answers the probe: after the timeout, 503.
    let started = std::time::Instant::now();
    let answer = tokio::task::spawn_blocking(move || http_get(addr, "/healthz"))
        .await
        .expect("joined");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(started.elapsed() >= super::server::LOOP_TIMEOUT, "{answer}");
    assert!(
        answer.ends_with("the daemon's loop did not answer in time\n"),
        "{answer}"
    );
    // The stale probe is dropped; the next one is answered.
    drop(probe_rx.recv().await);
    tokio::spawn(async move {
        while let Some(probe) = probe_rx.recv().await {
            let _ = probe.send(LoopCounts {
                pending: 2,
                running: 1,
            });
        }
    });
    let answer = tokio::task::spawn_blocking(move || http_get(addr, "/healthz"))
        .await
        .expect("joined");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
    let answer = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .expect("joined");
    assert!(
        answer.contains("\npushmirror_mirrors_pending 2\n"),
        "{answer}"
    );
    assert!(
        answer.contains("\npushmirror_updates_running 1\n"),
        "{answer}"
    );

    // Stopped: the port is closed.
    server.stop();
    let closed = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_ok() {
            assert!(std::time::Instant::now() < deadline, "still accepting");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    closed.await.expect("joined");
}
