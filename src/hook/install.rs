//! Installing the post-receive hook (for `pushmirror install-hook` and provisioning): the post-receive hook that runs
//! `pushmirror notify`, without destroying a hook that is already there.
//!
//! The hook is a small `#!/bin/sh` script recognised by its marker line
//! ([`MARKER`]), which makes installing idempotent: the script is a pure function of the
//! binary's path, the configuration's path and whether a hook is chained, so installing twice
//! writes nothing, and installing again after the binary moved rewrites the path.
//!
//! A hook that is not ours is kept running: it is hard-linked to `post-receive.chained`
//! (`link` refuses to replace an existing file, so an older `.chained` is never clobbered)
//! before our script is renamed over `post-receive`, so there is no moment without a hook.
//! Our script saves stdin, feeds it to the chained hook (whose status becomes the script's),
//! then to `pushmirror notify`.
//!
//! With `core.hooksPath` set, git runs hooks from that directory instead, so that is where the
//! hook goes; the hook finds its repository from `GIT_DIR`, so one script serves every
//! repository sharing the directory.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::store::write_atomically;

/// The line that marks a hook as installed (and owned) by this command.
pub const MARKER: &str = "# managed by pushmirror install-hook";

const HOOK: &str = "post-receive";
const CHAINED: &str = "post-receive.chained";
/// git runs a hook only when it is executable.
const HOOK_MODE: u32 = 0o755;

/// Why the hook could not be installed into one repository.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// libgit2's own message only repeats the path, so none is kept.
    #[error("{path} is not a git repository")]
    NotARepository { path: PathBuf },
    #[error("cannot read core.hooksPath of {path}")]
    HooksPath {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{existing} is not ours and {chained} already exists; merge them by hand or move {chained} away, then run install-hook again"
    )]
    ChainedExists { existing: PathBuf, chained: PathBuf },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What happened to one repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// There was no post-receive hook.
    Fresh,
    /// Ours was there, byte for byte.
    AlreadyInstalled,
    /// Ours was there with other paths (the binary or the configuration moved).
    Updated,
    /// Another hook was there; it now runs first, as `post-receive.chained`.
    Chaining,
}

impl Installed {
    pub fn describe(self) -> &'static str {
        match self {
            Installed::Fresh => "installed",
            Installed::AlreadyInstalled => "already installed",
            Installed::Updated => "updated (the binary or configuration path changed)",
            Installed::Chaining => "installed, chaining the existing hook",
        }
    }
}

/// Installs the hook for this very binary and `config_path` into `repo` (what
/// `install-hook` does for one repository), for code that provisions repositories. The error
/// is rendered with its causes, ready to report.
pub fn install_into(repo: &Path, config_path: &Path) -> Result<Installed, String> {
    let binary = std::env::current_exe()
        .map_err(|e| format!("cannot find the path of this pushmirror binary: {e}"))?;
    install(
        repo,
        &crate::paths::canonical(config_path),
        &crate::paths::canonical(&binary),
    )
    .map(|report| report.installed)
    .map_err(|e| crate::error::chain(&e))
}

/// The outcome for one repository.
#[derive(Debug)]
pub struct Report {
    pub installed: Installed,
    /// The hook file written or checked.
    pub hook: PathBuf,
    /// `core.hooksPath`, when set.
    pub shared_hooks_dir: Option<PathBuf>,
}

/// Installs the hook for `binary` run with `config_path` (both absolute) into `repo`.
pub fn install(repo: &Path, config_path: &Path, binary: &Path) -> Result<Report, InstallError> {
    let opened = git2::Repository::open_ext(
        repo,
        git2::RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&OsStr>(),
    )
    .map_err(|_| InstallError::NotARepository {
        path: repo.to_owned(),
    })?;
    let git_dir = crate::paths::canonical(opened.path());
    // Relative hooks paths are relative to where hooks run: the repository itself when
    // bare, the top of the work tree otherwise.
    let hooks_base = match opened.workdir() {
        Some(workdir) if !opened.is_bare() => crate::paths::canonical(workdir),
        _ => git_dir.clone(),
    };
    let shared_hooks_dir = hooks_path(&git_dir)
        .map_err(|source| InstallError::HooksPath {
            path: repo.to_owned(),
            source,
        })?
        .map(|dir| hooks_base.join(dir));
    let hooks_dir = shared_hooks_dir
        .clone()
        .unwrap_or_else(|| git_dir.join("hooks"));
    let installed = install_in_dir(&hooks_dir, config_path, binary)?;
    Ok(Report {
        installed,
        hook: hooks_dir.join(HOOK),
        shared_hooks_dir,
    })
}

