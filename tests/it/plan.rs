//! `plan`, `verify` and the mass-change guard, end to end: the real binary and daemon against
//! `file://` remotes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pushmirror::protocol::{Request, Response};
use serde_json::Value;

use crate::engine::{mirror_toml, status};
use crate::support::{Background, Output, TestEnv, ask, wait_until};

const SOON: Duration = Duration::from_secs(30);

/// A local repository, one remote, and the daemon's state in `state/`.
struct Setup {
    env: TestEnv,
    local: PathBuf,
    remote: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let env = TestEnv::new();
        let local = env.bare_repo("srv/app.git");
        let remote = env.bare_repo("remotes/app.git");
        Setup { env, local, remote }
    }

    fn url(&self) -> String {
        format!("file://{}", self.remote.display())
    }

    fn configure(&self, mirrors: &[(&str, &str)]) {
        let mut toml = String::from("[daemon]\nstate_dir = \"state\"\n\n");
        for (name, extra) in mirrors {
            toml.push_str(&mirror_toml(name, &self.local, &self.url(), extra));
        }
        self.env.write_config(&toml);
    }

    fn start_daemon(&self) -> Background {
        self.env.start_daemon()
    }

    /// Copies local objects to the remote and points its `refname` at `oid` there.
    fn remote_ref(&self, refname: &str, oid: &str) {
        let url = self.url();
        self.env.git(
            &self.local,
            &["push", "--quiet", &url, &format!("{oid}:{refname}")],
        );
    }
}

/// Every file under `dir`, path -> bytes (sockets and other non-files by name only).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        for entry in fs::read_dir(&next).expect("readable directory") {
            let path = entry.expect("directory entry").path();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                files.insert(path.clone(), fs::read(&path).expect("readable file"));
            } else {
                files.insert(path, Vec::new());
            }
        }
    }
    files
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"))
}

