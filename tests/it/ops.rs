//! Operations, end to end with the real binary: silent mode and pause (no connection reaches
//! a `git daemon` whose access hook logs every one, across SIGTERM and SIGKILL), and alerts
//! once per failure streak to a real HTTP receiver and a command.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::engine::{mirror_toml, status};
use crate::support::{
    Background, GitDaemon, HangingServer, TestEnv, WebhookReceiver, closed_port, wait_until,
};

/// Generous deadline for anything the daemon does "soon".
const SOON: Duration = Duration::from_secs(30);

/// A served repository (hook installed) mirrored to a `git daemon` that logs every
/// connection through its access hook.
struct Held {
    env: TestEnv,
    repo: PathBuf,
    work: PathBuf,
    remote: PathBuf,
    access_log: PathBuf,
    git_daemon: GitDaemon,
}

impl Held {
    fn new() -> Held {
        let env = TestEnv::new();
        let repo = env.bare_repo("srv/app.git");
        let work = env.work_clone(&repo, "work");
        let access_log = env.path("access.log");
        let hook = env.write_file(
            "access-hook",
            &format!(
                "#!/bin/sh\necho \"$1 $2\" >> {}\nexit 0\n",
                access_log.display()
            ),
        );
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).expect("chmod");
        let git_daemon =
            GitDaemon::start_with_args(&env, "gd", &[&format!("--access-hook={}", hook.display())]);
        let remote = git_daemon.bare_repo(&env, "remote.git");
        Held {
            env,
            repo,
            work,
            remote,
            access_log,
            git_daemon,
        }
    }

    /// Writes the configuration (`[daemon]` with `daemon_extra`, mirror `m` to the git
    /// daemon) and installs the hook.
    fn configure(&self, daemon_extra: &str) {
        let mirror = mirror_toml(
            "m",
            &self.repo,
            &self.git_daemon.url("remote.git"),
            "delay = \"1h\"",
        );
        self.env.write_config(&format!(
            "[daemon]\nstate_dir = \"state\"\n{daemon_extra}\n\n{mirror}"
        ));
        self.env
            .pushmirror(&["install-hook", &self.repo.display().to_string()])
            .assert_success();
    }

    /// Connections the git daemon took so far.
    fn connections(&self) -> usize {
        fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn push(&self, content: &str) -> String {
        self.env.commit(
            &self.work,
            "main",
            "file.txt",
            content,
            &format!("commit {content}"),
        )
    }

    fn wait_mirrored(&self, oid: &str, daemon: &Background) {
        wait_until("main mirrored", SOON, || {
            match self.env.refs(&self.remote).get("refs/heads/main") {
                Some(seen) if seen == oid => Ok(()),
                seen => Err(format!(
                    "saw {seen:?}\n--- daemon log ---\n{}",
                    daemon.log()
                )),
            }
        });
    }

    /// Waits until `status m` says paused with a pending update (`scheduled`).
    fn wait_held(&self, silent: bool) -> Value {
        wait_until("m held with a pending update", SOON, || {
            let st = status(&self.env, "m");
            let held = st["paused"] == true
                && st["silent"] == silent
                && st["update_status"] == "scheduled"
                && st["next_update_at"].is_null();
            if held { Ok(st) } else { Err(format!("{st:#}")) }
        })
    }
}

fn start_daemon(env: &TestEnv) -> Background {
    env.start_daemon()
}

/// Waits until the daemon's log holds `needle`.
fn wait_logged(daemon: &Background, needle: &str) {
    wait_until(&format!("{needle:?} in the daemon log"), SOON, || {
        let log = daemon.log();
        if log.contains(needle) {
            Ok(())
        } else {
            Err(log)
        }
    });
}

