//! The scratch repository a mirror pushes from: a bare repository of its own under
//! `<state_dir>/scratch/<mirror>.git` that borrows every object of the real repository
//! through `objects/info/alternates` and whose only refs are the planned new values of one
//! push, written as one sorted `packed-refs` file.
//!
//! Why: `git push` matches every explicit `<src>:<dst>` refspec against every local ref and
//! every remote ref (remote.c `count_refspec_match`, `match_explicit`), so pushing 10,000
//! refs one refspec each is quadratic (about 7 ms per refspec at 10,000 refs). The pattern
//! refspecs `refs/heads/*:refs/heads/*` `refs/tags/*:refs/tags/*` go through a sorted index
//! instead and are linear, but they push every ref of the source. A source repository that
//! holds exactly the planned refs, at exactly their planned values, makes the pattern push
//! the planned push: refs outside the plan are not in it and so are never touched.
//!
//! What the scratch repository must keep from the real one:
//! - its objects: `objects/info/alternates` names the real `objects` directory (git follows
//!   the real repository's own alternates from there);
//! - its configuration (`http.*`, `url.*.insteadOf`, `push.*`): `include.path` names the real
//!   `config`, so a push from here reads what a push from the real repository read;
//! - its object format: `extensions.objectformat` is copied (extensions are never read
//!   through an include);
//! - its `shallow` file, copied at each update, without which git would walk into commits a
//!   shallow repository lacks.
//!
//! Its own `hooks/pre-push` (the only hooks git runs for it: `core.hooksPath`) checks the
//! leases of a push against what the remote advertised (`pushmirror-leases`, see
//! [`Scratch::stage_leases`]); git checks each `--force-with-lease` against every remote ref.
//!
//! The directory is kept between updates (the per-mirror lock keeps two updates of one
//! mirror apart); every file in it is rewritten at each update, so nothing there outlives
//! the real repository's state.

use std::io::Write;
use std::path::{Path, PathBuf};

use git2::Oid;

/// Why the scratch repository could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare the scratch repository {path}")]
pub struct ScratchError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// A prepared scratch repository, ready to be staged for a push.
#[derive(Debug)]
pub struct Scratch {
    git_dir: PathBuf,
    remote: String,
}

/// The name of the remote that the scratch repository's config defines (the mirror's URL),
/// for pushes whose leases come from tracking refs; `pushmirror-2`, `-3`, ... when the real
/// repository's config (included) already has a remote of that name, whose `url` or
/// `pushurl` would otherwise add to ours or replace it.
const REMOTE_NAME: &str = "pushmirror";

/// Where the tracking refs of the scratch repository's remote live: `refs/heads/x` is tracked as
/// `refs/pushmirror-remote/heads/x`.
pub const TRACKING_NAMESPACE: &str = "refs/pushmirror-remote/";

/// Returns the tracking ref of the remote ref `refname` (`refs/...`).
pub fn tracking_ref(refname: &str) -> String {
    let rest = refname.strip_prefix("refs/").unwrap_or(refname);
    format!("{TRACKING_NAMESPACE}{rest}")
}

/// Where [`Scratch::prepare`] moves the refs of earlier pushes until [`Scratch::sweep`]
/// deletes them: inside the scratch repository's git directory, outside `refs/`, where git
/// never looks.
const TRASH: &str = "pushmirror-trash";

/// Returns a name part that no other prepare of this scratch repository has used: the
/// process and the time. (Two updates of one mirror never run at once: the mirror's lock.)
fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

/// The scratch repository's hooks directory (its `core.hooksPath` for pushes whose leases
/// the hook checks), its `pre-push` hook, and the two files that hook reads and writes, all
/// relative to the git directory.
const HOOKS: &str = "hooks";
const LEASES: &str = "pushmirror-leases";
const REFUSED: &str = "pushmirror-refused";

