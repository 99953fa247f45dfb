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
    HostKeyChanged,
    HostKeyUnknown,
    KeyRefused,
    AuthRefused,
    NotFound,
    ObjectFormat,
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
            r"the remote end hung up unexpectedly|early eof|rpc failed|",
            r"connection closed by|connection timed out during banner exchange",
        ))
        .expect("the unreachable pattern is a valid regex")
    });
    static KEY_REFUSED: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"permission denied \(publickey")
            .expect("the refused-key pattern is a valid regex")
    });
    let any = |regex: &Regex| lines.iter().any(|line| regex.is_match(line));
    let has = |words: &str| lines.iter().any(|line| line.contains(words));
    if has("remote host identification has changed")
        || lines
            .iter()
            .any(|line| line.starts_with("host key for ") && line.contains(" has changed"))
    {
        FailureKind::HostKeyChanged
    } else if has("host key verification failed") {
        FailureKind::HostKeyUnknown
    } else if any(&KEY_REFUSED) {
        FailureKind::KeyRefused
    } else if any(&AUTH) {
        FailureKind::AuthRefused
    } else if any(&NOT_FOUND) || lines.iter().any(|line| is_missing_remote_path(line)) {
        FailureKind::NotFound
    } else if has("does not support this repository's hash algorithm") {
        FailureKind::ObjectFormat
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

/// Returns what the remote's hook said about `refname` on `stderr`, for a ref refused with
/// `hook declined`: its `remote:` lines that name the ref, without git's own `error: hook
/// declined to update <ref>`, joined with "; ". gitolite says there why
/// (`FATAL: W refs/heads/protected x mirror DENIED by refs/heads/protected$`).
pub(super) fn hook_words_for(stderr: &str, refname: &str) -> Option<String> {
    let own = format!("error: hook declined to update {refname}");
    let short = refname
        .strip_prefix("refs/heads/")
        .or_else(|| refname.strip_prefix("refs/tags/"));
    let words: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.trim().strip_prefix("remote:").map(str::trim))
        .filter(|line| !line.is_empty() && *line != own && !line.starts_with(&own))
        .filter(|line| {
            line.contains(refname)
                || short.is_some_and(|short| {
                    line.split(|c: char| c.is_whitespace() || c == '\'' || c == '"')
                        .any(|word| word == short)
                })
        })
        .collect();
    (!words.is_empty()).then(|| words.join("; "))
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
                || is_ssh_debug(line)
                || line
                    .strip_prefix("remote:")
                    .is_some_and(|r| r.trim().is_empty())
                || lower.starts_with("hint:")
                || lower == "please make sure you have the correct access rights"
                || lower == "and the repository exists.")
        })
        .collect()
}

/// Returns true for ssh's own debug lines (`LogLevel DEBUG1`, see `ssh`): read for the host
/// key's fingerprint, never shown.
fn is_ssh_debug(line: &str) -> bool {
    line.starts_with("debug1: ") || line.starts_with("debug2: ") || line.starts_with("debug3: ")
}

/// Returns the host that ssh names in a host key failure (`[127.0.0.1]:2222`, `github.com`).
fn host_key_host(lines: &[&str]) -> String {
    static HOST: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r"^Host key for (\S+) has changed|",
            r"^No \S+ host key is known for (\S+) and you have requested strict checking",
        ))
        .expect("the host pattern is a valid regex")
    });
    lines
        .iter()
        .find_map(|line| {
            let captures = HOST.captures(line)?;
            captures
                .get(1)
                .or(captures.get(2))
                .map(|m| m.as_str().to_owned())
        })
        .unwrap_or_else(|| "the remote host".to_owned())
}

/// Returns the host key that the remote offered, as `ED25519 key SHA256:...`, from ssh's
/// debug line `debug1: Server host key: ssh-ed25519 SHA256:...`, else from the warning of a
/// changed key (`The fingerprint for the ED25519 key sent by the remote host is` and the
/// fingerprint on the next line).
fn offered_host_key(stderr: &str) -> String {
    static DEBUG: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?m)^debug1: Server host key: (\S+) (SHA256:[A-Za-z0-9+/=]+)")
            .expect("the host key pattern is a valid regex")
    });
    static WARNING: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r"The fingerprint for the (\S+) key sent by the remote host is\s*",
            r"(SHA256:[A-Za-z0-9+/=]+)",
        ))
        .expect("the fingerprint pattern is a valid regex")
    });
    if let Some(captures) = DEBUG.captures(stderr) {
        return format!("{} key {}", key_type_name(&captures[1]), &captures[2]);
    }
    if let Some(captures) = WARNING.captures(stderr) {
        return format!("{} key {}", &captures[1], &captures[2]);
    }
    "a key not shown by ssh".to_owned()
}

