//! `pushmirror notify`, the post-receive hook: turns git's `<old> <new> <ref>` lines into one
//! `Request::Notify` for the daemon, or into a spool file when the daemon cannot take it.
//!
//! Invariant: it exits 0 whatever happens, within a bounded time, and explains problems on
//! stderr in one line each, two at most (`Report`): one that sums up the input lines it
//! skipped, however many, and one saying what became of the notification when the daemon did
//! not take it. git ignores post-receive's status and forwards its output to the pusher
//! (git/git `Documentation/githooks.adoc`), so a failure here must never look like a failed
//! push, a slow daemon must never hold one up, and garbage on stdin must not become a
//! screenful per line: the daemon gets about a second ([`NOTIFY_BUDGET`]) for connecting and
//! answering together, after which the notification goes to the spool (SPEC.md section 7).
//!
//! Its request is always one the daemon reads at once: at most [`SMALL_REQUEST_BYTES`],
//! however many refs the push changed (see `notification_within`). A push of 100,000 refs
//! would otherwise make a request larger than the daemon accepts, which would go to the
//! spool and wait there for the next push.
//!
//! It must keep working when the configuration is broken (an operator mid-edit must not lose
//! pushes), so it does not use `Config::load`: it reads only `[daemon] state_dir` and
//! `socket` from the file as a plain TOML table, ignoring everything else.
//!
//! The work runs in a spawned task whose panic comes back as a `JoinError`; output is
//! collected and written by the caller, so tests need no process.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::{self, ClientError};
use crate::config::{self, DaemonPaths, DaemonPathsError};
use crate::protocol::{
    Notification, RefChange, Request, Response, SMALL_REQUEST_BYTES, encode_request,
};
use crate::store::spool;

/// How long the daemon has to accept and answer a notification before the hook spools it.
pub const NOTIFY_BUDGET: Duration = Duration::from_secs(1);

/// Longest part of a malformed input line quoted back to the pusher.
const QUOTE_CHARS: usize = 200;

/// How many malformed input lines the summary names by number; the rest are only counted.
const LISTED_LINES: usize = 5;

/// Runs `pushmirror notify` for the binary: reads stdin, `$GIT_DIR` and the current
/// directory, runs [`run`] on a small runtime and writes to stderr. Returns the exit code,
/// always 0, even if something in here panics.
pub fn main(config_path: &Path) -> u8 {
    let outcome = std::panic::catch_unwind(|| {
        let mut err = std::io::stderr();
        let mut input = Vec::new();
        if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut input) {
            let _ = writeln!(
                err,
                "pushmirror: cannot read the hook's input ({e}); nothing was queued"
            );
            return;
        }
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let git_dir = std::env::var_os("GIT_DIR");
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => {
                runtime.block_on(run(config_path, &input, git_dir, cwd, &mut err));
            }
            Err(e) => {
                let _ = writeln!(
                    err,
                    "pushmirror: cannot start the async runtime ({e}); run 'pushmirror sync --repo {}' to mirror this push",
                    repository(git_dir, &cwd).display()
                );
            }
        }
    });
    if outcome.is_err() {
        let _ = writeln!(
            std::io::stderr(),
            "pushmirror: internal error in the post-receive hook; run 'pushmirror sync --all' to mirror this push"
        );
    }
    0
}

/// Runs the hook: parses `input` (the hook's stdin), finds the repository from `git_dir`
/// (`$GIT_DIR`, relative to `cwd`) or `cwd`, and notifies the daemon configured in
/// `config_path` or spools the notification. Writes at most two lines to `err` (see
/// `Report`). Returns the exit code, always 0.
pub async fn run(
    config_path: &Path,
    input: &[u8],
    git_dir: Option<OsString>,
    cwd: PathBuf,
    err: &mut dyn Write,
) -> u8 {
    let hook = Hook {
        budget: NOTIFY_BUDGET,
        fallback: DaemonPaths::defaults(),
    };
    run_with(config_path, input, git_dir, cwd, hook, err).await
}

/// What the hook is given besides its input: the daemon's time to answer, and where to
/// look for the daemon when the configuration file cannot be read at all.
struct Hook {
    budget: Duration,
    /// The default state directory and socket in production ([`DaemonPaths::defaults`]);
    /// a temporary directory in tests.
    fallback: DaemonPaths,
}