/// Returns `core.hooksPath` as git sees it for the repository at `git_dir` (its own config
/// and the user's and system's), `~` expanded.
fn hooks_path(git_dir: &Path) -> io::Result<Option<PathBuf>> {
    let mut git_dir_arg = std::ffi::OsString::from("--git-dir=");
    git_dir_arg.push(git_dir);
    let output = Command::new("git")
        .arg(git_dir_arg)
        .args(["config", "--type=path", "--get", "core.hooksPath"])
        .output()?;
    match output.status.code() {
        Some(0) => {
            let value = output.stdout.strip_suffix(b"\n").unwrap_or(&output.stdout);
            Ok((!value.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(value))))
        }
        // Exit 1: the key is not set.
        Some(1) => Ok(None),
        _ => Err(io::Error::other(format!(
            "git config failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
    }
}

/// Installs our hook into `hooks_dir`.
fn install_in_dir(
    hooks_dir: &Path,
    config_path: &Path,
    binary: &Path,
) -> Result<Installed, InstallError> {
    let hook = hooks_dir.join(HOOK);
    let chained = hooks_dir.join(CHAINED);
    fs::create_dir_all(hooks_dir).map_err(write_error(hooks_dir))?;

    let existing = read_hook(&hook)?;
    let ours = existing.as_deref().is_some_and(is_ours);

    if ours {
        let wanted = script(binary, config_path, chained_present(&chained));
        if existing.as_deref() == Some(wanted.as_slice()) {
            return Ok(Installed::AlreadyInstalled);
        }
        write_atomically(&hook, &wanted, HOOK_MODE).map_err(write_error(&hook))?;
        return Ok(Installed::Updated);
    }
    let Some(_) = existing else {
        write_atomically(&hook, &script(binary, config_path, false), HOOK_MODE)
            .map_err(write_error(&hook))?;
        return Ok(Installed::Fresh);
    };
    keep_as_chained(&hook, &chained)?;
    write_atomically(&hook, &script(binary, config_path, true), HOOK_MODE)
        .map_err(write_error(&hook))?;
    Ok(Installed::Chaining)
}

/// Returns a function that turns an I/O error about `path` into [`InstallError::Write`].
fn write_error(path: &Path) -> impl FnOnce(io::Error) -> InstallError + use<> {
    let path = path.to_owned();
    move |source| InstallError::Write { path, source }
}

/// Returns the content of the hook at `hook`, `None` if there is none.
fn read_hook(hook: &Path) -> Result<Option<Vec<u8>>, InstallError> {
    match fs::read(hook) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A dangling symlink reads as missing but is still a hook someone put there.
            if fs::symlink_metadata(hook).is_ok() {
                Ok(Some(Vec::new()))
            } else {
                Ok(None)
            }
        }
        Err(e) => Err(write_error(hook)(e)),
    }
}

/// Gives the existing (foreign) hook at `hook` the second name `chained`, so that ours can
/// run it; refuses if `chained` already exists.
fn keep_as_chained(hook: &Path, chained: &Path) -> Result<(), InstallError> {
    if chained_present(chained) {
        return Err(InstallError::ChainedExists {
            existing: hook.to_owned(),
            chained: chained.to_owned(),
        });
    }
    // Keep the old hook in place until ours replaces it: link first (never clobbers), then
    // the caller renames ours over it.
    fs::hard_link(hook, chained).map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists => InstallError::ChainedExists {
            existing: hook.to_owned(),
            chained: chained.to_owned(),
        },
        _ => InstallError::Write {
            path: chained.to_owned(),
            source,
        },
    })
}

fn chained_present(chained: &Path) -> bool {
    fs::symlink_metadata(chained).is_ok()
}

fn is_ours(content: &[u8]) -> bool {
    content
        .split(|&b| b == b'\n')
        .any(|line| line == MARKER.as_bytes())
}