#[test]
fn pause_holds_every_update_across_sigterm_and_sigkill_and_resume_mirrors_it() {
    let h = Held::new();
    h.configure("");
    let first = h.push("one"); // spooled: no daemon yet
    let mut daemon = start_daemon(&h.env);
    h.wait_mirrored(&first, &daemon);

    let out = h.env.pushmirror(&["pause", "m"]);
    out.assert_success();
    assert!(out.stdout.starts_with("paused: m\n"), "{out}");
    let seen = h.connections();
    let second = h.push("two");
    let out = h.env.pushmirror(&["sync", "m"]);
    out.assert_success();
    assert!(
        out.stdout.starts_with("m: paused; the update is recorded"),
        "{out}"
    );
    // `sync --wait` answers at once: nothing ran, so it did not succeed.
    let out = h.env.pushmirror(&["sync", "m", "--wait"]);
    out.assert_code(1);
    assert!(out.stdout.starts_with("m: paused;"), "{out}");
    daemon.signal(libc::SIGUSR1);
    wait_logged(&daemon, "SIGUSR1");
    h.wait_held(false);
    let table = h.env.pushmirror(&["status"]);
    assert!(
        table.stdout.contains("paused") && table.stdout.contains("on resume"),
        "{table}"
    );
    // A dry run or a drift check reads the remote: refused while paused, saying why.
    let out = h.env.pushmirror(&["plan", "m"]);
    out.assert_code(2);
    assert!(
        out.stdout.contains("the mirror is paused") || out.stderr.contains("the mirror is paused"),
        "{out}"
    );
    let out = h.env.pushmirror(&["verify", "m"]);
    out.assert_code(2);
    assert!(
        out.stdout
            .contains("m: cannot verify: not read: the mirror is paused"),
        "{out}"
    );

    // A graceful stop and a SIGKILL keep it paused, with its update pending.
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_exit(SOON);
    let mut daemon = start_daemon(&h.env);
    wait_logged(&daemon, "alert streaks checked");
    h.wait_held(false);
    daemon.signal(libc::SIGKILL);
    daemon.wait_for_exit(SOON);
    let daemon = start_daemon(&h.env);
    wait_logged(&daemon, "mirrors paused at the last stop stay paused");
    h.wait_held(false);
    assert_eq!(h.connections(), seen, "a paused mirror reached its remote");
    assert_ne!(h.env.refs(&h.remote).get("refs/heads/main"), Some(&second));

    // Resume works while the file has errors elsewhere, and runs what is pending at once
    // (the window of 1 h is bypassed).
    let config = fs::read_to_string(h.env.config_path()).expect("config");
    h.env.write_config(&format!("{config}bogus = 1\n"));
    let out = h.env.pushmirror(&["resume", "m"]);
    out.assert_success();
    assert!(out.stderr.contains("has errors"), "{out}");
    assert_eq!(
        out.stdout, "resumed: m\npending updates started: m\n",
        "{out}"
    );
    h.wait_mirrored(&second, &daemon);
    assert!(h.connections() > seen);
    let st = status(&h.env, "m");
    assert_eq!(st["paused"], false, "{st:#}");
}

#[test]
fn silent_mode_holds_every_update_until_a_reload_turns_it_off() {
    let h = Held::new();
    h.configure("silent = true");
    let first = h.push("one");
    let mut daemon = start_daemon(&h.env);
    h.wait_held(true);
    let out = h.env.pushmirror(&["sync", "--all", "--wait"]);
    out.assert_code(1);
    assert!(out.stdout.starts_with("m: paused;"), "{out}");
    daemon.signal(libc::SIGUSR1);
    wait_logged(&daemon, "SIGUSR1");
    let table = h.env.pushmirror(&["status"]);
    assert!(table.stdout.contains("silent"), "{table}");
    // `pushmirror update`, without the daemon's schedule, is held too.
    let out = h.env.pushmirror(&["update", "m"]);
    out.assert_code(1);
    assert!(
        out.stdout.starts_with("m: not updated: silent mode is on"),
        "{out}"
    );
    // A crash keeps it silent: the file says so, and the pending update is in the queue.
    daemon.signal(libc::SIGKILL);
    daemon.wait_for_exit(SOON);
    let daemon = start_daemon(&h.env);
    wait_logged(&daemon, "alert streaks checked");
    h.wait_held(true);
    assert_eq!(h.connections(), 0, "silent mode let a connection through");

    // Reload turns it off: what is pending runs at once.
    h.configure("silent = false");
    h.env.pushmirror(&["reload"]).assert_success();
    h.wait_mirrored(&first, &daemon);
    let seen = h.connections();
    assert!(seen > 0);

    // And on again.
    h.configure("silent = true");
    h.env.pushmirror(&["reload"]).assert_success();
    let second = h.push("two");
    h.wait_held(true);
    assert_eq!(h.connections(), seen);
    h.configure("");
    h.env.pushmirror(&["reload"]).assert_success();
    h.wait_mirrored(&second, &daemon);
}

