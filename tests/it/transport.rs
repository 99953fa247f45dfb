//! The engine over real network transports (git daemon, lighttpd + git http-backend with
//! Basic auth, dulwich's daemon as a receive-pack that is not git's) and every way a remote
//! can fail: refused credentials, unreachable, hanging, missing, refusing a ref in its own
//! words; plus bad local input. Each failure must give a clear error in the status and leave
//! everything else undisturbed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::engine::{mirror_toml, mirrored_refs, status, write_config};
use crate::support::{
    DULWICH_VERSION, DulwichDaemon, GitDaemon, HangingServer, HttpServer, TestEnv, closed_port,
};

const SECRET: &str = "s3cret-T0ken-value";

/// A local repository with `main` and a tag.
fn local_repo(env: &TestEnv) -> std::path::PathBuf {
    let local = env.bare_repo("local.git");
    let c1 = env.make_commit_on(&local, None, "c1");
    let c2 = env.make_commit_on(&local, Some(&c1), "c2");
    env.set_ref(&local, "refs/heads/main", &c2);
    env.tag_annotated(&local, "v1", &c1);
    local
}

fn write_secret(env: &TestEnv, secret: &str) -> std::path::PathBuf {
    let path = env.path("token");
    fs::write(&path, format!("{secret}\n")).expect("write token");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod token");
    path
}

