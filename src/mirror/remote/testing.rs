//! Test support shared by the tests of `remote` and its parts: bare repositories made by `git`
//! itself in a hermetic environment, a fixture with three commits, and a [`Remote`] on them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use git2::Oid;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Remote;
use crate::config::GitConfigPolicy;
use crate::mirror::refdiff::{RefUpdate, UpdateKind};
use crate::mirror::url::RemoteUrl;

/// Temporary bare repositories made by `git` itself, with a hermetic environment for the
/// test's own git commands.
pub(super) struct TestEnv {
    dir: tempfile::TempDir,
}

impl TestEnv {
    fn new() -> TestEnv {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("empty.gitconfig"), "").expect("an empty config");
        TestEnv { dir }
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
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
    pub(super) fn git_in(&self, repo: &Path, args: &[&str]) -> String {
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
    pub(super) fn commit(&self, repo: &Path, message: &str, parent: Option<Oid>) -> Oid {
        let tree = self.git_in(repo, &["hash-object", "-w", "-t", "tree", "/dev/null"]);
        let parent = parent.map(|p| p.to_string());
        let mut args = vec!["commit-tree", tree.as_str(), "-m", message];
        if let Some(parent) = &parent {
            args.extend(["-p", parent.as_str()]);
        }
        Oid::from_str(&self.git_in(repo, &args)).expect("commit-tree prints an oid")
    }

    pub(super) fn set_ref(&self, repo: &Path, refname: &str, oid: Oid) {
        self.git_in(repo, &["update-ref", refname, &oid.to_string()]);
    }

    /// Returns the branches and tags of `repo`, read by git.
    pub(super) fn refs(&self, repo: &Path) -> BTreeMap<String, Oid> {
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

pub(super) fn remote<'a>(git_dir: &'a Path, url: &'a RemoteUrl) -> Remote<'a> {
    Remote {
        git_dir,
        url,
        credentials: None,
        ssh: None,
        git_config: GitConfigPolicy::Isolated,
        deadline: Instant::now() + Duration::from_secs(60),
        cancel: CancellationToken::new(),
    }
}

pub(super) fn url_of(path: &Path) -> RemoteUrl {
    RemoteUrl::parse(&path.to_string_lossy())
}

pub(super) fn update(
    refname: &str,
    kind: UpdateKind,
    old: Option<Oid>,
    new: Option<Oid>,
) -> RefUpdate {
    RefUpdate {
        refname: refname.to_owned(),
        kind,
        old,
        new,
    }
}

pub(super) fn refmap(entries: &[(&str, Oid)]) -> BTreeMap<String, Oid> {
    entries
        .iter()
        .map(|(name, oid)| ((*name).to_owned(), *oid))
        .collect()
}

/// A local repository with commits A <- B, and a lone commit C (diverged from both).
pub(super) struct Fixture {
    pub(super) env: TestEnv,
    pub(super) local: PathBuf,
    pub(super) remote: PathBuf,
    pub(super) a: Oid,
    pub(super) b: Oid,
    pub(super) c: Oid,
}

pub(super) fn fixture() -> Fixture {
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
    pub(super) fn seed(&self, refs: &[(&str, Oid)]) {
        let specs: Vec<String> = refs.iter().map(|(r, o)| format!("+{o}:{r}")).collect();
        let remote = self.remote.to_string_lossy();
        let mut args = vec!["push", "-q", remote.as_ref()];
        args.extend(specs.iter().map(String::as_str));
        self.env.git_in(&self.local, &args);
    }

    pub(super) fn path_that_does_not_exist(&self) -> PathBuf {
        self.env.path("missing/nope.git")
    }
}
