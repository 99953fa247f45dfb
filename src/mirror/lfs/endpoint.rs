//! The default LFS endpoint of a remote (git-lfs `docs/api/server-discovery.md`): the https
//! form of the remote URL plus `.git/info/lfs`, `.git` added only when missing. Also for SSH
//! remotes, where git-lfs would ask `git-lfs-authenticate` first: a mirror daemon is told its
//! endpoint, or takes this one, and authenticates with the mirror's HTTP credentials.

use crate::mirror::url::{RemoteUrl, Scheme};

/// Returns the default `lfs_url` of `url`, or `None` when it has none (`file://`, a local
/// path, an unsupported scheme).
///
/// `https://host/org/repo` -> `https://host/org/repo.git/info/lfs`; `http://` stays `http://`
/// (git-lfs keeps the scheme of an HTTP remote); `ssh://git@host:2222/org/repo.git`,
/// `git@host:org/repo.git` and `git://host/org/repo` -> `https://host/org/repo.git/info/lfs`
/// (the ssh or git port is not the web server's).
pub fn default_lfs_url(url: &RemoteUrl) -> Option<String> {
    let git = url.for_git();
    let (scheme, host, path) = match url.scheme() {
        Scheme::Https | Scheme::Http => {
            let (scheme, rest) = git.split_once("://")?;
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            (scheme, host.to_owned(), path.to_owned())
        }
        Scheme::Ssh | Scheme::Git => {
            let rest = git.split_once("://")?.1;
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            ("https", without_port(host_port).to_owned(), path.to_owned())
        }
        Scheme::Scp => {
            let (host, _) = url.ssh_host_port()?;
            let path = git.split_once(':')?.1;
            ("https", bracket(&host), path.to_owned())
        }
        Scheme::File | Scheme::Unsupported(_) => return None,
    };
    let path = path.trim_matches('/');
    if host.is_empty() || path.is_empty() {
        return None;
    }
    let path = path.trim_start_matches("~/");
    let repo = if path.ends_with(".git") {
        path.to_owned()
    } else {
        format!("{path}.git")
    };
    Some(format!("{scheme}://{host}/{repo}/info/lfs"))
}

/// Returns `host[:port]` without the port (`[v6]:port` keeps its brackets).
fn without_port(host_port: &str) -> &str {
    if host_port.starts_with('[') {
        return host_port
            .find(']')
            .map_or(host_port, |end| &host_port[..=end]);
    }
    match host_port.split_once(':') {
        Some((host, _)) => host,
        None => host_port,
    }
}

/// Puts an IPv6 address in brackets, as a URL host must be.
fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn derived(url: &str) -> Option<String> {
        default_lfs_url(&RemoteUrl::parse(url))
    }

    #[test]
    fn every_remote_form_gets_the_git_lfs_default() {
        let cases = [
            ("https://host/foo/bar", "https://host/foo/bar.git/info/lfs"),
            (
                "https://host/foo/bar.git",
                "https://host/foo/bar.git/info/lfs",
            ),
            (
                "https://host/foo/bar.git/",
                "https://host/foo/bar.git/info/lfs",
            ),
            (
                "https://u:tok@host:8443/a/b.git",
                "https://host:8443/a/b.git/info/lfs",
            ),
            (
                "http://127.0.0.1:8080/git/x.git",
                "http://127.0.0.1:8080/git/x.git/info/lfs",
            ),
            (
                "git@host:org/repo.git",
                "https://host/org/repo.git/info/lfs",
            ),
            ("git@host:org/repo", "https://host/org/repo.git/info/lfs"),
            (
                "ssh://host/foo/bar.git",
                "https://host/foo/bar.git/info/lfs",
            ),
            (
                "ssh://git@host:2222/org/repo.git",
                "https://host/org/repo.git/info/lfs",
            ),
            ("git://host/org/repo", "https://host/org/repo.git/info/lfs"),
            (
                "git://host:9418/org/repo.git",
                "https://host/org/repo.git/info/lfs",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(derived(url).as_deref(), Some(want), "{url}");
        }
    }

    #[test]
    fn local_remotes_have_no_default() {
        for url in ["file:///srv/x.git", "/srv/x.git", "ftp://host/x.git"] {
            assert_eq!(derived(url), None, "{url}");
        }
    }
}
