//! The only code that talks to remotes: `git ls-remote` and `git push --porcelain` as child
//! processes.
//!
//! Why the `git` CLI and not libgit2: libgit2 reads the local repository well (refs, ancestry,
//! LFS pointers), but its push recomputes every delta, never sends thin packs, walks every
//! advertised ref, aborts the whole push on one non-fast-forward ref, and cannot be cancelled
//! once the pack streams. `git push` is 4–16x faster on real histories, reports each ref in its
//! own words (`--porcelain`), knows `--force-with-lease`, and uses OpenSSH and the system's TLS
//! setup. A child process can also be killed, which is what timeouts and shutdown need.
//!
//! Why credentials travel in the environment: anything in a process's argv is readable by
//! every user of the machine (`ps`, `/proc/<pid>/cmdline`). So the URL handed to git never
//! carries a password, `-c` is never used for anything secret, and HTTP credentials reach git
//! through a one-line shell credential helper (set through `GIT_CONFIG_COUNT`) that prints two
//! environment variables of its own process. The helper runs `printf` as a shell builtin, so
//! the password is never in the argv of git, of `sh` or of anything else; the environment of a
//! process is readable only by its owner. A wrong password gives git's own
//! `Authentication failed`, which [`classify_failure`] turns into [`RemoteError::AuthRefused`].
//!
//! Why process groups: git does its network work in children (`git-remote-https`, `ssh`,
//! `pack-objects`). Killing git alone on timeout or shutdown would leave them running, holding
//! connections and our pipes. Each git runs in its own process group, and a timeout or a
//! cancellation kills the whole group before reaping git.
//!
//! git's stderr is classified once, here, into a [`RemoteError`] kind that the scheduler uses to
//! choose between retrying and `failed`; every text that leaves this module went through
//! [`scrub_secrets`].

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::LazyLock;
use std::time::Duration;

use git2::Oid;
use regex::Regex;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::GitConfigPolicy;
use crate::mirror::refdiff::{RefUpdate, UpdateKind};
use crate::mirror::url::{RemoteUrl, mask_credentials, scrub_secrets};

/// A user name and password (or token) for an HTTP(S) remote.
#[derive(Clone)]
pub struct HttpCredentials {
    pub username: String,
    pub password: SecretString,
}

/// Everything needed to run git against one mirror's remote, for one update.
pub struct Remote<'a> {
    /// The local bare repository; git runs with `--git-dir` set to it.
    pub git_dir: &'a Path,
    pub url: &'a RemoteUrl,
    /// Used for HTTP(S) URLs only; never put in argv (see the module documentation).
    pub credentials: Option<HttpCredentials>,
    pub git_config: GitConfigPolicy,
    /// When the whole update must be over; a git child still running then is killed.
    pub deadline: Instant,
    /// Cancelled on daemon shutdown; a running git child is killed.
    pub cancel: CancellationToken,
}

/// The remote's branches and tags (symbolic refs and peeled `^{}` entries dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteRefs {
    pub refs: BTreeMap<String, Oid>,
}

