//! Hermetic fixtures for integration tests: a temporary directory with its own `HOME` and git
//! configuration, helpers that build repositories with plain `git`, a bounded runner for the
//! `pushmirror` binary, and real git servers on loopback ([`GitDaemon`], [`HttpServer`],
//! [`DulwichDaemon`]) plus misbehaving peers ([`HangingServer`], [`closed_port`], and
//! [`FaultProxy`] in front of a real server).
//!
//! Nothing outside the temporary directory is touched, every command runs with `env_clear()`
//! plus [`TestEnv::git_env`], and every process started is killed in `Drop`.
//!
//! ```ignore
//! let env = TestEnv::new();
//! let local = env.bare_repo("local.git");
//! let a = env.make_commit_on(&local, None, "a");
//! env.set_ref(&local, "refs/heads/main", &a);
//! let daemon = GitDaemon::start(&env, "srv");
//! let remote = daemon.bare_repo(&env, "remote.git");
//! env.git(&local, &["push", &daemon.url("remote.git"), "main"]);
//! assert_eq!(env.refs(&remote), env.refs(&local));
//! ```

// Not every helper is used by every test module yet.
#![allow(dead_code)]

mod faultproxy;
pub mod lfs;
mod process;
mod servers;
mod ssh;
mod webhook;

pub use faultproxy::{Fault, FaultKind, FaultProxy};
pub use process::{Background, Output, RUN_TIMEOUT};
#[allow(unused_imports)] // re-exported for test modules that may not use all of them yet
pub use servers::{
    DULWICH_VERSION, DulwichDaemon, GitDaemon, HangingServer, HttpServer, closed_port, connect,
    enable_http_push, free_port,
};
pub use ssh::{Gitolite, SshServer, ensure_user, fingerprint, keygen, run_checked};
pub use webhook::WebhookReceiver;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Name and address used for every commit and tag.
pub const GIT_USER: (&str, &str) = ("Pushmirror Test", "test@pushmirror.invalid");
/// Date used for every commit and tag, so object ids are reproducible.
pub const GIT_DATE: &str = "1700000000 +0000";
/// The object id git uses for "no object" (e.g. the old value of a created ref).
pub const ZERO_OID: &str = "0000000000000000000000000000000000000000";

/// Polls `check` every ~20 ms until it returns `Ok`, and returns that value. When `timeout`
/// passes first, panics with `what` and the last error `check` gave.
#[track_caller]
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen:\n{last}")
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The number in environment variable `name` (a knob to run a trial longer), else `default`;
/// panics if it is set to something else than a number.
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}")),
        Err(_) => default,
    }
}

/// Returns `pid: cmdline` of every live process with an argument containing `needle`
/// (other than this test process), read from `/proc`.
pub fn processes_with_arg(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a.contains(needle)) {
            found.push(format!("{name}: {}", args.join(" ")));
        }
    }
    found
}

/// Environment for a git credential helper that answers with `user` and `password` (from
/// environment variables, so the password is in no process's argv). Add it to a command
/// with [`TestEnv::git_with_env`] or `Command::envs`.
pub fn credential_helper_env(user: &str, password: &str) -> Vec<(String, String)> {
    let helper = r#"!f() { test "$1" = get && echo "username=$PM_TEST_USER" && echo "password=$PM_TEST_PASSWORD"; }; f"#;
    vec![
        ("GIT_CONFIG_COUNT".into(), "1".into()),
        ("GIT_CONFIG_KEY_0".into(), "credential.helper".into()),
        ("GIT_CONFIG_VALUE_0".into(), helper.into()),
        ("PM_TEST_USER".into(), user.into()),
        ("PM_TEST_PASSWORD".into(), password.into()),
    ]
}

/// Environment that makes git send `Authorization: Basic ...` for `user:password` on every
/// HTTP request (`http.extraHeader` through `GIT_CONFIG_COUNT`, not argv).
pub fn basic_auth_header_env(user: &str, password: &str) -> Vec<(String, String)> {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    vec![
        ("GIT_CONFIG_COUNT".into(), "1".into()),
        ("GIT_CONFIG_KEY_0".into(), "http.extraHeader".into()),
        (
            "GIT_CONFIG_VALUE_0".into(),
            format!("Authorization: Basic {token}"),
        ),
    ]
}

