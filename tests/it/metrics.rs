//! Metrics end to end: the real daemon's `GET /metrics` and `GET /healthz` over HTTP (a real
//! client, reqwest), the exposition checked by Prometheus' own `promtool check metrics`, and
//! the shipped alert rules and Grafana dashboard checked by `promtool` against the series
//! the daemon really exposes.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::engine::{mirror_toml, status};
use crate::support::{Background, TestEnv, closed_port, free_port, wait_until};

/// Generous deadline for anything the daemon does "soon".
const SOON: Duration = Duration::from_secs(30);

/// One answer of the metrics listener.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// `GET http://<addr><path>`, with a bounded wait.
fn get(addr: &str, path: &str) -> Result<Answer, String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(format!("http://{addr}{path}"))
        .send()
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.text().map_err(|e| e.to_string())?;
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

/// Returns the text of `GET /metrics`, checking status and content type.
pub fn scrape(addr: &str) -> String {
    let answer = get(addr, "/metrics").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.content_type, "text/plain; version=0.0.4; charset=utf-8",
        "{answer:?}"
    );
    answer.body
}

/// Returns the value of sample `series` (its name and labels as the daemon writes them).
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == series).then(|| value.parse().expect("a number"))
    })
}

/// A series and what its value must satisfy (`None`: the series is absent).
type Check<'a> = (&'a str, &'a dyn Fn(Option<f64>) -> bool);

/// Polls `/metrics` until every `(series, check)` holds; returns that text.
#[track_caller]
fn wait_metrics(addr: &str, daemon: &Background, what: &str, checks: &[Check<'_>]) -> String {
    wait_until(what, SOON, || {
        let text = get(addr, "/metrics")?.body;
        let failed: Vec<String> = checks
            .iter()
            .filter(|(series, check)| !check(value(&text, series)))
            .map(|(series, _)| format!("{series} = {:?}", value(&text, series)))
            .collect();
        if failed.is_empty() {
            Ok(text)
        } else {
            Err(format!(
                "{}\n--- metrics ---\n{text}\n--- daemon log ---\n{}",
                failed.join("\n"),
                daemon.log()
            ))
        }
    })
}

fn is(expected: f64) -> impl Fn(Option<f64>) -> bool {
    move |v| v == Some(expected)
}

/// Returns the address the daemon logged for its metrics listener (configured with port 0,
/// so that no other test can take it first).
fn metrics_addr(daemon: &Background) -> String {
    let marker = "serving metrics on /metrics and /healthz";
    wait_until("the metrics listener", SOON, || {
        let log = daemon.log();
        log.lines()
            .filter(|line| line.contains(marker))
            .filter_map(|line| line.split("addr=").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .next_back()
            .map(str::to_owned)
            .ok_or(log)
    })
}

/// Starts `pushmirror daemon` and waits until it answers on its socket.
fn start_daemon(env: &TestEnv) -> Background {
    env.start_daemon()
}

/// The path of `promtool` (Debian's `prometheus` package; `.ci/run` installs it):
/// `$PUSHMIRROR_TEST_PROMTOOL`, else the one on `PATH`.
fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PUSHMIRROR_TEST_PROMTOOL") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("promtool"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool not found: install Debian's prometheus package (.ci/run does), \
                 or set PUSHMIRROR_TEST_PROMTOOL"
            )
        })
}

/// Runs `promtool check metrics` on `text`, which must pass without a single lint problem.
#[track_caller]
fn promtool_check_metrics(env: &TestEnv, text: &str) {
    let mut cmd = env.command(promtool());
    cmd.args(["check", "metrics"]);
    let out = env.run_with_stdin(&mut cmd, text.as_bytes());
    out.assert_success();
    assert_eq!(out.stdout.trim(), "", "{out}");
    assert_eq!(out.stderr.trim(), "", "{out}");
}