/// What git said of each ref of a push, keyed by the destination ref.
#[derive(Debug, Clone, Default)]
pub struct PushReport {
    /// One result per ref of the push, in the order of the updates given to
    /// [`Remote::push`].
    pub results: Vec<RefResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefResult {
    pub refname: String,
    pub outcome: RefOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefOutcome {
    /// Created, updated, forced or deleted (`*`, ` `, `+`, `-`).
    Done,
    /// Already as wanted (`=`).
    UpToDate,
    /// Refused by our own git before sending (`!` with `[rejected]`). `stale` is true for
    /// `stale info`, `fetch first` and `non-fast-forward`: the remote moved since it was read.
    /// Also used, with `stale: false`, for a ref that git did not report at all.
    Rejected { reason: String, stale: bool },
    /// Refused by the remote (`!` with `[remote rejected]`), in the remote's words. When the
    /// remote only said `failed to update ref` and its stderr named a lock on that ref, the
    /// reason carries that line too (see [`RefOutcome::is_lock_failure`]).
    RemoteRejected { reason: String },
}

impl RefOutcome {
    /// Returns true when the ref was refused because the remote moved since it was read: our
    /// git's `stale info` / `fetch first` / `non-fast-forward`, or the remote's own
    /// `cannot lock ref '<ref>': is at <oid> but expected <oid>` (another push updated it
    /// between our read and our write). Reading the remote again is the answer to both.
    pub fn is_stale(&self) -> bool {
        match self {
            RefOutcome::Rejected { stale, .. } => *stale,
            RefOutcome::RemoteRejected { reason } => reason.contains("but expected"),
            RefOutcome::Done | RefOutcome::UpToDate => false,
        }
    }

    /// Returns true when the remote refused the ref because it could not lock it (another
    /// update was running there, or a stale `.lock` file): a transient refusal, unlike a hook
    /// or a protected branch.
    pub fn is_lock_failure(&self) -> bool {
        match self {
            RefOutcome::RemoteRejected { reason } => mentions_lock(&reason.to_ascii_lowercase()),
            _ => false,
        }
    }
}

/// Why talking to the remote failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("the remote refused the credentials: {detail}")]
    AuthRefused { detail: String },
    #[error("the remote repository was not found: {detail}")]
    NotFound { detail: String },
    #[error("cannot reach the remote: {detail}")]
    Unreachable { detail: String },
    #[error("the remote server failed: {detail}")]
    ServerError { detail: String },
    #[error("the remote repository is locked: {detail}")]
    Locked { detail: String },
    #[error("git {operation} did not finish within {timeout}; it was killed with its children")]
    Timeout {
        operation: &'static str,
        timeout: String,
    },
    #[error("git {operation} was cancelled by shutdown")]
    Cancelled { operation: &'static str },
    #[error("git {operation} failed: {detail}")]
    Failed {
        operation: &'static str,
        detail: String,
    },
    #[error("cannot run git {operation}")]
    Spawn {
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl RemoteError {
    /// Returns true for failures worth retrying: network, timeout, server error, lock, and
    /// anything git said that is not recognised (`Failed`). Authentication refused and
    /// repository not found are permanent until the configuration or the remote changes.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            RemoteError::AuthRefused { .. } | RemoteError::NotFound { .. }
        )
    }
}

impl Remote<'_> {
    /// Returns the remote's branches and tags.
    pub async fn list_refs(&self) -> Result<RemoteRefs, RemoteError> {
        const OPERATION: &str = "ls-remote";
        let args = vec![
            OsString::from("ls-remote"),
            OsString::from("--symref"),
            OsString::from("--"),
            OsString::from(self.url.for_git()),
            OsString::from("refs/heads/*"),
            OsString::from("refs/tags/*"),
        ];
        let output = self.run_git(OPERATION, args).await?;
        if !output.status.success() {
            return Err(self.failure(OPERATION, &output));
        }
        parse_ls_remote(&output.stdout).map_err(|detail| RemoteError::Failed {
            operation: OPERATION,
            detail: scrub_secrets(&detail, &self.secrets()),
        })
    }

    /// Pushes `updates` in one `git push`, returning what happened to each ref.
    ///
    /// Refs refused by our git or by the remote are results, not errors; `Err` means git could
    /// not push at all (or cannot say what happened to the refs). Pushing nothing runs no git.
    pub async fn push(&self, updates: &[RefUpdate]) -> Result<PushReport, RemoteError> {
        const OPERATION: &str = "push";
        let plan = plan_push(updates);
        if plan.refspecs.is_empty() {
            return Ok(PushReport {
                results: collect_results(updates, Vec::new(), plan.invalid),
            });
        }
        let mut args: Vec<OsString> = ["push", "--porcelain", "--no-verify", "--no-follow-tags"]
            .into_iter()
            .map(OsString::from)
            .collect();
        args.extend(plan.leases.into_iter().map(OsString::from));
        args.push(OsString::from("--"));
        args.push(OsString::from(self.url.for_git()));
        args.extend(plan.refspecs.into_iter().map(OsString::from));

        let output = self.run_git(OPERATION, args).await?;
        let lines = parse_porcelain(&output.stdout);
        let code = output.status.code();
        // git push exits 1 when some ref was refused and still reports every ref; any other
        // failure (128 from die(), a signal) means the refs' fate is unknown.
        if (lines.is_empty() && !output.status.success()) || !matches!(code, Some(0 | 1)) {
            return Err(self.failure(OPERATION, &output));
        }
        // "[remote failure] (remote failed to report status)": the connection broke after the
        // pack was sent. Nothing is known of any ref, so the push failed as a whole, for the
        // reason stderr gives (usually a network one, hence retried after a fresh read).
        if let Some(line) = lines
            .iter()
            .find(|line| line.summary.starts_with("[remote failure]"))
        {
            let stderr = format!("{}\n{}", output.stderr, line.summary);
            return Err(classify_failure(
                OPERATION,
                &stderr,
                &exit_description(output.status),
                &self.secrets(),
            ));
        }
        let secrets = self.secrets();
        let reported = lines
            .into_iter()
            .map(|line| RefResult {
                outcome: outcome_of(&line, &output.stderr, &secrets),
                refname: line.dst,
            })
            .collect();
        Ok(PushReport {
            results: collect_results(updates, reported, plan.invalid),
        })
    }

    /// Returns the secrets that must never appear in text we pass on.
    fn secrets(&self) -> Vec<&SecretString> {
        let mut secrets = Vec::new();
        if let Some(credentials) = &self.credentials {
            secrets.push(&credentials.password);
        }
        if let Some(password) = self.url.password() {
            secrets.push(password);
        }
        secrets
    }

    /// Returns the error for a git that failed, from its stderr.
    fn failure(&self, operation: &'static str, output: &GitOutput) -> RemoteError {
        let error = classify_failure(
            operation,
            &output.stderr,
            &exit_description(output.status),
            &self.secrets(),
        );
        debug!(operation, cause = %error, "git failed");
        error
    }

    /// Returns the argv (after `git`) and the whole environment of a git child.
    /// `inherited` looks a variable up in our own environment.
    fn invocation(
        &self,
        args: Vec<OsString>,
        inherited: &dyn Fn(&str) -> Option<OsString>,
    ) -> GitInvocation {
        let mut git_dir_arg = OsString::from("--git-dir=");
        git_dir_arg.push(self.git_dir.as_os_str());
        let mut argv = vec![git_dir_arg];
        argv.extend(args);

        let mut env: Vec<(String, OsString)> = Vec::new();
        let mut passthrough: Vec<&str> = PASSTHROUGH_ENV.to_vec();
        if self.git_config == GitConfigPolicy::Inherit {
            // The operator opted in to the user's configuration, which may live there.
            passthrough.push("XDG_CONFIG_HOME");
        }
        for name in passthrough {
            if let Some(value) = inherited(name) {
                env.push((name.to_owned(), value));
            }
        }
        for (name, value) in [
            ("LC_ALL", "C"),
            ("LANG", "C"),
            ("GIT_TERMINAL_PROMPT", "0"),
            // Pinned host keys come with SSH support proper; until then never prompt.
            ("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
        ] {
            env.push((name.to_owned(), OsString::from(value)));
        }
        if self.git_config == GitConfigPolicy::Isolated {
            env.push(("GIT_CONFIG_NOSYSTEM".to_owned(), OsString::from("1")));
            env.push(("GIT_CONFIG_GLOBAL".to_owned(), OsString::from("/dev/null")));
        }

        // Configuration through the environment (command-line scope, read after every file),
        // never through `-c`, which would be in argv.
        let mut config: Vec<(&str, &str)> = vec![
            // The operator named both repositories; git otherwise refuses one owned by
            // another user (also the remote side of a local path).
            ("safe.directory", "*"),
            // Empty: clears every helper that the repository's or the user's config names.
            ("credential.helper", ""),
            // Empty: no askpass program from the config (GIT_ASKPASS and SSH_ASKPASS are not
            // passed on either), so git fails instead of prompting.
            ("core.askPass", ""),
        ];
        let credentials = self.credentials.as_ref().filter(|_| self.url.is_http());
        if let Some(credentials) = credentials {
            config.push(("credential.helper", CREDENTIAL_HELPER));
            // A redirect could send our credentials to another host.
            config.push(("http.followRedirects", "false"));
            env.push((
                USERNAME_ENV.to_owned(),
                OsString::from(&credentials.username),
            ));
            env.push((
                PASSWORD_ENV.to_owned(),
                OsString::from(credentials.password.expose_secret()),
            ));
        }
        env.push((
            "GIT_CONFIG_COUNT".to_owned(),
            OsString::from(config.len().to_string()),
        ));
        for (index, (key, value)) in config.into_iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{index}"), OsString::from(key)));
            env.push((format!("GIT_CONFIG_VALUE_{index}"), OsString::from(value)));
        }
        GitInvocation { argv, env }
    }

    /// Runs one git child to its end, or kills it and its process group at the deadline or on
    /// cancellation. Returns its exit status and output whatever the status.
    async fn run_git(
        &self,
        operation: &'static str,
        args: Vec<OsString>,
    ) -> Result<GitOutput, RemoteError> {
        if self.cancel.is_cancelled() {
            return Err(RemoteError::Cancelled { operation });
        }
        let budget = self.deadline.saturating_duration_since(Instant::now());
        if budget.is_zero() {
            return Err(timeout_error(operation, budget));
        }
        let invocation = self.invocation(args, &|name| std::env::var_os(name));
        // argv holds no secret (see the module documentation); masked all the same.
        let command_line = mask_credentials(
            &invocation
                .argv
                .iter()
                .map(|arg| arg.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
        );
        let command_line = format!("git {command_line}");
        debug!(operation, command = %shorten(&command_line, LOGGED_CHARS), "running git");

        let mut command = tokio::process::Command::new("git");
        command
            .args(&invocation.argv)
            .env_clear()
            .envs(invocation.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent. It makes git
        // die with the daemon even on SIGKILL, where kill_on_drop cannot run: an orphaned push
        // would otherwise race the next daemon's update of the same mirror.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|source| RemoteError::Spawn { operation, source })?;
        drop(command);
        drop(invocation);
        // The group id is git's pid (process_group(0)). git is reaped only once its output is
        // read to the end, so while we may kill the group, the pid cannot be reused.
        let pgid = child.id();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();

        enum Stop {
            Deadline,
            Cancelled,
        }
        let finished = tokio::select! {
            finished = async {
                let (stdout, stderr) = tokio::join!(read_all(stdout), read_tail(stderr, STDERR_CAP));
                let status = child.wait().await;
                (status, stdout, stderr)
            } => Ok(finished),
            () = tokio::time::sleep_until(self.deadline) => Err(Stop::Deadline),
            () = self.cancel.cancelled() => Err(Stop::Cancelled),
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match finished {
            Ok((status, stdout, stderr)) => {
                let io = |source| RemoteError::Spawn { operation, source };
                let status = status.map_err(io)?;
                let stdout = stdout.map_err(io)?;
                let stderr = stderr.map_err(io)?;
                let stderr = String::from_utf8_lossy(&stderr).into_owned();
                debug!(
                    operation,
                    %status,
                    elapsed_ms,
                    stderr = %shorten(&scrub_secrets(stderr.trim(), &self.secrets()), LOGGED_CHARS),
                    "git finished"
                );
                Ok(GitOutput {
                    status,
                    stdout: String::from_utf8_lossy(&stdout).into_owned(),
                    stderr,
                })
            }
            Err(stop) => {
                if let Some(pgid) = pgid {
                    kill_process_group(pgid);
                }
                // SIGKILL cannot be ignored; the bound only guards against a process stuck in
                // the kernel, which kill_on_drop then leaves to tokio's orphan reaper.
                let reaped = tokio::time::timeout(REAP_GRACE, child.wait()).await;
                debug!(operation, elapsed_ms, reaped = reaped.is_ok(), "git killed");
                Err(match stop {
                    Stop::Deadline => timeout_error(operation, budget),
                    Stop::Cancelled => RemoteError::Cancelled { operation },
                })
            }
        }
    }
}

/// Returns the timeout error of a git that was given `budget` (the time left until the
/// deadline when it started), rendered to the nearest second like `30s` or `1h`. For the
/// first git of an update that is the configured timeout.
fn timeout_error(operation: &'static str, budget: Duration) -> RemoteError {
    let millis = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
    let rounded = if millis < 1000 {
        Duration::from_millis(millis)
    } else {
        Duration::from_secs(millis.saturating_add(500) / 1000)
    };
    RemoteError::Timeout {
        operation,
        timeout: humantime::format_duration(rounded).to_string(),
    }
}

/// The environment variables passed on to git from ours when set: what git, curl and ssh need
/// to find programs, the home directory (ssh keys), proxies and CA certificates.
const PASSTHROUGH_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "GIT_SSL_CAINFO",
    "GIT_SSL_NO_VERIFY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

const USERNAME_ENV: &str = "PUSHMIRROR_GIT_USERNAME";
const PASSWORD_ENV: &str = "PUSHMIRROR_GIT_PASSWORD";

/// The credential helper: prints the two variables of its own environment when git asks for
/// credentials (`get`), and ignores `store` and `erase`. `printf` is a shell builtin, so the
/// password never becomes an argument of any process.
const CREDENTIAL_HELPER: &str = "!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' \"$PUSHMIRROR_GIT_USERNAME\" \"$PUSHMIRROR_GIT_PASSWORD\"; }; f";

/// The most of git's stderr kept (its end, where the fatal error is).
const STDERR_CAP: usize = 64 * 1024;

/// How long to wait for a killed git to be reaped.
const REAP_GRACE: Duration = Duration::from_secs(5);

/// The lines of stderr kept in an error's detail (the last ones).
const DETAIL_LINES: usize = 10;

/// The most of a command line or of stderr logged: a push of thousands of refs has a long
/// command line.
const LOGGED_CHARS: usize = 2000;

/// A git child's argv (after the program name) and complete environment. Deliberately not
/// `Debug`: the environment may hold the password.
struct GitInvocation {
    argv: Vec<OsString>,
    env: Vec<(String, OsString)>,
}

/// What a git child left behind.
struct GitOutput {
    status: ExitStatus,
    stdout: String,
    /// The last [`STDERR_CAP`] bytes.
    stderr: String,
}

/// Sends SIGKILL to every process of the group `pgid`.
fn kill_process_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // Never kill(0) or kill(-1): those would reach our own group or every process.
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions. The group is the one git leads
    // (process_group(0)), and git is not reaped yet, so the id still names that group.
    let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        debug!(pgid, %error, "cannot kill the git process group");
    }
}

async fn read_all(pipe: Option<impl AsyncRead + Unpin>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if let Some(mut pipe) = pipe {
        pipe.read_to_end(&mut out).await?;
    }
    Ok(out)
}

/// Reads `pipe` to its end, keeping only the last `cap` bytes.
async fn read_tail(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> std::io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return Ok(kept);
    };
    let mut buffer = vec![0u8; 8192];
    loop {
        let n = pipe.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buffer[..n]);
        if kept.len() > 2 * cap {
            kept.drain(..kept.len() - cap);
        }
    }
    if kept.len() > cap {
        kept.drain(..kept.len() - cap);
    }
    Ok(kept)
}

/// Returns `text` cut to at most `max` characters, saying how much was left out.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}... ({} more bytes)", &text[..end], text.len() - end),
    }
}

