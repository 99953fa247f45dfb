//! The daemon end to end: the real binary, real pushes through the installed hook, real
//! signals, the control socket, restarts after SIGKILL.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pushmirror::protocol::{Notification, RefChange, Request, Response};
use serde_json::Value;

use crate::engine::{mirror_toml, status};
use crate::support::{Background, TestEnv, ZERO_OID, ask, wait_until};

/// Generous deadline for anything the daemon does "soon".
const SOON: Duration = Duration::from_secs(30);

/// A served repository with a work clone to push from, and mirrors' remotes.
struct Served {
    env: TestEnv,
    repo: PathBuf,
    work: PathBuf,
}

impl Served {
    fn new() -> Served {
        let env = TestEnv::new();
        let repo = env.bare_repo("srv/app.git");
        let work = env.work_clone(&repo, "work");
        Served { env, repo, work }
    }

    /// Writes the config with `[daemon]` in the tempdir and these mirrors, and installs the
    /// hook.
    fn configure(&self, mirrors: &str) {
        self.env
            .write_config(&format!("[daemon]\nstate_dir = \"state\"\n\n{mirrors}"));
        self.env
            .pushmirror(&["install-hook", &self.repo.display().to_string()])
            .assert_success();
    }

    /// Configures one mirror `m` of the served repository, with `extra` option lines, to a new
    /// remote (returned), and installs the hook.
    fn configure_one(&self, extra: &str) -> PathBuf {
        let remote = self.remote("m");
        self.configure(&mirror_toml("m", &self.repo, &Served::url(&remote), extra));
        remote
    }

    /// A remote for a mirror, with a post-receive hook logging every ref update it takes.
    fn remote(&self, name: &str) -> PathBuf {
        let remote = self.env.bare_repo(format!("remotes/{name}.git"));
        self.env.install_hook(
            &remote,
            "post-receive",
            "#!/bin/sh\ncat >> \"$GIT_DIR/updates.log\"\necho -- >> \"$GIT_DIR/updates.log\"\n",
        );
        remote
    }

    fn url(remote: &Path) -> String {
        format!("file://{}", remote.display())
    }

    /// Commits `content` to `branch` in the work clone and pushes it (through the hook).
    fn push(&self, branch: &str, content: &str) -> String {
        self.env.commit(
            &self.work,
            branch,
            "file.txt",
            content,
            &format!("commit {content}"),
        )
    }

    fn start_daemon(&self) -> Background {
        self.env.start_daemon()
    }

    fn socket(&self) -> PathBuf {
        self.env.path("state/control.sock")
    }
}

/// Waits until `remote`'s `refname` is `oid`.
fn wait_mirrored(env: &TestEnv, remote: &Path, refname: &str, oid: &str, daemon: &Background) {
    wait_until(
        &format!("{refname} = {oid} on {}", remote.display()),
        SOON,
        || {
            let refs = env.refs(remote);
            match refs.get(refname) {
                Some(seen) if seen == oid => Ok(()),
                seen => Err(format!(
                    "saw {seen:?}\n--- daemon log ---\n{}",
                    daemon.log()
                )),
            }
        },
    );
}

/// Waits until mirror `name`'s `update_status` is `want`.
fn wait_status(env: &TestEnv, name: &str, want: &str) {
    wait_until(&format!("{name} {want}"), SOON, || {
        let st = status(env, name);
        if st["update_status"] == want {
            Ok(())
        } else {
            Err(format!("{st:#}"))
        }
    });
}

