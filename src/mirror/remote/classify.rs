//! git's stderr, sorted once into the [`RemoteError`] kind that the scheduler uses to choose
//! between retrying and `failed`; and the remote's words about one refused ref, sorted into
//! a [`Refusal`] the same way.
//!
//! git has no machine-readable failure codes: what it prints comes from git itself, curl,
//! ssh and the remote's own `remote:` lines. So the kinds are recognised by their words, in
//! the C locale that every git child runs with, by patterns checked against the stderr of real
//! git runs (the samples in the tests). The first kind that matches wins, in the order of
//! [`FailureKind`]: an authentication failure followed by "the remote end hung up" is about
//! the credentials, not the network. Whatever is not recognised stays `Failed`, which is
//! retried.
//!
//! The detail of an error is the last lines of stderr that say something (no hints, no
//! boilerplate), with every secret scrubbed, because it ends up in the status and the logs.

use std::process::ExitStatus;
use std::sync::LazyLock;

use regex::Regex;
use secrecy::SecretString;

use super::{Refusal, RemoteError};
use crate::mirror::url::scrub_secrets;

/// The lines of stderr kept in an error's detail (the last ones).
const DETAIL_LINES: usize = 10;

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

/// Returns true for a lowercased line that says a lock file was in the way: git's
/// `Unable to create '<path>.lock': File exists.` or reftable's `cannot lock references`.
/// git also says "cannot lock ref" of a ref whose name conflicts with another, or that moved,
/// so those words alone mean no lock.
fn mentions_lock(line: &str) -> bool {
    static LOCK: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"unable to create '[^']*\.lock': file exists|error: cannot lock references$")
            .expect("the lock pattern is a valid regex")
    });
    LOCK.is_match(line)
}

/// Returns what the remote's words about one refused ref mean for another attempt. `words`
/// is either the reason of its `[remote rejected]` line or, when git's receive-pack said only
/// `failed to update ref` there, the error it printed on stderr for that ref. Only whole
/// messages in git's shapes count (and JGit's `failed to lock`): a hook's message that
/// merely contains the same words is a hook refusing the ref.
pub(super) fn refusal_of(words: &str) -> Refusal {
    // What git's ref backends say (refs/files-backend.c, refs/reftable-backend.c) when the
    // ref is not as receive-pack read it: changed, created or deleted since. A broken ref
    // adds `: reference broken` and is not matched.
    static STALE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r"^cannot lock ref '[^']+': (is at [0-9a-f]{40,64} but expected [0-9a-f]{40,64}|",
            r"reference is missing but expected [0-9a-f]{40,64}|reference already exists|",
            r"unable to resolve reference '[^']+')$",
        ))
        .expect("the stale-ref pattern is a valid regex")
    });
    // A lock file that exists (the ref's own, or `packed-refs.lock` for a delete), reftable's
    // lock on its table list, and JGit's result for a ref it could not lock.
    static LOCKED: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r"^(cannot lock ref '[^']+': )?Unable to create '[^']+\.lock': File exists\.?$|",
            r"^cannot lock references$|^failed to lock$",
        ))
        .expect("the lock pattern is a valid regex")
    });
    if STALE.is_match(words) {
        Refusal::Stale
    } else if LOCKED.is_match(words) {
        Refusal::Locked
    } else if words == "unpacker error" {
        // git's receive-pack when index-pack failed on what arrived (its stderr says
        // `remote unpack failed: ...`); dulwich says the same.
        Refusal::Unpacker
    } else {
        Refusal::Permanent
    }
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
pub(super) fn classify_failure(
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

/// Returns the detail of a failed git that said nothing on stderr.
pub(super) fn exit_description(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("git exited with status {code} without a message"),
        None => format!("git was ended by {status} without a message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_that_did_not_arrive_whole_is_worth_another_attempt() {
        assert_eq!(refusal_of("unpacker error"), Refusal::Unpacker);
        // A hook's words that merely mention it are the hook's.
        assert_eq!(
            refusal_of("hook: no unpacker error here"),
            Refusal::Permanent
        );
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

#[cfg(test)]
mod proptests;