fn exit_description(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("git exited with status {code} without a message"),
        None => format!("git was ended by {status} without a message"),
    }
}

/// Returns the refs of `git ls-remote --symref` output: branches and tags only, without peeled
/// `^{}` entries and without any ref reported as symbolic.
fn parse_ls_remote(stdout: &str) -> Result<RemoteRefs, String> {
    let mut refs = BTreeMap::new();
    let mut symbolic = BTreeSet::new();
    for line in stdout.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(symref) = line.strip_prefix("ref: ") {
            // `ref: <target>\t<name>`: <name> is the symbolic ref.
            if let Some((_, name)) = symref.split_once('\t') {
                symbolic.insert(name.to_owned());
            }
            continue;
        }
        let Some((oid, name)) = line.split_once('\t') else {
            return Err(format!("unexpected line in git ls-remote output: {line:?}"));
        };
        if name.ends_with("^{}")
            || !(name.starts_with("refs/heads/") || name.starts_with("refs/tags/"))
        {
            continue;
        }
        let oid = Oid::from_str(oid)
            .map_err(|_| format!("unexpected object name in git ls-remote output: {line:?}"))?;
        refs.insert(name.to_owned(), oid);
    }
    for name in &symbolic {
        refs.remove(name);
    }
    Ok(RemoteRefs { refs })
}

/// The arguments of one push, and the updates that cannot be pushed at all.
#[derive(Debug, Default, PartialEq, Eq)]
struct PushPlan {
    leases: Vec<String>,
    refspecs: Vec<String>,
    invalid: Vec<RefResult>,
}

/// Returns the `--force-with-lease` options and refspecs of `updates`. Sources are object
/// ids, so that what lands is exactly what was planned.
fn plan_push(updates: &[RefUpdate]) -> PushPlan {
    let mut plan = PushPlan::default();
    for update in updates {
        let refname = &update.refname;
        // An empty expected value means "must not exist" to git.
        let lease = || {
            let old = update.old.map(|oid| oid.to_string()).unwrap_or_default();
            format!("--force-with-lease={refname}:{old}")
        };
        match (update.kind, update.new) {
            (UpdateKind::Create | UpdateKind::FastForward, Some(new)) => {
                plan.refspecs.push(format!("{new}:{refname}"));
            }
            (UpdateKind::Force, Some(new)) => {
                plan.leases.push(lease());
                plan.refspecs.push(format!("{new}:{refname}"));
            }
            (UpdateKind::Delete, _) => {
                plan.leases.push(lease());
                plan.refspecs.push(format!(":{refname}"));
            }
            (kind, None) => plan.invalid.push(RefResult {
                refname: refname.clone(),
                outcome: RefOutcome::Rejected {
                    reason: format!("nothing to push: a {kind:?} update without a new value"),
                    stale: false,
                },
            }),
        }
    }
    plan
}

/// One ref line of `git push --porcelain`: `<flag>\t<src>:<dst>\t<summary>`.
#[derive(Debug, PartialEq, Eq)]
struct PorcelainLine {
    flag: char,
    dst: String,
    /// `[new branch]`, `[rejected] (stale info)`, `[remote rejected] (hook declined)`, ...
    summary: String,
}

/// Returns the ref lines of `git push --porcelain` output (`To <url>` and `Done` skipped).
fn parse_porcelain(stdout: &str) -> Vec<PorcelainLine> {
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let mut fields = line.splitn(3, '\t');
        let (Some(flag), Some(refs), Some(summary)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let mut flag_chars = flag.chars();
        let (Some(flag), None) = (flag_chars.next(), flag_chars.next()) else {
            continue;
        };
        // `<src>:<dst>`, `:<dst>` or `(delete):<dst>`; a ref name never contains ':'.
        let Some((_, dst)) = refs.rsplit_once(':') else {
            continue;
        };
        lines.push(PorcelainLine {
            flag,
            dst: dst.to_owned(),
            summary: summary.to_owned(),
        });
    }
    lines
}

/// Returns the outcome of one porcelain line; `stderr` explains a lock failure.
fn outcome_of(line: &PorcelainLine, stderr: &str, secrets: &[&SecretString]) -> RefOutcome {
    match line.flag {
        ' ' | '+' | '-' | '*' => RefOutcome::Done,
        '=' => RefOutcome::UpToDate,
        _ => {
            let summary = line.summary.as_str();
            if let Some(reason) = bracketed_reason(summary, "[rejected]") {
                let stale = matches!(reason, "stale info" | "fetch first" | "non-fast-forward");
                RefOutcome::Rejected {
                    reason: reason.to_owned(),
                    stale,
                }
            } else if let Some(reason) = bracketed_reason(summary, "[remote rejected]") {
                // git's receive-pack says only this of a ref it could not lock; the remote's
                // stderr says why.
                let lock = (reason == "failed to update ref")
                    .then(|| lock_line_for(stderr, &line.dst))
                    .flatten();
                let reason = match lock {
                    Some(lock) => format!("{reason}: {lock}"),
                    None => reason.to_owned(),
                };
                RefOutcome::RemoteRejected {
                    reason: scrub_secrets(&reason, secrets),
                }
            } else {
                RefOutcome::RemoteRejected {
                    reason: scrub_secrets(summary, secrets),
                }
            }
        }
    }
}

/// Returns `reason` of `<tag> (<reason>)`, or of `<tag>` alone an empty reason.
fn bracketed_reason<'s>(summary: &'s str, tag: &str) -> Option<&'s str> {
    let rest = summary.strip_prefix(tag)?.trim();
    Some(
        rest.strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or(rest),
    )
}

/// Returns the remote's "cannot lock ref '<refname>'..." line of `stderr`, without the
/// `remote: error: ` prefix.
fn lock_line_for(stderr: &str, refname: &str) -> Option<String> {
    let needle = format!("cannot lock ref '{refname}'");
    stderr
        .lines()
        .find(|line| line.contains(&needle))
        .map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("remote:").unwrap_or(line).trim_start();
            let line = line.strip_prefix("error:").unwrap_or(line);
            line.trim().to_owned()
        })
}

/// Returns one result per update, in the order of `updates`: what git reported, else the
/// reason it was not pushed, else a rejection saying that git did not report it.
fn collect_results(
    updates: &[RefUpdate],
    reported: Vec<RefResult>,
    invalid: Vec<RefResult>,
) -> Vec<RefResult> {
    let mut by_ref: BTreeMap<String, RefOutcome> = BTreeMap::new();
    let mut extra = Vec::new();
    for result in invalid.into_iter().chain(reported) {
        if updates.iter().any(|u| u.refname == result.refname) {
            by_ref.entry(result.refname).or_insert(result.outcome);
        } else {
            extra.push(result);
        }
    }
    let mut results: Vec<RefResult> = updates
        .iter()
        .map(|update| RefResult {
            refname: update.refname.clone(),
            outcome: by_ref
                .remove(&update.refname)
                .unwrap_or_else(|| RefOutcome::Rejected {
                    reason: "git push did not report this ref".to_owned(),
                    stale: false,
                }),
        })
        .collect();
    results.extend(extra);
    results
}

/// The error kinds that git's stderr is sorted into, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    AuthRefused,
    NotFound,
    ServerError,
    Locked,
    Unreachable,
    Failed,
}

/// Returns the kind of failure that git's (lowercased, relevant) stderr lines describe.
fn failure_kind(lines: &[&str]) -> FailureKind {
    static AUTH: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r"authentication failed|could not read (username|password)|",
            r"invalid username or password|http 40[13]\b|returned error: 40[13]\b|",
            r"permission denied \((publickey|password|keyboard-interactive|gssapi)",
        ))
        .expect("the authentication pattern is a valid regex")
    });
    static NOT_FOUND: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r"repository '[^']*' not found|repository not found|",
            r"does not appear to be a git repository|http 404\b|returned error: 404\b|",
            r"repository not exported",
        ))
        .expect("the not-found pattern is a valid regex")
    });
    static SERVER: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r"returned error: 5\d\d\b|http 5\d\d\b|internal server error|bad gateway|",
            r"service unavailable|gateway time-?out",
        ))
        .expect("the server-error pattern is a valid regex")
    });
    static UNREACHABLE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r"could not resolve host|unable to look up|connection refused|failed to connect|",
            r"unable to connect|couldn't connect to server|connection timed out|",
            r"operation timed out|network is unreachable|no route to host|connection reset|",
            r"the remote end hung up unexpectedly|early eof|rpc failed",
        ))
        .expect("the unreachable pattern is a valid regex")
    });
    let any = |regex: &Regex| lines.iter().any(|line| regex.is_match(line));
    if any(&AUTH) {
        FailureKind::AuthRefused
    } else if any(&NOT_FOUND) || lines.iter().any(|line| is_missing_remote_path(line)) {
        FailureKind::NotFound
    } else if any(&SERVER) {
        FailureKind::ServerError
    } else if lines.iter().any(|line| mentions_lock(line)) {
        FailureKind::Locked
    } else if any(&UNREACHABLE) {
        FailureKind::Unreachable
    } else {
        FailureKind::Failed
    }
}

/// Returns true for a lowercased line that says a ref or repository lock was in the way.
fn mentions_lock(line: &str) -> bool {
    static LOCK: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"cannot lock ref|unable to create '[^']*\.lock'|failed to lock")
            .expect("the lock pattern is a valid regex")
    });
    LOCK.is_match(line)
}

/// Returns true for a lowercased line saying that a quoted path does not exist, unless it is
/// about a program we could not run or a lock file.
fn is_missing_remote_path(line: &str) -> bool {
    static MISSING: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"'[^']*': no such file or directory")
            .expect("the missing-path pattern is a valid regex")
    });
    MISSING.is_match(line)
        && !line.contains(".lock'")
        && !line.contains("cannot run")
        && !line.contains("cannot exec")
        && !line.contains("cannot spawn")
}