async fn run_with(
    config_path: &Path,
    input: &[u8],
    git_dir: Option<OsString>,
    cwd: PathBuf,
    hook: Hook,
    err: &mut dyn Write,
) -> u8 {
    let repo = repository(git_dir, &cwd);
    let work = tokio::spawn(notify(
        config_path.to_owned(),
        input.to_vec(),
        repo.clone(),
        cwd,
        hook,
    ));
    let report = match work.await {
        Ok(report) => report,
        Err(e) => Report {
            skipped: None,
            outcome: Some(format!(
                "pushmirror: internal error while notifying the mirror daemon ({e}); run 'pushmirror sync --repo {}' to mirror this push",
                repo.display()
            )),
        },
    };
    // A failed write to stderr cannot be reported anywhere better.
    for line in report.lines() {
        let _ = writeln!(err, "{line}");
    }
    0
}

/// What the hook tells the pusher: at most one line per kind of problem, so at most two
/// lines whatever the input.
#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    /// The summary of the input lines skipped as malformed (see [`Skipped::summary`]).
    skipped: Option<String>,
    /// What became of the notification when the daemon did not take it: spooled, or what
    /// to run instead.
    outcome: Option<String>,
}

impl Report {
    fn lines(&self) -> impl Iterator<Item = &str> {
        self.skipped.iter().chain(&self.outcome).map(String::as_str)
    }
}

/// The hook's work; returns what to tell the pusher.
async fn notify(
    config_path: PathBuf,
    input: Vec<u8>,
    repo: PathBuf,
    cwd: PathBuf,
    hook: Hook,
) -> Report {
    let (refs, skipped) = parse_input(&input);
    let mut report = Report {
        skipped: skipped.summary(),
        outcome: None,
    };
    if refs.is_empty() {
        return report;
    }
    let config_path = cwd.join(config_path);
    // A file this user cannot read (or that is missing) still leaves the default places to
    // try: the push is recorded there if it can be, and the pusher is told what to fix.
    let (paths, fix) = match config::daemon_paths(&config_path) {
        Ok(paths) => (paths, None),
        Err(DaemonPathsError::Read { path, source }) => {
            (hook.fallback, Some(what_to_fix(&path, &source)))
        }
        Err(reason) => {
            report.outcome = Some(format!(
                "pushmirror: cannot find the mirror daemon: {reason}; run 'pushmirror sync --repo {}' once the configuration is fixed",
                repo.display()
            ));
            return report;
        }
    };
    let notification = notification_within(repo, refs, SMALL_REQUEST_BYTES);
    let request = Request::Notify(notification.clone());
    let reason = match client::call(&paths.socket, &request, hook.budget).await {
        Ok(Response::Notified { .. }) => {
            report.outcome = fix.map(|fix| {
                format!(
                    "pushmirror: {fix}; the daemon at the default socket {} took the push",
                    paths.socket.display()
                )
            });
            return report;
        }
        Ok(Response::Error { kind, message }) => format!("{}: {message}", kind_name(kind)),
        Ok(other) => format!("unexpected answer {other:?}"),
        Err(e) => client_reason(&e),
    };
    let state_dir = paths.state_dir;
    let repo = notification.repo.clone();
    let spooled =
        tokio::task::spawn_blocking(move || spool::write(&state_dir, &notification)).await;
    let outcome = match spooled {
        // Shown canonical: the file exists, and `..` or a link in a configured path would
        // only make it harder to find.
        Ok(Ok(file)) if fix.is_some() => format!(
            "the push was queued in the default spool as {}",
            crate::paths::canonical(&file).display()
        ),
        Ok(Ok(file)) => format!(
            "the mirror daemon did not answer ({reason}); the push was queued in {} and will be mirrored when it runs",
            crate::paths::canonical(&file).display()
        ),
        Ok(Err(e)) => not_queued(&reason, &crate::error::chain(&e), &repo),
        Err(e) => not_queued(&reason, &format!("internal error: {e}"), &repo),
    };
    report.outcome = Some(match fix {
        Some(fix) => format!("pushmirror: {fix}; {outcome}"),
        None => format!("pushmirror: {outcome}"),
    });
    report
}

