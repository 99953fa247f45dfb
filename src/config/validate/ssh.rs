//! The SSH keys of a mirror: `ssh_key` and `ssh_known_hosts` (SPEC.md sections 3 and 8).
//!
//! A malformed known_hosts line is an error of the file. What concerns one mirror only is a
//! mirror problem, like a bad `password_file`: an SSH URL without pinned host keys (the daemon
//! never connects trusting an unknown key), and a key file that is missing or readable by
//! group or others. A pinned set that names neither the URL's host nor `[host]:port` is a
//! warning, since ssh would then not find the host's key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use toml::Spanned;

use super::{Checker, Options, Setting, Subject};
use crate::config::{MirrorName, SshSettings};
use crate::mirror::credentials::too_open;
use crate::mirror::url::RemoteUrl;

/// Returns the SSH settings of mirror `name`: its own keys, else those of `[defaults]`, else
/// the key under `state_dir`.
pub(super) fn ssh_settings(
    name: &MirrorName,
    state_dir: &Path,
    own: &Options,
    defaults: &Options,
) -> SshSettings {
    let mut settings = SshSettings::defaults_for(name, state_dir);
    if let Some(key) = own.ssh_key.as_ref().or(defaults.ssh_key.as_ref()) {
        settings.key = key.value.clone();
    }
    if let Some(lines) = own
        .ssh_known_hosts
        .as_ref()
        .or(defaults.ssh_known_hosts.as_ref())
    {
        settings.known_hosts = lines.value.clone();
    }
    settings
}

/// Returns true if `line` reads as a known_hosts entry: an optional `@cert-authority` or
/// `@revoked` marker, host patterns, a key type and a base64 key (comments after it allowed).
fn is_known_hosts_line(line: &str) -> bool {
    if line.chars().any(char::is_control) {
        return false;
    }
    let mut fields = line.split_whitespace().peekable();
    if fields.peek().is_some_and(|f| f.starts_with('@')) {
        let marker = fields.next().unwrap_or_default();
        if marker != "@cert-authority" && marker != "@revoked" {
            return false;
        }
    }
    let (Some(_hosts), Some(key_type), Some(key)) = (fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    let known_type = key_type.starts_with("ssh-")
        || key_type.starts_with("ecdsa-sha2-")
        || key_type.starts_with("sk-");
    known_type
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|blob| !blob.is_empty())
}

/// Returns the host field that ssh looks up for `host` and `port` in known_hosts.
fn known_hosts_name(host: &str, port: Option<u16>) -> String {
    match port {
        Some(port) if port != 22 => format!("[{host}]:{port}"),
        _ => host.to_owned(),
    }
}

/// Returns true if one of `lines` names `wanted` literally, or uses a form this check cannot
/// judge (a wildcard or a hashed name), so that no warning is given for it.
fn names_host(lines: &[String], wanted: &str) -> bool {
    lines.iter().any(|line| {
        let mut fields = line.split_whitespace();
        let mut hosts = fields.next().unwrap_or_default();
        if hosts.starts_with('@') {
            hosts = fields.next().unwrap_or_default();
        }
        hosts.split(',').any(|pattern| {
            pattern == wanted || pattern.starts_with("|1|") || pattern.contains(['*', '?', '!'])
        })
    })
}