/// Returns the hook script for `binary` and `config_path`, chaining `post-receive.chained`
/// first when `chain` is set.
fn script(binary: &Path, config_path: &Path, chain: bool) -> Vec<u8> {
    let mut notify = Vec::new();
    notify.extend_from_slice(&shell_quote(binary.as_os_str()));
    notify.extend_from_slice(b" --config ");
    notify.extend_from_slice(&shell_quote(config_path.as_os_str()));
    notify.extend_from_slice(b" notify");

    let mut text = Vec::new();
    text.extend_from_slice(b"#!/bin/sh\n");
    text.extend_from_slice(MARKER.as_bytes());
    text.push(b'\n');
    if !chain {
        text.extend_from_slice(
            b"# Tells the pushmirror daemon which refs this push changed; it never fails the push.\n\
              exec ",
        );
        text.extend_from_slice(&notify);
        text.push(b'\n');
        return text;
    }
    text.extend_from_slice(
        b"# Runs the hook that was here before (now post-receive.chained) with this push's\n\
          # input, then tells the pushmirror daemon which refs the push changed.\n\
          # The input is kept whole: the trailing 'x' protects its final newline.\n\
          input=$(cat; echo x)\n\
          input=${input%x}\n\
          status=0\n\
          chained=\"$(dirname \"$0\")/post-receive.chained\"\n\
          if [ -x \"$chained\" ]; then\n\
          \tprintf '%s' \"$input\" | \"$chained\" \"$@\"\n\
          \tstatus=$?\n\
          fi\n\
          printf '%s' \"$input\" | ",
    );
    text.extend_from_slice(&notify);
    text.extend_from_slice(b"\nexit $status\n");
    text
}

/// Returns `value` single-quoted for `sh` (`'` becomes `'\''`).
fn shell_quote(value: &OsStr) -> Vec<u8> {
    let mut quoted = vec![b'\''];
    for &b in value.as_bytes() {
        if b == b'\'' {
            quoted.extend_from_slice(b"'\\''");
        } else {
            quoted.push(b);
        }
    }
    quoted.push(b'\'');
    quoted
}

/// Fleet: whether git runs pushmirror after a push to a repository, for the forgotten-hook
/// warnings of `check-config`, the daemon's start and `status` (a mirror whose repository has
/// no hook silently stops). Cheap enough for thousands of repositories: a repository's own
/// `config` file is parsed only when it mentions `hooksPath`, and the user's and system's
/// `core.hooksPath` are read once, when the check is made.
#[derive(Debug, Clone)]
pub struct HookCheck {
    /// `core.hooksPath` of the user's or system's git configuration, `~` expanded.
    shared: Option<PathBuf>,
}

impl HookCheck {
    /// Reads the user's and system's `core.hooksPath` once, from the files git reads (by
    /// path: the daemon clears libgit2's search paths, but git running the hook does not).
    pub fn new() -> HookCheck {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let home = var("HOME").map(PathBuf::from);
        let xdg = var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".config")));
        let system = match (var("GIT_CONFIG_NOSYSTEM"), var("GIT_CONFIG_SYSTEM")) {
            (Some(_), _) => None,
            (None, Some(file)) => Some(PathBuf::from(file)),
            (None, None) => Some(PathBuf::from("/etc/gitconfig")),
        };
        let (xdg, global) = match var("GIT_CONFIG_GLOBAL") {
            Some(file) => (None, Some(PathBuf::from(file))),
            None => (
                xdg.map(|dir| dir.join("git/config")),
                home.map(|h| h.join(".gitconfig")),
            ),
        };
        let files = [system, xdg, global];
        // The last file that sets it wins, as in git: look from the last.
        let shared = files
            .into_iter()
            .rev()
            .flatten()
            .filter(|file| file.is_file())
            .find_map(|file| {
                git2::Config::open(&file)
                    .ok()?
                    .get_path("core.hooksPath")
                    .ok()
            });
        HookCheck { shared }
    }

    /// Returns true if the `post-receive` hook that git runs for the bare repository `repo`
    /// runs pushmirror: ours (its marker line), or a hand-written executable hook that calls
    /// `pushmirror ... notify`. False for a missing or non-executable hook, and for a foreign
    /// one that does not call it.
    pub fn runs_pushmirror(&self, repo: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        let hooks_dir = match own_hooks_path(repo).or_else(|| self.shared.clone()) {
            Some(dir) if dir.is_absolute() => dir,
            Some(dir) => repo.join(dir),
            None => repo.join("hooks"),
        };
        let hook = hooks_dir.join(HOOK);
        let executable = fs::metadata(&hook)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0);
        if !executable {
            return false;
        }
        let Ok(content) = fs::read(&hook) else {
            return false;
        };
        let calls_notify = |text: &[u8]| {
            text.split(|&b| b == b'\n').any(|line| {
                let line = String::from_utf8_lossy(line);
                let line = line.trim_start();
                !line.starts_with('#') && line.contains("pushmirror") && line.contains("notify")
            })
        };
        is_ours(&content) || calls_notify(&content)
    }
}

