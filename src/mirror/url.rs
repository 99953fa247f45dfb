//! Remote URLs: which transport they name, the credentials they may carry, and how they are
//! shown to people.
//!
//! Invariant: the URL handed to git never carries a password (HTTP(S) credentials travel in the
//! child's environment, see `mirror::remote`), and every URL or error text shown to a person
//! went through [`RemoteUrl::display`] or [`mask_credentials`].

use std::sync::LazyLock;

use regex::Regex;
use secrecy::{ExposeSecret, SecretString};

/// The transport a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
    /// `ssh://[user@]host[:port]/path`
    Ssh,
    /// scp-like `[user@]host:path`
    Scp,
    /// `git://host[:port]/path`
    Git,
    /// `file:///path` or a plain absolute path.
    File,
    /// Anything else, kept so that the update can report it.
    Unsupported(String),
}

/// A remote URL with its credentials split off.
#[derive(Clone)]
pub struct RemoteUrl {
    scheme: Scheme,
    /// What git is given: without user info for HTTP(S); with the user for SSH.
    for_git: String,
    /// Without any user info, for building the masked form.
    bare: String,
    /// The user name embedded in the URL, percent-decoded.
    user: Option<String>,
    /// The password or token embedded in the URL, percent-decoded.
    password: Option<SecretString>,
}

impl std::fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteUrl")
            .field("scheme", &self.scheme)
            .field("url", &self.display(self.has_embedded_credentials()))
            .finish()
    }
}

impl RemoteUrl {
    /// Classifies `raw` and splits its credentials off. Never fails: an unsupported scheme is
    /// recorded as [`Scheme::Unsupported`].
    pub fn parse(raw: &str) -> RemoteUrl {
        let raw = raw.trim();
        if let Some((scheme, rest)) = raw.split_once("://") {
            return RemoteUrl::with_scheme(scheme, rest);
        }
        if raw.starts_with('/') {
            return RemoteUrl::plain(Scheme::File, raw);
        }
        RemoteUrl::scp_like(raw)
            .unwrap_or_else(|| RemoteUrl::plain(Scheme::Unsupported(String::new()), raw))
    }