/// Returns the short name ssh-keygen shows for a key type (`ssh-ed25519` is `ED25519`).
fn key_type_name(key_type: &str) -> String {
    match key_type {
        "ssh-ed25519" => "ED25519".to_owned(),
        "ssh-rsa" | "rsa-sha2-256" | "rsa-sha2-512" => "RSA".to_owned(),
        t if t.starts_with("ecdsa-sha2-") => "ECDSA".to_owned(),
        t if t.starts_with("sk-ssh-ed25519") => "ED25519-SK".to_owned(),
        t if t.starts_with("sk-ecdsa") => "ECDSA-SK".to_owned(),
        t => t.to_owned(),
    }
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
        FailureKind::HostKeyChanged => RemoteError::HostKeyMismatch {
            host: host_key_host(&lines),
            offered: offered_host_key(stderr),
        },
        FailureKind::HostKeyUnknown => RemoteError::HostKeyUnknown {
            host: host_key_host(&lines),
            offered: offered_host_key(stderr),
        },
        FailureKind::KeyRefused => RemoteError::KeyRefused { detail },
        FailureKind::AuthRefused => RemoteError::AuthRefused { detail },
        FailureKind::NotFound => RemoteError::NotFound { detail },
        FailureKind::ObjectFormat => RemoteError::ObjectFormat { detail },
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
        // git 2.47 push from a SHA-256 repository to an empty SHA-1 one (or the reverse),
        // over file:// or git://
        (
            "fatal: the receiving end does not support this repository's hash algorithm\n\
             fatal: the remote end hung up unexpectedly\n",
            FailureKind::ObjectFormat,
            "fatal: the receiving end does not support this repository's hash algorithm\n\
             fatal: the remote end hung up unexpectedly",
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
            FailureKind::KeyRefused,
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
        // OpenSSH 9.2, ConnectTimeout=30 to a black-holed address (not provoked here)
        (
            "debug1: Connecting to 192.0.2.1 [192.0.2.1] port 22.\r\n\
             ssh: connect to host 192.0.2.1 port 22: Connection timed out\r\n\
             fatal: Could not read from remote repository.\n",
            FailureKind::Unreachable,
            "ssh: connect to host 192.0.2.1 port 22: Connection timed out\n\
             fatal: Could not read from remote repository.",
        ),
        // OpenSSH 9.2, a server that closes before the key exchange (MaxStartups; not
        // provoked here)
        (
            "kex_exchange_identification: Connection closed by remote host\r\n\
             Connection closed by 192.0.2.1 port 22\r\n\
             fatal: Could not read from remote repository.\n",
            FailureKind::Unreachable,
            "kex_exchange_identification: Connection closed by remote host\n\
             Connection closed by 192.0.2.1 port 22\n\
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
            RemoteError::KeyRefused { .. } => FailureKind::KeyRefused,
            RemoteError::HostKeyMismatch { .. } => FailureKind::HostKeyChanged,
            RemoteError::HostKeyUnknown { .. } => FailureKind::HostKeyUnknown,
            RemoteError::NotFound { .. } => FailureKind::NotFound,
            RemoteError::ObjectFormat { .. } => FailureKind::ObjectFormat,
            RemoteError::ServerError { .. } => FailureKind::ServerError,
            RemoteError::Locked { .. } => FailureKind::Locked,
            RemoteError::Unreachable { .. } => FailureKind::Unreachable,
            _ => FailureKind::Failed,
        }
    }

    fn detail_of(error: &RemoteError) -> &str {
        match error {
            RemoteError::AuthRefused { detail }
            | RemoteError::KeyRefused { detail }
            | RemoteError::NotFound { detail }
            | RemoteError::ObjectFormat { detail }
            | RemoteError::ServerError { detail }
            | RemoteError::Locked { detail }
            | RemoteError::Unreachable { detail }
            | RemoteError::Failed { detail, .. } => detail,
            _ => "",
        }
    }

    /// OpenSSH 9.2's stderr under git 2.47 with the options of `ssh` (LogLevel DEBUG1), from
    /// ../shared/reference/test-servers.md and the sshd of tests/it/ssh.rs, shortened.
    const HOST_KEY_CHANGED: &str = "debug1: Connecting to 127.0.0.1 [127.0.0.1] port 42509.\r\n\
        debug1: Server host key: ssh-ed25519 SHA256:14cjKRU0aQ4QOPiXj0Fk57Q2iE3jyeJU/PUkRKGaOYE\r\n\
        @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n\
        @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n\
        @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n\
        IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\r\n\
        The fingerprint for the ED25519 key sent by the remote host is\r\n\
        SHA256:14cjKRU0aQ4QOPiXj0Fk57Q2iE3jyeJU/PUkRKGaOYE.\r\n\
        Please contact your system administrator.\r\n\
        Add correct host key in /s/ssh/m.known_hosts to get rid of this message.\r\n\
        Offending ED25519 key in /s/ssh/m.known_hosts:1\r\n\
        Host key for [127.0.0.1]:42509 has changed and you have requested strict checking.\r\n\
        Host key verification failed.\r\n\
        fatal: Could not read from remote repository.\n\n\
        Please make sure you have the correct access rights\nand the repository exists.\n";

    const HOST_UNKNOWN: &str = "debug1: Server host key: ssh-ed25519 SHA256:14cjKRU0aQ4QOPiXj0Fk57Q2iE3jyeJU/PUkRKGaOYE\r\n\
        No ED25519 host key is known for [127.0.0.1]:42509 and you have requested strict checking.\r\n\
        Host key verification failed.\r\n\
        fatal: Could not read from remote repository.\n";

    #[test]
    fn host_key_failures_name_the_host_and_the_offered_key_and_are_permanent() {
        let fingerprint = "SHA256:14cjKRU0aQ4QOPiXj0Fk57Q2iE3jyeJU/PUkRKGaOYE";
        let changed = classify_failure("ls-remote", HOST_KEY_CHANGED, "unused", &[]);
        let RemoteError::HostKeyMismatch { host, offered } = &changed else {
            panic!("{changed:?}");
        };
        assert_eq!(host, "[127.0.0.1]:42509");
        assert_eq!(*offered, format!("ED25519 key {fingerprint}"));
        // Without the debug line, the warning's own fingerprint serves.
        let quiet: String = HOST_KEY_CHANGED
            .lines()
            .filter(|l| !l.starts_with("debug1"))
            .map(|l| format!("{l}\n"))
            .collect();
        let RemoteError::HostKeyMismatch { offered, .. } =
            classify_failure("ls-remote", &quiet, "unused", &[])
        else {
            panic!("mismatch expected");
        };
        assert_eq!(offered, format!("ED25519 key {fingerprint}"));
        let unknown = classify_failure("ls-remote", HOST_UNKNOWN, "unused", &[]);
        let RemoteError::HostKeyUnknown { host, offered } = &unknown else {
            panic!("{unknown:?}");
        };
        assert_eq!(host, "[127.0.0.1]:42509");
        assert_eq!(*offered, format!("ED25519 key {fingerprint}"));
        for error in [&changed, &unknown] {
            assert!(!error.is_transient(), "{error}");
            let message = error.to_string();
            assert!(message.contains("[127.0.0.1]:42509"), "{message}");
            assert!(message.contains(fingerprint), "{message}");
            assert!(!message.contains("debug1"), "{message}");
        }
    }

    #[test]
    fn a_hook_names_why_it_declined_a_ref() {
        // gitolite 3.6.12 behind sshd, push of `protected` and `other` (test-servers.md).
        let stderr = "remote: FATAL: W refs/heads/protected x mirror DENIED by refs/heads/protected$        \n\
            remote: error: hook declined to update refs/heads/protected        \n";
        assert_eq!(
            hook_words_for(stderr, "refs/heads/protected").as_deref(),
            Some("FATAL: W refs/heads/protected x mirror DENIED by refs/heads/protected$")
        );
        assert_eq!(hook_words_for(stderr, "refs/heads/other"), None);
        assert_eq!(
            hook_words_for(
                "remote: protected branch: main is frozen\n",
                "refs/heads/main"
            )
            .as_deref(),
            Some("protected branch: main is frozen")
        );
    }

    #[test]
    fn ssh_debug_lines_are_never_shown() {
        let stderr = "debug1: Reading configuration data /dev/null\r\n\
            debug1: Connecting to 127.0.0.1 [127.0.0.1] port 1.\r\n\
            debug1: connect to address 127.0.0.1 port 1: Connection refused\r\n\
            ssh: connect to host 127.0.0.1 port 1: Connection refused\r\n\
            fatal: Could not read from remote repository.\n";
        let error = classify_failure("ls-remote", stderr, "unused", &[]);
        assert_eq!(kind_of(&error), FailureKind::Unreachable);
        assert!(error.is_transient());
        assert_eq!(
            detail_of(&error),
            "ssh: connect to host 127.0.0.1 port 1: Connection refused\n\
             fatal: Could not read from remote repository."
        );
    }

    #[test]
    fn real_stderr_samples_are_classified() {
        for (stderr, kind, detail) in SAMPLES {
            let error = classify_failure("push", stderr, "unused", &[]);
            assert_eq!(kind_of(&error), *kind, "{stderr}");
            assert_eq!(detail_of(&error), *detail, "{stderr}");
            let permanent = matches!(
                kind,
                FailureKind::AuthRefused
                    | FailureKind::KeyRefused
                    | FailureKind::NotFound
                    | FailureKind::ObjectFormat
            );
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