/// Returns the ref updates the remote took, one block per push.
fn remote_pushes(remote: &Path) -> Vec<String> {
    fs::read_to_string(remote.join("updates.log"))
        .unwrap_or_default()
        .split("--\n")
        .filter(|block| !block.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn push_through_the_hook_is_mirrored_after_a_quiet_window() {
    let s = Served::new();
    let remote = s.configure_one("delay = \"1h\"");
    let daemon = s.start_daemon();
    let oid = s.push("main", "one");
    wait_mirrored(&s.env, &remote, "refs/heads/main", &oid, &daemon);
    wait_status(&s.env, "m", "finished");
}

#[test]
fn pushes_inside_the_window_coalesce_into_one_update() {
    let s = Served::new();
    // A window long enough that the two pushes below land inside it on a loaded machine
    // (each push runs the hook); a 4-second one failed once under a load of 18.
    let remote = s.configure_one("delay = \"20s\"");
    let daemon = s.start_daemon();
    let first = s.push("main", "one");
    wait_mirrored(&s.env, &remote, "refs/heads/main", &first, &daemon);
    // Inside the window: both coalesce into one update at its end.
    let intermediate = s.push("main", "two");
    let last = s.push("main", "three");
    let st = status(&s.env, "m");
    assert_eq!(st["update_status"], "scheduled", "{st:#}");
    assert!(st["next_update_at"].is_string(), "{st:#}");
    wait_mirrored(&s.env, &remote, "refs/heads/main", &last, &daemon);
    // The remote's post-receive hook logs each push after its refs moved.
    let pushes = wait_until("two pushes logged by the remote", SOON, || {
        let pushes = remote_pushes(&remote);
        if pushes.len() >= 2 {
            Ok(pushes)
        } else {
            Err(format!("{pushes:#?}"))
        }
    });
    assert_eq!(pushes.len(), 2, "{pushes:#?}");
    assert!(!pushes.concat().contains(&intermediate), "{pushes:#?}");
}

#[test]
fn protected_only_mirror_ignores_unprotected_branches_and_one_push_updates_several_mirrors() {
    let s = Served::new();
    let (all, protected, tags_only) = (s.remote("all"), s.remote("protected"), s.remote("none"));
    let mut mirrors = mirror_toml("all", &s.repo, &Served::url(&all), "");
    mirrors += &mirror_toml(
        "protected",
        &s.repo,
        &Served::url(&protected),
        "only_protected_branches = true\nprotected_branches = [\"main\"]",
    );
    mirrors += &mirror_toml(
        "tags-only",
        &s.repo,
        &Served::url(&tags_only),
        "only_protected_branches = true\nprotected_branches = []",
    );
    s.configure(&mirrors);
    let daemon = s.start_daemon();
    let main = s.push("main", "one");
    wait_mirrored(&s.env, &all, "refs/heads/main", &main, &daemon);
    wait_mirrored(&s.env, &protected, "refs/heads/main", &main, &daemon);

    // Which mirrors a push marks, as the daemon answers the hook.
    let notify = |refname: &str| {
        let request = Request::Notify(Notification {
            repo: s.repo.clone(),
            refs: vec![RefChange {
                old: "0".repeat(40),
                new: main.clone(),
                name: refname.into(),
            }],
            all_refs: false,
        });
        match ask(&s.socket(), &request) {
            Ok(Response::Notified { mut mirrors }) => {
                mirrors.sort();
                mirrors
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(notify("refs/heads/feature"), ["all"]);
    assert_eq!(notify("refs/heads/main"), ["all", "protected"]);
    assert_eq!(notify("refs/tags/v1"), ["all", "protected", "tags-only"]);
    assert_eq!(
        notify("refs/heads/main").len(),
        2,
        "notifying twice marks the same mirrors"
    );
}

#[test]
fn sync_and_sigusr1_bypass_the_window() {
    let s = Served::new();
    let remote = s.configure_one("delay = \"1h\"");
    let daemon = s.start_daemon();
    let first = s.push("main", "one");
    wait_mirrored(&s.env, &remote, "refs/heads/main", &first, &daemon);

    let second = s.push("main", "two");
    let st = status(&s.env, "m");
    assert_eq!(st["update_status"], "scheduled", "{st:#}");
    let out = s.env.pushmirror(&["sync", "m", "--wait"]);
    out.assert_success();
    assert!(out.stdout.contains("m: finished"), "{out}");
    assert_eq!(s.env.rev_parse(&remote, "refs/heads/main"), second);

    let third = s.push("main", "three");
    daemon.signal(libc::SIGUSR1);
    wait_mirrored(&s.env, &remote, "refs/heads/main", &third, &daemon);

    // --repo selects the mirrors of a repository; unknown names are usage errors.
    s.env
        .pushmirror(&["sync", "--repo", &s.repo.display().to_string(), "--wait"])
        .assert_success();
    let out = s.env.pushmirror(&["sync", "nope"]);
    out.assert_code(2);
    assert!(out.stderr.contains("no mirror named \"nope\""), "{out}");
}

#[test]
fn sync_wait_exits_1_when_the_update_fails() {
    let s = Served::new();
    s.env.make_commit_on(&s.repo, None, "c");
    let missing = s.env.path("remotes/absent.git");
    s.configure(&mirror_toml(
        "m",
        &s.repo,
        &Served::url(&missing),
        "retries = 0",
    ));
    let _daemon = s.start_daemon();
    let out = s.env.pushmirror(&["sync", "m", "--wait"]);
    out.assert_code(1);
    assert!(out.stdout.contains("m: failed"), "{out}");
    assert!(
        out.stdout.contains("the remote repository was not found"),
        "{out}"
    );
}

#[test]
fn daemon_down_push_spools_and_restart_mirrors_it() {
    let s = Served::new();
    let remote = s.configure_one("");
    // The daemon ran once (it made its state directory), then stopped.
    let mut daemon = s.start_daemon();
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_exit(SOON);
    // No daemon: the hook spools, and says so to the pusher.
    let oid = s.push("main", "one");
    let spool: Vec<_> = fs::read_dir(s.env.path("state/spool"))
        .expect("spool dir")
        .collect();
    assert_eq!(spool.len(), 1);
    let daemon = s.start_daemon();
    wait_mirrored(&s.env, &remote, "refs/heads/main", &oid, &daemon);
    wait_until("spool emptied", SOON, || {
        let left = fs::read_dir(s.env.path("state/spool"))
            .map(|d| d.count())
            .unwrap_or(0);
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} files left"))
        }
    });
}

#[test]
fn sigkill_before_during_and_after_an_update_loses_nothing() {
    let s = Served::new();
    let remote = s.remote("m");
    // The remote's pre-receive blocks while the file `hold` exists, to kill mid-update.
    let hold = s.env.path("hold");
    s.env.install_hook(
        &remote,
        "pre-receive",
        &format!(
            "#!/bin/sh\nwhile [ -e {} ]; do sleep 0.02; done\n",
            hold.display()
        ),
    );
    s.configure(&mirror_toml(
        "m",
        &s.repo,
        &Served::url(&remote),
        "delay = \"1h\"",
    ));

    // Before: a push acknowledged, its update not yet started (inside the window).
    let mut daemon = s.start_daemon();
    let first = s.push("main", "one");
    wait_mirrored(&s.env, &remote, "refs/heads/main", &first, &daemon);
    let second = s.push("main", "two");
    assert_eq!(status(&s.env, "m")["update_status"], "scheduled");
    daemon.signal(libc::SIGKILL);
    daemon.wait_for_exit(SOON);
    let mut daemon = s.start_daemon();
    wait_mirrored(&s.env, &remote, "refs/heads/main", &second, &daemon);

    // During: killed while the update is in the remote's hook.
    fs::write(&hold, "").expect("hold");
    let third = s.push("main", "three");
    s.env.pushmirror(&["sync", "m"]).assert_success();
    wait_status(&s.env, "m", "started");
    daemon.signal(libc::SIGKILL);
    daemon.wait_for_exit(SOON);
    let st = status(&s.env, "m");
    assert_eq!(
        st["update_status"], "started",
        "the crash left it started: {st:#}"
    );
    // The killed daemon's `git push` died with it (its argv has the URL; the remote's
    // receive-pack, still in its hook, only has the path).
    let url = Served::url(&remote);
    crate::support::wait_until("the push died with the daemon", SOON, || {
        let alive = crate::support::processes_with_arg(&url);
        if alive.is_empty() {
            Ok(())
        } else {
            Err(format!("{alive:#?}"))
        }
    });
    fs::remove_file(&hold).expect("release");
    // The orphaned receive-pack ends first: racing it, the next push could meet its ref lock
    // (a transient rejection, retried only after this mirror's hour-long backoff).
    let path = remote.display().to_string();
    crate::support::wait_until("the orphaned receive-pack ended", SOON, || {
        let alive = crate::support::processes_with_arg(&path);
        if alive.is_empty() {
            Ok(())
        } else {
            Err(format!("{alive:#?}"))
        }
    });
    let mut daemon = s.start_daemon();
    wait_mirrored(&s.env, &remote, "refs/heads/main", &third, &daemon);
    wait_status(&s.env, "m", "finished");

    // After: killed right after a finished update; a restart changes nothing and is clean.
    daemon.signal(libc::SIGKILL);
    daemon.wait_for_exit(SOON);
    let daemon = s.start_daemon();
    wait_status(&s.env, "m", "finished");
    assert_eq!(s.env.rev_parse(&remote, "refs/heads/main"), third);
    drop(daemon);
}

#[test]
fn pushes_made_while_no_hook_ran_are_mirrored_at_start() {
    let s = Served::new();
    let remote = s.configure_one("");
    let daemon = s.start_daemon();
    let first = s.push("main", "one");
    wait_mirrored(&s.env, &remote, "refs/heads/main", &first, &daemon);
    drop(daemon);
    // Moved behind the hook's back (e.g. `git update-ref` on the server).
    let moved = s.env.make_commit_on(&s.repo, Some(&first), "no hook");
    s.env.set_ref(&s.repo, "refs/heads/main", &moved);
    fs::remove_dir_all(s.env.path("state/spool")).ok();
    let daemon = s.start_daemon();
    wait_mirrored(&s.env, &remote, "refs/heads/main", &moved, &daemon);
}

#[test]
fn reload_of_a_good_and_a_broken_file() {
    let s = Served::new();
    let (a, b) = (s.remote("a"), s.remote("b"));
    let one = mirror_toml("a", &s.repo, &Served::url(&a), "delay = \"1s\"");
    s.configure(&one);
    let daemon = s.start_daemon();
    let oid = s.push("main", "one");
    wait_mirrored(&s.env, &a, "refs/heads/main", &oid, &daemon);

    // A good file: the new mirror exists and, never synced, is brought up to date.
    let two = format!(
        "{one}{}",
        mirror_toml("b", &s.repo, &Served::url(&b), "delay = \"1s\"")
    );
    s.env
        .write_config(&format!("[daemon]\nstate_dir = \"state\"\n\n{two}"));
    let out = s.env.pushmirror(&["reload"]);
    out.assert_success();
    assert!(
        out.stdout.contains("configuration reloaded: 2 mirrors"),
        "{out}"
    );
    wait_mirrored(&s.env, &b, "refs/heads/main", &oid, &daemon);

    // A broken file: rejected with its position, the old configuration stays in force.
    s.env.write_config(&format!(
        "[daemon]\nstate_dir = \"state\"\nbogus = 1\n\n{two}"
    ));
    let out = s.env.pushmirror(&["reload"]);
    out.assert_code(2);
    assert!(out.stderr.contains("pushmirror.toml:3:1"), "{out}");
    assert!(out.stderr.contains("unknown key `bogus`"), "{out}");
    // SIGHUP with the same broken file: logged, daemon unharmed.
    daemon.signal(libc::SIGHUP);
    wait_until("reload error logged", SOON, || {
        let log = daemon.log();
        if log.contains("configuration not reloaded") {
            Ok(())
        } else {
            Err(log)
        }
    });
    let second = s.push("main", "two");
    wait_mirrored(&s.env, &b, "refs/heads/main", &second, &daemon);

    // Removing a mirror drops it cleanly.
    s.env
        .write_config(&format!("[daemon]\nstate_dir = \"state\"\n\n{one}"));
    daemon.signal(libc::SIGHUP);
    wait_until("mirror b gone", SOON, || {
        let out = s.env.pushmirror(&["status", "--json"]);
        let doc: Value = serde_json::from_str(&out.stdout).map_err(|e| format!("{e}: {out}"))?;
        let n = doc["mirrors"].as_array().map_or(0, Vec::len);
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} mirrors"))
        }
    });
}

#[test]
fn sigterm_stops_gracefully_and_keeps_pending_work() {
    let s = Served::new();
    let remote = s.configure_one("delay = \"1h\"");
    let mut daemon = s.start_daemon();
    let first = s.push("main", "one");
    wait_mirrored(&s.env, &remote, "refs/heads/main", &first, &daemon);
    let second = s.push("main", "two");
    daemon.signal(libc::SIGTERM);
    let exit = daemon.wait_for_exit(SOON);
    assert!(exit.success(), "{exit:?}\n{}", daemon.log());
    assert!(!s.socket().exists(), "socket removed on shutdown");
    let daemon = s.start_daemon();
    wait_mirrored(&s.env, &remote, "refs/heads/main", &second, &daemon);
}

#[test]
fn a_second_daemon_refuses_to_start() {
    let s = Served::new();
    s.configure("");
    let _daemon = s.start_daemon();
    let out = s.env.pushmirror(&["daemon"]);
    out.assert_code(2);
    assert!(out.stderr.contains("another pushmirror daemon"), "{out}");
}

#[test]
fn shipped_demo_configuration_creates_and_mirrors_the_demo() {
    // The README's first command, in a copy of the checkout's layout.
    let env = TestEnv::new();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/pushmirror.toml");
    let config = env.path("checkout/config/pushmirror.toml");
    fs::create_dir_all(config.parent().expect("config dir")).expect("mkdir");
    fs::copy(shipped, &config).expect("copy the shipped config");
    let out = env.pushmirror(&["--config", &config.display().to_string(), "check-config"]);
    out.assert_success();

    let mut cmd = env.pushmirror_command(&["--config", &config.display().to_string(), "daemon"]);
    let log = env.path("demo-daemon.log");
    let daemon = Background::spawn("pushmirror daemon (demo)", &mut cmd, &log);
    let upstream = env.path("checkout/demo/upstream.git");
    let downstream = env.path("checkout/demo/downstream.git");
    wait_until("the demo is created and mirrored", SOON, || {
        // The daemon makes the downstream with `git init` in place: the directory exists a
        // moment before it is a repository, so wait for its mirrored branch instead.
        if !downstream.exists() || !env.ref_exists(&downstream, "refs/heads/main") {
            return Err(format!("no mirrored downstream yet\n{}", daemon.log()));
        }
        let (up, down) = (env.mirrored_refs(&upstream), env.mirrored_refs(&downstream));
        if !up.is_empty() && up == down {
            Ok(())
        } else {
            Err(format!("{up:?} vs {down:?}\n{}", daemon.log()))
        }
    });
    assert!(
        fs::read_to_string(upstream.join("hooks/post-receive"))
            .expect("hook installed")
            .contains("notify")
    );
}

/// A tmpfs of `size` mounted at `path`, unmounted on drop (needs root, as CI has).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(path).expect("mount point");
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root): {status}"
        );
        Tmpfs(path.to_owned())
    }

    /// Fills the file system; returns the filler file.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut file = fs::File::create(&filler).expect("create filler");
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn full_disk_is_reported_and_nothing_is_lost() {
    let s = Served::new();
    let remote = s.remote("m");
    let disk = Tmpfs::mount(&s.env.path("state"), "1m");
    s.configure(&mirror_toml(
        "m",
        &s.repo,
        &Served::url(&remote),
        "delay = \"0s\"",
    ));
    let mut daemon = s.start_daemon();
    let first = s.push("main", "one");
    wait_mirrored(&s.env, &remote, "refs/heads/main", &first, &daemon);

    // Daemon up, disk full: the push is still mirrored; the status that cannot be written is
    // reported in the log.
    let filler = disk.fill();
    let second = s.push("main", "two");
    wait_mirrored(&s.env, &remote, "refs/heads/main", &second, &daemon);
    wait_until("the failed status write is logged", SOON, || {
        let log = daemon.log();
        if log.contains("cannot record the update's status")
            && log.contains("No space left on device")
        {
            Ok(())
        } else {
            Err(log)
        }
    });

    // Daemon down, disk full: the hook cannot spool either, and tells the pusher what to do.
    fs::remove_file(&filler).expect("free space");
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_exit(SOON);
    let filler = disk.fill();
    let out = s.env.git_with_env(
        &s.work,
        &["commit", "--allow-empty", "-qm", "three"],
        Vec::<(&str, &str)>::new(),
    );
    assert!(out.success(), "{out}");
    let pushed = s.env.git_with_env(
        &s.work,
        &["push", "origin", "main"],
        Vec::<(&str, &str)>::new(),
    );
    assert!(pushed.success(), "the push itself never fails: {pushed}");
    assert!(
        pushed
            .stderr
            .contains("remote: pushmirror: cannot notify the mirror daemon")
            && pushed.stderr.contains("No space left on device")
            && pushed.stderr.contains("run 'pushmirror sync --repo"),
        "{pushed}"
    );

    // Space comes back and the daemon starts: the push is mirrored (local refs changed).
    fs::remove_file(filler).expect("free space");
    let third = s.env.rev_parse(&s.work, "HEAD");
    let daemon = s.start_daemon();
    wait_mirrored(&s.env, &remote, "refs/heads/main", &third, &daemon);
    wait_status(&s.env, "m", "finished");
}

