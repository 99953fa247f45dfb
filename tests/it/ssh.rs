//! SSH remotes end to end: the real binary against a real OpenSSH sshd on a free loopback
//! port (its own host key, key-only, user `git` with `git-shell`) and gitolite3 behind one.
//! Per-mirror keys made by `pushmirror ssh-keygen`, pinned host keys checked strictly, the
//! user's `~/.ssh` ignored, and each SSH failure worded for the operator.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pushmirror::protocol::{Request, Response};
use serde_json::Value;

use crate::engine::{mirror_toml, status};
use crate::support::{
    Background, Gitolite, SshServer, TestEnv, ask, closed_port, ensure_user, fingerprint, keygen,
    processes_with_arg, run_checked, wait_until,
};

const SOON: Duration = Duration::from_secs(30);

/// A local repository with a commit on `main` and a tag, an sshd with an empty remote, and
/// the mirror `m` between them (its key at the default `<state_dir>/keys/m`).
struct Setup {
    env: TestEnv,
    server: SshServer,
    local: PathBuf,
    remote: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let env = TestEnv::new();
        let server = SshServer::start(&env);
        let local = env.bare_repo("local.git");
        let a = env.make_commit_on(&local, None, "a");
        env.set_ref(&local, "refs/heads/main", &a);
        env.set_ref(&local, "refs/tags/v1", &a);
        let remote = server.bare_repo(&env, "remote.git");
        Setup {
            env,
            server,
            local,
            remote,
        }
    }

    /// Writes the configuration of mirror `m` pinning `known_hosts` lines, with `extra`.
    fn configure(&self, known_hosts: &[String], extra: &str) {
        let pinned: Vec<String> = known_hosts.iter().map(|l| format!("{l:?}")).collect();
        let extra = format!("ssh_known_hosts = [{}]\n{extra}", pinned.join(", "));
        self.env.write_config(&format!(
            "[daemon]\nstate_dir = \"state\"\n\n{}",
            mirror_toml("m", &self.local, &self.server.url(&self.remote), &extra)
        ));
    }

    /// Configures `m` with the server's real host key, makes its key with `pushmirror
    /// ssh-keygen` and authorizes it on the server.
    fn configure_authorized(&self) -> String {
        self.configure(&[self.server.known_hosts_line()], "");
        let public = self.keygen(&[]);
        self.server.authorize_only(&public);
        public
    }

    /// Runs `pushmirror ssh-keygen m <args>`, expecting success; returns the public key line.
    fn keygen(&self, args: &[&str]) -> String {
        let mut all = vec!["ssh-keygen", "m"];
        all.extend(args);
        let out = self.env.pushmirror(&all);
        out.assert_success();
        out.stdout.trim_end().to_owned()
    }

    fn key(&self) -> PathBuf {
        self.env.path("state/keys/m")
    }

    /// Runs `pushmirror update m` and returns the mirror's status afterwards.
    fn update(&self) -> (crate::support::Output, Value) {
        let out = self.env.pushmirror(&["update", "m"]);
        (out, status(&self.env, "m"))
    }

    /// Asserts that `update m` failed for good with a `last_error` containing each of `words`.
    #[track_caller]
    fn assert_fails_for_good(&self, words: &[&str]) -> String {
        let (out, st) = self.update();
        out.assert_code(1);
        assert_eq!(st["update_status"], "failed", "{st:#}\n{out}");
        let error = st["last_error"].as_str().expect("a last_error").to_owned();
        for word in words {
            assert!(error.contains(word), "{word:?} not in {error}\n{out}");
        }
        assert!(!error.contains("debug1"), "{error}");
        assert!(self.env.refs(&self.remote).is_empty());
        error
    }

    fn host_fingerprint(&self) -> String {
        fingerprint(&self.server.host_public_key())
    }
}