impl Checker<'_> {
    /// Returns the `ssh_known_hosts` lines, reporting each one that is not a known_hosts line.
    pub(super) fn known_hosts_lines(
        &mut self,
        raw: Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Option<Setting<Vec<String>>> {
        let raw = raw?;
        let span = raw.span();
        let mut lines = Vec::new();
        let mut valid = true;
        for line in raw.into_inner() {
            let text = line.get_ref().trim();
            if is_known_hosts_line(text) {
                lines.push(text.to_owned());
            } else {
                valid = false;
                self.error(
                    &line.span(),
                    "not a known_hosts line: expected `host key-type base64-key` (for a port \
                     other than 22, `[host]:port key-type base64-key`), as \
                     `pushmirror detect-host-keys URL` prints it",
                );
            }
        }
        valid.then_some(Setting { value: lines, span })
    }

    /// Checks the SSH side of a mirror whose URL runs ssh: pinned host keys are required and
    /// should name the URL's host, and the key file must exist with mode 0600 or stricter.
    pub(super) fn check_ssh(
        &mut self,
        subject: &Subject,
        url: &Setting<RemoteUrl>,
        ssh: &SshSettings,
        own: &Options,
        defaults: &Options,
    ) {
        let Some((host, port)) = url.value.ssh_host_port() else {
            return;
        };
        let pinned = own
            .ssh_known_hosts
            .as_ref()
            .or(defaults.ssh_known_hosts.as_ref());
        let wanted = known_hosts_name(&host, port);
        match pinned {
            None => self.problem(
                subject,
                &url.span,
                format!(
                    "an SSH remote needs pinned host keys: set `ssh_known_hosts` to the host's \
                     known_hosts lines, after comparing their fingerprints with the ones the \
                     host publishes (`pushmirror detect-host-keys {}` prints both)",
                    url.value.display(false)
                ),
            ),
            Some(lines) if lines.value.is_empty() => self.problem(
                subject,
                &lines.span,
                "`ssh_known_hosts` is empty: an SSH remote needs the host's pinned keys",
            ),
            Some(lines) if !names_host(&lines.value, &wanted) => {
                let label = subject.label.clone();
                self.warning(
                    &lines.span,
                    format!(
                        "no `ssh_known_hosts` line of {label} names `{wanted}`, the host its \
                         url connects to: ssh will not find the host's key there"
                    ),
                );
            }
            Some(_) => {}
        }
        let key_span = own
            .ssh_key
            .as_ref()
            .or(defaults.ssh_key.as_ref())
            .map_or(&url.span, |key| &key.span);
        let path = ssh.key.display();
        let message = match std::fs::metadata(&ssh.key) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => format!(
                "ssh key {path} does not exist: `pushmirror ssh-keygen {}` makes one",
                subject.name.as_ref().map_or("NAME", MirrorName::as_str)
            ),
            Err(error) => format!("cannot read ssh key {path}: {error}"),
            Ok(meta) if !meta.is_file() => format!("ssh key {path} is not a regular file"),
            Ok(meta) if too_open(meta.permissions().mode()) => format!(
                "refusing ssh key {path}: it is readable by group or others (mode {:04o}); \
                 chmod 600 it",
                meta.permissions().mode() & 0o7777
            ),
            Ok(_) => return,
        };
        let span = key_span.clone();
        self.problem(subject, &span, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIIVIC02vnjFyL+I4RHfvIGNtOgJMe769VTF1VR4EB3ZB";

    #[test]
    fn known_hosts_lines() {
        for good in [
            format!("codeberg.org ssh-ed25519 {ED25519}"),
            format!("[127.0.0.1]:2222 ssh-ed25519 {ED25519} a comment"),
            format!("@cert-authority *.example.com ssh-ed25519 {ED25519}"),
        ] {
            assert!(is_known_hosts_line(&good), "{good}");
        }
        for bad in [
            String::new(),
            "codeberg.org".to_owned(),
            format!("ssh-ed25519 {ED25519}"),
            "h ssh-ed25519 not*base64".to_owned(),
            format!("h ssh-ed25519 {ED25519}\nevil ssh-ed25519 {ED25519}"),
            format!("@bogus h ssh-ed25519 {ED25519}"),
        ] {
            assert!(!is_known_hosts_line(&bad), "{bad}");
        }
    }

    #[test]
    fn the_looked_up_name_carries_a_non_standard_port() {
        assert_eq!(known_hosts_name("h", None), "h");
        assert_eq!(known_hosts_name("h", Some(22)), "h");
        assert_eq!(known_hosts_name("h", Some(2222)), "[h]:2222");
        let lines = vec![format!("h,[h]:2222 ssh-ed25519 {ED25519}")];
        assert!(names_host(&lines, "[h]:2222"));
        assert!(!names_host(&lines, "[h]:2223"));
        assert!(names_host(
            &[format!("|1|abc|def ssh-ed25519 {ED25519}")],
            "x"
        ));
    }
}