/// A mirror that fails at once (its remote refuses connections, no retries), with a
/// password in its URL that must never reach an alert.
const PASSWORD: &str = "S3cretPw";
const TOKEN: &str = "WhTok3nValue";

fn failing_mirror(name: &str, repo: &Path, port: u16) -> String {
    mirror_toml(
        name,
        repo,
        &format!("http://bot:{PASSWORD}@127.0.0.1:{port}/x.git"),
        "retries = 0\ndelay = \"1h\"",
    )
}

/// A local repository with one commit on `main`.
fn local_repo(env: &TestEnv) -> PathBuf {
    let repo = env.bare_repo("srv/app.git");
    let c = env.make_commit_on(&repo, None, "one");
    env.set_ref(&repo, "refs/heads/main", &c);
    repo
}

fn lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn one_failed_and_one_recovered_event_per_streak_to_the_webhook_and_the_command() {
    let env = TestEnv::new();
    let repo = local_repo(&env);
    let remote = env.bare_repo("remote.git");
    let receiver = WebhookReceiver::start(&env);
    receiver.fail_next(1); // the first delivery is retried
    env.write_secret("secrets/webhook.token", &format!("{TOKEN}\n"));
    let command_log = env.path("command-events.jsonl");
    let alerts = format!(
        "[alerts]\nwebhook_url = \"{}\"\nwebhook_token_file = \"secrets/webhook.token\"\n\
         command = [\"sh\", \"-c\", \"cat >> {}\"]\n",
        receiver.url("mirror"),
        command_log.display()
    );
    let port = closed_port();
    env.write_config(&format!(
        "[daemon]\nstate_dir = \"state\"\n\n{alerts}\n{}",
        failing_mirror("m", &repo, port)
    ));
    let daemon = start_daemon(&env);
    // The start-up scan's update fails, then three more of the same streak.
    for _ in 0..3 {
        let out = env.pushmirror(&["sync", "m", "--wait"]);
        out.assert_code(1);
    }
    wait_until("the failure announced to both receivers", SOON, || {
        match (receiver.events().len(), lines(&command_log).len()) {
            (1, 1) => Ok(()),
            seen => Err(format!("{seen:?}\n{}", daemon.log())),
        }
    });

    // Fixed: the next update finishes, and the recovery is announced once.
    env.write_config(&format!(
        "[daemon]\nstate_dir = \"state\"\n\n{alerts}\n{}",
        mirror_toml(
            "m",
            &repo,
            &format!("file://{}", remote.display()),
            "retries = 0"
        )
    ));
    env.pushmirror(&["reload"]).assert_success();
    env.pushmirror(&["sync", "m", "--wait"]).assert_success();
    env.pushmirror(&["sync", "m", "--wait"]).assert_success();
    wait_until("the recovery announced to both receivers", SOON, || match (
        receiver.events().len(),
        lines(&command_log).len(),
    ) {
        (2, 2) => Ok(()),
        seen => Err(format!("{seen:?}\n{}", daemon.log())),
    });

    let requests = receiver.requests();
    assert_eq!(
        requests.len(),
        3,
        "one refused, then two delivered: {requests:#?}"
    );
    assert_eq!(requests[0]["status"], 500);
    for request in &requests {
        assert_eq!(request["auth"], format!("Bearer {TOKEN}"), "{request:#}");
        assert_eq!(request["content_type"], "application/json", "{request:#}");
        assert_eq!(request["path"], "/mirror");
        let body = request["body"].as_str().expect("body");
        assert!(!body.contains(PASSWORD) && !body.contains(TOKEN), "{body}");
    }
    let events = receiver.events();
    let (failed, recovered) = (&events[0], &events[1]);
    let fields = |e: &Value| {
        let mut keys: Vec<String> = e.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        keys
    };
    let expected = [
        "at",
        "error",
        "event",
        "failing_since",
        "mirror",
        "repo",
        "update_status",
        "url",
    ];
    assert_eq!(fields(failed), expected);
    assert_eq!(failed["event"], "mirror_failed");
    assert_eq!(failed["mirror"], "m");
    assert_eq!(failed["repo"], repo.display().to_string());
    assert_eq!(
        failed["url"],
        format!("http://*****:*****@127.0.0.1:{port}/x.git")
    );
    assert_eq!(failed["update_status"], "failed");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach")),
        "{failed:#}"
    );
    assert!(
        failed["failing_since"].is_string() && failed["at"].is_string(),
        "{failed:#}"
    );
    assert_eq!(recovered["event"], "mirror_recovered");
    assert_eq!(recovered["update_status"], "finished");
    assert!(recovered["error"].is_null());
    assert_eq!(recovered["failing_since"], failed["failing_since"]);
    // The command got the same events.
    assert_eq!(lines(&command_log), events);
    let log = daemon.log();
    assert!(!log.contains(PASSWORD) && !log.contains(TOKEN), "{log}");
    assert!(
        log.contains("alert delivery failed"),
        "the 500 is logged: {log}"
    );
}