    /// Returns the URL `<scheme>://<rest>`, its user info split off.
    fn with_scheme(scheme: &str, rest: &str) -> RemoteUrl {
        let scheme_lower = scheme.to_ascii_lowercase();
        let kind = match scheme_lower.as_str() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            "ssh" | "git+ssh" | "ssh+git" => Scheme::Ssh,
            "git" => Scheme::Git,
            "file" => Scheme::File,
            _ => Scheme::Unsupported(scheme.to_owned()),
        };
        // The authority ends at the first '/'; user info is what precedes its last '@'.
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, host) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((u, p)) => (
                    Some(percent_decode(u)),
                    Some(SecretString::from(percent_decode(p))),
                ),
                None => (Some(percent_decode(info)), None),
            },
        };
        let bare = format!("{scheme_lower}://{host}{path}");
        let for_git = match (&kind, &userinfo) {
            // ssh needs the user in the URL; a password there is never used by ssh.
            (Scheme::Ssh, Some(info)) => {
                let user_part = info.split(':').next().unwrap_or_default();
                format!("{scheme_lower}://{user_part}@{host}{path}")
            }
            _ => bare.clone(),
        };
        let user = user.filter(|u| !u.is_empty());
        RemoteUrl {
            scheme: kind,
            for_git,
            bare,
            user,
            password,
        }
    }

    /// Returns the scp-like URL `raw`, with a ':' before any '/' (e.g.
    /// `git@github.com:acme/app.git`), or `None` if it is not one.
    fn scp_like(raw: &str) -> Option<RemoteUrl> {
        let colon = raw.find(':')?;
        let slash = raw.find('/').unwrap_or(usize::MAX);
        if colon == 0 || colon >= slash {
            return None;
        }
        let (userhost, _) = raw.split_at(colon);
        let user = userhost.rsplit_once('@').map(|(u, _)| u.to_owned());
        Some(RemoteUrl {
            scheme: Scheme::Scp,
            for_git: raw.to_owned(),
            bare: raw.to_owned(),
            user,
            password: None,
        })
    }

    fn plain(scheme: Scheme, raw: &str) -> RemoteUrl {
        RemoteUrl {
            scheme,
            for_git: raw.to_owned(),
            bare: raw.to_owned(),
            user: None,
            password: None,
        }
    }

    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// Returns true for `http://` and `https://`, the transports that take a user and password.
    pub fn is_http(&self) -> bool {
        matches!(self.scheme, Scheme::Http | Scheme::Https)
    }

    /// Returns true for `ssh://` and scp-like `host:path`, the transports that run ssh.
    pub fn is_ssh(&self) -> bool {
        matches!(self.scheme, Scheme::Ssh | Scheme::Scp)
    }

    /// Returns the host and port that ssh connects to for an SSH URL (port `None`: ssh's
    /// default, 22), or `None` for other transports. An IPv6 address is given without its
    /// brackets.
    pub fn ssh_host_port(&self) -> Option<(String, Option<u16>)> {
        let authority = match self.scheme {
            Scheme::Ssh => {
                let rest = self.for_git.split_once("://")?.1;
                let authority = rest.split('/').next().unwrap_or_default();
                authority.rsplit_once('@').map_or(authority, |(_, h)| h)
            }
            Scheme::Scp => {
                let userhost = self.for_git.split(':').next().unwrap_or_default();
                let host = userhost.rsplit_once('@').map_or(userhost, |(_, h)| h);
                return Some((host.trim_matches(['[', ']']).to_owned(), None));
            }
            _ => return None,
        };
        if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']')?;
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return Some((host.to_owned(), port));
        }
        match authority.rsplit_once(':') {
            Some((host, port)) => Some((host.to_owned(), port.parse().ok())),
            None => Some((authority.to_owned(), None)),
        }
    }

    /// Returns the URL to hand to git: never with a password in it.
    pub fn for_git(&self) -> &str {
        &self.for_git
    }

    /// Returns the user name embedded in the URL.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Returns the password or token embedded in the URL.
    pub fn password(&self) -> Option<&SecretString> {
        self.password.as_ref()
    }

    /// Returns true if the URL itself carried a user or a password.
    pub fn has_embedded_credentials(&self) -> bool {
        self.password.is_some() || (self.user.is_some() && self.is_http())
    }

    /// Returns the URL as people see it. HTTP(S) URLs used with credentials (in the URL or
    /// configured beside it) show `https://*****:*****@host/path`; the SSH user stays visible
    /// when it is `git`, as GitLab shows it.
    pub fn display(&self, with_credentials: bool) -> String {
        match &self.scheme {
            Scheme::Http | Scheme::Https if with_credentials => {
                let (scheme, rest) = self.bare.split_once("://").unwrap_or(("", &self.bare));
                format!("{scheme}://*****:*****@{rest}")
            }
            Scheme::Http | Scheme::Https | Scheme::Git | Scheme::File => self.bare.clone(),
            _ => mask_credentials(&self.for_git),
        }
    }

    /// Returns why git cannot use this URL, for the mirror's `last_error`.
    pub fn unsupported_reason(&self) -> Option<String> {
        match &self.scheme {
            Scheme::Unsupported(s) if s.is_empty() => Some(format!(
                "unsupported remote URL {}: expected https://, http://, ssh://, git://, file://, \
                 an scp-like host:path or an absolute path",
                mask_credentials(&self.bare)
            )),
            Scheme::Unsupported(s) => Some(format!(
                "unsupported URL scheme '{s}' in {}: expected https, http, ssh, git or file",
                mask_credentials(&self.bare)
            )),
            _ => None,
        }
    }
}

/// Returns `text` with the user info of every URL in it replaced by `*****:*****`
/// (`*****` alone for a user without password), except the SSH user `git`.
pub fn mask_credentials(text: &str) -> String {
    static URL_USERINFO: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/@\s:'\x22]*)(:[^/@\s'\x22]*)?@")
            .expect("the user-info pattern is a valid regex")
    });
    URL_USERINFO
        .replace_all(text, |caps: &regex::Captures<'_>| {
            let scheme = &caps[1];
            let user = &caps[2];
            let has_password = caps.get(3).is_some();
            let is_ssh = scheme.to_ascii_lowercase().starts_with("ssh");
            if is_ssh && user == "git" && !has_password {
                format!("{scheme}git@")
            } else if has_password {
                format!("{scheme}*****:*****@")
            } else {
                format!("{scheme}*****@")
            }
        })
        .into_owned()
}