#[test]
fn one_slow_remote_does_not_starve_the_others() {
    let s = Served::new();
    let slow = s.remote("slow");
    let (hold, entered) = (s.env.path("hold"), s.env.path("entered"));
    fs::write(&hold, "").expect("hold");
    s.env.install_hook(
        &slow,
        "pre-receive",
        &format!(
            "#!/bin/sh
touch {}
while [ -e {} ]; do sleep 0.02; done
",
            entered.display(),
            hold.display()
        ),
    );
    let (a, b) = (s.remote("a"), s.remote("b"));
    let mut mirrors = String::from("[daemon]\nstate_dir = \"state\"\nmax_parallel_pushes = 2\n\n");
    for (name, remote) in [("slow", &slow), ("a", &a), ("b", &b)] {
        mirrors += &mirror_toml(name, &s.repo, &Served::url(remote), "delay = \"0s\"");
    }
    s.env.write_config(&mirrors);
    s.env
        .pushmirror(&["install-hook", &s.repo.display().to_string()])
        .assert_success();
    let daemon = s.start_daemon();
    let one = s.push("main", "one");
    wait_until("slow's update is inside its remote", SOON, || {
        if entered.exists() {
            Ok(())
        } else {
            Err(daemon.log())
        }
    });
    // `slow` holds one of the two permits for as long as its remote hangs; the others share
    // the second one and keep getting through.
    wait_mirrored(&s.env, &a, "refs/heads/main", &one, &daemon);
    wait_mirrored(&s.env, &b, "refs/heads/main", &one, &daemon);
    let two = s.push("main", "two");
    wait_mirrored(&s.env, &a, "refs/heads/main", &two, &daemon);
    wait_mirrored(&s.env, &b, "refs/heads/main", &two, &daemon);
    assert!(
        hold.exists() && s.env.refs(&slow).is_empty(),
        "slow is still held"
    );
    assert_eq!(status(&s.env, "slow")["update_status"], "started");
    fs::remove_file(&hold).expect("release");
    wait_mirrored(&s.env, &slow, "refs/heads/main", &two, &daemon);
}