#[test]
fn a_dead_webhook_and_a_stuck_command_do_not_hold_up_updates() {
    let env = TestEnv::new();
    let repo = local_repo(&env);
    let hanging = HangingServer::start();
    let (started, finished, release) = (
        env.path("command-started"),
        env.path("command-finished"),
        env.path("release"),
    );
    let script = env.write_file(
        "stuck-alert",
        &format!(
            "#!/bin/sh\ncat > /dev/null\ntouch {started}\nwhile [ ! -e {release} ]; do sleep 0.05; done\ntouch {finished}\n",
            started = started.display(),
            release = release.display(),
            finished = finished.display()
        ),
    );
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    env.write_config(&format!(
        "[daemon]\nstate_dir = \"state\"\n\n[alerts]\nwebhook_url = \"{}\"\ncommand = [\"{}\"]\n\n{}",
        hanging.http_url("hook"),
        script.display(),
        failing_mirror("m", &repo, closed_port())
    ));
    let daemon = start_daemon(&env);
    wait_until("both deliveries under way", SOON, || {
        if started.exists() && hanging.accepted() >= 1 {
            Ok(())
        } else {
            Err(daemon.log())
        }
    });
    // While neither receiver has answered, updates run and `sync --wait` answers.
    for _ in 0..3 {
        let out = env.pushmirror(&["sync", "m", "--wait"]);
        out.assert_code(1);
        assert!(out.stdout.starts_with("m: failed"), "{out}");
    }
    assert!(
        !finished.exists(),
        "the command was let go before the syncs ended"
    );
    fs::write(&release, "").expect("release the command");
    wait_until("the command ends", SOON, || {
        if finished.exists() {
            Ok(())
        } else {
            Err(daemon.log())
        }
    });
    wait_logged(&daemon, "alert delivered");
}