/// The `pre-push` hook that checks the leases of a push (see `remote::porcelain::Leases::Hook`).
/// git gives it one line per ref the push would change, `<local ref> <local oid> <remote ref>
/// <remote oid>` (the remote value as advertised, zeros for none), before it sends anything;
/// `pushmirror-leases` holds `<ref> <old>` per planned ref (`-`: absent). Any ref outside the
/// leases or at another value refuses the push and is named in `pushmirror-refused`; so
/// does a machine without `awk`, with a line that names no ref (the push is then done with
/// git's leases). git runs it with its own working directory, so it finds its files from
/// its own path.
const PRE_PUSH: &str = r#"#!/bin/sh
# Written by pushmirror: refuses this push unless the remote holds what was planned.
cd "${0%/*}/.." || exit 2
command -v awk >/dev/null 2>&1 || { echo "(no awk)" >pushmirror-refused; exit 1; }
exec awk '
BEGIN { while ((getline line < "pushmirror-leases") > 0) { split(line, f, " "); lease[f[1]] = f[2] } }
{ old = ($4 ~ /^0+$/) ? "-" : $4 }
!($3 in lease) || lease[$3] != old { print $3 > "pushmirror-refused"; refused = 1 }
END { exit refused }
'
"#;

/// The header of a `packed-refs` file whose lines are sorted: git then reads it by binary
/// search and merges it in order, without sorting it itself.
const PACKED_REFS_HEADER: &str = "# pack-refs with: sorted \n";