#[test]
fn a_push_is_mirrored_over_ssh_on_a_non_standard_port_with_the_git_user_shown() {
    let s = Setup::new();
    assert_ne!(s.server.port(), 22);
    s.configure_authorized();
    s.env.pushmirror(&["check-config"]).assert_success();
    let (out, st) = s.update();
    out.assert_success();
    assert_eq!(st["update_status"], "finished", "{st:#}");
    assert_eq!(
        s.env.mirrored_refs(&s.remote),
        s.env.mirrored_refs(&s.local)
    );
    let url = format!(
        "ssh://git@127.0.0.1:{}{}",
        s.server.port(),
        s.remote.display()
    );
    assert_eq!(st["url"], url.as_str());
    let known_hosts = s.env.path("state/ssh/m.known_hosts");
    assert_eq!(
        fs::read_to_string(&known_hosts).expect("the pinned file"),
        format!("{}\n", s.server.known_hosts_line())
    );
    assert_eq!(
        fs::metadata(&known_hosts)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn a_changed_host_key_is_a_permanent_failure_naming_host_and_offered_fingerprint() {
    let s = Setup::new();
    s.configure_authorized();
    let other = s.env.path("other_host");
    keygen(&other, "other");
    let public = fs::read_to_string(other.with_extension("pub")).expect("read");
    let key: Vec<&str> = public.split_whitespace().take(2).collect();
    s.configure(
        &[format!("[127.0.0.1]:{} {}", s.server.port(), key.join(" "))],
        "",
    );
    let host = format!("[127.0.0.1]:{}", s.server.port());
    s.assert_fails_for_good(&[
        "does not match the pinned `ssh_known_hosts`",
        &host,
        &format!("ED25519 key {}", s.host_fingerprint()),
    ]);
}

#[test]
fn an_unknown_host_is_a_permanent_failure_naming_host_and_offered_fingerprint() {
    let s = Setup::new();
    s.configure_authorized();
    // The right key, pinned for another host: ssh knows no key for this one.
    let line = s
        .server
        .known_hosts_line()
        .replacen("127.0.0.1", "127.0.0.2", 1);
    s.configure(&[line], "");
    let host = format!("[127.0.0.1]:{}", s.server.port());
    s.assert_fails_for_good(&[
        "unknown host",
        &host,
        &format!("ED25519 key {}", s.host_fingerprint()),
    ]);
}

#[test]
fn a_refused_key_is_refused_credentials_with_a_hint_to_register_it() {
    let s = Setup::new();
    s.configure(&[s.server.known_hosts_line()], "");
    s.keygen(&[]);
    // The server accepts another key only.
    let stranger = s.env.path("stranger");
    keygen(&stranger, "stranger");
    s.server
        .authorize_only(&fs::read_to_string(stranger.with_extension("pub")).expect("read"));
    s.assert_fails_for_good(&[
        "the remote refused the credentials",
        "git@127.0.0.1: Permission denied (publickey)",
        "register the mirror's public key",
    ]);
}

#[test]
fn a_key_file_readable_by_others_is_refused_and_named() {
    let s = Setup::new();
    s.configure_authorized();
    fs::set_permissions(s.key(), fs::Permissions::from_mode(0o644)).expect("chmod");
    let key = s.key().display().to_string();
    // A problem of one mirror: the daemon loads the file and serves the others.
    let check = s.env.pushmirror(&["check-config"]);
    check.assert_code(1);
    assert!(
        check.stderr.contains(&format!(
            "mirror `m`: refusing ssh key {key}: it is readable by group or others (mode 0644)"
        )),
        "{check}"
    );
    s.assert_fails_for_good(&[&format!("refusing ssh key {key}"), "chmod 600 it"]);
}

#[test]
fn an_ssh_mirror_without_pinned_host_keys_never_connects() {
    let s = Setup::new();
    s.env.write_config(&format!(
        "[daemon]\nstate_dir = \"state\"\n\n{}",
        mirror_toml("m", &s.local, &s.server.url(&s.remote), "")
    ));
    let public = s.keygen(&[]);
    s.server.authorize_only(&public);
    // A problem of one mirror: the daemon loads the file and serves the others.
    let check = s.env.pushmirror(&["check-config"]);
    check.assert_code(1);
    assert!(
        check
            .stderr
            .contains("mirror `m`: an SSH remote needs pinned host keys"),
        "{check}"
    );
    let sshd_log_before = s.server.log();
    s.assert_fails_for_good(&["no pinned host keys"]);
    assert_eq!(s.server.log(), sshd_log_before, "nothing connected");
}

/// The daemon runs as a user whose own `~/.ssh` (from the passwd entry, which is where
/// OpenSSH looks, not `$HOME`) holds a config sending every host to port 1, a known_hosts
/// pinning a wrong key for the server, and an unauthorized default key: the update goes
/// through untouched by any of it.
#[test]
fn the_daemon_users_own_ssh_directory_changes_nothing() {
    let s = Setup::new();
    s.configure_authorized();
    ensure_user("pmdecoy", "/bin/sh", "/tmp");
    let home = s.env.path("decoy-home");
    let dot_ssh = home.join(".ssh");
    fs::create_dir_all(&dot_ssh).expect("mkdir");
    run_checked("usermod", &["-d", &home.to_string_lossy(), "pmdecoy"]);
    fs::write(
        dot_ssh.join("config"),
        "Host *\n  Port 1\n  StrictHostKeyChecking no\n  IdentityFile ~/.ssh/id_ed25519\n",
    )
    .expect("write decoy config");
    keygen(&dot_ssh.join("id_ed25519"), "decoy");
    keygen(&s.env.path("decoy_host"), "decoy-host");
    let decoy_host = fs::read_to_string(s.env.path("decoy_host.pub")).expect("read");
    let decoy_key: Vec<&str> = decoy_host.split_whitespace().take(2).collect();
    fs::write(
        dot_ssh.join("known_hosts"),
        format!("[127.0.0.1]:{} {}\n", s.server.port(), decoy_key.join(" ")),
    )
    .expect("write decoy known_hosts");
    // The decoy user owns what the daemon writes and reads.
    fs::create_dir_all(s.env.path("state")).expect("mkdir state");
    for path in [&home, &s.env.path("state"), &s.local] {
        run_checked("chown", &["-R", "pmdecoy:", &path.to_string_lossy()]);
    }
    let mut update = s.env.command("setpriv");
    update
        .args(["--reuid=pmdecoy", "--regid=pmdecoy", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_pushmirror"))
        .arg("--config")
        .arg(s.env.config_path())
        .args(["update", "m"]);
    let before = directory_contents(&dot_ssh);
    let out = s.env.run(&mut update);
    out.assert_success();
    assert_eq!(
        s.env.mirrored_refs(&s.remote),
        s.env.mirrored_refs(&s.local)
    );
    assert_eq!(
        directory_contents(&dot_ssh),
        before,
        "ssh wrote nothing there"
    );
}

/// Returns each file of `dir` with its content.
fn directory_contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(dir)
        .expect("list")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let content = fs::read(&path).expect("read");
            (path, content)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_rotated_key_is_used_by_the_next_update_without_a_restart() {
    let s = Setup::new();
    let old = s.configure_authorized();
    let daemon = s.env.spawn_pushmirror(&["daemon"]);
    wait_for_daemon(&s.env, &daemon);
    let out = s.env.pushmirror(&["sync", "m", "--wait"]);
    out.assert_success();
    assert_eq!(
        s.env.mirrored_refs(&s.remote),
        s.env.mirrored_refs(&s.local)
    );

    // Without --force the key stays; with it the pair is replaced, and only the new key is
    // registered on the server from now on.
    let refused = s.env.pushmirror(&["ssh-keygen", "m"]);
    refused.assert_code(1);
    assert!(refused.stderr.contains("exists already"), "{refused}");
    let new = s.keygen(&["--force"]);
    assert_ne!(new, old);
    s.server.authorize_only(&new);
    let b = s.env.make_commit_on(&s.local, Some("refs/heads/main"), "b");
    s.env.set_ref(&s.local, "refs/heads/main", &b);
    let out = s.env.pushmirror(&["sync", "m", "--wait"]);
    out.assert_success();
    assert_eq!(s.env.rev_parse(&s.remote, "refs/heads/main"), b);
    let new_fingerprint = fingerprint(&s.env.path("state/keys/m.pub"));
    assert!(
        s.server
            .log()
            .contains("Accepted publickey for git from 127.0.0.1"),
        "{}",
        s.server.log()
    );
    assert!(
        s.server.log().contains(&new_fingerprint),
        "{}",
        s.server.log()
    );
}

/// Waits until the daemon answers on its socket.
fn wait_for_daemon(env: &TestEnv, daemon: &Background) {
    let socket = env.path("state/control.sock");
    wait_until("the daemon answers a ping", SOON, || {
        match ask(&socket, &Request::Ping) {
            Ok(Response::Pong { .. }) => Ok(()),
            other => Err(format!("{other:?}\n--- daemon log ---\n{}", daemon.log())),
        }
    });
}

#[test]
fn ssh_keygen_makes_a_private_pair_that_ssh_keygen_reads_back() {
    let s = Setup::new();
    s.configure(&[s.server.known_hosts_line()], "");
    let public = s.keygen(&[]);
    let key = s.key();
    let pub_file = fs::read_to_string(key.with_extension("pub")).expect("read .pub");
    assert_eq!(public, pub_file.trim_end());
    assert!(public.starts_with("ssh-ed25519 AAAA"), "{public}");
    assert!(public.ends_with(" pushmirror:m"), "{public}");
    let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(key.parent().expect("keys dir")), 0o700);
    // ssh-keygen -lf reads the private key and finds the same key as the public line.
    assert_eq!(fingerprint(&key), fingerprint(&key.with_extension("pub")));
    let listed = run_checked(
        "ssh-keygen",
        &["-lf", &key.with_extension("pub").to_string_lossy()],
    );
    assert!(listed.contains("pushmirror:m (ED25519)"), "{listed}");
    let private = fs::read_to_string(&key).expect("read key");
    assert!(private.contains("BEGIN OPENSSH PRIVATE KEY"));

    // A key in a directory that others can read is refused, and nothing is written.
    let open_dir = s.env.path("open-keys");
    fs::create_dir(&open_dir).expect("mkdir");
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    s.configure(
        &[s.server.known_hosts_line()],
        &format!("ssh_key = \"{}/m\"", open_dir.display()),
    );
    let out = s.env.pushmirror(&["ssh-keygen", "m"]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("refusing to put a private key in"),
        "{out}"
    );
    assert_eq!(fs::read_dir(&open_dir).expect("list").count(), 0);
    let out = s.env.pushmirror(&["ssh-keygen", "nope"]);
    out.assert_code(2);
}

#[test]
fn detect_host_keys_prints_pinnable_lines_with_ssh_keygen_fingerprints() {
    let s = Setup::new();
    let url = s.server.url(&s.remote);
    let out = s.env.pushmirror(&["detect-host-keys", &url]);
    out.assert_success();
    let line = s.server.known_hosts_line();
    assert!(out.stdout.contains(&format!("  \"{line}\",\n")), "{out}");
    let expected = format!(
        "  # 256 {} [127.0.0.1]:{} (ED25519)\n  \"{line}\",\n",
        s.host_fingerprint(),
        s.server.port()
    );
    assert!(out.stdout.contains(&expected), "{expected}\nnot in\n{out}");
    // The printed block is a valid `ssh_known_hosts` setting: pasted, the mirror works.
    let block: String = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    s.env.write_config(&format!(
        "[daemon]\nstate_dir = \"state\"\n\n{}",
        mirror_toml("m", &s.local, &url, &block)
    ));
    let public = s.keygen(&[]);
    s.server.authorize_only(&public);
    s.env.pushmirror(&["update", "m"]).assert_success();

    let unreachable = format!("ssh://git@127.0.0.1:{}/x.git", closed_port());
    let out = s.env.pushmirror(&["detect-host-keys", &unreachable]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("cannot reach the SSH host [127.0.0.1]:"),
        "{out}"
    );
    let out = s
        .env
        .pushmirror(&["detect-host-keys", "https://example.com/x.git"]);
    out.assert_code(2);
}

/// While an update's ssh runs (held by a pre-receive hook that waits for a gate file), no
/// process's argv holds any part of the private key.
#[test]
fn no_key_material_is_in_any_command_line_during_an_ssh_update() {
    let s = Setup::new();
    s.configure_authorized();
    let gate = s.env.path("gate");
    s.env.install_hook(
        &s.remote,
        "pre-receive",
        &format!(
            // Ends too when the test's directory is gone (a failed test never opens the gate).
            "#!/bin/sh\nwhile [ ! -e {gate} ] && [ -d {root} ]; do sleep 0.05; done\n\
             cat >/dev/null\n",
            gate = gate.display(),
            root = s.env.root().display()
        ),
    );
    let update = s.env.spawn_pushmirror(&["update", "m"]);
    let key = s.key().display().to_string();
    let during = wait_until("the update's ssh runs", SOON, || {
        let ssh: Vec<String> = processes_with_arg(&format!("IdentityFile={key}"));
        if ssh.is_empty() {
            Err(update.log())
        } else {
            Ok(all_command_lines_and_environments())
        }
    });
    fs::write(&gate, "").expect("open the gate");
    let private = fs::read_to_string(s.key()).expect("read key");
    let body: Vec<&str> = private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!body.is_empty());
    assert!(
        during
            .iter()
            .any(|line| line.contains(&format!("IdentityFile={key}"))),
        "the scan saw the update's ssh"
    );
    for line in &body {
        for piece in line.as_bytes().chunks(16).filter(|c| c.len() == 16) {
            let piece = std::str::from_utf8(piece).expect("base64 is ASCII");
            assert!(
                !during.iter().any(|cmdline| cmdline.contains(piece)),
                "key material {piece:?} in a command line or environment"
            );
        }
    }
    wait_until("the update ends", SOON, || {
        let st = status(&s.env, "m");
        if st["update_status"] == "finished" {
            Ok(())
        } else {
            Err(format!("{st:#}\n{}", update.log()))
        }
    });
    assert_eq!(
        s.env.mirrored_refs(&s.remote),
        s.env.mirrored_refs(&s.local)
    );
}

/// Returns the command line of every process (`/proc/*/cmdline`), and the environment of
/// each (`/proc/*/environ`, readable here as root).
fn all_command_lines_and_environments() -> Vec<String> {
    let mut found = processes_with_arg("");
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(environ) = fs::read(entry.path().join("environ")) {
            found.push(String::from_utf8_lossy(&environ).into_owned());
        }
    }
    found
}

/// gitolite denies writes to one branch: the other refs land over SSH, and the denied one
/// is listed with gitolite's reason.
#[test]
fn gitolite_refuses_one_branch_and_the_others_land() {
    let env = TestEnv::new();
    let local = env.bare_repo("local.git");
    let a = env.make_commit_on(&local, None, "a");
    for branch in ["main", "keep", "protected"] {
        env.set_ref(&local, &format!("refs/heads/{branch}"), &a);
    }
    // The key first: gitolite is set up with it.
    let key = env.path("mirror-key");
    keygen(&key, "pushmirror:m");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
    let public = fs::read_to_string(key.with_extension("pub")).expect("read");
    let gitolite = Gitolite::start(
        &env,
        "repo x\n    -       refs/heads/protected$   =   mirror\n    RW+D    =   mirror\n",
        &[("mirror", &public)],
    );
    let extra = format!(
        "ssh_key = \"{}\"\nssh_known_hosts = [\"{}\"]\n",
        key.display(),
        gitolite.known_hosts_line()
    );
    env.write_config(&format!(
        "[daemon]\nstate_dir = \"state\"\n\n{}",
        mirror_toml("m", &local, &gitolite.url("x.git"), &extra)
    ));
    let out = env.pushmirror(&["update", "m"]);
    out.assert_code(1);
    let st = status(&env, "m");
    assert_eq!(st["update_status"], "failed", "{st:#}\n{}", gitolite.log());
    let remote = gitolite.repo_path("x.git");
    let refs = env.refs(&remote);
    assert_eq!(refs.get("refs/heads/main"), Some(&a), "{refs:?}");
    assert_eq!(refs.get("refs/heads/keep"), Some(&a), "{refs:?}");
    assert!(!refs.contains_key("refs/heads/protected"), "{refs:?}");
    let rejected = st["rejected_refs"].as_array().expect("rejected_refs");
    assert_eq!(rejected.len(), 1, "{st:#}");
    assert_eq!(rejected[0]["ref"], "refs/heads/protected");
    let reason = rejected[0]["reason"].as_str().expect("a reason");
    assert!(reason.contains("hook declined"), "{reason}");
    assert!(
        reason.contains("DENIED by refs/heads/protected"),
        "gitolite's own words: {reason}"
    );
    // Only the user `git` stays visible in a shown SSH URL.
    let masked = gitolite.url("x.git").replace("gitolite@", "*****@");
    assert_eq!(st["url"], masked.as_str());
}

/// A refused connection is a network failure: retried (`to_retry`), worded as one, and
/// without ssh's debug lines.
#[test]
fn a_refused_connection_is_transient() {
    let s = Setup::new();
    let line = s.server.known_hosts_line();
    let port = closed_port();
    let url = format!("ssh://git@127.0.0.1:{port}{}", s.remote.display());
    let pinned = line.replacen(&format!(":{} ", s.server.port()), &format!(":{port} "), 1);
    s.env.write_config(&format!(
        "[daemon]\nstate_dir = \"state\"\n\n{}",
        mirror_toml(
            "m",
            &s.local,
            &url,
            &format!("retries = 3\nssh_known_hosts = [{pinned:?}]\n")
        )
    ));
    s.keygen(&[]);
    let daemon = s.env.spawn_pushmirror(&["daemon"]);
    wait_for_daemon(&s.env, &daemon);
    s.env.pushmirror(&["sync", "m"]).assert_success();
    let st = wait_until("m to_retry", SOON, || {
        let st = status(&s.env, "m");
        if st["update_status"] == "to_retry" {
            Ok(st)
        } else {
            Err(format!("{st:#}\n--- daemon log ---\n{}", daemon.log()))
        }
    });
    let error = st["last_error"].as_str().expect("a last_error");
    assert!(error.starts_with("cannot reach the remote: "), "{error}");
    assert!(error.contains("Connection refused"), "{error}");
    assert!(!error.contains("debug1"), "{error}");
}

/// A reload that changes `ssh_known_hosts` rewrites the pinned file before the next update.
#[test]
fn a_reload_that_changes_the_pinned_host_keys_takes_effect() {
    let s = Setup::new();
    s.configure_authorized();
    let daemon = s.env.spawn_pushmirror(&["daemon"]);
    wait_for_daemon(&s.env, &daemon);
    s.env.pushmirror(&["sync", "m", "--wait"]).assert_success();

    let other = s.env.path("other_host");
    keygen(&other, "other");
    let public = fs::read_to_string(other.with_extension("pub")).expect("read");
    let key: Vec<&str> = public.split_whitespace().take(2).collect();
    let wrong = format!("[127.0.0.1]:{} {}", s.server.port(), key.join(" "));
    s.configure(std::slice::from_ref(&wrong), "");
    s.env.pushmirror(&["reload"]).assert_success();
    let out = s.env.pushmirror(&["sync", "m", "--wait"]);
    out.assert_code(1);
    let st = status(&s.env, "m");
    let error = st["last_error"].as_str().expect("a last_error");
    assert!(error.contains("does not match the pinned"), "{error}");
    let pinned = s.env.path("state/ssh/m.known_hosts");
    assert_eq!(
        fs::read_to_string(&pinned).expect("read"),
        format!("{wrong}\n")
    );

    s.configure(&[s.server.known_hosts_line()], "");
    s.env.pushmirror(&["reload"]).assert_success();
    s.env.pushmirror(&["sync", "m", "--wait"]).assert_success();
    assert_eq!(
        fs::read_to_string(&pinned).expect("read"),
        format!("{}\n", s.server.known_hosts_line())
    );
}

/// The whole path over SSH: a push to the local repository runs the installed hook, the
/// daemon hears it and mirrors the push to the sshd, within its window (1s here: the
/// daemon's start-up update may still run when the push comes, and the push then waits for
/// the window).
#[test]
fn a_push_through_the_hook_is_mirrored_over_ssh_by_the_daemon() {
    let s = Setup::new();
    s.configure_authorized();
    s.configure(&[s.server.known_hosts_line()], "delay = \"1s\"");
    s.env
        .pushmirror(&["install-hook", &s.local.display().to_string()])
        .assert_success();
    let daemon = s.env.spawn_pushmirror(&["daemon"]);
    wait_for_daemon(&s.env, &daemon);
    let work = s.env.work_clone(&s.local, "work");
    let pushed = s
        .env
        .commit(&work, "main", "file.txt", "over ssh", "over ssh");
    wait_until("main mirrored over ssh", SOON, || {
        match s.env.refs(&s.remote).get("refs/heads/main") {
            Some(seen) if *seen == pushed => Ok(()),
            seen => Err(format!(
                "saw {seen:?}\n--- daemon log ---\n{}",
                daemon.log()
            )),
        }
    });
    let st = status(&s.env, "m");
    assert_eq!(st["last_error"], Value::Null, "{st:#}");
}
