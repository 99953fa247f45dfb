//! Fleet (issue 11): `[[mirror_template]]` over many repositories, repositories created while
//! the daemon runs, `install-hook --all` and the forgotten-hook warnings, with the real binary.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::engine::status;
use crate::support::{Background, TestEnv, wait_until};

const SOON: Duration = Duration::from_secs(30);

/// A server root `srv/` of bare repositories and a `remotes/` root of their downstreams.
struct Fleet {
    env: TestEnv,
}

impl Fleet {
    fn new() -> Fleet {
        Fleet {
            env: TestEnv::new(),
        }
    }

    /// Makes `srv/<path>.git` with one commit on `main` (pushed before any hook is there) and
    /// its empty downstream `remotes/<path>.git`; returns the repository and the commit.
    fn repo(&self, path: &str) -> (PathBuf, String) {
        let repo = self.env.bare_repo(format!("srv/{path}.git"));
        self.env.bare_repo(format!("remotes/{path}.git"));
        let work = self.env.path(format!("work/{path}"));
        let work = self.env.work_clone(&repo, &work);
        let oid = self.env.commit(&work, "main", "f.txt", path, "first");
        (repo, oid)
    }

    /// Pushes one more commit to `srv/<path>.git` from its work clone.
    fn push(&self, path: &str, content: &str) -> String {
        let work = self.env.path(format!("work/{path}"));
        self.env.commit(&work, "main", "f.txt", content, content)
    }

    fn remote(&self, path: &str) -> PathBuf {
        self.env.path(format!("remotes/{path}.git"))
    }

    /// The configuration: `[daemon]`, then `body`.
    fn configure(&self, body: &str) {
        self.env
            .write_config(&format!("[daemon]\nstate_dir = \"state\"\n\n{body}"));
    }

    /// The template of these tests: `gh-${path}` over every repository below `srv/`, each to
    /// `remotes/${path}.git`, mirrored as soon as it is notified.
    fn template(&self) -> String {
        format!(
            "[[mirror_template]]\nname = \"gh-${{path}}\"\nrepos = \"srv/**/*.git\"\n\
             url = \"file://{}/remotes/${{path}}.git\"\ndelay = \"0s\"\n",
            self.env.root().display()
        )
    }

    fn start_daemon(&self) -> Background {
        self.env.start_daemon()
    }

    /// Returns `status --json` of every mirror.
    fn statuses(&self) -> Vec<Value> {
        let out = self.env.pushmirror(&["status", "--json"]);
        out.assert_success();
        let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
        doc["mirrors"].as_array().cloned().unwrap_or_default()
    }