impl Scratch {
    /// Prepares the scratch repository of the mirror `name` under `dir` for the real
    /// repository `real` (a git directory) and the remote `url` (as given to git: never with
    /// a password): creates it if needed and rewrites its HEAD, config, alternates and
    /// shallow file, with no refs.
    pub fn prepare(
        dir: &Path,
        name: &str,
        real: &Path,
        url: &str,
    ) -> Result<Scratch, ScratchError> {
        let git_dir = dir.join(format!("{name}.git"));
        let error = |source| ScratchError {
            path: git_dir.clone(),
            source,
        };
        let real = std::path::absolute(real).map_err(error)?;
        std::fs::create_dir_all(git_dir.join("objects/info")).map_err(error)?;
        // Loose refs would shadow packed-refs: git writes a loose tracking ref for each ref a
        // push with leases from tracking refs pushed. They are moved aside here, at once,
        // and deleted by `sweep` while the push runs: a thousand of them took 25 ms, on the
        // cores that `git ls-remote` was using.
        let refs = git_dir.join("refs");
        if refs.exists() {
            let trash = git_dir.join(TRASH);
            std::fs::create_dir_all(&trash).map_err(error)?;
            let aside = trash.join(format!("refs-{}", unique_suffix()));
            std::fs::rename(&refs, aside).map_err(error)?;
        }
        std::fs::create_dir_all(refs.join("heads")).map_err(error)?;
        std::fs::create_dir_all(refs.join("tags")).map_err(error)?;
        write_file(&git_dir.join("HEAD"), b"ref: refs/heads/main\n").map_err(error)?;
        let remote = free_remote_name(&real.join("config"));
        write_file(
            &git_dir.join("config"),
            config_text(&real, &remote, url).as_bytes(),
        )
        .map_err(error)?;
        let mut alternates = real.join("objects").into_os_string().into_encoded_bytes();
        alternates.push(b'\n');
        write_file(&git_dir.join("objects/info/alternates"), &alternates).map_err(error)?;
        let shallow = git_dir.join("shallow");
        match std::fs::read(real.join("shallow")) {
            Ok(bytes) => write_file(&shallow, &bytes).map_err(error)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if shallow.exists() {
                    std::fs::remove_file(&shallow).map_err(error)?;
                }
            }
            Err(e) => return Err(error(e)),
        }
        let scratch = Scratch {
            git_dir: git_dir.clone(),
            remote,
        };
        scratch.stage(std::iter::empty())?;
        Ok(scratch)
    }

    /// Deletes the refs that [`Scratch::prepare`] moved aside (none is in use any more). A
    /// failure is logged: it costs disk space only, and the next sweep tries again.
    pub fn sweep(git_dir: &Path) {
        let trash = git_dir.join(TRASH);
        match std::fs::remove_dir_all(&trash) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %trash.display(), error = %e, "cannot delete old scratch refs")
            }
        }
    }

    /// Returns the scratch repository's git directory, for `git --git-dir`.
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// Returns the name of the scratch repository's remote (the mirror's URL).
    pub fn remote_name(&self) -> &str {
        &self.remote
    }

    fn error(&self, source: std::io::Error) -> ScratchError {
        ScratchError {
            path: self.git_dir.clone(),
            source,
        }
    }

    /// Makes `refs` the only loose tracking refs (under [`TRACKING_NAMESPACE`]) of the
    /// scratch repository: for refs that git removes after the push, which for a packed ref
    /// means rewriting `packed-refs` once per ref. (Tracking refs that git only rewrites
    /// are staged packed, with [`Scratch::stage`].)
    pub fn stage_tracking(&self, refs: &[(String, Oid)]) -> Result<(), ScratchError> {
        self.write_tracking(refs).map_err(|e| self.error(e))
    }

    fn write_tracking(&self, refs: &[(String, Oid)]) -> std::io::Result<()> {
        let namespace = self.git_dir.join(TRACKING_NAMESPACE.trim_end_matches('/'));
        if namespace.exists() {
            std::fs::remove_dir_all(&namespace)?;
        }
        for (name, oid) in refs {
            let Some(rest) = name.strip_prefix(TRACKING_NAMESPACE) else {
                continue;
            };
            let path = namespace.join(rest);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, format!("{oid}\n"))?;
        }
        Ok(())
    }

    /// Writes the leases that the `pre-push` hook checks, `(ref, value the remote must
    /// have advertised)`, and the hook, and forgets what an earlier push refused. Returns
    /// false if git would not run the hook: git skips a hook it may not execute (a
    /// `noexec` file system), and the push would then go unchecked.
    pub fn stage_leases(&self, leases: &[(String, Option<Oid>)]) -> Result<bool, ScratchError> {
        self.write_leases(leases).map_err(|e| self.error(e))?;
        Ok(executable(&self.git_dir.join(HOOKS).join("pre-push")))
    }

    fn write_leases(&self, leases: &[(String, Option<Oid>)]) -> std::io::Result<()> {
        let mut text = String::with_capacity(leases.len() * 72);
        for (name, old) in leases {
            text.push_str(name);
            text.push(' ');
            match old {
                Some(oid) => text.push_str(&oid.to_string()),
                None => text.push('-'),
            }
            text.push('\n');
        }
        write_file(&self.git_dir.join(LEASES), text.as_bytes())?;
        let hooks = self.git_dir.join(HOOKS);
        std::fs::create_dir_all(&hooks)?;
        let hook = hooks.join("pre-push");
        if std::fs::read(&hook).ok().as_deref() != Some(PRE_PUSH.as_bytes()) {
            write_file(&hook, PRE_PUSH.as_bytes())?;
            std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        }
        match std::fs::remove_file(self.git_dir.join(REFUSED)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Returns the hooks directory, absolute, for `core.hooksPath`.
    pub fn hooks_dir(&self) -> PathBuf {
        let hooks = self.git_dir.join(HOOKS);
        std::path::absolute(&hooks).unwrap_or(hooks)
    }

    /// Returns the refs whose lease the `pre-push` hook refused in the last push, if it
    /// refused that push.
    pub fn refused_leases(&self) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(self.git_dir.join(REFUSED)).ok()?;
        Some(text.lines().map(str::to_owned).collect())
    }

    /// Makes `refs` (name and value) the only refs of the scratch repository: one
    /// `packed-refs` file, sorted in byte order as its header promises, replaced whole.
    pub fn stage<'r>(
        &self,
        refs: impl Iterator<Item = (&'r str, Oid)>,
    ) -> Result<(), ScratchError> {
        let mut refs: Vec<(&str, Oid)> = refs.collect();
        // `str` orders by bytes, which is git's order of ref names.
        refs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        refs.dedup_by(|a, b| a.0 == b.0);
        let mut text = String::with_capacity(PACKED_REFS_HEADER.len() + refs.len() * 72);
        text.push_str(PACKED_REFS_HEADER);
        for (name, oid) in refs {
            text.push_str(&oid.to_string());
            text.push(' ');
            text.push_str(name);
            text.push('\n');
        }
        write_file(&self.git_dir.join("packed-refs"), text.as_bytes()).map_err(|e| self.error(e))
    }
}