/// Returns `text` with every occurrence of each secret replaced by `*****`: the last line of
/// defence for text that comes from git or a server and might echo a credential.
pub fn scrub_secrets(text: &str, secrets: &[&SecretString]) -> String {
    let mut out = mask_credentials(text);
    for secret in secrets {
        let s = secret.expose_secret();
        if s.len() >= 3 {
            out = out.replace(s, "*****");
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16)),
                bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_credentials_are_split_off_and_masked() {
        let url = RemoteUrl::parse("https://bot:t%40ken@example.com/acme/app.git");
        assert_eq!(url.scheme(), &Scheme::Https);
        assert_eq!(url.for_git(), "https://example.com/acme/app.git");
        assert_eq!(url.user(), Some("bot"));
        assert_eq!(url.password().map(|p| p.expose_secret()), Some("t@ken"));
        assert_eq!(
            url.display(true),
            "https://*****:*****@example.com/acme/app.git"
        );
        assert!(!format!("{url:?}").contains("t@ken"));
    }

    #[test]
    fn ssh_user_git_stays_visible() {
        let url = RemoteUrl::parse("ssh://git@example.com:2222/acme/app.git");
        assert_eq!(url.scheme(), &Scheme::Ssh);
        assert_eq!(url.for_git(), "ssh://git@example.com:2222/acme/app.git");
        assert_eq!(
            url.display(false),
            "ssh://git@example.com:2222/acme/app.git"
        );
        let scp = RemoteUrl::parse("git@github.com:acme/app.git");
        assert_eq!(scp.scheme(), &Scheme::Scp);
        assert!(scp.is_ssh() && url.is_ssh());
    }

    #[test]
    fn ssh_host_and_port() {
        let cases = [
            (
                "ssh://git@example.com:2222/acme/app.git",
                "example.com",
                Some(2222),
            ),
            ("ssh://example.com/acme/app.git", "example.com", None),
            ("ssh://git@[::1]:2222/x.git", "::1", Some(2222)),
            ("git@github.com:acme/app.git", "github.com", None),
            ("codeberg.org:acme/app.git", "codeberg.org", None),
        ];
        for (url, host, port) in cases {
            assert_eq!(
                RemoteUrl::parse(url).ssh_host_port(),
                Some((host.to_owned(), port)),
                "{url}"
            );
        }
        assert_eq!(RemoteUrl::parse("https://h/x.git").ssh_host_port(), None);
    }

    #[test]
    fn schemes_are_classified() {
        assert_eq!(RemoteUrl::parse("git://h/x.git").scheme(), &Scheme::Git);
        assert_eq!(
            RemoteUrl::parse("file:///srv/x.git").scheme(),
            &Scheme::File
        );
        assert_eq!(RemoteUrl::parse("/srv/x.git").scheme(), &Scheme::File);
        let ftp = RemoteUrl::parse("ftp://h/x.git");
        assert_eq!(ftp.scheme(), &Scheme::Unsupported("ftp".into()));
        assert!(ftp.unsupported_reason().unwrap().contains("'ftp'"));
        assert!(
            RemoteUrl::parse("relative/x.git")
                .unsupported_reason()
                .is_some()
        );
    }

    #[test]
    fn text_is_masked() {
        assert_eq!(
            mask_credentials("fatal: unable to access 'https://u:p@h/x.git/': 401"),
            "fatal: unable to access 'https://*****:*****@h/x.git/': 401"
        );
        assert_eq!(
            mask_credentials("ssh://git@h/x and ssh://alice@h/y"),
            "ssh://git@h/x and ssh://*****@h/y"
        );
        let secret = SecretString::from("hunter22");
        assert_eq!(
            scrub_secrets("token hunter22 seen", &[&secret]),
            "token ***** seen"
        );
    }
}