    fn names(&self) -> Vec<String> {
        self.statuses()
            .iter()
            .map(|m| m["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits until the downstream of `path` has `main` at `oid`.
    fn wait_mirrored(&self, path: &str, oid: &str, daemon: &Background) {
        let remote = self.remote(path);
        wait_until(&format!("{path} mirrored at {oid}"), SOON, || {
            match self.env.refs(&remote).get("refs/heads/main") {
                Some(seen) if seen == oid => Ok(()),
                seen => Err(format!(
                    "saw {seen:?}\n--- daemon log ---\n{}",
                    daemon.log()
                )),
            }
        });
    }
}

#[test]
fn a_template_over_nested_directories_mirrors_each_repository_to_its_own_downstream() {
    let f = Fleet::new();
    let (_, a) = f.repo("a");
    let (_, b) = f.repo("team/b");
    let (_, c) = f.repo("team/deep/c");
    // Inside a repository is never a repository of the template.
    f.env.bare_repo("srv/a.git/nested.git");
    f.configure(&f.template());
    f.env
        .pushmirror(&["install-hook", "--all"])
        .assert_success();
    let daemon = f.start_daemon();
    for (path, oid) in [("a", &a), ("team/b", &b), ("team/deep/c", &c)] {
        f.wait_mirrored(path, oid, &daemon);
    }
    assert_eq!(f.names(), ["gh-a", "gh-team-b", "gh-team-deep-c"]);
    // A push through the hook reaches only its own downstream.
    let b2 = f.push("team/b", "second");
    f.wait_mirrored("team/b", &b2, &daemon);
    assert_eq!(f.env.refs(&f.remote("a"))["refs/heads/main"], a);
    assert_eq!(f.env.refs(&f.remote("team/deep/c"))["refs/heads/main"], c);
    let st = status(&f.env, "gh-team-b");
    assert_eq!(st["update_status"], "finished", "{st:#}");
    assert_eq!(
        st["repo"],
        f.env.path("srv/team/b.git").display().to_string()
    );
    assert_eq!(st["hook_installed"], true, "{st:#}");
}

#[test]
fn a_repository_created_after_start_is_mirrored_from_its_first_push_without_reload() {
    let f = Fleet::new();
    f.repo("a");
    f.configure(&f.template());
    f.env
        .pushmirror(&["install-hook", "--all"])
        .assert_success();
    let daemon = f.start_daemon();
    assert_eq!(f.names(), ["gh-a"]);

    // Created while the daemon runs, as a git server creates one: hook first, then pushes.
    let repo = f.env.bare_repo("srv/team/new.git");
    f.env.bare_repo("remotes/team/new.git");
    f.env
        .pushmirror(&["install-hook", &repo.display().to_string()])
        .assert_success();
    let work = f.env.work_clone(&repo, f.env.path("work/team/new"));
    let oid = f.env.commit(&work, "main", "f.txt", "new", "first push");
    f.wait_mirrored("team/new", &oid, &daemon);
    assert_eq!(f.names(), ["gh-a", "gh-team-new"]);
    let st = status(&f.env, "gh-team-new");
    assert_eq!(st["update_status"], "finished", "{st:#}");
    assert!(
        daemon
            .log()
            .contains("new repository: mirrors made from [[mirror_template]]"),
        "{}",
        daemon.log()
    );
    // Persisted like any other mirror: its state file is there, and a reload keeps it.
    assert!(f.env.path("state/mirrors/gh-team-new.json").exists());
    f.env.pushmirror(&["reload"]).assert_success();
    assert_eq!(f.names(), ["gh-a", "gh-team-new"]);

    // A notification spooled for another new repository (its hook could not reach the
    // daemon) is taken in with the next one the daemon gets, and makes its mirror too.
    let spooled = f.env.bare_repo("srv/spooled.git");
    f.env.bare_repo("remotes/spooled.git");
    let work = f.env.work_clone(&spooled, f.env.path("work/spooled"));
    let away = f.env.write_file(
        "away.toml",
        "[daemon]\nstate_dir = \"state\"\nsocket = \"nobody-listens.sock\"\n",
    );
    let hook = format!(
        "#!/bin/sh\nexec '{}' --config '{}' notify\n",
        env!("CARGO_BIN_EXE_pushmirror"),
        away.display()
    );
    f.env.install_hook(&spooled, "post-receive", &hook);
    let spooled_oid = f
        .env
        .commit(&work, "main", "f.txt", "spooled", "spooled push");
    let spool: Vec<_> = fs::read_dir(f.env.path("state/spool"))
        .expect("spool")
        .collect();
    assert_eq!(spool.len(), 1, "one spooled notification");
    let a2 = f.push("a", "wakes the daemon");
    f.wait_mirrored("a", &a2, &daemon);
    f.wait_mirrored("spooled", &spooled_oid, &daemon);
    assert_eq!(f.names(), ["gh-a", "gh-team-new", "gh-spooled"]);
}

#[test]
fn a_deleted_repository_drops_its_templated_mirrors_at_the_next_reload() {
    let f = Fleet::new();
    let (_, a) = f.repo("a");
    let (gone, b) = f.repo("b");
    f.configure(&f.template());
    f.env
        .pushmirror(&["install-hook", "--all"])
        .assert_success();
    let daemon = f.start_daemon();
    f.wait_mirrored("a", &a, &daemon);
    f.wait_mirrored("b", &b, &daemon);
    fs::remove_dir_all(&gone).expect("delete the repository");
    let out = f.env.pushmirror(&["reload"]);
    out.assert_success();
    assert_eq!(f.names(), ["gh-a"]);
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("repository deleted: its templated mirror is dropped"))
        .unwrap_or_else(|| panic!("no log line\n{log}"));
    assert!(line.contains("mirror=gh-b"), "{line}");
    assert!(line.contains(&gone.display().to_string()), "{line}");
}

#[test]
fn names_produced_twice_are_errors_with_both_positions() {
    let f = Fleet::new();
    f.repo("a");
    f.repo("x/b");
    f.repo("y/b");
    let root = f.env.root().display().to_string();
    f.configure(&format!(
        "[[mirror]]\nname = \"gh-a\"\nrepo = \"srv/a.git\"\nurl = \"file:///dev/null/a\"\n\n{}\n\
         [[mirror_template]]\nname = \"${{name}}\"\nrepos = \"srv/*/*.git\"\n\
         url = \"file:///dev/null/${{path}}\"\n",
        f.template()
    ));
    let out = f.env.pushmirror(&["check-config"]);
    out.assert_code(2);
    let config = f.env.config_path().display().to_string();
    let errors: Vec<String> = out
        .stderr
        .lines()
        .map(|l| l.replace(&config, "CONFIG").replace(&root, "ROOT"))
        .collect();
    assert_eq!(
        errors,
        [
            "error: CONFIG:10:8: duplicate mirror name \"gh-a\": already used by the mirror at \
             line 5 (in [[mirror_template]], for repository ROOT/srv/a.git)",
            "error: CONFIG:16:8: duplicate mirror name \"b\": already used by the \
             [[mirror_template]] at line 16, column 8, for repository ROOT/srv/x/b.git (in \
             [[mirror_template]], for repository ROOT/srv/y/b.git)",
        ],
        "{out}"
    );
}

#[test]
fn install_hook_all_installs_into_every_repository_a_mirror_or_template_names() {
    let f = Fleet::new();
    let (a, _) = f.repo("a");
    let (b, _) = f.repo("team/b");
    let written = f.env.bare_repo("elsewhere/w.git");
    f.configure(&format!(
        "[[mirror]]\nname = \"w\"\nrepo = \"elsewhere/w.git\"\nurl = \"file:///dev/null/w\"\n\n\
         [[mirror]]\nname = \"w2\"\nrepo = \"elsewhere/w.git\"\nurl = \"file:///dev/null/w2\"\n\n{}",
        f.template()
    ));
    let out = f.env.pushmirror(&["install-hook", "--all"]);
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "one line per repository\n{out}");
    for repo in [&written, &a, &b] {
        let hook = fs::read_to_string(repo.join("hooks/post-receive")).expect("hook");
        assert!(
            hook.contains("# managed by pushmirror install-hook"),
            "{hook}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{}: installed (", repo.display()))),
            "{out}"
        );
    }
    let again = f.env.pushmirror(&["install-hook", "--all"]);
    again.assert_success();
    assert_eq!(
        again.stdout.matches(": already installed (").count(),
        3,
        "{again}"
    );
    // REPO and --all exclude each other.
    f.env
        .pushmirror(&["install-hook", "--all", &a.display().to_string()])
        .assert_code(2);
}