/// Returns the scratch repository's config: the real repository's included first, then
/// what must hold whatever it says (bare, and the object format, which git reads only from
/// the repository's own file), and the remote `remote` at `url`, tracked under
/// [`TRACKING_NAMESPACE`].
fn config_text(real: &Path, remote: &str, url: &str) -> String {
    let format = object_format(&real.join("config"));
    let version = if format.is_some() { 1 } else { 0 };
    let mut text = String::new();
    text.push_str("[include]\n\tpath = ");
    text.push_str(&config_quoted(&real.join("config").to_string_lossy()));
    text.push('\n');
    text.push_str(&format!(
        "[core]\n\trepositoryformatversion = {version}\n\tbare = true\n\tlogAllRefUpdates = false\n"
    ));
    if let Some(format) = format {
        text.push_str(&format!("[extensions]\n\tobjectformat = {format}\n"));
    }
    text.push_str(&format!(
        "[remote \"{remote}\"]\n\turl = {}\n\
         \tfetch = +refs/heads/*:{TRACKING_NAMESPACE}heads/*\n\
         \tfetch = +refs/tags/*:{TRACKING_NAMESPACE}tags/*\n",
        config_quoted(url)
    ));
    text
}

/// Returns [`REMOTE_NAME`], or the first of `pushmirror-2`, `pushmirror-3`, ... that the
/// configuration at `config` (with what it includes) does not use as a remote's name.
fn free_remote_name(config: &Path) -> String {
    let mut taken = std::collections::HashSet::new();
    if let Ok(config) = git2::Config::open(config)
        && let Ok(mut entries) = config.entries(Some(r"^remote\..*"))
    {
        while let Some(Ok(entry)) = entries.next() {
            if let Some(name) = entry.name().ok().and_then(|n| n.strip_prefix("remote."))
                && let Some((remote, _key)) = name.rsplit_once('.')
            {
                taken.insert(remote.to_owned());
            }
        }
    }
    std::iter::once(REMOTE_NAME.to_owned())
        .chain((2..).map(|n| format!("{REMOTE_NAME}-{n}")))
        .find(|name| !taken.contains(name))
        .unwrap_or_else(|| REMOTE_NAME.to_owned())
}

/// Returns the real repository's `extensions.objectformat`, if it names one (`sha256`).
fn object_format(config: &Path) -> Option<String> {
    let config = git2::Config::open(config).ok()?;
    let format = config.get_string("extensions.objectformat").ok()?;
    let format = format.trim().to_ascii_lowercase();
    (format != "sha1" && !format.is_empty()).then_some(format)
}

/// Returns `value` as a double-quoted git config value.
fn config_quoted(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Returns true if this process may execute `path`: git's own test for a hook
/// (`access(X_OK)`), which also fails on a `noexec` file system.
fn executable(path: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::access(path.as_ptr(), libc::X_OK) == 0 }
}