/// Asserts that `secret` appears in no output and no file under the state directory.
fn assert_secret_nowhere(env: &TestEnv, secret: &str, outputs: &[&str]) {
    for out in outputs {
        assert!(!out.contains(secret), "secret leaked in output:\n{out}");
    }
    let mut stack = vec![env.path("state")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read state dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = fs::read(&path).expect("read state file");
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(secret),
                    "secret leaked in {}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn mirror_over_git_daemon() {
    let env = TestEnv::new();
    let local = local_repo(&env);
    let daemon = GitDaemon::start(&env, "srv");
    let remote = daemon.bare_repo(&env, "remote.git");
    write_config(
        &env,
        &mirror_toml("m", &local, &daemon.url("remote.git"), ""),
    );
    env.pushmirror(&["update", "m"]).assert_success();
    assert_eq!(mirrored_refs(&env, &remote), mirrored_refs(&env, &local));
}

#[test]
fn dulwich_hook_refusal_of_several_lines_is_recorded_whole() {
    // dulwich puts the update hook's whole stderr in the ref's porcelain reason, so the
    // reason spans lines: git prints it verbatim, its closing parenthesis on a line of its own.
    let env = TestEnv::new();
    let local = local_repo(&env);
    let main = env.rev_parse(&local, "refs/heads/main");
    env.set_ref(&local, "refs/heads/protected", &main);
    let dulwich = DulwichDaemon::start(&env, "srv");
    let remote = dulwich.bare_repo(&env, "remote.git");
    env.install_hook(
        &remote,
        "update",
        "#!/bin/sh
\
         if [ \"$1\" = refs/heads/protected ]; then\n  \
           echo \"protected branch: $1\" >&2\n  \
           echo 'ask an admin to push it' >&2\n  \
           exit 1\n\
         fi\n\
         exit 0\n",
    );
    write_config(
        &env,
        &mirror_toml("m", &local, &dulwich.url("remote.git"), ""),
    );
    let out = env.pushmirror(&["update", "m"]);
    assert_eq!(
        out.code(),
        Some(1),
        "{out}\n--- dulwich {DULWICH_VERSION} log ---\n{}",
        dulwich.log()
    );
    let s = status(&env, "m");
    assert_eq!(s["update_status"], "failed", "{s:#}");
    let reason = "update hook exited with status 1: protected branch: refs/heads/protected; \
                  ask an admin to push it";
    assert_eq!(
        s["rejected_refs"],
        serde_json::json!([{"ref": "refs/heads/protected", "reason": reason}]),
        "{s:#}"
    );
    assert_eq!(
        s["last_error"],
        format!("Some refs were rejected by the remote:\n\nrefs/heads/protected ({reason})")
    );
    let mut landed = mirrored_refs(&env, &local);
    landed.remove("refs/heads/protected");
    assert_eq!(mirrored_refs(&env, &remote), landed);
}

#[test]
fn mirror_over_http_with_password_file_env_and_url() {
    let env = TestEnv::new();
    let local = local_repo(&env);
    let server = HttpServer::start(&env, "www", "mirror-bot", SECRET);
    let token = write_secret(&env, SECRET);
    let mut mirrors = String::new();
    for name in ["by-file", "by-env", "by-url"] {
        server.bare_repo(&env, &format!("{name}.git"));
    }
    mirrors += &mirror_toml(
        "by-file",
        &local,
        &server.url("by-file.git"),
        &format!(
            "username = \"mirror-bot\"\npassword_file = \"{}\"",
            token.display()
        ),
    );
    mirrors += &mirror_toml(
        "by-env",
        &local,
        &server.url("by-env.git"),
        "username = \"mirror-bot\"\npassword_env = \"MIRROR_TOKEN\"",
    );
    mirrors += &mirror_toml(
        "by-url",
        &local,
        &server.url_with_credentials("by-url.git", "mirror-bot", SECRET),
        "",
    );
    write_config(&env, &mirrors);
    let out = env.pushmirror_with_env(
        &[("MIRROR_TOKEN", SECRET), ("RUST_LOG", "trace")],
        &["update", "--all"],
    );
    out.assert_success();
    for name in ["by-file", "by-env", "by-url"] {
        let remote = server.repos_root().join(format!("{name}.git"));
        assert_eq!(
            mirrored_refs(&env, &remote),
            mirrored_refs(&env, &local),
            "{name}"
        );
        let s = status(&env, name);
        assert_eq!(s["update_status"], "finished", "{s:#}");
        assert!(
            s["url"]
                .as_str()
                .unwrap_or_default()
                .starts_with("http://*****:*****@127.0.0.1:"),
            "{s:#}"
        );
    }
    let status_json = env.pushmirror(&["status", "--json"]);
    let table = env.pushmirror(&["status"]);
    assert_secret_nowhere(
        &env,
        SECRET,
        &[&out.stdout, &out.stderr, &status_json.stdout, &table.stdout],
    );
}

#[test]
fn refused_credentials_fail_clearly_without_leaking() {
    let env = TestEnv::new();
    let local = local_repo(&env);
    let server = HttpServer::start(&env, "www", "mirror-bot", "the-right-one");
    let remote = server.bare_repo(&env, "remote.git");
    let token = write_secret(&env, SECRET);
    let extra = format!(
        "username = \"mirror-bot\"\npassword_file = \"{}\"",
        token.display()
    );
    write_config(
        &env,
        &mirror_toml("m", &local, &server.url("remote.git"), &extra),
    );
    let out = env.pushmirror_with_env(&[("RUST_LOG", "trace")], &["update", "m"]);
    out.assert_code(1);
    let s = status(&env, "m");
    assert_eq!(s["update_status"], "failed", "{s:#}");
    let error = s["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the remote refused the credentials"),
        "{error}"
    );
    assert!(error.contains("Authentication failed"), "{error}");
    assert!(mirrored_refs(&env, &remote).is_empty());
    let status_json = env.pushmirror(&["status", "--json"]);
    assert_secret_nowhere(
        &env,
        SECRET,
        &[&out.stdout, &out.stderr, &status_json.stdout],
    );
}

#[test]
fn password_file_readable_by_others_is_refused() {
    let env = TestEnv::new();
    let local = local_repo(&env);
    let token = write_secret(&env, SECRET);
    fs::set_permissions(&token, fs::Permissions::from_mode(0o644)).expect("chmod");
    let extra = format!("username = \"u\"\npassword_file = \"{}\"", token.display());
    write_config(
        &env,
        &mirror_toml("m", &local, "https://127.0.0.1:1/x.git", &extra),
    );
    env.pushmirror(&["update", "m"]).assert_code(1);
    let s = status(&env, "m");
    let error = s["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("readable by group or others (mode 0644); chmod 600 it"),
        "{error}"
    );
}

#[test]
fn unreachable_remote_is_a_clear_error() {
    let env = TestEnv::new();
    let local = local_repo(&env);
    let url = format!("git://127.0.0.1:{}/x.git", closed_port());
    write_config(&env, &mirror_toml("m", &local, &url, ""));
    env.pushmirror(&["update", "m"]).assert_code(1);
    let s = status(&env, "m");
    let error = s["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("cannot reach the remote:"), "{error}");
    assert!(
        error.contains("Connection refused") || error.contains("unable to connect"),
        "{error}"
    );
}

#[test]
fn hanging_remote_is_killed_at_the_timeout() {
    let env = TestEnv::new();
    let local = local_repo(&env);
    let hanging = HangingServer::start();
    write_config(
        &env,
        &mirror_toml("m", &local, &hanging.git_url("x.git"), "timeout = \"2s\""),
    );
    let started = Instant::now();
    env.pushmirror(&["update", "m"]).assert_code(1);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(hanging.accepted() >= 1, "git never connected");
    let s = status(&env, "m");
    let error = s["last_error"].as_str().unwrap_or_default();
    assert_eq!(
        error, "git ls-remote did not finish within 2s; it was killed with its children",
        "{s:#}"
    );
    // No git process of ours is left talking to the hanging server.
    let port = format!("127.0.0.1:{}/", hanging.port());
    crate::support::wait_until("git children gone", Duration::from_secs(10), || {
        let alive = crate::support::processes_with_arg(&port);
        if alive.is_empty() {
            Ok(())
        } else {
            Err(format!("{alive:?}"))
        }
    });
}

#[test]
fn bad_input_gives_clear_errors_and_disturbs_nothing_else() {
    let env = TestEnv::new();
    let local = local_repo(&env);
    let good_remote = env.bare_repo("good.git");
    let not_a_repo = env.path("not-a-repo");
    fs::create_dir_all(&not_a_repo).expect("mkdir");
    fs::write(not_a_repo.join("HEAD"), "garbage").expect("write");
    let mut mirrors = String::new();
    mirrors += &mirror_toml(
        "missing-local",
        &env.path("nowhere.git"),
        &format!("file://{}", good_remote.display()),
        "",
    );
    mirrors += &mirror_toml(
        "broken-local",
        &not_a_repo,
        &format!("file://{}", good_remote.display()),
        "",
    );
    mirrors += &mirror_toml(
        "missing-remote",
        &local,
        &format!("file://{}", env.path("absent.git").display()),
        "",
    );
    mirrors += &mirror_toml("bad-scheme", &local, "ftp://example.com/x.git", "");
    mirrors += &mirror_toml(
        "good",
        &local,
        &format!("file://{}", good_remote.display()),
        "",
    );
    write_config(&env, &mirrors);

    let out = env.pushmirror(&["update", "--all"]);
    out.assert_code(1);
    assert!(out.stdout.contains("good: finished"), "{out}");
    assert_eq!(
        mirrored_refs(&env, &good_remote),
        mirrored_refs(&env, &local)
    );

    let error_of = |name: &str| {
        let s = status(&env, name);
        assert_eq!(s["update_status"], "failed", "{s:#}");
        s["last_error"].as_str().unwrap_or_default().to_owned()
    };
    let e = error_of("missing-local");
    assert!(
        e.contains("local repository") && e.contains("nowhere.git") && e.contains("does not exist"),
        "{e}"
    );
    let e = error_of("broken-local");
    assert!(
        e.starts_with(&format!(
            "cannot open local repository {}",
            not_a_repo.display()
        )),
        "{e}"
    );
    let e = error_of("missing-remote");
    assert!(e.starts_with("the remote repository was not found"), "{e}");
    assert!(e.contains("absent.git"), "{e}");
    let e = error_of("bad-scheme");
    assert_eq!(
        e,
        "unsupported URL scheme 'ftp' in ftp://example.com/x.git: expected https, http, ssh, git or file"
    );
}

#[test]
fn lease_failure_rereads_and_retries() {
    // git daemon's access hook runs before each service: on the first receive-pack it moves
    // the remote's main, so the push's lease (taken from the ls-remote just before) fails.
    for keep in [false, true] {
        let env = TestEnv::new();
        let local = local_repo(&env);
        let daemon_root = env.path("srv");
        fs::create_dir_all(&daemon_root).expect("mkdir");
        let remote = env.bare_repo("srv/remote.git");
        // The remote's main starts one commit behind the local main: a fast-forward is
        // planned. What lands meanwhile is a commit the local repository lacks.
        let local_first = env.rev_parse(&local, "refs/heads/main~1");
        let remote_path = remote.display().to_string();
        env.git(
            &local,
            &[
                "push",
                &remote_path,
                &format!("{local_first}:refs/heads/main"),
            ],
        );
        let moved = env.make_commit_on(&remote, Some(&local_first), "landed meanwhile");
        let hook = env.path("access-hook");
        fs::write(
            &hook,
            format!(
                "#!/bin/sh\nif [ \"$1\" = receive-pack ] && [ ! -e {marker} ]; then\n  touch {marker}\n  git --git-dir={remote} update-ref refs/heads/main {moved}\nfi\nexit 0\n",
                marker = env.path("moved").display(),
                remote = remote.display(),
            ),
        )
        .expect("write hook");
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).expect("chmod");
        let daemon = GitDaemon::start_with_args(
            &env,
            &daemon_root,
            &[&format!("--access-hook={}", hook.display())],
        );
        let extra = format!("keep_divergent_refs = {keep}");
        write_config(
            &env,
            &mirror_toml("m", &local, &daemon.url("remote.git"), &extra),
        );
        let out = env.pushmirror_with_env(&[("RUST_LOG", "warn")], &["update", "m"]);
        assert!(env.path("moved").exists(), "the hook never ran:\n{out}");
        let remote_main = env.rev_parse(&remote, "refs/heads/main");
        let local_main = env.rev_parse(&local, "refs/heads/main");
        let s = status(&env, "m");
        if keep {
            // Nothing forced: the commit that landed stays, reported as diverged on re-read.
            out.assert_code(1);
            assert_eq!(remote_main, moved);
            assert_eq!(
                s["divergent_refs"],
                serde_json::json!(["refs/heads/main"]),
                "{s:#}"
            );
        } else {
            // Read again, and the forced update was retried with a fresh lease.
            out.assert_success();
            assert_eq!(remote_main, local_main);
            assert!(
                out.stderr.contains("the remote moved while updating"),
                "{out}"
            );
        }
    }
}

/// A forced update and a delete whose remote refs move between the read and the push: the
/// scratch repository's pre-push hook refuses the whole push before anything is sent, git's
/// own leases then refuse those two refs alone (the fast-forward beside them lands), and the
/// update reads the remote again and forces them on fresh leases. What landed meanwhile is
/// overwritten (the mirror is not keeping divergent refs), never silently: the log says so.
#[test]
fn leases_refused_by_the_hook_fall_back_to_gits_and_the_update_retries() {
    let env = TestEnv::new();
    let local = local_repo(&env);
    let c1 = env.rev_parse(&local, "refs/heads/main~1");
    let c2 = env.rev_parse(&local, "refs/heads/main");
    let rewritten = env.make_commit_on(&local, Some(&c1), "rewrite");
    env.set_ref(&local, "refs/heads/rewritten", &rewritten);
    let daemon_root = env.path("srv");
    fs::create_dir_all(&daemon_root).expect("mkdir");
    let remote = env.bare_repo("srv/remote.git");
    let remote_path = remote.display().to_string();
    env.git(
        &local,
        &[
            "push",
            &remote_path,
            &format!("{c1}:refs/heads/main"),
            &format!("{c2}:refs/heads/rewritten"),
            &format!("{c1}:refs/heads/gone"),
        ],
    );
    let moved = env.make_commit_on(&remote, Some(&c2), "landed meanwhile");
    let hook = env.path("access-hook");
    fs::write(
        &hook,
        format!(
            "#!/bin/sh
if [ \"$1\" = receive-pack ] && [ ! -e {marker} ]; then\n  touch {marker}\n  \
             git --git-dir={remote} update-ref refs/heads/rewritten {moved}\n  \
             git --git-dir={remote} update-ref refs/heads/gone {moved}\nfi\nexit 0\n",
            marker = env.path("moved").display(),
            remote = remote.display(),
        ),
    )
    .expect("write hook");
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).expect("chmod");
    let daemon = GitDaemon::start_with_args(
        &env,
        &daemon_root,
        &[&format!("--access-hook={}", hook.display())],
    );
    write_config(
        &env,
        &mirror_toml("m", &local, &daemon.url("remote.git"), "prune = \"all\""),
    );
    let out = env.pushmirror_with_env(&[("RUST_LOG", "pushmirror=debug")], &["update", "m"]);
    assert!(env.path("moved").exists(), "the hook never ran:\n{out}");
    out.assert_success();
    assert!(
        out.stderr.contains("refs=2 first=\"refs/heads/gone\"")
            && out
                .stderr
                .contains("remote refs moved since they were read"),
        "the pre-push hook did not refuse the push:\n{out}"
    );
    assert!(
        out.stderr.contains("the remote moved while updating"),
        "{out}"
    );
    assert_eq!(
        mirrored_refs(&env, &remote),
        mirrored_refs(&env, &local),
        "{out}"
    );
    assert_eq!(env.rev_parse(&remote, "refs/heads/rewritten"), rewritten);
    let s = status(&env, "m");
    assert_eq!(s["update_status"], "finished", "{s:#}");
    assert_eq!(s["last_error"], serde_json::Value::Null, "{s:#}");
}

/// Without `awk` the scratch repository's hook cannot check the leases: it refuses the push
/// saying so, and the push goes again with git's own leases, on which the forced update
/// lands.
#[test]
fn without_awk_the_leases_are_gits_own() {
    let env = TestEnv::new();
    let local = local_repo(&env);
    let remote = env.bare_repo("remote.git");
    let theirs = env.make_commit_on(&remote, None, "theirs");
    env.set_ref(&remote, "refs/heads/main", &theirs);
    // A PATH with git alone (git finds its own programs in its exec path).
    let bin = env.path("bin");
    fs::create_dir_all(&bin).expect("mkdir");
    let git = std::process::Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .expect("sh runs");
    let git = String::from_utf8(git.stdout).expect("utf-8");
    std::os::unix::fs::symlink(git.trim(), bin.join("git")).expect("symlink git");
    write_config(
        &env,
        &mirror_toml("m", &local, &format!("file://{}", remote.display()), ""),
    );
    let path = bin.display().to_string();
    let out = env.pushmirror_with_env(
        &[("PATH", &path), ("RUST_LOG", "pushmirror=debug")],
        &["update", "m"],
    );
    out.assert_success();
    let refused = env.path("state/scratch/m.git/pushmirror-refused");
    assert_eq!(
        fs::read_to_string(&refused).ok().as_deref(),
        Some("(no awk)\n"),
        "{out}"
    );
    assert!(
        out.stderr.contains("--force-with-lease=refs/heads/main:"),
        "{out}"
    );
    assert_eq!(
        env.rev_parse(&remote, "refs/heads/main"),
        env.rev_parse(&local, "refs/heads/main")
    );
}

/// `pushmirror update` runs in the operator's shell: a missing `password_env` variable is
/// not blamed on "the daemon's environment".
#[test]
fn update_without_the_password_env_variable_names_no_daemon() {
    let env = TestEnv::new();
    let local = local_repo(&env);
    write_config(
        &env,
        &mirror_toml(
            "m",
            &local,
            "http://127.0.0.1:9/remote.git",
            "username = \"bot\"\npassword_env = \"PM_TEST_UNSET_TOKEN\"",
        ),
    );
    let out = env.pushmirror(&["update", "m"]);
    out.assert_code(1);
    let s = status(&env, "m");
    let error = s["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("password_env PM_TEST_UNSET_TOKEN is not set in the environment of the process that ran the update"),
        "{s:#}\n{out}"
    );
    assert!(!out.stderr.contains("daemon's environment"), "{out}");
}