/// Returns `ref -> action` (with ` held` appended for held refs) of mirror `index` of a
/// `plan --json` or `verify --json` document.
fn actions(doc: &Value, index: usize, field: &str) -> BTreeMap<String, String> {
    doc["mirrors"][index][field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {doc:#}"))
        .iter()
        .map(|r| {
            let held = if r["held"] == true { " held" } else { "" };
            (
                r["ref"].as_str().expect("ref").to_owned(),
                format!("{}{held}", r["action"].as_str().expect("action")),
            )
        })
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn plan_lists_every_kind_of_action_and_changes_nothing() {
    let s = Setup::new();
    let env = &s.env;
    let c1 = env.make_commit_on(&s.local, None, "c1");
    let c2 = env.make_commit_on(&s.local, Some(&c1), "c2");
    env.set_ref(&s.local, "refs/heads/main", &c2);
    env.set_ref(&s.local, "refs/heads/rel/new", &c1);
    env.set_ref(&s.local, "refs/heads/rel/forced", &c2);
    env.set_ref(&s.local, "refs/heads/wip", &c2);
    env.set_ref(&s.local, "refs/tags/v1", &c1);
    s.remote_ref("refs/heads/main", &c1);
    s.remote_ref("refs/heads/rel/merged", &c1);
    s.remote_ref("refs/heads/other", &c1);
    s.remote_ref("refs/tags/v1", &c1);
    let diverged = env.make_commit_on(&s.remote, None, "only on the remote");
    env.set_ref(&s.remote, "refs/heads/rel/forced", &diverged);
    let filter = "enabled = false\nonly_protected_branches = true\n\
                  protected_branches = [\"main\", \"rel/*\"]";
    s.configure(&[
        ("forcing", filter),
        ("keeping", &format!("{filter}\nkeep_divergent_refs = true")),
    ]);
    let daemon = s.start_daemon();

    let before = (
        snapshot(&s.local),
        snapshot(&s.remote),
        snapshot(&env.path("state")),
    );
    let out = env.pushmirror(&["plan", "forcing", "--json"]);
    out.assert_success();
    let forcing = json(&out);
    let out = env.pushmirror(&["plan", "keeping", "--json"]);
    out.assert_success();
    let keeping = json(&out);
    let text = env.pushmirror(&["plan", "forcing"]);
    text.assert_success();
    let after = (
        snapshot(&s.local),
        snapshot(&s.remote),
        snapshot(&env.path("state")),
    );
    assert!(before == after, "a plan changed files\n{}", daemon.log());

    assert_eq!(
        actions(&forcing, 0, "refs"),
        map(&[
            ("refs/heads/main", "update"),
            ("refs/heads/other", "filtered"),
            ("refs/heads/rel/forced", "force"),
            ("refs/heads/rel/merged", "delete"),
            ("refs/heads/rel/new", "create"),
            ("refs/heads/wip", "filtered"),
        ]),
        "{forcing:#}"
    );
    let mirror = &forcing["mirrors"][0];
    assert_eq!(mirror["up_to_date"], 1, "{mirror:#}");
    assert_eq!(mirror["guard"], Value::Null);
    let main = &mirror["refs"][0];
    assert_eq!(
        (main["remote"].as_str(), main["local"].as_str()),
        (Some(c1.as_str()), Some(c2.as_str()))
    );
    assert_eq!(
        actions(&keeping, 0, "refs"),
        map(&[
            ("refs/heads/main", "update"),
            ("refs/heads/other", "filtered"),
            ("refs/heads/rel/forced", "diverged"),
            ("refs/heads/rel/merged", "kept"),
            ("refs/heads/rel/new", "create"),
            ("refs/heads/wip", "filtered"),
        ]),
        "{keeping:#}"
    );
    for line in [
        format!("update   refs/heads/main {} -> {}", &c1[..12], &c2[..12]),
        format!("delete   refs/heads/rel/merged {} -> -", &c1[..12]),
        "4 refs to push, 1 up to date".to_owned(),
    ] {
        assert!(text.stdout.contains(&line), "{line:?} in\n{text}");
    }

    // Without a daemon, the same plan is made here from the file.
    drop(daemon);
    let out = env.pushmirror(&["plan", "forcing", "--json"]);
    out.assert_success();
    assert_eq!(json(&out), forcing);
    assert!(out.stderr.contains("the daemon is not running"), "{out}");
    assert!(snapshot(&s.local) == before.0 && snapshot(&s.remote) == before.1);

    // An unknown name is an error (exit 2).
    let out = env.pushmirror(&["plan", "nope"]);
    out.assert_code(2);
}

#[test]
fn plan_works_while_the_file_is_broken() {
    let s = Setup::new();
    let c1 = s.env.make_commit_on(&s.local, None, "c1");
    s.env.set_ref(&s.local, "refs/heads/main", &c1);
    s.configure(&[("m", "enabled = false")]);
    let _daemon = s.start_daemon();
    let config = fs::read_to_string(s.env.config_path()).expect("config");
    s.env.write_config(&format!("{config}\nbogus = 1\n"));
    let out = s.env.pushmirror(&["plan", "m"]);
    out.assert_success();
    assert!(out.stdout.contains("create   refs/heads/main"), "{out}");
    assert!(
        out.stderr
            .contains("has errors; the daemon runs on the configuration it last loaded"),
        "{out}"
    );
}

#[test]
fn verify_finds_a_commit_pushed_to_the_downstream_until_the_next_sync() {
    let s = Setup::new();
    let env = &s.env;
    let c1 = env.make_commit_on(&s.local, None, "c1");
    env.set_ref(&s.local, "refs/heads/main", &c1);
    env.set_ref(&s.local, "refs/tags/v1", &c1);
    // With metrics on: verify's result is also the drift metric.
    let metrics = format!("127.0.0.1:{}", crate::support::free_port());
    s.configure(&[("m", "")]);
    let toml = fs::read_to_string(env.config_path()).expect("config");
    env.write_config(&toml.replacen(
        "[daemon]\n",
        &format!("[daemon]\nmetrics_listen = \"{metrics}\"\n"),
        1,
    ));
    let drift = || {
        let text = crate::metrics::scrape(&metrics);
        crate::metrics::value(&text, "pushmirror_drift_refs{mirror=\"m\"}")
    };
    let daemon = s.start_daemon();
    env.pushmirror(&["sync", "m", "--wait"]).assert_success();
    assert_eq!(drift(), None, "no verify has run yet");

    let out = env.pushmirror(&["verify", "m"]);
    out.assert_success();
    assert_eq!(out.stdout, "m: in sync (2 refs)\n", "{out}");
    assert_eq!(drift(), Some(0.0));
    let quiet = env.pushmirror(&["verify", "--all", "--quiet"]);
    quiet.assert_success();
    assert_eq!(quiet.stdout, "");

    // Someone pushes to the downstream directly.
    let stray = env.make_commit_on(&s.remote, Some(&c1), "pushed downstream");
    env.set_ref(&s.remote, "refs/heads/main", &stray);
    let out = env.pushmirror(&["verify", "--all", "--quiet"]);
    out.assert_code(1);
    assert!(
        out.stdout
            .starts_with("m: 1 ref differs from the local repository"),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!(
            "force    refs/heads/main {} -> {}",
            &stray[..12],
            &c1[..12]
        )),
        "{out}"
    );
    let out = env.pushmirror(&["verify", "m", "--json"]);
    out.assert_code(1);
    let doc = json(&out);
    assert_eq!(doc["mirrors"][0]["in_sync"], false, "{doc:#}");
    assert_eq!(
        actions(&doc, 0, "differences"),
        map(&[("refs/heads/main", "force")])
    );
    assert_eq!(drift(), Some(1.0));

    env.pushmirror(&["sync", "m", "--wait"]).assert_success();
    let out = env.pushmirror(&["verify", "m", "--json"]);
    out.assert_success();
    assert_eq!(json(&out)["mirrors"][0]["in_sync"], true, "{out}");
    assert_eq!(drift(), Some(0.0));
    assert_eq!(
        env.rev_parse(&s.remote, "refs/heads/main"),
        c1,
        "{}",
        daemon.log()
    );

    // A remote that cannot be read is exit 2.
    fs::rename(&s.remote, env.path("remotes/gone.git")).expect("move the remote away");
    let out = env.pushmirror(&["verify", "m"]);
    out.assert_code(2);
    assert!(out.stdout.contains("m: cannot verify: "), "{out}");
}

#[test]
fn the_guard_refuses_a_mass_change_until_allowed_and_zero_is_no_limit() {
    let s = Setup::new();
    let env = &s.env;
    let c1 = env.make_commit_on(&s.local, None, "c1");
    let c2 = env.make_commit_on(&s.local, Some(&c1), "c2");
    env.set_ref(&s.local, "refs/heads/main", &c2);
    for b in ["a", "b", "c"] {
        env.set_ref(&s.local, &format!("refs/heads/{b}"), &c1);
    }
    for b in ["x", "y"] {
        env.set_ref(&s.local, &format!("refs/heads/{b}"), &c2);
    }
    let unlimited_remote = env.bare_repo("remotes/unlimited.git");
    let mut toml = String::from("[daemon]\nstate_dir = \"state\"\n[defaults]\nmax_forced = 1\n\n");
    toml.push_str(&mirror_toml("m", &s.local, &s.url(), "max_deletes = 2"));
    toml.push_str(&mirror_toml(
        "unlimited",
        &s.local,
        &format!("file://{}", unlimited_remote.display()),
        "max_deletes = 0\nmax_forced = 0",
    ));
    env.write_config(&toml);
    env.pushmirror(&["check-config"]).assert_success();
    let daemon = s.start_daemon();
    env.pushmirror(&["sync", "m", "unlimited", "--wait"])
        .assert_success();

    // A mistaken cleanup: three merged branches deleted, two rewritten.
    for b in ["a", "b", "c"] {
        env.delete_ref(&s.local, &format!("refs/heads/{b}"));
    }
    let other = env.make_commit_on(&s.local, None, "rewritten");
    for b in ["x", "y"] {
        env.set_ref(&s.local, &format!("refs/heads/{b}"), &other);
    }
    let remote_before = env.refs(&s.remote);

    let plan = env.pushmirror(&["plan", "m", "--json"]);
    plan.assert_success();
    let doc = json(&plan);
    assert_eq!(
        actions(&doc, 0, "refs"),
        map(&[
            ("refs/heads/a", "delete held"),
            ("refs/heads/b", "delete held"),
            ("refs/heads/c", "delete held"),
            ("refs/heads/x", "force held"),
            ("refs/heads/y", "force held"),
        ]),
        "{doc:#}"
    );
    let text = env.pushmirror(&["plan", "m"]);
    assert!(
        text.stdout
            .contains("held by the guard: the update would be refused"),
        "{text}"
    );

    let out = env.pushmirror(&["sync", "m", "unlimited", "--wait"]);
    out.assert_code(1);
    assert!(out.stdout.contains("m: failed"), "{out}");
    assert!(out.stdout.contains("unlimited: finished"), "{out}");
    let st = status(env, "m");
    let error = st["last_error"].as_str().unwrap_or_default();
    for part in [
        "mass-change guard: the update was refused: it would delete 3 refs (max_deletes = 2) \
         and force 2 refs (max_forced = 1); nothing was pushed",
        "pushmirror sync m --wait --allow-mass-change",
    ] {
        assert!(error.contains(part), "{part:?} in {st:#}");
    }
    assert_eq!(st["update_status"], "failed", "{st:#}");
    assert_eq!(st["next_update_at"], Value::Null, "not retried: {st:#}");
    assert_eq!(env.refs(&s.remote), remote_before, "nothing pushed");
    assert_eq!(
        env.mirrored_refs(&unlimited_remote),
        env.mirrored_refs(&s.local),
        "0 is no limit"
    );

    // A plain sync is refused again; the allowance lets one update through.
    env.pushmirror(&["sync", "m", "--wait"]).assert_code(1);
    let out = env.pushmirror(&["sync", "m", "--wait", "--allow-mass-change"]);
    out.assert_success();
    assert_eq!(
        env.mirrored_refs(&s.remote),
        env.mirrored_refs(&s.local),
        "{}",
        daemon.log()
    );
    let st = status(env, "m");
    assert_eq!(
        (st["refs_deleted"].as_u64(), st["refs_updated"].as_u64()),
        (Some(3), Some(2)),
        "{st:#}"
    );

    // The allowance was for that one update only.
    for b in ["x", "y"] {
        env.set_ref(&s.local, &format!("refs/heads/{b}"), &c1);
    }
    let out = env.pushmirror(&["sync", "m", "--wait"]);
    out.assert_code(1);
    assert!(
        out.stdout
            .contains("it would force 2 refs (max_forced = 1)"),
        "{out}"
    );

    // The flag needs names.
    env.pushmirror(&["sync", "--all", "--allow-mass-change"])
        .assert_code(2);
}

/// The dry run reads the remote with the mirror's credentials, which appear nowhere.
#[test]
fn plan_and_verify_read_an_http_remote_with_the_mirrors_credentials() {
    const PASSWORD: &str = "s3cret-plan-token";
    let env = TestEnv::new();
    let http = crate::support::HttpServer::start(&env, "srv", "bot", PASSWORD);
    let remote = http.bare_repo(&env, "app.git");
    let local = env.bare_repo("local/app.git");
    let c1 = env.make_commit_on(&local, None, "c1");
    env.set_ref(&local, "refs/heads/main", &c1);
    env.write_secret("token", &format!("{PASSWORD}\n"));
    env.write_secret("wrong", "not the password\n");
    let mirror = |name: &str, file: &str| {
        mirror_toml(
            name,
            &local,
            &http.url("app.git"),
            &format!("username = \"bot\"\npassword_file = \"{file}\"\nenabled = false"),
        )
    };
    env.write_config(&format!(
        "[daemon]\nstate_dir = \"state\"\n\n{}{}",
        mirror("m", "token"),
        mirror("refused", "wrong")
    ));
    let daemon = env.spawn_pushmirror(&["daemon"]);
    let socket = env.path("state/control.sock");
    wait_until("the daemon answers a ping", SOON, || {
        match ask(&socket, &Request::Ping) {
            Ok(Response::Pong { .. }) => Ok(()),
            other => Err(format!("{other:?}\n{}", daemon.log())),
        }
    });

    let plan = env.pushmirror(&["plan", "m"]);
    plan.assert_success();
    assert!(plan.stdout.contains("create   refs/heads/main"), "{plan}");
    assert!(
        plan.stdout.contains("http://*****:*****@127.0.0.1"),
        "{plan}"
    );
    let verify = env.pushmirror(&["verify", "m", "refused", "--json"]);
    verify.assert_code(2);
    let doc = json(&verify);
    assert_eq!(
        actions(&doc, 0, "differences"),
        map(&[("refs/heads/main", "create")])
    );
    let error = doc["mirrors"][1]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the remote refused the credentials"),
        "{doc:#}"
    );
    assert!(env.refs(&remote).is_empty(), "nothing pushed");
    for text in [
        &plan.stdout,
        &plan.stderr,
        &verify.stdout,
        &verify.stderr,
        &daemon.log(),
    ] {
        assert!(!text.contains(PASSWORD), "the password leaked:\n{text}");
    }
}