#[test]
fn the_last_allowed_retry_ends_failed_for_errors_and_transient_rejections() {
    let s = Served::new();
    let c = s.env.make_commit_on(&s.repo, None, "c");
    s.env.set_ref(&s.repo, "refs/heads/main", &c);
    // One remote nobody listens on (an error), one whose ref is locked (a rejection).
    let unreachable = format!(
        "git://127.0.0.1:{}/absent.git",
        crate::support::closed_port()
    );
    let locked = s.remote("locked");
    fs::write(locked.join("refs/heads/main.lock"), "").expect("hold the ref's lock");
    let options = "retries = 1\ndelay = \"1s\"";
    s.configure(&format!(
        "{}\n{}",
        mirror_toml("unreachable", &s.repo, &unreachable, options),
        mirror_toml("locked", &s.repo, &Served::url(&locked), options)
    ));
    let _daemon = s.start_daemon();
    for name in ["unreachable", "locked"] {
        wait_status(&s.env, name, "failed");
        let st = status(&s.env, name);
        let outcomes: Vec<&str> = st["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|h| h["outcome"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(outcomes, ["to_retry", "failed"], "{st:#}");
        assert!(st["next_update_at"].is_null(), "{st:#}");
    }
    assert!(
        status(&s.env, "locked")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refs/heads/main")),
        "{:#}",
        status(&s.env, "locked")
    );
}

#[test]
fn an_entry_acknowledged_after_a_torn_journal_write_survives_a_kill() {
    let s = Served::new();
    let disk = Tmpfs::mount(&s.env.path("state"), "1m");
    // Remotes that never answer: no update ends, so the journal is never compacted.
    let hanging = crate::support::HangingServer::start();
    let url = format!("git://127.0.0.1:{}/r.git", hanging.port());
    let long = "l".repeat(120);
    let options = "timeout = \"1h\"";
    s.configure(&format!(
        "{}\n{}",
        mirror_toml(&long, &s.repo, &url, options),
        mirror_toml("b", &s.repo, &url, options)
    ));
    let mut daemon = s.start_daemon();
    s.env.pushmirror(&["sync", &long]).assert_success();

    // The disk is full: a long journal line is cut short, and no newline can follow it.
    let filler = disk.fill();
    let many: Vec<&str> = std::iter::once("sync")
        .chain(std::iter::repeat_n(long.as_str(), 60))
        .collect();
    let refused = s.env.pushmirror(&many);
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("No space left on device"),
        "{refused}"
    );

    // Space comes back; the next acknowledged entry must not depend on the torn one.
    fs::remove_file(&filler).expect("free space");
    let out = s.env.pushmirror(&["sync", "b"]);
    out.assert_success();
    assert_eq!(out.stdout, "b: scheduled\n", "{out}");
    daemon.signal(libc::SIGKILL);
    daemon.wait_for_exit(SOON);
    let log = fs::read_to_string(s.env.path("state/queue.log")).expect("journal");
    assert!(
        log.lines()
            .any(|line| line == r#"{"mirrors":["b"],"forced":true}"#),
        "the journal ends {:?}",
        &log[log.len().saturating_sub(200)..]
    );
    let (_queue, pending) =
        pushmirror::store::queue::Queue::open(&s.env.path("state")).expect("open the queue");
    assert!(pending.contains_key("b"), "{pending:?}");
}

/// Every number and duration at the top of its accepted range (SPEC.md: every value
/// `check-config` accepts, the daemon survives): the first push is mirrored at once, the next
/// waits its week and `status` says so, and reload and a forced sync work as ever.
#[test]
fn the_largest_accepted_values_are_survived() {
    let s = Served::new();
    let (all, protected) = (s.remote("all"), s.remote("protected"));
    let largest = "delay = \"7d\"\nprotected_delay = \"7d\"\ntimeout = \"7d\"\nretries = 100\n\
                   refs_per_push = 1000000";
    let mirrors = mirror_toml("all", &s.repo, &Served::url(&all), largest)
        + &mirror_toml(
            "protected",
            &s.repo,
            &Served::url(&protected),
            &format!("{largest}\nonly_protected_branches = true\nprotected_branches = [\"main\"]"),
        );
    let config =
        format!("[daemon]\nstate_dir = \"state\"\nmax_parallel_pushes = 1024\n\n{mirrors}");
    s.env.write_config(&config);
    s.env.pushmirror(&["check-config"]).assert_success();
    s.env
        .pushmirror(&["install-hook", &s.repo.display().to_string()])
        .assert_success();
    let daemon = s.start_daemon();

    let first = s.push("main", "one");
    for (name, remote) in [("all", &all), ("protected", &protected)] {
        wait_mirrored(&s.env, remote, "refs/heads/main", &first, &daemon);
        wait_status(&s.env, name, "finished");
    }
    // Inside the window now: the next update waits a week after the first one's start.
    let second = s.push("main", "two");
    let six_days = std::time::SystemTime::now() + Duration::from_secs(6 * 86_400);
    for name in ["all", "protected"] {
        let st = status(&s.env, name);
        assert_eq!(st["update_status"], "scheduled", "{st:#}");
        let due = st["next_update_at"].as_str().expect("a due time");
        let due = humantime::parse_rfc3339(due).expect("an RFC 3339 time");
        assert!(due > six_days, "{st:#}");
    }

    let out = s.env.pushmirror(&["reload"]);
    out.assert_success();
    assert!(
        out.stdout.contains("configuration reloaded: 2 mirrors"),
        "{out}"
    );
    assert_eq!(status(&s.env, "all")["update_status"], "scheduled");
    s.env
        .pushmirror(&["sync", "--repo", &s.repo.display().to_string(), "--wait"])
        .assert_success();
    for (name, remote) in [("all", &all), ("protected", &protected)] {
        assert_eq!(s.env.rev_parse(remote, "refs/heads/main"), second);
        assert_eq!(status(&s.env, name)["update_status"], "finished");
    }

    // Past the range: the reload is refused with the range, the daemon carries on.
    s.env
        .write_config(&config.replace("delay = \"7d\"", "delay = \"100000000000h\""));
    let out = s.env.pushmirror(&["reload"]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("`delay` must be from 0s to 7d, not \"100000000000h\""),
        "{out}"
    );
    s.push("main", "three");
    s.env.write_config(&config);
    assert_eq!(status(&s.env, "all")["update_status"], "scheduled");
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

/// Signal handlers are in place before the socket answers: a SIGTERM the moment the daemon
/// first answers is a graceful stop (exit 0, socket removed), never the default action. The
/// race was a few starts in a hundred, so this tries many starts.
#[test]
fn sigterm_as_soon_as_the_daemon_answers_is_a_graceful_stop() {
    let s = Served::new();
    s.configure("");
    for _ in 0..25 {
        let mut daemon = s.start_daemon();
        daemon.signal(libc::SIGTERM);
        let status = daemon.wait_for_exit(SOON);
        assert!(status.success(), "{status}\n{}", daemon.log());
        assert!(!s.socket().exists(), "the socket is removed");
    }
}

/// A push of 100,000 refs makes a hook input far larger than the largest request (8 MiB):
/// the daemon still takes the notification at once and mirrors the push, without waiting for
/// another push to take in a spooled one.
#[test]
fn a_push_of_100000_refs_is_mirrored_at_once() {
    const REFS: usize = 100_000;
    let s = Served::new();
    let remote = s.configure_one("mirror_branch_regex = \"^main$\"");
    let daemon = s.start_daemon();
    // What such a push leaves in the repository: packed refs, here written directly. The
    // filter keeps the mirror's own push to main (pushing 100,000 refs is not this test's).
    let commit = s.env.make_commit_on(&s.repo, None, "c1");
    let features: Vec<String> = (1..REFS)
        .map(|i| format!("refs/heads/feature/{i:06}"))
        .collect();
    let mut packed = String::from("# pack-refs with: peeled fully-peeled sorted \n");
    let mut input = String::new();
    for name in features
        .iter()
        .map(String::as_str)
        .chain(["refs/heads/main"])
    {
        packed.push_str(&format!("{commit} {name}\n"));
        input.push_str(&format!("{ZERO_OID} {commit} {name}\n"));
    }
    fs::write(s.repo.join("packed-refs"), packed).expect("write packed-refs");
    assert!(
        input.len() > pushmirror::protocol::MAX_REQUEST_BYTES,
        "{}",
        input.len()
    );

    let mut hook = s.env.pushmirror_command(&["notify"]);
    hook.current_dir(&s.repo).env("GIT_DIR", ".");
    let out = s.env.run_with_stdin(&mut hook, input.as_bytes());
    out.assert_success();
    assert_eq!(
        out.stderr,
        "",
        "{out}\n--- daemon log ---\n{}",
        daemon.log()
    );
    let spooled = fs::read_dir(s.env.path("state/spool"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(spooled, 0, "the hook spooled its notification");
    wait_mirrored(&s.env, &remote, "refs/heads/main", &commit, &daemon);
    wait_status(&s.env, "m", "finished");
}

/// SPEC.md section 2: while the file has errors, `status`, `sync` and `reload` find the
/// socket from `[daemon]` alone, say so with the positions, and still answer.
#[test]
fn status_sync_and_reload_answer_while_the_file_is_broken() {
    let s = Served::new();
    let remote = s.remote("m");
    let one = mirror_toml("m", &s.repo, &Served::url(&remote), "delay = \"1h\"");
    s.configure(&one);
    let daemon = s.start_daemon();
    s.env.write_config(&format!(
        "[daemon]\nstate_dir = \"state\"\n\n{one}\n[[mirror]]\nname = 42\n"
    ));
    let config = s.env.config_path();
    let warned = |out: &crate::support::Output| {
        assert!(
            out.stderr.starts_with(&format!(
                "warning: {} has errors; the daemon runs on the configuration it last loaded\n",
                config.display()
            )),
            "{out}"
        );
        assert!(
            out.stderr.contains(&format!("  {}:", config.display())),
            "{out}"
        );
    };

    let out = s.env.pushmirror(&["status"]);
    out.assert_success();
    warned(&out);
    assert!(out.stdout.lines().any(|l| l.starts_with("m ")), "{out}");

    let oid = s.push("main", "one");
    let out = s.env.pushmirror(&["sync", "m", "--wait"]);
    out.assert_success();
    warned(&out);
    assert!(out.stdout.contains("m: finished"), "{out}");
    assert_eq!(s.env.rev_parse(&remote, "refs/heads/main"), oid);

    let out = s.env.pushmirror(&["reload"]);
    out.assert_code(2);
    warned(&out);
    assert!(
        out.stderr.contains("the daemon kept its configuration"),
        "{out}"
    );
    drop(daemon);
}

/// A mirror added to the file but not yet loaded: `sync` suggests `pushmirror reload`.
#[test]
fn sync_of_a_name_only_the_file_knows_suggests_reload() {
    let s = Served::new();
    let one = mirror_toml("m", &s.repo, &Served::url(&s.remote("m")), "");
    s.configure(&one);
    let _daemon = s.start_daemon();
    let two = format!(
        "{one}{}",
        mirror_toml("n", &s.repo, &Served::url(&s.remote("n")), "")
    );
    s.env
        .write_config(&format!("[daemon]\nstate_dir = \"state\"\n\n{two}"));
    let out = s.env.pushmirror(&["sync", "n"]);
    out.assert_code(2);
    assert!(out.stderr.contains("no mirror named \"n\""), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "hint: n is in {} but not in the configuration the daemon runs on; run 'pushmirror reload'",
            s.env.config_path().display()
        )),
        "{out}"
    );
    let out = s.env.pushmirror(&["sync", "typo"]);
    out.assert_code(2);
    assert!(!out.stderr.contains("hint:"), "{out}");
}

/// Each notification the daemon takes in is logged at info level, with the repository and
/// how many refs it names.
#[test]
fn each_notification_is_logged_with_its_repository_and_ref_count() {
    let s = Served::new();
    s.configure_one("delay = \"1h\"");
    let daemon = s.start_daemon();
    s.push("main", "one");
    let repo = s.repo.canonicalize().expect("canonical repository");
    wait_until("the notification is logged", SOON, || {
        let log = daemon.log();
        let logged = log.lines().any(|line| {
            line.contains("INFO")
                && line.contains("notification taken in")
                && line.contains(&format!("repo={}", repo.display()))
                && line.contains("refs=1")
        });
        if logged { Ok(()) } else { Err(log) }
    });
}

/// The table fits `$COLUMNS` and shows NEXT; piped without it, nothing is shortened;
/// `status NAME` shows every field; `sync --wait` on a failure that will be retried says when.
#[test]
fn status_table_details_and_a_waited_sync_that_will_retry() {
    let s = Served::new();
    s.env.make_commit_on(&s.repo, None, "c");
    let long = "srv/a/rather/long/path/to/the/repositories/of/the/department";
    let repo = s.env.bare_repo(format!("{long}/app.git"));
    s.env.make_commit_on(&repo, None, "c");
    // Connection refused: a network error, transient, so retried after a backoff.
    let mirrors = mirror_toml(
        "flaky",
        &repo,
        "http://127.0.0.1:9/group/sub/project.git",
        "retries = 3",
    );
    s.configure(&mirrors);
    let daemon = s.start_daemon();

    let out = s.env.pushmirror(&["sync", "flaky", "--wait"]);
    out.assert_code(1);
    let first = out.stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("flaky: to_retry, will retry in "),
        "{out}\n--- daemon log ---\n{}",
        daemon.log()
    );

    let out = s.env.pushmirror_with_env(&[("COLUMNS", "80")], &["status"]);
    out.assert_success();
    for line in out.stdout.lines() {
        assert!(line.chars().count() <= 80, "{line}\n{out}");
    }
    assert!(out.stdout.contains("retry in "), "{out}");
    // The repository loses its start at a `/`; the URL's host is never cut.
    assert!(
        out.stdout
            .contains("  …/of/the/department/app.git -> http://127.0.0.1:9/"),
        "{out}"
    );
    let piped = s.env.pushmirror(&["status"]);
    assert!(piped.stdout.contains(&format!("{long}/app.git")), "{piped}");
    assert!(!piped.stdout.contains('…'), "{piped}");

    let out = s.env.pushmirror(&["status", "flaky"]);
    out.assert_success();
    for field in [
        "name:                flaky\n",
        "status:              to_retry\n",
        "next update:         retry in ",
        "history (newest first):\n",
    ] {
        assert!(out.stdout.contains(field), "{field:?}\n{out}");
    }
}