/// Fleet: a [`HookCheck`] that looks at each repository once (many mirrors share one).
#[derive(Debug, Default)]
pub struct HookCache {
    check: HookCheck,
    seen: std::collections::HashMap<PathBuf, bool>,
}

impl HookCache {
    /// Returns [`HookCheck::runs_pushmirror`] of `repo`, remembered.
    pub fn runs_pushmirror(&mut self, repo: &Path) -> bool {
        if let Some(known) = self.seen.get(repo) {
            return *known;
        }
        let found = self.check.runs_pushmirror(repo);
        self.seen.insert(repo.to_owned(), found);
        found
    }
}

/// Fleet: a repository that mirrors name but whose `post-receive` does not run pushmirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgottenHook {
    pub repo: PathBuf,
    /// Its mirrors, in configuration order.
    pub mirrors: Vec<crate::config::MirrorName>,
}

impl std::fmt::Display for ForgottenHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.mirrors.iter().map(|m| format!("`{m}`")).collect();
        write!(
            f,
            "the post-receive hook of {} does not run pushmirror, so pushes to it are not \
             mirrored (mirror{} {}): `pushmirror install-hook --all` installs it",
            self.repo.display(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        )
    }
}

/// Returns each existing repository of `mirrors` whose hook does not run pushmirror, in
/// configuration order. A missing repository is left to the mirror's own problem.
pub fn forgotten_hooks(mirrors: &[crate::config::Mirror]) -> Vec<ForgottenHook> {
    let check = HookCheck::new();
    let mut order: Vec<PathBuf> = Vec::new();
    let mut by_repo: std::collections::HashMap<PathBuf, Vec<crate::config::MirrorName>> =
        std::collections::HashMap::new();
    for mirror in mirrors {
        let names = by_repo.entry(mirror.repo.clone()).or_insert_with(|| {
            order.push(mirror.repo.clone());
            Vec::new()
        });
        names.push(mirror.name.clone());
    }
    order
        .into_iter()
        .filter(|repo| repo.exists() && !check.runs_pushmirror(repo))
        .map(|repo| ForgottenHook {
            mirrors: by_repo.remove(&repo).unwrap_or_default(),
            repo,
        })
        .collect()
}

impl Default for HookCheck {
    fn default() -> HookCheck {
        HookCheck::new()
    }
}