/// Returns what the operator must fix when the hook cannot read the configuration file:
/// one clause, for the one line the hook prints.
fn what_to_fix(path: &Path, error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => crate::config::unreadable_fix(path),
        std::io::ErrorKind::NotFound => format!(
            "{} does not exist: create it, or point PUSHMIRROR_CONFIG in the hook's environment at the daemon's file",
            path.display()
        ),
        _ => format!("cannot read {}: {error}", path.display()),
    }
}

fn not_queued(reason: &str, spool_reason: &str, repo: &Path) -> String {
    format!(
        "cannot notify the mirror daemon ({reason}) nor queue the push ({spool_reason}); run 'pushmirror sync --repo {}' when it is back",
        repo.display()
    )
}

fn client_reason(error: &ClientError) -> String {
    error.to_string()
}

/// Returns the wire name of an error kind (`unavailable`, `shutting_down`, ...).
fn kind_name(kind: crate::protocol::ErrorKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{kind:?}"))
}

/// Returns the repository the hook runs for: `$GIT_DIR` (relative to `cwd`; git sets `.` in
/// bare repositories) or else `cwd`, absolute and canonical when possible.
fn repository(git_dir: Option<OsString>, cwd: &Path) -> PathBuf {
    let path = match git_dir {
        Some(dir) if !dir.is_empty() => cwd.join(dir),
        _ => cwd.to_owned(),
    };
    crate::paths::canonical(&path)
}

/// Returns the notification of `refs` in `repo`, at most `limit` bytes on the wire
/// ([`SMALL_REQUEST_BYTES`]: the daemon reads it at once, whatever the size of the push).
///
/// When the refs do not all fit, it is a notification of all refs
/// ([`Notification::all_refs`]: the daemon marks every enabled mirror of the repository)
/// with those that fit as a sample, a tag first if the push has one: a daemon older than
/// `all_refs` matches only the sample, and a tag matches every mirror there too.
fn notification_within(repo: PathBuf, mut refs: Vec<RefChange>, limit: usize) -> Notification {
    // One ref costs its JSON, and a comma after the first.
    let mut sizes: Vec<usize> = refs
        .iter()
        .map(|change| {
            serde_json::to_vec(change)
                .expect("ref changes always serialize")
                .len()
        })
        .collect();
    let mut notification = Notification {
        repo,
        refs: Vec::new(),
        all_refs: false,
    };
    let whole =
        request_bytes(&notification) + sizes.iter().sum::<usize>() + sizes.len().saturating_sub(1);
    if whole <= limit {
        notification.refs = refs;
        return notification;
    }
    notification.all_refs = true;
    if let Some(tag) = refs.iter().position(|r| r.name.starts_with("refs/tags/")) {
        refs[..=tag].rotate_right(1);
        sizes[..=tag].rotate_right(1);
    }
    let mut bytes = request_bytes(&notification);
    let mut fitting = 0;
    for size in sizes {
        let more = size + usize::from(fitting > 0);
        if bytes + more > limit {
            break;
        }
        bytes += more;
        fitting += 1;
    }
    refs.truncate(fitting);
    notification.refs = refs;
    notification
}

/// Returns the length of the request line of `notification`, without its newline.
fn request_bytes(notification: &Notification) -> usize {
    encode_request(&Request::Notify(notification.clone())).len() - 1
}

/// Splits post-receive input into ref changes and the lines skipped as malformed.
fn parse_input(input: &[u8]) -> (Vec<RefChange>, Skipped) {
    let mut refs = Vec::new();
    let mut skipped = Skipped::default();
    for (index, raw) in input.split(|&b| b == b'\n').enumerate() {
        if raw.is_empty() {
            continue;
        }
        match std::str::from_utf8(raw).ok().and_then(parse_line) {
            Some(change) => refs.push(change),
            None => skipped.add(index + 1, raw),
        }
    }
    (refs, skipped)
}

/// The malformed lines of the hook's input: how many, and the first few (line number and
/// quoted text), so that the pusher gets one line about them however many there are, and
/// garbage input costs no memory per line.
#[derive(Debug, Default)]
struct Skipped {
    count: usize,
    /// The first [`LISTED_LINES`] of them.
    first: Vec<(usize, String)>,
}