/// Returns the lines of git's stderr worth showing: without hints, git's boilerplate advice
/// and blank `remote:` lines, trimmed.
fn relevant_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .map(str::trim)
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            !(line.is_empty()
                || line
                    .strip_prefix("remote:")
                    .is_some_and(|r| r.trim().is_empty())
                || lower.starts_with("hint:")
                || lower == "please make sure you have the correct access rights"
                || lower == "and the repository exists.")
        })
        .collect()
}

/// Returns the error that a failed git's stderr describes. The detail is the relevant lines
/// (the last few), with every URL's user info masked and every secret scrubbed.
fn classify_failure(
    operation: &'static str,
    stderr: &str,
    exit: &str,
    secrets: &[&SecretString],
) -> RemoteError {
    let lines = relevant_lines(stderr);
    let lowered: Vec<String> = lines.iter().map(|l| l.to_ascii_lowercase()).collect();
    let lowered: Vec<&str> = lowered.iter().map(String::as_str).collect();
    let kind = failure_kind(&lowered);
    let shown = &lines[lines.len().saturating_sub(DETAIL_LINES)..];
    let detail = if shown.is_empty() {
        exit.to_owned()
    } else {
        scrub_secrets(&shown.join("\n"), secrets)
    };
    match kind {
        FailureKind::AuthRefused => RemoteError::AuthRefused { detail },
        FailureKind::NotFound => RemoteError::NotFound { detail },
        FailureKind::ServerError => RemoteError::ServerError { detail },
        FailureKind::Locked => RemoteError::Locked { detail },
        FailureKind::Unreachable => RemoteError::Unreachable { detail },
        FailureKind::Failed => RemoteError::Failed { operation, detail },
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_remote_that_moved_under_the_push_is_stale() {
        let moved = RefOutcome::RemoteRejected {
            reason: "failed to update ref: cannot lock ref 'refs/heads/main': is at 032a \
                     but expected c310"
                .into(),
        };
        assert!(moved.is_stale());
        assert!(
            RefOutcome::Rejected {
                reason: "stale info".into(),
                stale: true
            }
            .is_stale()
        );
        assert!(
            !RefOutcome::RemoteRejected {
                reason: "hook declined".into()
            }
            .is_stale()
        );
    }

    use std::path::PathBuf;
    use std::process::Command;

    use base64::Engine as _;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// Temporary bare repositories made by `git` itself, with a hermetic environment for the
    /// test's own git commands.
    struct TestEnv {
        dir: tempfile::TempDir,
    }

    impl TestEnv {
        fn new() -> TestEnv {
            let dir = tempfile::tempdir().expect("a temporary directory");
            std::fs::write(dir.path().join("empty.gitconfig"), "").expect("an empty config");
            TestEnv { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// Runs git with `args` and returns its trimmed stdout; panics with everything git
        /// said if it fails.
        fn git(&self, args: &[&str]) -> String {
            let empty_config = self.path("empty.gitconfig");
            let output = Command::new("git")
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", self.dir.path())
                .env("GIT_CONFIG_GLOBAL", &empty_config)
                .env("GIT_CONFIG_SYSTEM", &empty_config)
                .env("LC_ALL", "C")
                .env("GIT_AUTHOR_NAME", "Test Author")
                .env("GIT_AUTHOR_EMAIL", "author@example.com")
                .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
                .env("GIT_COMMITTER_NAME", "Test Committer")
                .env("GIT_COMMITTER_EMAIL", "committer@example.com")
                .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
                .args(["-c", "init.defaultBranch=main"])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("git runs");
            assert!(
                output.status.success(),
                "git {args:?} failed with {}\nstdout: {}\nstderr: {}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }

        /// Runs git on the repository `repo`.
        fn git_in(&self, repo: &Path, args: &[&str]) -> String {
            let git_dir = format!("--git-dir={}", repo.display());
            let mut all = vec![git_dir.as_str()];
            all.extend_from_slice(args);
            self.git(&all)
        }

        fn bare(&self, name: &str) -> PathBuf {
            let path = self.path(name);
            self.git(&["init", "--bare", "-q", &path.to_string_lossy()]);
            path
        }

        /// Returns a new commit of `repo` with an empty tree.
        fn commit(&self, repo: &Path, message: &str, parent: Option<Oid>) -> Oid {
            let tree = self.git_in(repo, &["hash-object", "-w", "-t", "tree", "/dev/null"]);
            let parent = parent.map(|p| p.to_string());
            let mut args = vec!["commit-tree", tree.as_str(), "-m", message];
            if let Some(parent) = &parent {
                args.extend(["-p", parent.as_str()]);
            }
            Oid::from_str(&self.git_in(repo, &args)).expect("commit-tree prints an oid")
        }

        fn set_ref(&self, repo: &Path, refname: &str, oid: Oid) {
            self.git_in(repo, &["update-ref", refname, &oid.to_string()]);
        }

        /// Returns the branches and tags of `repo`, read by git.
        fn refs(&self, repo: &Path) -> BTreeMap<String, Oid> {
            let out = self.git_in(
                repo,
                &[
                    "for-each-ref",
                    "--format=%(refname) %(objectname)",
                    "refs/heads",
                    "refs/tags",
                ],
            );
            out.lines()
                .filter_map(|line| line.split_once(' '))
                .map(|(name, oid)| (name.to_owned(), Oid::from_str(oid).expect("an oid")))
                .collect()
        }
    }

    fn remote<'a>(git_dir: &'a Path, url: &'a RemoteUrl) -> Remote<'a> {
        Remote {
            git_dir,
            url,
            credentials: None,
            git_config: GitConfigPolicy::Isolated,
            deadline: Instant::now() + Duration::from_secs(60),
            cancel: CancellationToken::new(),
        }
    }

    fn url_of(path: &Path) -> RemoteUrl {
        RemoteUrl::parse(&path.to_string_lossy())
    }

    fn update(refname: &str, kind: UpdateKind, old: Option<Oid>, new: Option<Oid>) -> RefUpdate {
        RefUpdate {
            refname: refname.to_owned(),
            kind,
            old,
            new,
        }
    }

    fn outcomes(report: &PushReport) -> Vec<(&str, RefOutcome)> {
        report
            .results
            .iter()
            .map(|r| (r.refname.as_str(), r.outcome.clone()))
            .collect()
    }

    fn refmap(entries: &[(&str, Oid)]) -> BTreeMap<String, Oid> {
        entries
            .iter()
            .map(|(name, oid)| ((*name).to_owned(), *oid))
            .collect()
    }

    /// A local repository with commits A <- B, and a lone commit C (diverged from both).
    struct Fixture {
        env: TestEnv,
        local: PathBuf,
        remote: PathBuf,
        a: Oid,
        b: Oid,
        c: Oid,
    }

    fn fixture() -> Fixture {
        let env = TestEnv::new();
        let local = env.bare("local.git");
        let remote = env.bare("remote.git");
        let a = env.commit(&local, "A", None);
        let b = env.commit(&local, "B", Some(a));
        let c = env.commit(&local, "C", None);
        Fixture {
            env,
            local,
            remote,
            a,
            b,
            c,
        }
    }

    impl Fixture {
        /// Sets the remote's refs by pushing with the test's own git.
        fn seed(&self, refs: &[(&str, Oid)]) {
            let specs: Vec<String> = refs.iter().map(|(r, o)| format!("+{o}:{r}")).collect();
            let remote = self.remote.to_string_lossy();
            let mut args = vec!["push", "-q", remote.as_ref()];
            args.extend(specs.iter().map(String::as_str));
            self.env.git_in(&self.local, &args);
        }
    }

    #[derive(Debug)]
    struct Proc {
        pid: i32,
        ppid: i32,
        pgid: i32,
        state: char,
        cmdline: String,
    }

    /// Returns every process of the machine, from `/proc`.
    fn processes() -> Vec<Proc> {
        let mut procs = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return procs;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            // A process may end between listing and reading: skip it.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some((_, after_comm)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = after_comm.split_whitespace().collect();
            let (Some(state), Some(ppid), Some(pgid)) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline"))
                .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
                .unwrap_or_default();
            procs.push(Proc {
                pid,
                ppid: ppid.parse().unwrap_or(0),
                pgid: pgid.parse().unwrap_or(0),
                state: state.chars().next().unwrap_or('?'),
                cmdline,
            });
        }
        procs
    }

    /// Returns our git child whose command line contains `marker`.
    fn our_git_child(marker: &str) -> Option<Proc> {
        let me = i32::try_from(std::process::id()).expect("a pid fits in i32");
        processes()
            .into_iter()
            .find(|p| p.ppid == me && p.cmdline.starts_with("git ") && p.cmdline.contains(marker))
    }

    /// Returns `root` and all its descendants.
    fn family(procs: &[Proc], root: i32) -> Vec<&Proc> {
        let mut members: Vec<&Proc> = procs.iter().filter(|p| p.pid == root).collect();
        let mut index = 0;
        while index < members.len() {
            let parent = members[index].pid;
            members.extend(procs.iter().filter(|p| p.ppid == parent));
            index += 1;
        }
        members
    }

    fn live_members_of_group(pgid: i32) -> Vec<Proc> {
        processes()
            .into_iter()
            .filter(|p| p.pgid == pgid && p.state != 'Z')
            .collect()
    }

    /// Polls `probe` until it returns something, failing the test after `timeout`.
    async fn wait_until<T>(
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(value) = probe() {
                return value;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn list_refs_of_an_empty_remote_is_empty() {
        let f = fixture();
        let url = url_of(&f.remote);
        let refs = remote(&f.local, &url)
            .list_refs()
            .await
            .expect("ls-remote works");
        assert_eq!(refs, RemoteRefs::default());
    }

    #[tokio::test]
    async fn list_refs_keeps_branches_and_tags_only() {
        let f = fixture();
        f.seed(&[
            ("refs/heads/main", f.b),
            ("refs/heads/feature", f.c),
            ("refs/tags/light", f.a),
            ("refs/pull/1/head", f.c),
        ]);
        f.env.git_in(
            &f.remote,
            &["tag", "-a", "-m", "release", "v1", &f.b.to_string()],
        );
        let v1 = Oid::from_str(&f.env.git_in(&f.remote, &["rev-parse", "refs/tags/v1"]))
            .expect("an oid");
        assert_ne!(v1, f.b, "an annotated tag has its own object");
        f.env.git_in(
            &f.remote,
            &["symbolic-ref", "refs/heads/alias", "refs/heads/main"],
        );

        let url = url_of(&f.remote);
        let refs = remote(&f.local, &url)
            .list_refs()
            .await
            .expect("ls-remote works");
        assert_eq!(
            refs.refs,
            refmap(&[
                ("refs/heads/feature", f.c),
                ("refs/heads/main", f.b),
                ("refs/tags/light", f.a),
                ("refs/tags/v1", v1),
            ])
        );
    }

    #[tokio::test]
    async fn push_creates_then_fast_forwards() {
        let f = fixture();
        let url = url_of(&f.remote);
        let remote = remote(&f.local, &url);

        let report = remote
            .push(&[
                update("refs/heads/main", UpdateKind::Create, None, Some(f.a)),
                update("refs/tags/t1", UpdateKind::Create, None, Some(f.c)),
            ])
            .await
            .expect("push works");
        assert_eq!(
            outcomes(&report),
            [
                ("refs/heads/main", RefOutcome::Done),
                ("refs/tags/t1", RefOutcome::Done)
            ]
        );
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[("refs/heads/main", f.a), ("refs/tags/t1", f.c)])
        );

        let report = remote
            .push(&[update(
                "refs/heads/main",
                UpdateKind::FastForward,
                Some(f.a),
                Some(f.b),
            )])
            .await
            .expect("push works");
        assert_eq!(outcomes(&report), [("refs/heads/main", RefOutcome::Done)]);
        assert_eq!(f.env.refs(&f.remote)["refs/heads/main"], f.b);
    }

    #[tokio::test]
    async fn push_forces_with_a_good_lease_and_deletes() {
        let f = fixture();
        f.seed(&[
            ("refs/heads/main", f.b),
            ("refs/heads/old", f.a),
            ("refs/tags/moved", f.a),
        ]);
        let url = url_of(&f.remote);
        let report = remote(&f.local, &url)
            .push(&[
                update("refs/heads/main", UpdateKind::Force, Some(f.b), Some(f.c)),
                update("refs/tags/moved", UpdateKind::Force, Some(f.a), Some(f.b)),
                update("refs/heads/old", UpdateKind::Delete, Some(f.a), None),
            ])
            .await
            .expect("push works");
        assert_eq!(
            outcomes(&report),
            [
                ("refs/heads/main", RefOutcome::Done),
                ("refs/tags/moved", RefOutcome::Done),
                ("refs/heads/old", RefOutcome::Done),
            ]
        );
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[("refs/heads/main", f.c), ("refs/tags/moved", f.b)])
        );
    }

    #[tokio::test]
    async fn stale_leases_are_rejected_as_stale_and_change_nothing() {
        let f = fixture();
        f.seed(&[("refs/heads/main", f.b), ("refs/heads/old", f.b)]);
        let url = url_of(&f.remote);
        // Both were read as A, but the remote has moved to B since.
        let report = remote(&f.local, &url)
            .push(&[
                update("refs/heads/main", UpdateKind::Force, Some(f.a), Some(f.c)),
                update("refs/heads/old", UpdateKind::Delete, Some(f.a), None),
            ])
            .await
            .expect("a refused ref is a result, not an error");
        let stale = RefOutcome::Rejected {
            reason: "stale info".to_owned(),
            stale: true,
        };
        assert_eq!(
            outcomes(&report),
            [
                ("refs/heads/main", stale.clone()),
                ("refs/heads/old", stale)
            ]
        );
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[("refs/heads/main", f.b), ("refs/heads/old", f.b)])
        );
    }

    #[tokio::test]
    async fn fast_forward_onto_a_remote_that_moved_is_rejected_as_stale() {
        let f = fixture();
        // Both were read as A. Since then main moved on the remote to a commit we do not
        // have, and other to one we have (C) that B does not descend from.
        f.seed(&[("refs/heads/main", f.a), ("refs/heads/other", f.c)]);
        let theirs = f.env.commit(&f.remote, "theirs", Some(f.a));
        f.env.set_ref(&f.remote, "refs/heads/main", theirs);

        let url = url_of(&f.remote);
        let report = remote(&f.local, &url)
            .push(&[
                update(
                    "refs/heads/main",
                    UpdateKind::FastForward,
                    Some(f.a),
                    Some(f.b),
                ),
                update(
                    "refs/heads/other",
                    UpdateKind::FastForward,
                    Some(f.a),
                    Some(f.b),
                ),
            ])
            .await
            .expect("a refused ref is a result, not an error");
        assert_eq!(
            outcomes(&report),
            [
                (
                    "refs/heads/main",
                    RefOutcome::Rejected {
                        reason: "fetch first".to_owned(),
                        stale: true
                    }
                ),
                (
                    "refs/heads/other",
                    RefOutcome::Rejected {
                        reason: "non-fast-forward".to_owned(),
                        stale: true
                    }
                ),
            ]
        );
        assert_eq!(f.env.refs(&f.remote)["refs/heads/main"], theirs);
    }

    #[tokio::test]
    async fn a_ref_already_as_wanted_is_up_to_date() {
        let f = fixture();
        f.seed(&[("refs/heads/main", f.b)]);
        let url = url_of(&f.remote);
        let report = remote(&f.local, &url)
            .push(&[update(
                "refs/heads/main",
                UpdateKind::FastForward,
                Some(f.a),
                Some(f.b),
            )])
            .await
            .expect("push works");
        assert_eq!(
            outcomes(&report),
            [("refs/heads/main", RefOutcome::UpToDate)]
        );
    }

    #[tokio::test]
    async fn a_hook_declining_one_ref_leaves_the_others_pushed() {
        let f = fixture();
        let hook = f.remote.join("hooks/update");
        std::fs::write(
            &hook,
            "#!/bin/sh\ncase \"$1\" in refs/heads/protected) exit 1;; esac\nexit 0\n",
        )
        .expect("hook written");
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("hook made executable");

        let url = url_of(&f.remote);
        let report = remote(&f.local, &url)
            .push(&[
                update("refs/heads/main", UpdateKind::Create, None, Some(f.b)),
                update("refs/heads/protected", UpdateKind::Create, None, Some(f.b)),
                update("refs/tags/v1", UpdateKind::Create, None, Some(f.a)),
            ])
            .await
            .expect("a refused ref is a result, not an error");
        assert_eq!(
            outcomes(&report),
            [
                ("refs/heads/main", RefOutcome::Done),
                (
                    "refs/heads/protected",
                    RefOutcome::RemoteRejected {
                        reason: "hook declined".to_owned()
                    }
                ),
                ("refs/tags/v1", RefOutcome::Done),
            ]
        );
        assert!(!report.results[1].outcome.is_lock_failure());
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[("refs/heads/main", f.b), ("refs/tags/v1", f.a)])
        );
    }

    #[tokio::test]
    async fn a_locked_remote_ref_is_a_lock_failure() {
        let f = fixture();
        f.seed(&[("refs/heads/main", f.a), ("refs/heads/free", f.a)]);
        std::fs::write(f.remote.join("refs/heads/main.lock"), "").expect("lock file made");

        let url = url_of(&f.remote);
        let report = remote(&f.local, &url)
            .push(&[
                update(
                    "refs/heads/main",
                    UpdateKind::FastForward,
                    Some(f.a),
                    Some(f.b),
                ),
                update(
                    "refs/heads/free",
                    UpdateKind::FastForward,
                    Some(f.a),
                    Some(f.b),
                ),
            ])
            .await
            .expect("a refused ref is a result, not an error");
        let main = &report.results[0];
        assert_eq!(main.refname, "refs/heads/main");
        let RefOutcome::RemoteRejected { reason } = &main.outcome else {
            panic!("expected a remote rejection, got {main:?}");
        };
        assert!(
            reason.starts_with("failed to update ref: cannot lock ref 'refs/heads/main'"),
            "{reason}"
        );
        assert!(main.outcome.is_lock_failure());
        assert_eq!(report.results[1].outcome, RefOutcome::Done);
    }

    #[tokio::test]
    async fn pushing_nothing_runs_no_git() {
        let f = fixture();
        let url = url_of(&f.path_that_does_not_exist());
        let report = remote(&f.local, &url)
            .push(&[])
            .await
            .expect("nothing to do");
        assert!(report.results.is_empty());
        let invalid = [update("refs/heads/x", UpdateKind::Create, None, None)];
        let report = remote(&f.local, &url)
            .push(&invalid)
            .await
            .expect("nothing to push");
        assert!(matches!(
            report.results[0].outcome,
            RefOutcome::Rejected { stale: false, .. }
        ));
    }

    impl Fixture {
        fn path_that_does_not_exist(&self) -> PathBuf {
            self.env.path("missing/nope.git")
        }
    }

    #[tokio::test]
    async fn a_missing_remote_path_is_not_found() {
        let f = fixture();
        let url = url_of(&f.path_that_does_not_exist());
        let remote = remote(&f.local, &url);
        let error = remote.list_refs().await.expect_err("no such remote");
        assert!(matches!(error, RemoteError::NotFound { .. }), "{error:?}");
        assert!(!error.is_transient());
        assert!(
            error
                .to_string()
                .contains("does not appear to be a git repository"),
            "{error}"
        );
        let error = remote
            .push(&[update(
                "refs/heads/main",
                UpdateKind::Create,
                None,
                Some(f.a),
            )])
            .await
            .expect_err("no such remote");
        assert!(matches!(error, RemoteError::NotFound { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable() {
        let f = fixture();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("an address").port()
        };
        let url = RemoteUrl::parse(&format!("git://127.0.0.1:{port}/x.git"));
        let remote = remote(&f.local, &url);
        let error = remote.list_refs().await.expect_err("nothing listens");
        assert!(
            matches!(error, RemoteError::Unreachable { .. }),
            "{error:?}"
        );
        assert!(error.is_transient());
        assert!(error.to_string().contains("Connection refused"), "{error}");
        let error = remote
            .push(&[update(
                "refs/heads/main",
                UpdateKind::Create,
                None,
                Some(f.a),
            )])
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(error, RemoteError::Unreachable { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_hanging_peer_times_out_and_git_is_killed() {
        let f = fixture();
        // Accepts connections and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a listener");
        let port = listener.local_addr().expect("an address").port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let url = RemoteUrl::parse(&format!("git://127.0.0.1:{port}/x.git"));
        let mut remote = remote(&f.local, &url);
        remote.deadline = Instant::now() + Duration::from_secs(2);
        let marker = format!("127.0.0.1:{port}/");

        let started = std::time::Instant::now();
        let (result, git) = tokio::join!(
            remote.list_refs(),
            wait_until("git to start", Duration::from_secs(10), || our_git_child(
                &marker
            ))
        );
        let elapsed = started.elapsed();
        match result {
            Err(RemoteError::Timeout { operation, timeout }) => {
                assert_eq!(operation, "ls-remote");
                assert_eq!(timeout, "2s");
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
        assert_eq!(git.pgid, git.pid, "git leads its own process group");
        // SAFETY: kill with signal 0 only checks for existence.
        let rc = unsafe { libc::kill(-git.pgid, 0) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((rc, errno), (-1, Some(libc::ESRCH)), "the group is gone");
    }

    /// Serves HTTP: 401 with a Basic challenge to a request without credentials; a request
    /// with credentials is reported on `seen` and never answered.
    async fn challenge_then_hang(
        mut stream: tokio::net::TcpStream,
        seen: tokio::sync::mpsc::UnboundedSender<String>,
    ) {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buffer.extend_from_slice(&chunk[..n]);
            while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                buffer.drain(..end + 4);
                let authorization = head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("authorization")
                        .then(|| value.trim().to_owned())
                });
                if let Some(authorization) = authorization {
                    let _ = seen.send(authorization);
                    std::future::pending::<()>().await;
                }
                let challenge = "HTTP/1.1 401 Unauthorized\r\n\
                    WWW-Authenticate: Basic realm=\"pushmirror-test\"\r\n\
                    Content-Length: 0\r\n\r\n";
                if stream.write_all(challenge.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }

    #[tokio::test]
    async fn credentials_reach_the_server_but_no_argv_and_cancel_kills_the_group() {
        let f = fixture();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a listener");
        let port = listener.local_addr().expect("an address").port();
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(challenge_then_hang(stream, seen_tx.clone()));
            }
        });

        let password = "Zq9-not-in-argv-s3cret";
        let url = RemoteUrl::parse(&format!("http://127.0.0.1:{port}/x.git"));
        let mut remote = remote(&f.local, &url);
        remote.credentials = Some(HttpCredentials {
            username: "mirror-bot".to_owned(),
            password: SecretString::from(password),
        });
        let cancel = remote.cancel.clone();
        let marker = format!("127.0.0.1:{port}/");

        let observe = async {
            let authorization = seen_rx.recv().await.expect("an authorised request");
            // git and git-remote-http now wait for the answer to the authorised request.
            let git = our_git_child(&marker).expect("git is running");
            let procs = processes();
            let members: Vec<String> = family(&procs, git.pid)
                .iter()
                .map(|p| p.cmdline.clone())
                .collect();
            assert!(
                members.iter().any(|c| c.contains("remote-http")),
                "git-remote-http runs under git: {members:?}"
            );
            for p in &procs {
                assert!(
                    !p.cmdline.contains(password),
                    "the password is in the argv of {p:?}"
                );
            }
            cancel.cancel();
            (authorization, git.pgid)
        };
        let (result, (authorization, pgid)) = tokio::join!(remote.list_refs(), observe);

        assert!(
            matches!(
                result,
                Err(RemoteError::Cancelled {
                    operation: "ls-remote"
                })
            ),
            "{result:?}"
        );
        let expected =
            base64::engine::general_purpose::STANDARD.encode(format!("mirror-bot:{password}"));
        assert_eq!(authorization, format!("Basic {expected}"));
        wait_until(
            "the git process group to die",
            Duration::from_secs(10),
            || live_members_of_group(pgid).is_empty().then_some(()),
        )
        .await;
    }

    fn env_map(invocation: &GitInvocation) -> BTreeMap<String, String> {
        invocation
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string_lossy().into_owned()))
            .collect()
    }

    fn git_config(env: &BTreeMap<String, String>) -> Vec<(String, String)> {
        let count: usize = env["GIT_CONFIG_COUNT"].parse().expect("a count");
        (0..count)
            .map(|i| {
                (
                    env[&format!("GIT_CONFIG_KEY_{i}")].clone(),
                    env[&format!("GIT_CONFIG_VALUE_{i}")].clone(),
                )
            })
            .collect()
    }

    fn fake_environment(name: &str) -> Option<OsString> {
        let value = match name {
            "PATH" => "/usr/bin:/bin",
            "HOME" => "/var/lib/pushmirror",
            "https_proxy" => "http://proxy.example:3128",
            "GIT_SSL_CAINFO" => "/etc/ssl/ca.pem",
            "XDG_CONFIG_HOME" => "/var/lib/pushmirror/.config",
            "GIT_ASKPASS" | "SSH_ASKPASS" => "/usr/bin/askpass",
            "GIT_DIR" => "/elsewhere.git",
            "GIT_CONFIG_PARAMETERS" => "'core.sshcommand'='evil'",
            _ => return None,
        };
        Some(OsString::from(value))
    }

    #[test]
    fn credentials_are_in_the_environment_only() {
        let password = "p4ss-w0rd-in-env";
        let url = RemoteUrl::parse("https://example.com/acme/app.git");
        let git_dir = PathBuf::from("/srv/git/app.git");
        let mut remote = remote(&git_dir, &url);
        remote.credentials = Some(HttpCredentials {
            username: "mirror-bot".to_owned(),
            password: SecretString::from(password),
        });
        let invocation = remote.invocation(
            vec!["ls-remote".into(), "--".into(), url.for_git().into()],
            &fake_environment,
        );

        let argv: Vec<String> = invocation
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            argv,
            [
                "--git-dir=/srv/git/app.git",
                "ls-remote",
                "--",
                "https://example.com/acme/app.git"
            ]
        );
        let env = env_map(&invocation);
        let holding: Vec<&String> = env
            .iter()
            .filter(|(_, v)| v.contains(password))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(holding, ["PUSHMIRROR_GIT_PASSWORD"]);
        assert_eq!(env["PUSHMIRROR_GIT_PASSWORD"], password);
        assert_eq!(env["PUSHMIRROR_GIT_USERNAME"], "mirror-bot");
        assert_eq!(
            git_config(&env),
            [
                ("safe.directory", "*"),
                ("credential.helper", ""),
                ("core.askPass", ""),
                ("credential.helper", CREDENTIAL_HELPER),
                ("http.followRedirects", "false"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        for (name, value) in [
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/var/lib/pushmirror"),
            ("https_proxy", "http://proxy.example:3128"),
            ("GIT_SSL_CAINFO", "/etc/ssl/ca.pem"),
            ("LC_ALL", "C"),
            ("LANG", "C"),
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
        ] {
            assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
        }
        for absent in [
            "GIT_ASKPASS",
            "SSH_ASKPASS",
            "GIT_DIR",
            "GIT_CONFIG_PARAMETERS",
            "XDG_CONFIG_HOME",
        ] {
            assert!(!env.contains_key(absent), "{absent} must not be passed on");
        }
    }

    #[test]
    fn inherit_policy_lets_the_user_configuration_in() {
        let url = RemoteUrl::parse("ssh://git@example.com/acme/app.git");
        let git_dir = PathBuf::from("/srv/git/app.git");
        let mut remote = remote(&git_dir, &url);
        remote.git_config = GitConfigPolicy::Inherit;
        // Credentials are for HTTP(S) only: an SSH remote never gets them.
        remote.credentials = Some(HttpCredentials {
            username: "mirror-bot".to_owned(),
            password: SecretString::from("unused-secret"),
        });
        let env = env_map(&remote.invocation(Vec::new(), &fake_environment));
        assert!(!env.contains_key("GIT_CONFIG_NOSYSTEM"));
        assert!(!env.contains_key("GIT_CONFIG_GLOBAL"));
        assert_eq!(env["XDG_CONFIG_HOME"], "/var/lib/pushmirror/.config");
        assert!(!env.contains_key("PUSHMIRROR_GIT_PASSWORD"));
        assert!(env.values().all(|v| !v.contains("unused-secret")));
        assert_eq!(git_config(&env).len(), 3, "no helper without HTTP");
    }

    #[test]
    fn push_plan_uses_oids_and_leases_forced_updates_only() {
        let a = Oid::from_str("1111111111111111111111111111111111111111").expect("oid");
        let b = Oid::from_str("2222222222222222222222222222222222222222").expect("oid");
        let plan = plan_push(&[
            update("refs/heads/new", UpdateKind::Create, None, Some(a)),
            update("refs/heads/ff", UpdateKind::FastForward, Some(a), Some(b)),
            update("refs/heads/forced", UpdateKind::Force, Some(b), Some(a)),
            update("refs/tags/gone", UpdateKind::Delete, Some(a), None),
            update("refs/heads/odd", UpdateKind::Force, None, Some(a)),
        ]);
        assert_eq!(
            plan.leases,
            [
                format!("--force-with-lease=refs/heads/forced:{b}"),
                format!("--force-with-lease=refs/tags/gone:{a}"),
                "--force-with-lease=refs/heads/odd:".to_owned(),
            ]
        );
        assert_eq!(
            plan.refspecs,
            [
                format!("{a}:refs/heads/new"),
                format!("{b}:refs/heads/ff"),
                format!("{a}:refs/heads/forced"),
                ":refs/tags/gone".to_owned(),
                format!("{a}:refs/heads/odd"),
            ]
        );
        assert!(plan.invalid.is_empty());
    }

    #[test]
    fn porcelain_lines_become_outcomes() {
        // Real output of git 2.47, gathered from the pushes in the tests above.
        let stdout = "To /tmp/r.git\n\
            *\tb16798ff6c2a8a903535e1241159342bce69c1a0:refs/heads/new\t[new branch]\n\
            \t3d348f81af766cb6798822c179651dad95baa82b:refs/heads/ff\tb16798f..3d348f8\n\
            +\tb16798ff6c2a8a903535e1241159342bce69c1a0:refs/heads/forced\t3d348f8...b16798f (forced update)\n\
            -\t:refs/heads/gone\t[deleted]\n\
            =\tb16798ff6c2a8a903535e1241159342bce69c1a0:refs/heads/same\t[up to date]\n\
            !\t(delete):refs/heads/zz\t[rejected] (stale info)\n\
            !\tb16798ff6c2a8a903535e1241159342bce69c1a0:refs/heads/b\t[rejected] (non-fast-forward)\n\
            !\t1111111111111111111111111111111111111111:refs/tags/t\t[rejected] (needs force)\n\
            !\t3d348f81af766cb6798822c179651dad95baa82b:refs/heads/main\t[remote rejected] (failed to update ref)\n\
            !\t3d348f81af766cb6798822c179651dad95baa82b:refs/heads/p\t[remote rejected] (pre-receive hook declined)\n\
            Done\n";
        // The fast-forward line starts with a space flag, which the literal above loses.
        let stdout = stdout.replace("\n\t3d348f81", "\n \t3d348f81");
        let stderr = "remote: error: cannot lock ref 'refs/heads/main': Unable to create \
                      '/tmp/r.git/./refs/heads/main.lock': File exists.        \n";
        let outcomes: Vec<(String, RefOutcome)> = parse_porcelain(&stdout)
            .iter()
            .map(|line| (line.dst.clone(), outcome_of(line, stderr, &[])))
            .collect();
        let rejected = |reason: &str, stale| RefOutcome::Rejected {
            reason: reason.to_owned(),
            stale,
        };
        let expected = [
            ("refs/heads/new", RefOutcome::Done),
            ("refs/heads/ff", RefOutcome::Done),
            ("refs/heads/forced", RefOutcome::Done),
            ("refs/heads/gone", RefOutcome::Done),
            ("refs/heads/same", RefOutcome::UpToDate),
            ("refs/heads/zz", rejected("stale info", true)),
            ("refs/heads/b", rejected("non-fast-forward", true)),
            ("refs/tags/t", rejected("needs force", false)),
            (
                "refs/heads/main",
                RefOutcome::RemoteRejected {
                    reason: "failed to update ref: cannot lock ref 'refs/heads/main': Unable \
                             to create '/tmp/r.git/./refs/heads/main.lock': File exists."
                        .to_owned(),
                },
            ),
            (
                "refs/heads/p",
                RefOutcome::RemoteRejected {
                    reason: "pre-receive hook declined".to_owned(),
                },
            ),
        ]
        .map(|(r, o)| (r.to_owned(), o));
        assert_eq!(outcomes, expected);
    }

    #[test]
    fn refs_that_git_did_not_report_are_not_lost() {
        let a = Oid::from_str("1111111111111111111111111111111111111111").expect("oid");
        let updates = [
            update("refs/heads/a", UpdateKind::Create, None, Some(a)),
            update("refs/heads/b", UpdateKind::Create, None, Some(a)),
        ];
        let reported = vec![RefResult {
            refname: "refs/heads/b".to_owned(),
            outcome: RefOutcome::Done,
        }];
        let results = collect_results(&updates, reported, Vec::new());
        assert_eq!(results[0].refname, "refs/heads/a");
        assert!(matches!(
            &results[0].outcome,
            RefOutcome::Rejected { reason, stale: false } if reason.contains("did not report")
        ));
        assert_eq!(results[1].outcome, RefOutcome::Done);
    }

    #[test]
    fn ls_remote_output_is_parsed() {
        let stdout = "ref: refs/heads/main\trefs/heads/alias\n\
            b16798ff6c2a8a903535e1241159342bce69c1a0\trefs/heads/alias\n\
            b16798ff6c2a8a903535e1241159342bce69c1a0\trefs/heads/main\n\
            3d348f81af766cb6798822c179651dad95baa82b\trefs/tags/light\n\
            4ea55ee7cccff1af18d3f816ae9bbfc989d1c1e0\trefs/tags/v1\n\
            3d348f81af766cb6798822c179651dad95baa82b\trefs/tags/v1^{}\n\
            3d348f81af766cb6798822c179651dad95baa82b\trefs/pull/1/head\n";
        let refs = parse_ls_remote(stdout).expect("valid output");
        let oid = |s: &str| Oid::from_str(s).expect("oid");
        assert_eq!(
            refs.refs,
            refmap(&[
                (
                    "refs/heads/main",
                    oid("b16798ff6c2a8a903535e1241159342bce69c1a0")
                ),
                (
                    "refs/tags/light",
                    oid("3d348f81af766cb6798822c179651dad95baa82b")
                ),
                (
                    "refs/tags/v1",
                    oid("4ea55ee7cccff1af18d3f816ae9bbfc989d1c1e0")
                ),
            ])
        );
        assert!(parse_ls_remote("garbage\n").is_err());
    }

    #[test]
    fn timeouts_are_rendered_in_whole_units() {
        let text = |d| match timeout_error("push", d) {
            RemoteError::Timeout { timeout, .. } => timeout,
            other => panic!("{other:?}"),
        };
        assert_eq!(text(Duration::from_millis(29_999_700)), "8h 20m");
        assert_eq!(text(Duration::from_millis(1_999)), "2s");
        assert_eq!(text(Duration::from_secs(3600)), "1h");
        assert_eq!(text(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn long_log_texts_are_shortened_on_a_char_boundary() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("ééééé", 2), "éé... (6 more bytes)");
    }

    #[tokio::test]
    async fn stderr_keeps_its_last_bytes() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let tail = read_tail(Some(&data[..]), 1000).await.expect("read");
        assert_eq!(tail, &data[data.len() - 1000..]);
    }

    /// What git 2.47 printed on stderr, provoked on this machine unless marked otherwise.
    const SAMPLES: &[(&str, FailureKind, &str)] = &[
        // git ls-remote /tmp/rx/nope.git
        (
            "fatal: '/tmp/rx/nope.git' does not appear to be a git repository\n\
             fatal: Could not read from remote repository.\n\n\
             Please make sure you have the correct access rights\n\
             and the repository exists.\n",
            FailureKind::NotFound,
            "fatal: '/tmp/rx/nope.git' does not appear to be a git repository\n\
             fatal: Could not read from remote repository.",
        ),
        // git daemon, missing repository
        (
            "fatal: remote error: access denied or repository not exported: /nope.git\n",
            FailureKind::NotFound,
            "fatal: remote error: access denied or repository not exported: /nope.git",
        ),
        // git http-backend behind lighttpd, missing repository
        (
            "fatal: repository 'http://127.0.0.1:18080/git/nope.git/' not found\n",
            FailureKind::NotFound,
            "fatal: repository 'http://127.0.0.1:18080/git/nope.git/' not found",
        ),
        // GitHub (not provoked here)
        (
            "remote: Repository not found.\n\
             fatal: repository 'https://github.com/acme/nope.git/' not found\n",
            FailureKind::NotFound,
            "remote: Repository not found.\n\
             fatal: repository 'https://github.com/acme/nope.git/' not found",
        ),
        // lighttpd Basic auth, no credentials
        (
            "fatal: could not read Username for 'http://127.0.0.1:18080': terminal prompts disabled\n",
            FailureKind::AuthRefused,
            "fatal: could not read Username for 'http://127.0.0.1:18080': terminal prompts disabled",
        ),
        // lighttpd Basic auth, wrong password through our credential helper
        (
            "fatal: Authentication failed for 'http://127.0.0.1:18080/git/x.git/'\n",
            FailureKind::AuthRefused,
            "fatal: Authentication failed for 'http://127.0.0.1:18080/git/x.git/'",
        ),
        // an HTTP server answering 403
        (
            "fatal: unable to access 'http://127.0.0.1:18081/403/x.git/': The requested URL returned error: 403\n",
            FailureKind::AuthRefused,
            "fatal: unable to access 'http://127.0.0.1:18081/403/x.git/': The requested URL returned error: 403",
        ),
        // OpenSSH, key refused (GitHub's wording; not provoked here)
        (
            "git@github.com: Permission denied (publickey).\r\n\
             fatal: Could not read from remote repository.\n\n\
             Please make sure you have the correct access rights\nand the repository exists.\n",
            FailureKind::AuthRefused,
            "git@github.com: Permission denied (publickey).\n\
             fatal: Could not read from remote repository.",
        ),
        // an HTTP server answering 500, 502, 503
        (
            "fatal: unable to access 'http://127.0.0.1:18081/500/x.git/': The requested URL returned error: 500\n",
            FailureKind::ServerError,
            "fatal: unable to access 'http://127.0.0.1:18081/500/x.git/': The requested URL returned error: 500",
        ),
        (
            "fatal: unable to access 'http://127.0.0.1:18081/502/x.git/': The requested URL returned error: 502\n",
            FailureKind::ServerError,
            "fatal: unable to access 'http://127.0.0.1:18081/502/x.git/': The requested URL returned error: 502",
        ),
        (
            "fatal: unable to access 'http://127.0.0.1:18081/503/x.git/': The requested URL returned error: 503\n",
            FailureKind::ServerError,
            "fatal: unable to access 'http://127.0.0.1:18081/503/x.git/': The requested URL returned error: 503",
        ),
        // a push whose POST fails (git's wording; not provoked here)
        (
            "error: RPC failed; HTTP 500 curl 22 The requested URL returned error: 500\n\
             send-pack: unexpected disconnect while reading sideband packet\n\
             fatal: the remote end hung up unexpectedly\n",
            FailureKind::ServerError,
            "error: RPC failed; HTTP 500 curl 22 The requested URL returned error: 500\n\
             send-pack: unexpected disconnect while reading sideband packet\n\
             fatal: the remote end hung up unexpectedly",
        ),
        // a local remote with refs/heads/main.lock, as a whole-push failure
        (
            "remote: error: cannot lock ref 'refs/heads/main': Unable to create \
             '/tmp/rx/r.git/./refs/heads/main.lock': File exists.        \n\
             remote: \n",
            FailureKind::Locked,
            "remote: error: cannot lock ref 'refs/heads/main': Unable to create \
             '/tmp/rx/r.git/./refs/heads/main.lock': File exists.",
        ),
        // git://127.0.0.1:1
        (
            "fatal: unable to connect to 127.0.0.1:\n127.0.0.1[0: 127.0.0.1]: errno=Connection refused\n\n",
            FailureKind::Unreachable,
            "fatal: unable to connect to 127.0.0.1:\n127.0.0.1[0: 127.0.0.1]: errno=Connection refused",
        ),
        // http://127.0.0.1:1
        (
            "fatal: unable to access 'http://127.0.0.1:1/x.git/': Failed to connect to 127.0.0.1 port 1 after 0 ms: Couldn't connect to server\n",
            FailureKind::Unreachable,
            "fatal: unable to access 'http://127.0.0.1:1/x.git/': Failed to connect to 127.0.0.1 port 1 after 0 ms: Couldn't connect to server",
        ),
        // https://nonexistent.invalid
        (
            "fatal: unable to access 'https://nonexistent.invalid/x.git/': Could not resolve host: nonexistent.invalid\n",
            FailureKind::Unreachable,
            "fatal: unable to access 'https://nonexistent.invalid/x.git/': Could not resolve host: nonexistent.invalid",
        ),
        // git://nonexistent.invalid
        (
            "fatal: unable to look up nonexistent.invalid (port 9418) (Name or service not known)\n",
            FailureKind::Unreachable,
            "fatal: unable to look up nonexistent.invalid (port 9418) (Name or service not known)",
        ),
        // ssh://127.0.0.1:1 with GIT_SSH_COMMAND="ssh -o BatchMode=yes"
        (
            "ssh: connect to host 127.0.0.1 port 1: Connection refused\n\
             fatal: Could not read from remote repository.\n\n\
             Please make sure you have the correct access rights\nand the repository exists.\n",
            FailureKind::Unreachable,
            "ssh: connect to host 127.0.0.1 port 1: Connection refused\n\
             fatal: Could not read from remote repository.",
        ),
        // ssh://nonexistent.invalid
        (
            "ssh: Could not resolve hostname nonexistent.invalid: Name or service not known\n\
             fatal: Could not read from remote repository.\n\n\
             Please make sure you have the correct access rights\nand the repository exists.\n",
            FailureKind::Unreachable,
            "ssh: Could not resolve hostname nonexistent.invalid: Name or service not known\n\
             fatal: Could not read from remote repository.",
        ),
        // git://[2001:db8::1] (no route)
        (
            "fatal: unable to connect to 2001:db8::1:\n2001:db8::1[0: 2001:db8::1]: errno=No route to host\n\n",
            FailureKind::Unreachable,
            "fatal: unable to connect to 2001:db8::1:\n2001:db8::1[0: 2001:db8::1]: errno=No route to host",
        ),
        // git:// and http:// peers that reset the connection
        (
            "fatal: read error: Connection reset by peer\n",
            FailureKind::Unreachable,
            "fatal: read error: Connection reset by peer",
        ),
        (
            "fatal: packet write failed: Connection reset by peer\n",
            FailureKind::Unreachable,
            "fatal: packet write failed: Connection reset by peer",
        ),
        (
            "fatal: unable to access 'http://127.0.0.1:18083/x.git/': Recv failure: Connection reset by peer\n",
            FailureKind::Unreachable,
            "fatal: unable to access 'http://127.0.0.1:18083/x.git/': Recv failure: Connection reset by peer",
        ),
        // a connection cut during a fetch-like exchange (git's wording; not provoked here)
        (
            "error: RPC failed; curl 56 Recv failure: Connection reset by peer\nfatal: early EOF\n",
            FailureKind::Unreachable,
            "error: RPC failed; curl 56 Recv failure: Connection reset by peer\nfatal: early EOF",
        ),
        // a git:// peer that accepts and closes at once: no cause given, so retried as Failed
        (
            "fatal: Could not read from remote repository.\n\n\
             Please make sure you have the correct access rights\nand the repository exists.\n",
            FailureKind::Failed,
            "fatal: Could not read from remote repository.",
        ),
        // ssh not installed: a local problem, not the remote path
        (
            "error: cannot run ssh: No such file or directory\nfatal: unable to fork\n",
            FailureKind::Failed,
            "error: cannot run ssh: No such file or directory\nfatal: unable to fork",
        ),
        // a redirect with http.followRedirects=false
        (
            "fatal: unable to access 'http://127.0.0.1:18081/301/x.git/': The requested URL returned error: 301\n",
            FailureKind::Failed,
            "fatal: unable to access 'http://127.0.0.1:18081/301/x.git/': The requested URL returned error: 301",
        ),
        // https:// to a plain-HTTP port
        (
            "fatal: unable to access 'https://127.0.0.1:18080/x.git/': gnutls_handshake() failed: An unexpected TLS packet was received.\n",
            FailureKind::Failed,
            "fatal: unable to access 'https://127.0.0.1:18080/x.git/': gnutls_handshake() failed: An unexpected TLS packet was received.",
        ),
        // a regular file given as the remote
        (
            "fatal: invalid gitfile format: /tmp/rx/srv.py\n\
             fatal: Could not read from remote repository.\n\n\
             Please make sure you have the correct access rights\nand the repository exists.\n",
            FailureKind::Failed,
            "fatal: invalid gitfile format: /tmp/rx/srv.py\n\
             fatal: Could not read from remote repository.",
        ),
        // push hints are dropped
        (
            "error: failed to push some refs to '/tmp/rx/r.git'\n\
             hint: Updates were rejected because the tip of your current branch is behind\n",
            FailureKind::Failed,
            "error: failed to push some refs to '/tmp/rx/r.git'",
        ),
    ];

    fn kind_of(error: &RemoteError) -> FailureKind {
        match error {
            RemoteError::AuthRefused { .. } => FailureKind::AuthRefused,
            RemoteError::NotFound { .. } => FailureKind::NotFound,
            RemoteError::ServerError { .. } => FailureKind::ServerError,
            RemoteError::Locked { .. } => FailureKind::Locked,
            RemoteError::Unreachable { .. } => FailureKind::Unreachable,
            _ => FailureKind::Failed,
        }
    }

    fn detail_of(error: &RemoteError) -> &str {
        match error {
            RemoteError::AuthRefused { detail }
            | RemoteError::NotFound { detail }
            | RemoteError::ServerError { detail }
            | RemoteError::Locked { detail }
            | RemoteError::Unreachable { detail }
            | RemoteError::Failed { detail, .. } => detail,
            _ => "",
        }
    }

    #[test]
    fn real_stderr_samples_are_classified() {
        for (stderr, kind, detail) in SAMPLES {
            let error = classify_failure("push", stderr, "unused", &[]);
            assert_eq!(kind_of(&error), *kind, "{stderr}");
            assert_eq!(detail_of(&error), *detail, "{stderr}");
            let permanent = matches!(kind, FailureKind::AuthRefused | FailureKind::NotFound);
            assert_eq!(error.is_transient(), !permanent, "{stderr}");
            let message = error.to_string();
            assert!(
                !message.ends_with('.') || detail.ends_with('.'),
                "{message}"
            );
        }
    }

    #[test]
    fn failure_details_never_carry_secrets() {
        let secret = SecretString::from("t0ken-value");
        let stderr = "fatal: unable to access 'https://bot:t0ken-value@example.com/x.git/': \
                      The requested URL returned error: 401\nremote: bad token t0ken-value\n";
        let error = classify_failure("ls-remote", stderr, "unused", &[&secret]);
        assert!(matches!(error, RemoteError::AuthRefused { .. }));
        let message = error.to_string();
        assert!(!message.contains("t0ken-value"), "{message}");
        assert!(
            message.contains("https://*****:*****@example.com"),
            "{message}"
        );

        let error = classify_failure(
            "push",
            "\n",
            "git exited with status 128 without a message",
            &[],
        );
        assert_eq!(
            error.to_string(),
            "git push failed: git exited with status 128 without a message"
        );
    }
}