#[test]
fn a_forgotten_hook_is_warned_about_in_check_config_the_daemon_log_and_status() {
    let f = Fleet::new();
    let (a, _) = f.repo("a");
    let (b, _) = f.repo("b");
    f.configure(&f.template());
    f.env
        .pushmirror(&["install-hook", &a.display().to_string()])
        .assert_success();
    let warning = format!(
        "the post-receive hook of {} does not run pushmirror, so pushes to it are not \
         mirrored (mirror `gh-b`): `pushmirror install-hook --all` installs it",
        b.display()
    );
    let out = f.env.pushmirror(&["check-config"]);
    out.assert_code(0);
    assert_eq!(out.stderr, format!("warning: {warning}\n"), "{out}");

    let daemon = f.start_daemon();
    wait_until("the daemon warns about the hook", SOON, || {
        let log = daemon.log();
        if log
            .lines()
            .any(|l| l.contains("WARN") && l.contains(&warning))
        {
            Ok(())
        } else {
            Err(log)
        }
    });
    assert!(
        !daemon
            .log()
            .contains(&format!("hook of {} does", a.display()))
    );
    assert_eq!(status(&f.env, "gh-a")["hook_installed"], true);
    assert_eq!(status(&f.env, "gh-b")["hook_installed"], false);
    let table = f
        .env
        .pushmirror_with_env(&[("COLUMNS", "200")], &["status"]);
    table.assert_success();
    let rows: Vec<&str> = table.stdout.lines().collect();
    let b_row = rows
        .iter()
        .position(|l| l.starts_with("gh-b "))
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(
        rows.get(b_row + 1).copied(),
        Some("  warning: no post-receive hook runs pushmirror: `pushmirror install-hook --all`"),
        "{table}"
    );
    assert_eq!(table.stdout.matches("warning:").count(), 1, "{table}");
    let details = f.env.pushmirror(&["status", "gh-b"]);
    assert!(
        details
            .stdout
            .contains("hook installed:      no: pushes are not notified"),
        "{details}"
    );

    f.env
        .pushmirror(&["install-hook", "--all"])
        .assert_success();
    assert_eq!(status(&f.env, "gh-b")["hook_installed"], true);
    let out = f.env.pushmirror(&["check-config"]);
    out.assert_code(0);
    assert_eq!(out.stderr, "", "{out}");
    drop(daemon);
}
