//! `pushmirror detect-host-keys URL`: GitLab's "Detect host keys". Asks the SSH host of URL
//! for its host keys and prints them as an `ssh_known_hosts` setting ready to paste, each
//! line under the key's fingerprint exactly as `ssh-keygen -lf` prints it.
//!
//! Nothing here makes the keys trustworthy: whoever answers on the network answers. The
//! operator compares the fingerprints with the ones the host publishes (GitHub, GitLab and
//! Codeberg list theirs in their documentation) before pinning them; that is why the
//! fingerprints are printed, and why the daemon itself never learns keys on its own.
//! OpenSSH's `ssh-keyscan` asks (it reads no ssh configuration), `ssh-keygen -lf` fingerprints.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{EXIT_OK, EXIT_USAGE};
use crate::mirror::url::RemoteUrl;

/// Seconds ssh-keyscan waits for the host.
const SCAN_TIMEOUT_SECS: &str = "10";

/// Prints the host keys of `url`'s host; returns the exit code (0 printed, 2 not an SSH URL or
/// the host cannot be reached).
pub fn run(url: &str, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let parsed = RemoteUrl::parse(url);
    let Some((host, port)) = parsed.ssh_host_port() else {
        let _ = writeln!(
            err,
            "error: {} is not an SSH URL: expected ssh://[user@]host[:port]/path or \
             [user@]host:path",
            parsed.display(false)
        );
        return EXIT_USAGE;
    };
    let shown = match port {
        Some(port) if port != 22 => format!("[{host}]:{port}"),
        _ => host.clone(),
    };
    if host.is_empty() || host.starts_with('-') {
        let _ = writeln!(err, "error: {shown:?} is not a host name");
        return EXIT_USAGE;
    }
    let keys = match scan(&host, port) {
        Ok(keys) if !keys.is_empty() => keys,
        Ok(_) => {
            let _ = writeln!(
                err,
                "error: cannot reach the SSH host {shown}: no host key came back within \
                 {SCAN_TIMEOUT_SECS}s (are the host name, the port and the network right?)"
            );
            return EXIT_USAGE;
        }
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            return EXIT_USAGE;
        }
    };
    let _ = writeln!(
        out,
        "# The host keys that {shown} offered. Compare each fingerprint with the ones the \
         host\n# publishes before pinning it: anyone on the network path could have answered."
    );
    let _ = writeln!(out, "ssh_known_hosts = [");
    for (line, fingerprint) in keys {
        let _ = writeln!(out, "  # {fingerprint}");
        let _ = writeln!(out, "  \"{line}\",");
    }
    let _ = writeln!(out, "]");
    EXIT_OK
}

/// Returns each known_hosts line that ssh-keyscan got from `host`, with its fingerprint,
/// sorted by key type.
fn scan(host: &str, port: Option<u16>) -> Result<Vec<(String, String)>, String> {
    let mut command = Command::new("ssh-keyscan");
    command.args(["-T", SCAN_TIMEOUT_SECS]);
    if let Some(port) = port {
        command.arg("-p").arg(port.to_string());
    }
    let output = command
        .arg("--")
        .arg(host)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ssh-keyscan (is OpenSSH installed?): {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    lines.sort_by_key(|line| {
        line.split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    });
    lines.dedup();
    lines
        .into_iter()
        .map(|line| Ok((line.to_owned(), fingerprint(line)?)))
        .collect()
}

/// Returns `ssh-keygen -lf`'s line for the known_hosts `line`
/// (`256 SHA256:... host (ED25519)`).
fn fingerprint(line: &str) -> Result<String, String> {
    let mut child = Command::new("ssh-keygen")
        .args(["-l", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ssh-keygen (is OpenSSH installed?): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{line}");
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("ssh-keygen failed: {e}"))?;
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || printed.is_empty() {
        return Err(format!("ssh-keygen cannot read the host key {line:?}"));
    }
    Ok(printed)
}