impl Skipped {
    fn add(&mut self, line_number: usize, raw: &[u8]) {
        self.count += 1;
        if self.first.len() < LISTED_LINES {
            self.first.push((line_number, quote(raw)));
        }
    }

    /// Returns the one line that tells the pusher about the skipped lines, if any: the line
    /// itself when there is one, else their number, the first line numbers and the first
    /// line's text.
    fn summary(&self) -> Option<String> {
        let (first_number, first_text) = self.first.first()?;
        if self.count == 1 {
            return Some(describe_line(*first_number, first_text));
        }
        let mut numbers: Vec<String> = self.first.iter().map(|(n, _)| n.to_string()).collect();
        if self.count > self.first.len() {
            numbers.push("...".into());
        }
        Some(format!(
            "pushmirror: skipping {} malformed hook input lines ({}); line {first_number}: {first_text:?}",
            self.count,
            numbers.join(", ")
        ))
    }

    /// Returns one message per listed line, as the hook once printed them.
    #[cfg(test)]
    fn messages(&self) -> Vec<String> {
        self.first
            .iter()
            .map(|(number, text)| describe_line(*number, text))
            .collect()
    }
}

fn describe_line(number: usize, text: &str) -> String {
    format!("pushmirror: skipping malformed hook input line {number}: {text:?}")
}