/// The repository's `config/` directory.
fn shipped(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Writes the configuration: the state directory, metrics on `listen`, and `mirrors`.
fn configure(env: &TestEnv, listen: &str, mirrors: &str) {
    env.write_config(&format!(
        "[daemon]\nstate_dir = \"state\"\nmetrics_listen = \"{listen}\"\n\n{mirrors}"
    ));
}

/// Returns Unix time now, in seconds.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

#[test]
fn metrics_follow_a_failure_streak_its_recovery_and_a_restart() {
    let env = TestEnv::new();
    let repo = env.bare_repo("srv/app.git");
    let c = env.make_commit_on(&repo, None, "c");
    env.set_ref(&repo, "refs/heads/main", &c);
    // The remote's ref is locked: each push is refused for a while (a transient failure).
    let remote = env.bare_repo("remotes/m.git");
    let lock = remote.join("refs/heads/main.lock");
    fs::write(&lock, "").expect("hold the ref's lock");
    // A mirror with credentials in its URL, to a port where nothing listens.
    let secret = "s3cr3t-metrics-token";
    let creds_url = format!("http://bot-user:{secret}@127.0.0.1:{}/x.git", closed_port());
    configure(
        &env,
        "127.0.0.1:0",
        &format!(
            "{}\n{}",
            mirror_toml(
                "m",
                &repo,
                &format!("file://{}", remote.display()),
                "retries = 1\ndelay = \"1s\""
            ),
            mirror_toml("creds", &repo, &creds_url, "retries = 0"),
        ),
    );
    let started_at = unix_now();
    let mut daemon = start_daemon(&env);
    let addr = metrics_addr(&daemon);

    let health = get(&addr, "/healthz").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    // The start-up scan updates both: m is refused, retried once, then failed; creds fails
    // at once (no retries).
    let text = wait_metrics(
        &addr,
        &daemon,
        "both mirrors failing",
        &[
            (
                "pushmirror_updates_total{mirror=\"m\",outcome=\"retry\"}",
                &is(1.0),
            ),
            (
                "pushmirror_updates_total{mirror=\"m\",outcome=\"failed\"}",
                &is(1.0),
            ),
            ("pushmirror_mirror_failing{mirror=\"m\"}", &is(1.0)),
            ("pushmirror_mirror_failing{mirror=\"creds\"}", &is(1.0)),
            ("pushmirror_mirrors_pending", &is(0.0)),
        ],
    );
    assert_eq!(
        value(
            &text,
            "pushmirror_updates_total{mirror=\"m\",outcome=\"finished\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "pushmirror_last_success_timestamp_seconds{mirror=\"m\"}"
        ),
        None,
        "never succeeded: {text}"
    );
    for leak in [secret, "bot-user", "127.0.0.1:", "file://"] {
        assert!(!text.contains(leak), "{leak:?} in the metrics:\n{text}");
    }
    promtool_check_metrics(&env, &text);

    // The lock goes: the next update finishes and the streak ends.
    fs::remove_file(&lock).expect("release the lock");
    let out = env.pushmirror(&["sync", "m", "--wait"]);
    out.assert_success();
    let text = scrape(&addr);
    assert_eq!(
        value(
            &text,
            "pushmirror_updates_total{mirror=\"m\",outcome=\"finished\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "pushmirror_mirror_failing{mirror=\"m\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "pushmirror_update_duration_seconds_count{mirror=\"m\"}"
        ),
        Some(3.0),
        "{text}"
    );
    let last_success = value(
        &text,
        "pushmirror_last_success_timestamp_seconds{mirror=\"m\"}",
    )
    .unwrap_or_else(|| panic!("no last success:\n{text}"));
    assert!(
        (started_at..=unix_now()).contains(&last_success),
        "{last_success} not between the start {started_at} and now"
    );
    assert_eq!(status(&env, "m")["update_status"], "finished");
    promtool_check_metrics(&env, &text);

    // A restart keeps what the state files know; counters start again from zero.
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_exit(SOON);
    let daemon = start_daemon(&env);
    let addr = metrics_addr(&daemon);
    let text = wait_metrics(
        &addr,
        &daemon,
        "the series restored from the state files",
        &[
            ("pushmirror_mirror_failing{mirror=\"m\"}", &is(0.0)),
            ("pushmirror_mirror_failing{mirror=\"creds\"}", &is(1.0)),
            (
                "pushmirror_updates_total{mirror=\"m\",outcome=\"finished\"}",
                &is(0.0),
            ),
            (
                "pushmirror_last_success_timestamp_seconds{mirror=\"m\"}",
                &|v: Option<f64>| v.is_some_and(|v| (v - last_success).abs() < 0.01),
            ),
        ],
    );
    promtool_check_metrics(&env, &text);
}

#[test]
fn the_lag_shows_while_a_push_waits_out_its_window_and_notifications_are_counted() {
    let env = TestEnv::new();
    let repo = env.bare_repo("srv/app.git");
    let work = env.work_clone(&repo, "work");
    let remote = env.bare_repo("remotes/m.git");
    configure(
        &env,
        "127.0.0.1:0",
        &mirror_toml(
            "m",
            &repo,
            &format!("file://{}", remote.display()),
            "delay = \"5s\"",
        ),
    );
    env.pushmirror(&["install-hook", &repo.display().to_string()])
        .assert_success();
    let daemon = start_daemon(&env);
    let addr = metrics_addr(&daemon);
    let push = |content: &str| env.commit(&work, "main", "f.txt", content, content);

    // After a quiet window the push is mirrored at once.
    let first = push("one");
    wait_until("the first push mirrored", SOON, || {
        match env.refs(&remote).get("refs/heads/main") {
            Some(oid) if *oid == first => Ok(()),
            seen => Err(format!("{seen:?}\n{}", daemon.log())),
        }
    });
    wait_metrics(
        &addr,
        &daemon,
        "nothing pending after the first push",
        &[
            ("pushmirror_notifications_total", &is(1.0)),
            ("pushmirror_oldest_pending_seconds", &is(0.0)),
            ("pushmirror_mirrors_pending", &is(0.0)),
            ("pushmirror_updates_running", &is(0.0)),
        ],
    );

    // Inside the window, the next push waits: the lag grows until its update is done.
    let second = push("two");
    let st = status(&env, "m");
    assert_eq!(st["update_status"], "scheduled", "{st:#}");
    let text = wait_metrics(
        &addr,
        &daemon,
        "a push waiting",
        &[
            ("pushmirror_notifications_total", &is(2.0)),
            ("pushmirror_mirrors_pending", &is(1.0)),
            ("pushmirror_oldest_pending_seconds", &|v: Option<f64>| {
                v.is_some_and(|v| v > 0.0)
            }),
        ],
    );
    let lag = value(&text, "pushmirror_oldest_pending_seconds").expect("the lag");
    assert!(lag < SOON.as_secs_f64(), "lag {lag} s");
    promtool_check_metrics(&env, &text);
    wait_metrics(
        &addr,
        &daemon,
        "the waiting push mirrored",
        &[
            ("pushmirror_oldest_pending_seconds", &is(0.0)),
            ("pushmirror_mirrors_pending", &is(0.0)),
            (
                "pushmirror_updates_total{mirror=\"m\",outcome=\"finished\"}",
                &is(2.0),
            ),
        ],
    );
    assert_eq!(env.rev_parse(&remote, "refs/heads/main"), second);

    // The listener answers nothing else.
    let other = get(&addr, "/").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(other.status, 404, "{other:?}");
    let client = reqwest::blocking::Client::new();
    let post = client
        .post(format!("http://{addr}/metrics"))
        .body("x")
        .send()
        .expect("an answer");
    assert_eq!(post.status().as_u16(), 405);
}

#[test]
fn reload_moves_the_listener_and_drops_the_series_of_removed_mirrors() {
    let env = TestEnv::new();
    let repo = env.bare_repo("srv/app.git");
    let c = env.make_commit_on(&repo, None, "c");
    env.set_ref(&repo, "refs/heads/main", &c);
    let mirrors = |names: &[&str]| -> String {
        names
            .iter()
            .map(|name| {
                let remote = env.path(format!("remotes/{name}.git"));
                if !remote.exists() {
                    env.bare_repo(&remote);
                }
                mirror_toml(name, &repo, &format!("file://{}", remote.display()), "")
            })
            .collect()
    };
    configure(&env, "127.0.0.1:0", &mirrors(&["keep", "gone"]));
    let daemon = start_daemon(&env);
    let old = metrics_addr(&daemon);
    wait_metrics(
        &old,
        &daemon,
        "both mirrors synced",
        &[
            (
                "pushmirror_updates_total{mirror=\"keep\",outcome=\"finished\"}",
                &is(1.0),
            ),
            (
                "pushmirror_updates_total{mirror=\"gone\",outcome=\"finished\"}",
                &is(1.0),
            ),
        ],
    );

    // A reload that removes a mirror and moves the listener.
    let new = format!("127.0.0.1:{}", free_port());
    configure(&env, &new, &mirrors(&["keep"]));
    env.pushmirror(&["reload"]).assert_success();
    let text = scrape(&new);
    assert!(!text.contains("mirror=\"gone\""), "{text}");
    assert_eq!(
        value(
            &text,
            "pushmirror_updates_total{mirror=\"keep\",outcome=\"finished\"}"
        ),
        Some(1.0),
        "{text}"
    );
    wait_until("the old listener closed", SOON, || {
        match get(&old, "/healthz") {
            Err(_) => Ok(()),
            Ok(answer) => Err(format!("{answer:?}")),
        }
    });

    // A port that is taken: the reload goes through, the listener stays where it was.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("address").to_string();
    configure(&env, &taken_addr, &mirrors(&["keep"]));
    env.pushmirror(&["reload"]).assert_success();
    wait_until("the failed move logged", SOON, || {
        let log = daemon.log();
        if log.contains("the new `metrics_listen` is not in force; the old listener stays")
            && log.contains(&format!("cannot listen on {taken_addr} for metrics"))
        {
            Ok(())
        } else {
            Err(log)
        }
    });
    assert_eq!(get(&new, "/healthz").map(|a| a.status), Ok(200));

    // At start, a taken port stops the daemon (as a taken control socket does).
    drop(daemon);
    let out = env.pushmirror(&["daemon"]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains(&format!("cannot listen on {taken_addr} for metrics")),
        "{out}"
    );
}

/// Returns every metric name in a PromQL expression or rule file that starts `pushmirror_`.
fn pushmirror_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("pushmirror_") {
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

#[test]
fn the_shipped_rules_and_dashboard_pass_promtool_and_use_only_exposed_series() {
    let env = TestEnv::new();
    let rules = shipped("config/prometheus/pushmirror-rules.yml");
    let mut cmd = env.command(promtool());
    cmd.arg("check").arg("rules").arg(&rules);
    let out = env.run(&mut cmd);
    out.assert_success();
    assert!(out.stdout.contains("SUCCESS: 4 rules found"), "{out}");
    // The rules' unit tests: each alert fires when it should, with its words, and not before.
    let mut cmd = env.command(promtool());
    cmd.arg("test")
        .arg("rules")
        .arg(shipped("tests/it/prometheus/pushmirror-rules.test.yml"));
    env.run(&mut cmd).assert_success();

    // Every dashboard query parses as PromQL: checked as recording rules by promtool.
    let dashboard: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(shipped("config/grafana/pushmirror-dashboard.json"))
            .expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut exprs: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expression");
            exprs.push(
                expr.replace("$__rate_interval", "5m")
                    .replace("$instance", ".*"),
            );
        }
    }
    assert!(exprs.len() >= 8, "{exprs:#?}");
    let as_rules: String = exprs
        .iter()
        .enumerate()
        .map(|(i, expr)| {
            format!(
                "      - record: dashboard:query_{i}\n        expr: {}\n",
                serde_json::to_string(expr).expect("a JSON string is a YAML string")
            )
        })
        .collect();
    let dashboard_rules = env.write_file(
        "dashboard-rules.yml",
        &format!("groups:\n  - name: dashboard\n    rules:\n{as_rules}"),
    );
    let mut cmd = env.command(promtool());
    cmd.arg("check").arg("rules").arg(&dashboard_rules);
    env.run(&mut cmd).assert_success();

    // Every series the rules and the dashboard name is one the daemon exposes.
    let repo = env.bare_repo("srv/app.git");
    let c = env.make_commit_on(&repo, None, "c");
    env.set_ref(&repo, "refs/heads/main", &c);
    let remote = env.bare_repo("remotes/m.git");
    configure(
        &env,
        "127.0.0.1:0",
        &mirror_toml("m", &repo, &format!("file://{}", remote.display()), ""),
    );
    let daemon = start_daemon(&env);
    let addr = metrics_addr(&daemon);
    let text = wait_metrics(
        &addr,
        &daemon,
        "the mirror synced",
        &[(
            "pushmirror_last_success_timestamp_seconds{mirror=\"m\"}",
            &|v: Option<f64>| v.is_some(),
        )],
    );
    let exposed: BTreeSet<String> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let mut used = pushmirror_names(&fs::read_to_string(&rules).expect("the rules"));
    used.extend(exprs.iter().flat_map(|expr| pushmirror_names(expr)));
    let unknown: Vec<&String> = used.difference(&exposed).collect();
    assert!(
        unknown.is_empty(),
        "not exposed: {unknown:?}\n--- exposed ---\n{exposed:#?}"
    );
    promtool_check_metrics(&env, &text);
}
