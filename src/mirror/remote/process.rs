//! One git child and its whole environment: argv, a cleared environment with only what git
//! needs, credentials, its own process group, the deadline and cancellation that kill it, and
//! its output read within bounds.
//!
//! Why credentials travel in the environment: anything in a process's argv is readable by
//! every user of the machine (`ps`, `/proc/<pid>/cmdline`). So the URL handed to git never
//! carries a password, `-c` is never used for anything secret, and HTTP credentials reach git
//! through a one-line shell credential helper (set through `GIT_CONFIG_COUNT`) that prints two
//! environment variables of its own process. The helper runs `printf` as a shell builtin, so
//! the password is never in the argv of git, of `sh` or of anything else; the environment of a
//! process is readable only by its owner. A wrong password gives git's own
//! `Authentication failed`, which `classify` turns into [`RemoteError::AuthRefused`].
//!
//! Why process groups: git does its network work in children (`git-remote-https`, `ssh`,
//! `pack-objects`). Killing git alone on timeout or shutdown would leave them running, holding
//! connections and our pipes. Each git runs in its own process group, and a timeout or a
//! cancellation kills the whole group before reaping git. `PR_SET_PDEATHSIG` covers the one
//! case where we cannot kill it ourselves: the daemon killed with SIGKILL.
//!
//! The environment is computed apart from spawning ([`Remote::invocation`] takes the lookup of
//! our own variables as a function), so that tests can check it without running git.

use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tracing::debug;

use super::{HttpCredentials, Remote, RemoteError};
use crate::config::GitConfigPolicy;
use crate::mirror::url::{mask_credentials, scrub_secrets};

/// The environment variables passed on to git from ours when set: what git, curl and ssh need
/// to find programs, the home directory, proxies and CA certificates. (ssh takes `~` from the
/// passwd entry, not `$HOME`, and is kept away from `~/.ssh` by its options: see `ssh`.)
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

/// The most of a command line or of stderr logged: a push of thousands of refs has a long
/// command line.
const LOGGED_CHARS: usize = 2000;

/// A git child's argv (after the program name) and complete environment. Deliberately not
/// `Debug`: the environment may hold the password.
pub(super) struct GitInvocation {
    pub(super) argv: Vec<OsString>,
    pub(super) env: Vec<(String, OsString)>,
}

/// What a git child left behind.
pub(super) struct GitOutput {
    pub(super) status: ExitStatus,
    pub(super) stdout: String,
    /// The last [`STDERR_CAP`] bytes.
    pub(super) stderr: String,
}

/// Why a git child is killed before its end.
enum Stop {
    Deadline,
    Cancelled,
}

/// What a git child left when it ended by itself: its exit status, its stdout, and the end of
/// its stderr.
type Finished = (
    std::io::Result<ExitStatus>,
    std::io::Result<Vec<u8>>,
    std::io::Result<Vec<u8>>,
);

impl Remote<'_> {
    /// Returns the argv (after `git`) and the whole environment of a git child.
    /// `inherited` looks a variable up in our own environment.
    pub(super) fn invocation(
        &self,
        args: Vec<OsString>,
        inherited: &dyn Fn(&str) -> Option<OsString>,
    ) -> GitInvocation {
        let mut env = passed_on_env(self.git_config, inherited);
        env.extend(fixed_env(self.git_config));
        // The mirror's key and pinned host keys, and nothing of the user's ~/.ssh.
        env.extend(super::ssh::ssh_env(self.ssh.as_ref()));
        let mut config = baseline_config();
        let credentials = self.credentials.as_ref().filter(|_| self.url.is_http());
        if let Some(credentials) = credentials {
            config.extend(credential_config());
            env.extend(credential_env(credentials));
        }
        env.extend(config_env(&config));
        GitInvocation {
            argv: git_argv(self.git_dir, args),
            env,
        }
    }

    /// Runs one git child to its end, or kills it and its process group at the deadline or on
    /// cancellation. Returns its exit status and output whatever the status.
    pub(super) async fn run_git(
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
        let command_line = command_line(&invocation.argv);
        debug!(operation, command = %shorten(&command_line, LOGGED_CHARS), "running git");

        let mut command = git_command(&invocation);
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|source| RemoteError::Spawn { operation, source })?;
        // Both hold the password, which git has now; nothing else needs it.
        drop(command);
        drop(invocation);
        // The group id is git's pid (process_group(0)). git is reaped only once its output is
        // read to the end, so while we may kill the group, the pid cannot be reused.
        let pgid = child.id();
        let finished = self.wait_or_stop(&mut child).await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match finished {
            Ok(finished) => self.output_of(operation, elapsed_ms, finished),
            Err(stop) => {
                kill_and_reap(&mut child, pgid, operation, elapsed_ms).await;
                Err(match stop {
                    Stop::Deadline => timeout_error(operation, budget),
                    Stop::Cancelled => RemoteError::Cancelled { operation },
                })
            }
        }
    }

    /// Waits until `child` has ended with its output read to the end, unless the deadline or
    /// the cancellation comes first.
    async fn wait_or_stop(&self, child: &mut Child) -> Result<Finished, Stop> {
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        tokio::select! {
            finished = async {
                let (stdout, stderr) = tokio::join!(read_all(stdout), read_tail(stderr, STDERR_CAP));
                let status = child.wait().await;
                (status, stdout, stderr)
            } => Ok(finished),
            () = tokio::time::sleep_until(self.deadline) => Err(Stop::Deadline),
            () = self.cancel.cancelled() => Err(Stop::Cancelled),
        }
    }

    /// Returns what a git that ended by itself left behind, and logs how it ended.
    fn output_of(
        &self,
        operation: &'static str,
        elapsed_ms: u64,
        (status, stdout, stderr): Finished,
    ) -> Result<GitOutput, RemoteError> {
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
}