/// Returns the repository's own `core.hooksPath`, reading its `config` only when the text
/// mentions it.
fn own_hooks_path(repo: &Path) -> Option<PathBuf> {
    let file = repo.join("config");
    let text = fs::read(&file).ok()?;
    let mentions = text
        .windows(9)
        .any(|w| w.eq_ignore_ascii_case(b"hookspath"));
    if !mentions {
        return None;
    }
    git2::Config::open(&file)
        .ok()?
        .get_path("core.hooksPath")
        .ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn init_bare(path: &Path) {
        git2::Repository::init_bare(path).expect("init bare repository");
    }

    #[test]
    fn the_check_finds_our_hook_a_hand_written_one_and_none() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let repo = dir.path().join("r.git");
        init_bare(&repo);
        let check = HookCheck { shared: None };
        assert!(!check.runs_pushmirror(&repo));
        let hooks = repo.join("hooks");
        install_in_dir(&hooks, Path::new("/c.toml"), Path::new("/pm")).expect("install");
        assert!(check.runs_pushmirror(&repo));
        let hook = hooks.join(HOOK);
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(
            !check.runs_pushmirror(&repo),
            "git does not run a hook it cannot execute"
        );
        fs::write(&hook, "#!/bin/sh\n# pushmirror notify, some day\nexit 0\n").expect("write");
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(!check.runs_pushmirror(&repo));
        fs::write(&hook, "#!/bin/sh\n/usr/bin/pushmirror notify\n").expect("write");
        assert!(check.runs_pushmirror(&repo));
        // core.hooksPath elsewhere: the repository's own hooks directory no longer counts.
        let shared = dir.path().join("shared-hooks");
        let status = Command::new("git")
            .arg(format!("--git-dir={}", repo.display()))
            .args(["config", "core.hooksPath"])
            .arg(&shared)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .status()
            .expect("git config");
        assert!(status.success());
        assert!(!check.runs_pushmirror(&repo));
        install_in_dir(&shared, Path::new("/c.toml"), Path::new("/pm")).expect("install");
        assert!(check.runs_pushmirror(&repo));
    }

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote(OsStr::new("/a b/c")), b"'/a b/c'");
        assert_eq!(shell_quote(OsStr::new("it's")), b"'it'\\''s'");
    }

    #[test]
    fn fresh_install_then_again_is_identical() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let repo = dir.path().join("r.git");
        init_bare(&repo);
        let hook = repo.join("hooks").join(HOOK);
        let _ = fs::remove_file(&hook);
        let (config, binary) = (Path::new("/etc/pm.toml"), Path::new("/usr/bin/pushmirror"));
        let hooks = repo.join("hooks");
        assert_eq!(
            install_in_dir(&hooks, config, binary).expect("install"),
            Installed::Fresh
        );
        let first = fs::read(&hook).expect("hook");
        assert_eq!(
            String::from_utf8_lossy(&first),
            format!(
                "#!/bin/sh\n{MARKER}\n# Tells the pushmirror daemon which refs this push changed; it never fails the push.\nexec '/usr/bin/pushmirror' --config '/etc/pm.toml' notify\n"
            )
        );
        assert_eq!(
            fs::metadata(&hook).expect("hook").permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            install_in_dir(&hooks, config, binary).expect("install"),
            Installed::AlreadyInstalled
        );
        assert_eq!(fs::read(&hook).expect("hook"), first);
        assert_eq!(
            install_in_dir(&hooks, config, Path::new("/opt/pushmirror")).expect("install"),
            Installed::Updated
        );
        assert!(
            String::from_utf8_lossy(&fs::read(&hook).expect("hook")).contains("'/opt/pushmirror'")
        );
    }

    #[test]
    fn existing_hook_is_chained_once() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let hooks = dir.path().join("hooks");
        fs::create_dir(&hooks).expect("mkdir");
        fs::write(hooks.join(HOOK), "#!/bin/sh\necho old\n").expect("write");
        let (config, binary) = (Path::new("/c.toml"), Path::new("/pm"));
        assert_eq!(
            install_in_dir(&hooks, config, binary).expect("install"),
            Installed::Chaining
        );
        assert_eq!(
            fs::read_to_string(hooks.join(CHAINED)).expect("chained"),
            "#!/bin/sh\necho old\n"
        );
        let ours = fs::read(hooks.join(HOOK)).expect("hook");
        assert!(is_ours(&ours));
        assert_eq!(
            install_in_dir(&hooks, config, binary).expect("install"),
            Installed::AlreadyInstalled
        );
        assert_eq!(fs::read(hooks.join(HOOK)).expect("hook"), ours);
    }

    #[test]
    fn existing_chained_is_never_clobbered() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let hooks = dir.path().join("hooks");
        fs::create_dir(&hooks).expect("mkdir");
        fs::write(hooks.join(HOOK), "#!/bin/sh\necho new\n").expect("write");
        fs::write(hooks.join(CHAINED), "#!/bin/sh\necho older\n").expect("write");
        let error = install_in_dir(&hooks, Path::new("/c"), Path::new("/pm")).expect_err("refused");
        assert!(
            matches!(error, InstallError::ChainedExists { .. }),
            "{error}"
        );
        assert_eq!(
            fs::read_to_string(hooks.join(HOOK)).expect("kept"),
            "#!/bin/sh\necho new\n"
        );
        assert_eq!(
            fs::read_to_string(hooks.join(CHAINED)).expect("kept"),
            "#!/bin/sh\necho older\n"
        );
    }
}