/// A temporary directory with `home/`, empty `gitconfig-global` and `gitconfig-system`,
/// and helpers that run git and `pushmirror` inside it. Removed on drop.
pub struct TestEnv {
    dir: TempDir,
    counter: AtomicU32,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    /// Makes the temporary directory (short prefix: Unix socket paths must stay < 108 bytes).
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("pm-it-")
            .tempdir()
            .expect("create temporary directory");
        fs::create_dir(dir.path().join("home")).unwrap();
        fs::write(dir.path().join("gitconfig-global"), "").unwrap();
        fs::write(dir.path().join("gitconfig-system"), "").unwrap();
        TestEnv {
            dir,
            counter: AtomicU32::new(0),
        }
    }

    /// The temporary directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `path` relative to [`root`](Self::root) (an absolute `path` is returned unchanged).
    pub fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        self.root().join(path)
    }

    /// A path `<root>/<prefix>-<n>.<ext>` not handed out before by this environment.
    pub fn unique_path(&self, prefix: &str, ext: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let path = self.path(format!("{prefix}-{n}.{ext}"));
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        path
    }

    /// The complete environment of every child: `HOME`, the two empty git config files,
    /// `GIT_CONFIG_NOSYSTEM=1`, fixed author/committer name, email and date,
    /// `GIT_TERMINAL_PROMPT=0`, `LC_ALL=C` and the parent's `PATH`.
    pub fn git_env(&self) -> Vec<(&'static str, OsString)> {
        let s = |v: &str| OsString::from(v);
        let p = |v: &str| self.path(v).into_os_string();
        vec![
            ("HOME", p("home")),
            ("GIT_CONFIG_GLOBAL", p("gitconfig-global")),
            ("GIT_CONFIG_SYSTEM", p("gitconfig-system")),
            ("GIT_CONFIG_NOSYSTEM", s("1")),
            ("GIT_AUTHOR_NAME", s(GIT_USER.0)),
            ("GIT_AUTHOR_EMAIL", s(GIT_USER.1)),
            ("GIT_AUTHOR_DATE", s(GIT_DATE)),
            ("GIT_COMMITTER_NAME", s(GIT_USER.0)),
            ("GIT_COMMITTER_EMAIL", s(GIT_USER.1)),
            ("GIT_COMMITTER_DATE", s(GIT_DATE)),
            ("GIT_TERMINAL_PROMPT", s("0")),
            ("LC_ALL", s("C")),
            ("PATH", std::env::var_os("PATH").unwrap_or_default()),
        ]
    }

    /// `program` with `env_clear()`, [`git_env`](Self::git_env), and the root as working
    /// directory. Run it with [`run`](Self::run) to get the time bound.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .envs(self.git_env())
            .current_dir(self.root());
        cmd
    }

    /// Runs `cmd` with empty stdin; kills it and panics after [`RUN_TIMEOUT`].
    #[track_caller]
    pub fn run(&self, cmd: &mut Command) -> Output {
        process::run_bounded(cmd, None, RUN_TIMEOUT, self.root())
    }

    /// Runs `cmd` with `stdin` as its input; kills it and panics after [`RUN_TIMEOUT`].
    #[track_caller]
    pub fn run_with_stdin(&self, cmd: &mut Command, stdin: &[u8]) -> Output {
        process::run_bounded(cmd, Some(stdin), RUN_TIMEOUT, self.root())
    }

    /// `git <args>` in `dir` (relative to the root), not yet run.
    pub fn git_command(&self, dir: impl AsRef<Path>, args: &[&str]) -> Command {
        let mut cmd = self.command("git");
        cmd.current_dir(self.path(dir)).args(args);
        cmd
    }

    /// Runs `git <args>` in `dir`; panics with command, status, stdout and stderr unless it
    /// succeeds. Returns stdout without trailing whitespace.
    #[track_caller]
    pub fn git(&self, dir: impl AsRef<Path>, args: &[&str]) -> String {
        let out = self.run(&mut self.git_command(dir, args));
        out.assert_success();
        out.stdout.trim_end().to_owned()
    }

    /// Like [`git`](Self::git) with `stdin` as input.
    #[track_caller]
    pub fn git_stdin(&self, dir: impl AsRef<Path>, args: &[&str], stdin: &str) -> String {
        let out = self.run_with_stdin(&mut self.git_command(dir, args), stdin.as_bytes());
        out.assert_success();
        out.stdout.trim_end().to_owned()
    }

    /// Runs `git <args>` in `dir` with `extra_env` added, and returns the outcome whatever
    /// it is (for tests that expect failures).
    #[track_caller]
    pub fn git_with_env<K, V>(
        &self,
        dir: impl AsRef<Path>,
        args: &[&str],
        extra_env: impl IntoIterator<Item = (K, V)>,
    ) -> Output
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut cmd = self.git_command(dir, args);
        cmd.envs(extra_env);
        self.run(&mut cmd)
    }

    /// Writes `content` to `path` (relative to the root), creating parent directories.
    pub fn write_file(&self, path: impl AsRef<Path>, content: &str) -> PathBuf {
        let path = self.path(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, content).unwrap();
        path
    }

    /// Like [`write_file`](Self::write_file) with mode 0600 (a password file).
    pub fn write_secret(&self, path: impl AsRef<Path>, content: &str) -> PathBuf {
        let path = self.write_file(path, content);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// Path of `pushmirror.toml` in the root, the file `PUSHMIRROR_CONFIG` points at.
    pub fn config_path(&self) -> PathBuf {
        self.path("pushmirror.toml")
    }

    /// Writes `toml` to [`config_path`](Self::config_path) and returns that path.
    pub fn write_config(&self, toml: &str) -> PathBuf {
        self.write_file(self.config_path(), toml)
    }

    /// The `pushmirror` binary with `args`, the git environment and `PUSHMIRROR_CONFIG`
    /// (`RUST_LOG` unset), not yet run.
    pub fn pushmirror_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(env!("CARGO_BIN_EXE_pushmirror"));
        cmd.env("PUSHMIRROR_CONFIG", self.config_path()).args(args);
        cmd
    }

    /// Runs `pushmirror <args>`; kills it and panics with its output after [`RUN_TIMEOUT`].
    #[track_caller]
    pub fn pushmirror(&self, args: &[&str]) -> Output {
        self.run(&mut self.pushmirror_command(args))
    }

    /// Runs `pushmirror <args>` with extra environment variables (e.g. `RUST_LOG`).
    #[track_caller]
    pub fn pushmirror_with_env(&self, vars: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = self.pushmirror_command(args);
        cmd.envs(vars.iter().copied());
        self.run(&mut cmd)
    }

    /// Installs `script` as hook `name` (e.g. `post-receive`) of `repo`, executable.
    pub fn install_hook(&self, repo: &Path, name: &str, script: &str) {
        let path = repo.join("hooks").join(name);
        fs::create_dir_all(path.parent().expect("hooks dir")).unwrap();
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }

    /// Runs `pushmirror <args>` with `stdin` as input (e.g. `notify` with hook lines).
    #[track_caller]
    pub fn pushmirror_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.run_with_stdin(&mut self.pushmirror_command(args), stdin.as_bytes())
    }

    /// Starts `pushmirror <args>` (e.g. `daemon`) in the background, output to a log file
    /// under `logs/`; killed when the returned value drops.
    pub fn spawn_pushmirror(&self, args: &[&str]) -> Background {
        let log = self.unique_path("logs/pushmirror", "log");
        Background::spawn("pushmirror", &mut self.pushmirror_command(args), &log)
    }

    /// Starts `pushmirror daemon` on a configuration whose `state_dir` is `state`, and waits
    /// (30 s at most) until it answers a ping on its socket there.
    pub fn start_daemon(&self) -> Background {
        let daemon = self.spawn_pushmirror(&["daemon"]);
        let socket = self.path("state/control.sock");
        wait_until(
            "the daemon answers a ping",
            Duration::from_secs(30),
            || match ask(&socket, &pushmirror::protocol::Request::Ping) {
                Ok(pushmirror::protocol::Response::Pong { .. }) => Ok(()),
                other => Err(format!("{other:?}\n--- daemon log ---\n{}", daemon.log())),
            },
        );
        daemon
    }

    /// Makes a bare repository at `name` (relative to the root) with default branch `main`.
    pub fn bare_repo(&self, name: impl AsRef<Path>) -> PathBuf {
        let path = self.path(name);
        fs::create_dir_all(&path).unwrap();
        self.git(
            &path,
            &["init", "--quiet", "--bare", "--initial-branch=main"],
        );
        path
    }

    /// Clones `bare` into a work tree at `name` (relative to the root), for
    /// [`commit`](Self::commit).
    pub fn work_clone(&self, bare: &Path, name: impl AsRef<Path>) -> PathBuf {
        let path = self.path(name);
        let (bare, target) = (bare.to_string_lossy(), path.to_string_lossy());
        self.git(self.root(), &["clone", "--quiet", &bare, &target]);
        path
    }

    /// In work tree `work`: switches to `branch` (from its `origin` value if any, else from
    /// the current commit, else as a first commit), writes `content` to `file`, commits with
    /// `msg`, pushes the branch to `origin` and returns the new commit id.
    pub fn commit(
        &self,
        work: &Path,
        branch: &str,
        file: &str,
        content: &str,
        msg: &str,
    ) -> String {
        self.git(work, &["fetch", "--quiet", "origin"]);
        let remote_branch = format!("refs/remotes/origin/{branch}");
        if self.ref_exists(work, &remote_branch) {
            self.git(work, &["checkout", "--quiet", "-B", branch, &remote_branch]);
        } else if self.ref_exists(work, "HEAD") {
            self.git(work, &["checkout", "--quiet", "-B", branch]);
        } else {
            self.git(
                work,
                &["symbolic-ref", "HEAD", &format!("refs/heads/{branch}")],
            );
        }
        self.write_file(work.join(file), content);
        self.git(work, &["add", "--", file]);
        self.git(work, &["commit", "--quiet", "--allow-empty", "-m", msg]);
        self.git(
            work,
            &[
                "push",
                "--quiet",
                "origin",
                &format!("HEAD:refs/heads/{branch}"),
            ],
        );
        self.rev_parse(work, "HEAD")
    }

    /// Every ref of `repo` as refname → object id, as `git for-each-ref` lists them
    /// (annotated tags map to the tag object; symbolic refs appear with their target's id).
    pub fn refs(&self, repo: &Path) -> BTreeMap<String, String> {
        self.for_each_ref(repo, &[])
            .into_iter()
            .map(|(name, oid, _)| (name, oid))
            .collect()
    }

    /// The refs a mirror copies: `refs/heads/*` and `refs/tags/*`, symbolic refs left out.
    pub fn mirrored_refs(&self, repo: &Path) -> BTreeMap<String, String> {
        self.for_each_ref(repo, &["refs/heads/", "refs/tags/"])
            .into_iter()
            .filter(|(_, _, symref)| symref.is_empty())
            .map(|(name, oid, _)| (name, oid))
            .collect()
    }

    fn for_each_ref(&self, repo: &Path, patterns: &[&str]) -> Vec<(String, String, String)> {
        let mut args = vec![
            "for-each-ref",
            "--format=%(refname) %(objectname) %(symref)",
        ];
        args.extend_from_slice(patterns);
        self.git(repo, &args)
            .lines()
            .map(|line| {
                let mut parts = line.splitn(3, ' ');
                let mut next = || parts.next().unwrap_or("").to_owned();
                (next(), next(), next())
            })
            .collect()
    }

    /// True when `rev` (e.g. `refs/heads/main`, `HEAD`) resolves in `repo`.
    pub fn ref_exists(&self, repo: &Path, rev: &str) -> bool {
        let mut cmd = self.git_command(repo, &["rev-parse", "--verify", "--quiet", rev]);
        self.run(&mut cmd).success()
    }

    /// The object id `rev` resolves to in `repo`; panics if it does not resolve.
    pub fn rev_parse(&self, repo: &Path, rev: &str) -> String {
        self.git(repo, &["rev-parse", "--verify", rev])
    }

    /// Points `refname` at `oid` (creating or moving it; no fast-forward check).
    pub fn set_ref(&self, repo: &Path, refname: &str, oid: &str) {
        self.git(repo, &["update-ref", refname, oid]);
    }

    /// Deletes `refname`.
    pub fn delete_ref(&self, repo: &Path, refname: &str) {
        self.git(repo, &["update-ref", "-d", refname]);
    }

    /// Makes a commit in `repo` (bare or not) without a work tree and without moving any
    /// ref: `parent`'s tree (or an empty one) with file `README` set to `msg`, message `msg`.
    /// Returns its id. Point a ref at it with [`set_ref`](Self::set_ref).
    pub fn make_commit_on(&self, repo: &Path, parent: Option<&str>, msg: &str) -> String {
        self.commit_file_on(repo, parent, "README", &format!("{msg}\n"), msg)
    }

    /// Like [`make_commit_on`](Self::make_commit_on) with top-level file `file` set to
    /// `content` (other files of `parent` kept).
    pub fn commit_file_on(
        &self,
        repo: &Path,
        parent: Option<&str>,
        file: &str,
        content: &str,
        msg: &str,
    ) -> String {
        assert!(
            !file.contains(['/', '\t', '\n']),
            "top-level file names only: {file:?}"
        );
        let blob = self.git_stdin(repo, &["hash-object", "-w", "--stdin"], content);
        let mut entries = match parent {
            Some(parent) => self.git(repo, &["ls-tree", &format!("{parent}^{{tree}}")]),
            None => String::new(),
        }
        .lines()
        .filter(|line| line.split_once('\t').map(|(_, name)| name) != Some(file))
        .map(|line| format!("{line}\n"))
        .collect::<String>();
        entries.push_str(&format!("100644 blob {blob}\t{file}\n"));
        let tree = self.git_stdin(repo, &["mktree"], &entries);
        let mut args = vec!["commit-tree", &tree, "-m", msg];
        if let Some(parent) = parent {
            args.extend(["-p", parent]);
        }
        self.git(repo, &args)
    }

    /// Creates annotated tag `refs/tags/<name>` on `target` (message `name`); returns the id
    /// of the tag object.
    pub fn tag_annotated(&self, repo: &Path, name: &str, target: &str) -> String {
        self.git(repo, &["tag", "--annotate", "-m", name, name, target]);
        self.rev_parse(repo, &format!("refs/tags/{name}"))
    }

    /// Makes `name` (e.g. `refs/heads/alias` or `HEAD`) a symbolic ref to `target`.
    pub fn symbolic_ref(&self, repo: &Path, name: &str, target: &str) {
        self.git(repo, &["symbolic-ref", name, target]);
    }

    /// Sets `key = value` in `repo`'s own config (e.g. `receive.denyNonFastForwards true`).
    pub fn set_config(&self, repo: &Path, key: &str, value: &str) {
        self.git(repo, &["config", key, value]);
    }

    /// Installs an `update` hook in bare `repo` that refuses every update of `refname`
    /// (exit 1, `refusing <ref>: protected by test hook` on stderr) and accepts the rest,
    /// so a push gets `! [remote rejected] <ref> (hook declined)` for that ref only.
    pub fn install_update_hook_refusing(&self, repo: &Path, refname: &str) {
        assert!(!refname.contains('\''), "refname with a quote: {refname:?}");
        let script = format!(
            "#!/bin/sh\n\
             if [ \"$1\" = '{refname}' ]; then\n  \
               echo \"refusing $1: protected by test hook\" >&2\n  \
               exit 1\n\
             fi\n\
             exit 0\n"
        );
        let hook = repo.join("hooks").join("update");
        fs::create_dir_all(hook.parent().unwrap()).unwrap();
        fs::write(&hook, script).unwrap();
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Sends one request over the control socket at `socket`, with the library's client on a
/// throwaway runtime.
pub fn ask(
    socket: &Path,
    request: &pushmirror::protocol::Request,
) -> Result<pushmirror::protocol::Response, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let timeout = Duration::from_secs(10);
        let mut client = pushmirror::client::Client::connect(socket, timeout)
            .await
            .map_err(|e| e.to_string())?;
        client
            .request(request, timeout)
            .await
            .map_err(|e| e.to_string())
    })
}