#[test]
fn an_event_pending_at_a_crash_is_delivered_once_after_the_restart() {
    let env = TestEnv::new();
    let repo = local_repo(&env);
    let port = closed_port();
    let mirrors = format!(
        "{}\n{}",
        failing_mirror("a", &repo, port),
        failing_mirror("b", &repo, port)
    );
    // The webhook is down when the mirrors fail.
    let config = |url: &str| {
        env.write_config(&format!(
            "[daemon]\nstate_dir = \"state\"\n\n[alerts]\nwebhook_url = \"{url}\"\n\n{mirrors}"
        ))
    };
    config(&format!("http://127.0.0.1:{}/hook", closed_port()));
    let mut daemon = start_daemon(&env);
    for name in ["a", "b"] {
        wait_until(
            &format!("{name} failed with its event pending"),
            SOON,
            || {
                let file = fs::read_to_string(env.path(format!("state/alerts/{name}.json")))
                    .unwrap_or_default();
                if status(&env, name)["update_status"] == "failed" && file.contains("mirror_failed")
                {
                    Ok(())
                } else {
                    Err(format!("{file}\n{}", daemon.log()))
                }
            },
        );
    }
    daemon.signal(libc::SIGKILL);
    daemon.wait_for_exit(SOON);
    // As if the crash of `b` came after its state said `failed` but before its streak was
    // written.
    fs::remove_file(env.path("state/alerts/b.json")).expect("remove b's alert file");

    let receiver = WebhookReceiver::start(&env);
    config(&receiver.url("hook"));
    let mut daemon = start_daemon(&env);
    let mirrors_of = |events: &[Value]| {
        let mut names: Vec<String> = events
            .iter()
            .map(|e| format!("{} {}", e["mirror"].as_str().unwrap_or(""), e["event"]))
            .collect();
        names.sort();
        names
    };
    let want = ["a \"mirror_failed\"", "b \"mirror_failed\""];
    wait_until("one event per mirror", SOON, || {
        let events = receiver.events();
        if mirrors_of(&events) == want {
            Ok(())
        } else {
            Err(format!("{events:#?}\n{}", daemon.log()))
        }
    });
    // Delivered: gone from the files, and a restart announces nothing again.
    wait_until("nothing left to deliver", SOON, || {
        let pending = ["a", "b"].iter().any(|n| {
            fs::read_to_string(env.path(format!("state/alerts/{n}.json")))
                .unwrap_or_default()
                .contains("mirror_failed")
        });
        if pending { Err(daemon.log()) } else { Ok(()) }
    });
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_exit(SOON);
    let daemon = start_daemon(&env);
    wait_logged(&daemon, "alert streaks checked");
    env.pushmirror(&["sync", "a", "--wait"]).assert_code(1);
    assert_eq!(mirrors_of(&receiver.events()), want);
}

#[test]
fn the_shipped_relay_turns_an_event_into_a_chat_message() {
    let env = TestEnv::new();
    let receiver = WebhookReceiver::start(&env);
    let url_file = env.write_secret("secrets/chat.url", &format!("{}\n", receiver.url("chat")));
    let relay = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/alert-relay-example.sh");
    let event = serde_json::json!({
        "event": "mirror_failed", "mirror": "app-github", "repo": "/srv/git/app.git",
        "url": "https://*****:*****@github.com/acme/app.git", "update_status": "failed",
        "error": "the remote refused the credentials\nsecond line",
        "failing_since": "2026-11-22T19:53:29.871Z", "at": "2026-11-22T20:03:29.871Z"
    });
    // As the daemon runs it: nothing in the environment but PATH.
    let mut cmd = std::process::Command::new(&relay);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg(&url_file);
    let out = env.run_with_stdin(&mut cmd, event.to_string().as_bytes());
    out.assert_success();
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0]["path"], "/chat");
    let body: Value =
        serde_json::from_str(requests[0]["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(
        body["text"],
        "mirror app-github is failing (since 2026-11-22T19:53:29.871Z): the remote refused the \
         credentials\n/srv/git/app.git -> https://*****:*****@github.com/acme/app.git"
    );
}