/// Replaces `path` with `bytes`: a temporary file beside it, then a rename, so git never
/// reads half a file. No fsync: the scratch repository is rebuilt at every update.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_refs_are_sorted_by_bytes_and_alone() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let real = dir.path().join("real.git");
        git2::Repository::init_bare(&real).expect("init");
        std::fs::write(real.join("shallow"), "x\n").expect("shallow");
        let scratch =
            Scratch::prepare(&dir.path().join("scratch"), "m", &real, "/r.git").expect("ok");
        let a = Oid::from_str("1111111111111111111111111111111111111111").expect("oid");
        let b = Oid::from_str("2222222222222222222222222222222222222222").expect("oid");
        scratch
            .stage(
                [
                    ("refs/tags/v1", a),
                    ("refs/heads/main", b),
                    ("refs/heads/a-b", a),
                    ("refs/heads/a/b", b),
                ]
                .into_iter(),
            )
            .expect("staged");
        let text = std::fs::read_to_string(scratch.git_dir().join("packed-refs")).expect("read");
        assert_eq!(
            text,
            format!(
                "{PACKED_REFS_HEADER}{a} refs/heads/a-b\n{b} refs/heads/a/b\n\
                 {b} refs/heads/main\n{a} refs/tags/v1\n"
            )
        );
        assert_eq!(
            std::fs::read_to_string(scratch.git_dir().join("shallow")).expect("copied"),
            "x\n"
        );
        let alternates = std::fs::read_to_string(scratch.git_dir().join("objects/info/alternates"))
            .expect("alternates");
        assert_eq!(alternates, format!("{}\n", real.join("objects").display()));
        std::fs::remove_file(real.join("shallow")).expect("unshallow");
        let scratch =
            Scratch::prepare(&dir.path().join("scratch"), "m", &real, "/r.git").expect("ok");
        assert!(!scratch.git_dir().join("shallow").exists());
        let text = std::fs::read_to_string(scratch.git_dir().join("packed-refs")).expect("read");
        assert_eq!(text, PACKED_REFS_HEADER, "a fresh preparation has no refs");
    }

    /// The loose tracking refs git wrote after an earlier push never shadow the next
    /// push's packed ones: prepare moves them aside at once, and the sweep deletes them.
    #[test]
    fn loose_refs_of_earlier_pushes_are_moved_aside_then_swept() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let real = dir.path().join("real.git");
        git2::Repository::init_bare(&real).expect("init");
        let scratch =
            Scratch::prepare(&dir.path().join("scratch"), "m", &real, "/r.git").expect("ok");
        let loose = scratch
            .git_dir()
            .join(TRACKING_NAMESPACE)
            .join("heads/main");
        std::fs::create_dir_all(loose.parent().expect("parent")).expect("mkdir");
        std::fs::write(&loose, "1111111111111111111111111111111111111111\n").expect("write");
        let scratch =
            Scratch::prepare(&dir.path().join("scratch"), "m", &real, "/r.git").expect("ok");
        assert!(
            !loose.exists(),
            "a loose ref of the last push is still in refs/"
        );
        assert!(scratch.git_dir().join("refs/heads").is_dir());
        let trash = scratch.git_dir().join(TRASH);
        let aside: Vec<_> = std::fs::read_dir(&trash).expect("trash").collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        Scratch::sweep(scratch.git_dir());
        assert!(!trash.exists());
        Scratch::sweep(scratch.git_dir()); // nothing to sweep: no error
    }

    #[test]
    fn the_object_format_is_copied_and_the_config_included() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let real = dir.path().join("real \"q\".git");
        std::fs::create_dir_all(&real).expect("dir");
        std::fs::write(
            real.join("config"),
            "[core]\n\trepositoryformatversion = 1\n[extensions]\n\tobjectFormat = sha256\n",
        )
        .expect("config");
        let text = config_text(&real, REMOTE_NAME, "https://host/x.git");
        assert!(text.contains("objectformat = sha256"), "{text}");
        assert!(text.contains("url = \"https://host/x.git\""), "{text}");
        assert!(text.contains("repositoryformatversion = 1"), "{text}");
        assert!(text.contains("real \\\"q\\\".git/config\""), "{text}");
        std::fs::write(real.join("config"), "[core]\n\tbare = true\n").expect("config");
        assert!(!config_text(&real, REMOTE_NAME, "/r.git").contains("extensions"));
    }

    #[test]
    fn the_remote_is_named_apart_from_the_real_repositorys_remotes() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("config");
        std::fs::write(&config, "[core]\n\tbare = true\n").expect("config");
        assert_eq!(free_remote_name(&config), "pushmirror");
        // A remote of that name (here with only a pushurl, which would replace our url) and
        // the next candidate are both taken; an included file counts too.
        std::fs::write(
            dir.path().join("more"),
            "[remote \"pushmirror-2\"]\n\turl = x\n",
        )
        .expect("included");
        std::fs::write(
            &config,
            "[remote \"pushmirror\"]\n\tpushurl = https://elsewhere/x.git\n\
             [remote \"pushmirror.x\"]\n\turl = y\n[include]\n\tpath = more\n",
        )
        .expect("config");
        assert_eq!(free_remote_name(&config), "pushmirror-3");
        let real = dir.path().join("real.git");
        git2::Repository::init_bare(&real).expect("init");
        std::fs::copy(&config, real.join("config")).expect("config");
        std::fs::copy(dir.path().join("more"), real.join("more")).expect("included");
        let scratch =
            Scratch::prepare(&dir.path().join("scratch"), "m", &real, "/r.git").expect("ok");
        assert_eq!(scratch.remote_name(), "pushmirror-3");
        let text = std::fs::read_to_string(scratch.git_dir().join("config")).expect("read");
        assert!(
            text.contains("[remote \"pushmirror-3\"]\n\turl = \"/r.git\""),
            "{text}"
        );
    }
}