/// Returns git's argv (after `git`): `--git-dir=<git_dir>`, then `args`.
fn git_argv(git_dir: &Path, args: Vec<OsString>) -> Vec<OsString> {
    let mut git_dir_arg = OsString::from("--git-dir=");
    git_dir_arg.push(git_dir.as_os_str());
    let mut argv = vec![git_dir_arg];
    argv.extend(args);
    argv
}

/// Returns the variables of our own environment that git gets as well: those of
/// [`PASSTHROUGH_ENV`] that are set, and `XDG_CONFIG_HOME` when the user's configuration is
/// let in.
fn passed_on_env(
    policy: GitConfigPolicy,
    inherited: &dyn Fn(&str) -> Option<OsString>,
) -> Vec<(String, OsString)> {
    let mut passthrough: Vec<&str> = PASSTHROUGH_ENV.to_vec();
    if policy == GitConfigPolicy::Inherit {
        // The operator opted in to the user's configuration, which may live there.
        passthrough.push("XDG_CONFIG_HOME");
    }
    passthrough
        .into_iter()
        .filter_map(|name| inherited(name).map(|value| (name.to_owned(), value)))
        .collect()
}

/// Returns the variables that git always gets from us: the C locale, no prompts, and unless
/// the user's configuration is let in, no system or global configuration file.
fn fixed_env(policy: GitConfigPolicy) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> =
        [("LC_ALL", "C"), ("LANG", "C"), ("GIT_TERMINAL_PROMPT", "0")]
            .into_iter()
            .map(|(name, value)| (name.to_owned(), OsString::from(value)))
            .collect();
    if policy == GitConfigPolicy::Isolated {
        env.push(("GIT_CONFIG_NOSYSTEM".to_owned(), OsString::from("1")));
        env.push(("GIT_CONFIG_GLOBAL".to_owned(), OsString::from("/dev/null")));
    }
    env
}

/// Returns the configuration that every git child gets, whatever its files say.
fn baseline_config() -> Vec<(&'static str, &'static str)> {
    vec![
        // The operator named both repositories; git otherwise refuses one owned by
        // another user (also the remote side of a local path).
        ("safe.directory", "*"),
        // Empty: clears every helper that the repository's or the user's config names.
        ("credential.helper", ""),
        // Empty: no askpass program from the config (GIT_ASKPASS and SSH_ASKPASS are not
        // passed on either), so git fails instead of prompting.
        ("core.askPass", ""),
    ]
}

/// Returns the configuration that hands our credentials to git through
/// [`CREDENTIAL_HELPER`].
fn credential_config() -> [(&'static str, &'static str); 2] {
    [
        ("credential.helper", CREDENTIAL_HELPER),
        // A redirect could send our credentials to another host.
        ("http.followRedirects", "false"),
    ]
}

/// Returns the two variables that [`CREDENTIAL_HELPER`] prints.
fn credential_env(credentials: &HttpCredentials) -> [(String, OsString); 2] {
    [
        (
            USERNAME_ENV.to_owned(),
            OsString::from(&credentials.username),
        ),
        (
            PASSWORD_ENV.to_owned(),
            OsString::from(credentials.password.expose_secret()),
        ),
    ]
}

/// Returns `config` as `GIT_CONFIG_COUNT`, `GIT_CONFIG_KEY_<n>` and `GIT_CONFIG_VALUE_<n>`.
/// Configuration goes through the environment (command-line scope, read after every file),
/// never through `-c`, which would be in argv.
fn config_env(config: &[(&str, &str)]) -> Vec<(String, OsString)> {
    let mut env = vec![(
        "GIT_CONFIG_COUNT".to_owned(),
        OsString::from(config.len().to_string()),
    )];
    for (index, &(key, value)) in config.iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{index}"), OsString::from(key)));
        env.push((format!("GIT_CONFIG_VALUE_{index}"), OsString::from(value)));
    }
    env
}

/// Returns the command line of git with `argv`, for the log. argv holds no secret (see the
/// module documentation); it is masked all the same.
fn command_line(argv: &[OsString]) -> String {
    let command_line = mask_credentials(
        &argv
            .iter()
            .map(|arg| arg.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
    );
    format!("git {command_line}")
}

/// Returns the command that runs git as `invocation` says: with nothing of our environment
/// but what it lists, no stdin, its own process group, and killed when dropped or when the
/// daemon dies.
fn git_command(invocation: &GitInvocation) -> Command {
    let mut command = Command::new("git");
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
    command
}

/// Kills the process group `pgid` of `child` (git) and reaps git.
async fn kill_and_reap(
    child: &mut Child,
    pgid: Option<u32>,
    operation: &'static str,
    elapsed_ms: u64,
) {
    if let Some(pgid) = pgid {
        kill_process_group(pgid);
    }
    // SIGKILL cannot be ignored; the bound only guards against a process stuck in
    // the kernel, which kill_on_drop then leaves to tokio's orphan reaper.
    let reaped = tokio::time::timeout(REAP_GRACE, child.wait()).await;
    debug!(operation, elapsed_ms, reaped = reaped.is_ok(), "git killed");
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

/// Reads `pipe` to its end.
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use base64::Engine as _;
    use secrecy::SecretString;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::mirror::remote::HttpCredentials;
    use crate::mirror::remote::testing::{fixture, remote};
    use crate::mirror::url::RemoteUrl;

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
            ("GIT_SSH_VARIANT", "ssh"),
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
}