/// Parses `<old> <new> <ref>`: two object ids of the same length (40 hex digits for SHA-1,
/// 64 for SHA-256) and a ref name under `refs/`.
fn parse_line(line: &str) -> Option<RefChange> {
    let mut parts = line.split(' ');
    let (old, new, name) = (parts.next()?, parts.next()?, parts.next()?);
    let is_oid =
        |s: &str| (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = parts.next().is_none()
        && is_oid(old)
        && is_oid(new)
        && old.len() == new.len()
        && name.len() > "refs/".len()
        && name.starts_with("refs/")
        && !name.bytes().any(|b| b.is_ascii_control());
    valid.then(|| RefChange {
        old: old.to_owned(),
        new: new.to_owned(),
        name: name.to_owned(),
    })
}

fn quote(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if text.chars().count() <= QUOTE_CHARS {
        return text.into_owned();
    }
    let mut cut: String = text.chars().take(QUOTE_CHARS).collect();
    cut.push_str("...");
    cut
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorKind;
    use crate::protocol::{LineRead, MAX_REQUEST_BYTES, read_line_bounded};
    use tokio::io::AsyncWriteExt;
    use tokio_util::sync::CancellationToken;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    struct Setup {
        dir: tempfile::TempDir,
        config: PathBuf,
        repo: PathBuf,
    }

    impl Setup {
        fn new(extra: &str) -> Setup {
            let dir = tempfile::tempdir().expect("temporary directory");
            std::fs::create_dir(dir.path().join("state")).expect("state dir");
            let repo = dir.path().join("app.git");
            std::fs::create_dir(&repo).expect("repo dir");
            let config = dir.path().join("pushmirror.toml");
            std::fs::write(&config, format!("[daemon]\nstate_dir = \"state\"\n{extra}"))
                .expect("config");
            Setup { dir, config, repo }
        }

        fn state(&self) -> PathBuf {
            self.dir.path().join("state")
        }

        fn socket(&self) -> PathBuf {
            self.state().join("control.sock")
        }

        /// The default paths of this setup: `default-state/` beside the configuration.
        fn fallback(&self) -> DaemonPaths {
            let state_dir = self.dir.path().join("default-state");
            let socket = config::default_socket(&state_dir);
            DaemonPaths { state_dir, socket }
        }

        fn spooled(&self) -> Vec<spool::Spooled> {
            spool::read_all(&self.state())
        }

        async fn run(&self, input: &str, budget: Duration) -> String {
            let mut err = Vec::new();
            let hook = Hook {
                budget,
                fallback: self.fallback(),
            };
            let code = run_with(
                &self.config,
                input.as_bytes(),
                Some(".".into()),
                self.repo.clone(),
                hook,
                &mut err,
            )
            .await;
            assert_eq!(code, 0);
            String::from_utf8(err).expect("utf-8 output")
        }
    }

    fn input() -> String {
        format!("{ZERO} {A} refs/heads/main\n{A} {B} refs/tags/v1\n")
    }

    /// Serves the setup's socket with a stand-in daemon answering every request line with
    /// `answer` (the hook's tests need the socket's framing, not the daemon).
    fn daemon(setup: &Setup, answer: Response) -> CancellationToken {
        let listener = tokio::net::UnixListener::bind(setup.socket()).expect("bind");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => return,
                    },
                };
                let answer = answer.clone();
                tokio::spawn(async move {
                    let (reader, mut writer) = stream.into_split();
                    let mut reader = tokio::io::BufReader::new(reader);
                    let mut line = Vec::new();
                    while let Ok(LineRead::Line) =
                        read_line_bounded(&mut reader, &mut line, MAX_REQUEST_BYTES).await
                    {
                        line.clear();
                        let reply = crate::protocol::encode_response(&answer);
                        if writer.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        shutdown
    }

    #[test]
    fn input_lines_are_checked() {
        let sha256 = "a".repeat(64);
        let text = format!(
            "{ZERO} {A} refs/heads/main\n\
             garbage\n\
             \n\
             {A} {B} refs/tags/v1\n\
             {A} {B} heads/main\n\
             {A} {sha256} refs/heads/mixed\n\
             {sha256} {sha256} refs/heads/long\n\
             {A} {B} refs/heads/a b"
        );
        let (refs, skipped) = parse_input(text.as_bytes());
        let messages = skipped.messages();
        let names: Vec<&str> = refs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["refs/heads/main", "refs/tags/v1", "refs/heads/long"]
        );
        assert_eq!(refs[0].old, ZERO);
        assert_eq!(refs[0].new, A);
        assert_eq!(
            messages,
            [
                "pushmirror: skipping malformed hook input line 2: \"garbage\"".to_owned(),
                format!("pushmirror: skipping malformed hook input line 5: \"{A} {B} heads/main\""),
                format!(
                    "pushmirror: skipping malformed hook input line 6: \"{A} {sha256} refs/heads/mixed\""
                ),
                format!(
                    "pushmirror: skipping malformed hook input line 8: \"{A} {B} refs/heads/a b\""
                ),
            ]
        );
    }

    #[test]
    fn long_lines_are_quoted_short() {
        let (_, skipped) = parse_input("x".repeat(1000).as_bytes());
        let messages = skipped.messages();
        assert!(messages[0].ends_with("...\""), "{}", messages[0]);
        assert!(messages[0].len() < 300);
    }

    #[test]
    fn malformed_lines_are_summed_up_in_one_line() {
        let (_, skipped) = parse_input(format!("{ZERO} {A} refs/heads/main\ngarbage\n").as_bytes());
        assert_eq!(
            skipped.summary().as_deref(),
            Some("pushmirror: skipping malformed hook input line 2: \"garbage\"")
        );
        let text = format!("junk\n{ZERO} {A} refs/heads/main\nmore junk\n");
        let (_, skipped) = parse_input(text.as_bytes());
        assert_eq!(
            skipped.summary().as_deref(),
            Some("pushmirror: skipping 2 malformed hook input lines (1, 3); line 1: \"junk\"")
        );
        let (_, skipped) = parse_input("junk\n".repeat(100_000).as_bytes());
        assert_eq!(
            skipped.summary().as_deref(),
            Some(
                "pushmirror: skipping 100000 malformed hook input lines (1, 2, 3, 4, 5, ...); line 1: \"junk\""
            )
        );
        let (_, skipped) = parse_input(format!("{ZERO} {A} refs/heads/main\n").as_bytes());
        assert_eq!(skipped.summary(), None);
    }

    /// Garbage however long, and a daemon that is not there: one line about the input, one
    /// about the spool.
    #[tokio::test]
    async fn garbage_input_costs_the_pusher_two_lines_at_most() {
        let setup = Setup::new("");
        let mut garbage = "not a ref line\n".repeat(100_000);
        garbage.push_str(&input());
        let err = setup.run(&garbage, Duration::from_secs(1)).await;
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{}", &err[..err.len().min(2000)]);
        assert!(
            lines[0].starts_with("pushmirror: skipping 100000 malformed hook input lines (1, 2, 3, 4, 5, ...); line 1: "),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("the push was queued in"), "{}", lines[1]);
        assert_eq!(setup.spooled().len(), 1);
    }

    fn change(name: &str) -> RefChange {
        RefChange {
            old: ZERO.into(),
            new: A.into(),
            name: name.into(),
        }
    }

    fn line_bytes(notification: &Notification) -> usize {
        encode_request(&Request::Notify(notification.clone())).len() - 1
    }

    #[test]
    fn a_notification_that_fits_is_sent_whole() {
        let refs = vec![change("refs/heads/main"), change("refs/tags/v1")];
        let whole = Notification {
            repo: "/srv/app.git".into(),
            refs: refs.clone(),
            all_refs: false,
        };
        let exact = line_bytes(&whole);
        assert_eq!(
            notification_within("/srv/app.git".into(), refs.clone(), exact),
            whole
        );
        // One byte less and it no longer fits: all refs, with what fits as the sample.
        let cut = notification_within("/srv/app.git".into(), refs, exact - 1);
        assert!(cut.all_refs, "{cut:?}");
        assert!(line_bytes(&cut) < exact);
    }

    /// A push of 100,000 refs (13 MB of hook input) becomes one request the daemon reads at
    /// once: all refs, a sample of them, the push's first tag first.
    #[test]
    fn a_huge_push_becomes_a_notification_of_all_refs_within_the_small_limit() {
        let mut refs: Vec<RefChange> = (0..100_000)
            .map(|i| change(&format!("refs/heads/feature/{i:06}")))
            .collect();
        refs[70_000] = change("refs/tags/v7");
        let notification =
            notification_within("/srv/app.git".into(), refs.clone(), SMALL_REQUEST_BYTES);
        assert!(notification.all_refs);
        let bytes = line_bytes(&notification);
        assert!(bytes <= SMALL_REQUEST_BYTES, "{bytes}");
        let names: Vec<&str> = notification.refs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names[..3],
            [
                "refs/tags/v7",
                "refs/heads/feature/000000",
                "refs/heads/feature/000001"
            ]
        );
        // As many as fit: one more would not.
        let mut more = notification.clone();
        more.refs.push(refs[names.len()].clone());
        assert!(line_bytes(&more) > SMALL_REQUEST_BYTES);
        assert!(names.len() > 300, "{}", names.len());
    }

    #[tokio::test]
    async fn no_daemon_means_spooled_with_one_line() {
        let setup = Setup::new("");
        let err = setup.run(&input(), Duration::from_secs(1)).await;
        let spooled = setup.spooled();
        assert_eq!(spooled.len(), 1, "{err}");
        let notification = &spooled[0].notification;
        assert_eq!(notification.repo, setup.repo.canonicalize().expect("repo"));
        assert_eq!(notification.refs.len(), 2);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(
            err.trim_end(),
            format!(
                "pushmirror: the mirror daemon did not answer (the pushmirror daemon is not running (no socket at {})); the push was queued in {} and will be mirrored when it runs",
                setup.socket().display(),
                spooled[0].path.display()
            )
        );
    }

    #[tokio::test]
    async fn notified_is_silent_and_spools_nothing() {
        let setup = Setup::new("");
        let shutdown = daemon(&setup, Response::Notified { mirrors: vec![] });
        let err = setup.run(&input(), Duration::from_secs(5)).await;
        assert_eq!(err, "");
        assert!(setup.spooled().is_empty());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn error_reply_is_spooled_with_its_reason() {
        let setup = Setup::new("");
        let shutdown = daemon(
            &setup,
            Response::Error {
                kind: ErrorKind::Unavailable,
                message: "disk full".into(),
            },
        );
        let err = setup.run(&input(), Duration::from_secs(5)).await;
        assert!(
            err.starts_with("pushmirror: the mirror daemon did not answer (unavailable: disk full); the push was queued in "),
            "{err}"
        );
        assert_eq!(setup.spooled().len(), 1);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn silent_daemon_is_given_up_on_within_the_budget() {
        let setup = Setup::new("");
        // Connections wait in the backlog; nothing ever answers.
        let _listener = tokio::net::UnixListener::bind(setup.socket()).expect("bind");
        let started = std::time::Instant::now();
        let err = setup.run(&input(), Duration::from_millis(300)).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(err.contains("did not answer within 300ms"), "{err}");
        assert_eq!(setup.spooled().len(), 1);
    }

    #[tokio::test]
    async fn broken_config_still_spools() {
        let setup = Setup::new("no_such_key = true\n[[mirror]]\nname = 42\n");
        let err = setup.run(&input(), Duration::from_secs(1)).await;
        assert_eq!(setup.spooled().len(), 1, "{err}");
    }

    #[tokio::test]
    async fn unreadable_config_is_one_line() {
        let setup = Setup::new("");
        std::fs::write(&setup.config, "[daemon\nstate_dir = ").expect("write");
        let err = setup.run(&input(), Duration::from_secs(1)).await;
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("pushmirror: cannot find the mirror daemon: "),
            "{err}"
        );
        assert!(err.contains("sync --repo"), "{err}");
    }

    #[tokio::test]
    async fn a_config_it_cannot_read_still_records_the_push_in_the_default_spool() {
        let setup = Setup::new("");
        std::fs::remove_file(&setup.config).expect("remove config");
        let fallback = setup.fallback();
        std::fs::create_dir(&fallback.state_dir).expect("default state dir");
        let err = setup.run(&input(), Duration::from_secs(1)).await;
        let spooled = spool::read_all(&fallback.state_dir);
        assert_eq!(spooled.len(), 1, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(
            err.trim_end(),
            format!(
                "pushmirror: {} does not exist: create it, or point PUSHMIRROR_CONFIG in the hook's environment at the daemon's file; the push was queued in the default spool as {}",
                setup.config.display(),
                spooled[0].path.display()
            )
        );
    }

    #[test]
    fn a_config_without_read_permission_says_whom_to_add_to_the_group() {
        let error = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let fix = what_to_fix(Path::new("/etc/pushmirror/pushmirror.toml"), &error);
        assert!(
            fix.starts_with(&format!(
                "user {} cannot read /etc/pushmirror/pushmirror.toml (permission denied): add it to the group",
                crate::config::this_user()
            )),
            "{fix}"
        );
        assert!(!fix.contains('\n'), "{fix}");
    }

    #[tokio::test]
    async fn nothing_to_do_is_silent() {
        let setup = Setup::new("");
        assert_eq!(setup.run("", Duration::from_secs(1)).await, "");
        assert!(setup.spooled().is_empty());
        let err = setup.run("junk\n", Duration::from_secs(1)).await;
        assert_eq!(
            err,
            "pushmirror: skipping malformed hook input line 1: \"junk\"\n"
        );
        assert!(setup.spooled().is_empty());
    }

    #[tokio::test]
    async fn failing_spool_says_how_to_recover() {
        let setup = Setup::new("");
        std::fs::remove_dir(setup.state()).expect("remove state dir");
        let err = setup.run(&input(), Duration::from_secs(1)).await;
        assert!(
            err.starts_with(
                "pushmirror: cannot notify the mirror daemon (the pushmirror daemon is not running"
            ),
            "{err}"
        );
        assert!(
            err.trim_end().ends_with(&format!(
                "nor queue the push (the state directory {} does not exist (has the daemon never run?)); run 'pushmirror sync --repo {}' when it is back",
                setup.state().display(),
                setup.repo.canonicalize().expect("repo").display()
            )),
            "{err}"
        );
    }

    #[test]
    fn repository_comes_from_git_dir_else_cwd() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let root = dir.path().canonicalize().expect("canonical");
        std::fs::create_dir(root.join("r.git")).expect("mkdir");
        assert_eq!(
            repository(Some(".".into()), &root.join("r.git")),
            root.join("r.git")
        );
        assert_eq!(repository(Some("r.git".into()), &root), root.join("r.git"));
        assert_eq!(repository(None, &root.join("r.git")), root.join("r.git"));
        assert_eq!(
            repository(Some(root.join("r.git").into_os_string()), Path::new("/")),
            root.join("r.git")
        );
    }
}
