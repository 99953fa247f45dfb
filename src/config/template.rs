//! `[[mirror_template]]`: one mirror per bare repository matching a glob (SPEC.md section 3).
//!
//! What is pure about templates lives here: the glob and its fixed prefix, the walk that finds
//! the matching repositories, the `${name}` and `${path}` substitution, and the match of one
//! new repository that a notification names. Validation (`validate/templates.rs`) substitutes
//! into the template's TOML values, so that every expanded mirror goes through exactly the
//! checks of a written `[[mirror]]`, with each error at the template's file position.
//!
//! The walk starts at the glob's fixed prefix (the leading components without glob
//! characters), never descends into a bare repository (its directories are objects and refs,
//! not repositories), follows a symbolic link only when it names a bare repository (so that
//! a link cannot make the walk loop), and is bounded in depth and in directories visited, so
//! that a glob over `/` is an error rather than a daemon that never starts.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};

use super::Mirror;

/// Deepest directory below the fixed prefix the walk looks into.
pub const MAX_DEPTH: usize = 32;
/// Most directories one template's walk reads before it gives up.
pub const MAX_DIRECTORIES: usize = 1_000_000;

/// One `[[mirror_template]]`'s glob, compiled.
#[derive(Debug, Clone)]
pub struct RepoGlob {
    /// The glob as resolved against the file's directory.
    pub pattern: String,
    /// The leading components of `pattern` without glob characters: where the walk starts
    /// and what `${path}` is relative to.
    pub prefix: PathBuf,
    matcher: GlobMatcher,
}

/// Where a templated mirror came from (kept on its [`Mirror`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateOrigin {
    /// The 1-based line of the `[[mirror_template]]` header.
    pub line: usize,
    /// The template's `repos` glob, resolved.
    pub repos: String,
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// The matching bare repositories, sorted.
    pub repos: Vec<PathBuf>,
    /// Directories that could not be read, and why.
    pub unreadable: Vec<(PathBuf, std::io::Error)>,
    /// Set when [`MAX_DIRECTORIES`] stopped the walk.
    pub truncated: bool,
}

impl RepoGlob {
    /// Compiles `pattern` (absolute); `*` and `?` stay within one path component, `**`
    /// crosses them.
    pub fn new(pattern: &str) -> Result<RepoGlob, globset::Error> {
        let matcher = GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()?
            .compile_matcher();
        Ok(RepoGlob {
            pattern: pattern.to_owned(),
            prefix: fixed_prefix(pattern),
            matcher,
        })
    }

    /// Returns true if `repo` (a path below the prefix, as the walk spells it) matches.
    pub fn is_match(&self, repo: &Path) -> bool {
        self.matcher.is_match(repo)
    }

    /// Returns every bare repository below the prefix that matches, without descending into
    /// repositories.
    pub fn walk(&self) -> Walk {
        let mut walk = Walk::default();
        let mut visited = 0usize;
        let mut stack = vec![(self.prefix.clone(), 0usize)];
        if is_bare_repository(&self.prefix) {
            if self.is_match(&self.prefix) {
                walk.repos.push(self.prefix.clone());
            }
            return walk;
        }
        while let Some((dir, depth)) = stack.pop() {
            visited += 1;
            if visited > MAX_DIRECTORIES {
                walk.truncated = true;
                break;
            }
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                // A prefix that does not exist (yet) matches nothing; that is no error.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && depth == 0 => break,
                Err(e) => {
                    walk.unreadable.push((dir, e));
                    continue;
                }
            };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let path = entry.path();
                if kind.is_symlink() {
                    // Followed only to a repository: a link cannot make the walk loop.
                    if is_bare_repository(&path) && self.is_match(&path) {
                        walk.repos.push(path);
                    }
                } else if kind.is_dir() {
                    if is_bare_repository(&path) {
                        if self.is_match(&path) {
                            walk.repos.push(path);
                        }
                    } else if depth < MAX_DEPTH {
                        stack.push((path, depth + 1));
                    }
                }
            }
        }
        walk.repos.sort();
        walk
    }

    /// Returns the path under which this template would know `repo`, a canonical path that a
    /// notification names, if it is a bare repository that the walk would find: below the
    /// prefix (itself or canonical), within [`MAX_DEPTH`], inside no other repository, and
    /// matching the glob.
    pub fn match_new(&self, repo: &Path) -> Option<PathBuf> {
        let below = repo
            .strip_prefix(&self.prefix)
            .ok()
            .map(Path::to_owned)
            .or_else(|| {
                let canonical_prefix = std::fs::canonicalize(&self.prefix).ok()?;
                repo.strip_prefix(canonical_prefix).ok().map(Path::to_owned)
            })?;
        if below
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
            || below.components().count() > MAX_DEPTH + 1
        {
            return None;
        }
        let lexical = self.prefix.join(&below);
        if !self.is_match(&lexical) || !is_bare_repository(&lexical) {
            return None;
        }
        // The walk does not descend into repositories, so neither does this.
        let mut ancestor = lexical.parent();
        while let Some(dir) = ancestor {
            if !dir.starts_with(&self.prefix) || dir == self.prefix {
                break;
            }
            if is_bare_repository(dir) {
                return None;
            }
            ancestor = dir.parent();
        }
        Some(lexical)
    }

    /// Returns `${name}` of `repo`: its directory's name without `.git`.
    pub fn name_of(repo: &Path) -> String {
        let name = repo
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match name.strip_suffix(".git") {
            Some(stem) if !stem.is_empty() => stem.to_owned(),
            _ => name,
        }
    }

    /// Returns `${path}` of `repo`: its path below the prefix, without `.git` (the
    /// directory's name when the glob names one repository, the prefix itself).
    pub fn path_of(&self, repo: &Path) -> String {
        let below = repo.strip_prefix(&self.prefix).unwrap_or(repo);
        if below.as_os_str().is_empty() {
            return RepoGlob::name_of(repo);
        }
        let text = below.to_string_lossy();
        match text.strip_suffix(".git") {
            Some(stem) if !stem.is_empty() => stem.to_owned(),
            _ => text.into_owned(),
        }
    }
}

/// Returns true if `path` is a bare git repository as git recognises one: a `HEAD` file and
/// `objects` and `refs` directories. Cheap (three `stat`s), for walks over thousands.
pub fn is_bare_repository(path: &Path) -> bool {
    path.join("HEAD").is_file() && path.join("objects").is_dir() && path.join("refs").is_dir()
}

/// Returns the leading components of `pattern` that hold no glob character.
fn fixed_prefix(pattern: &str) -> PathBuf {
    let mut prefix = PathBuf::new();
    for component in Path::new(pattern).components() {
        let text = component.as_os_str().to_string_lossy();
        if text.contains(['*', '?', '[', ']', '{', '}', '\\']) {
            break;
        }
        prefix.push(component);
    }
    prefix
}

/// The values of a template's variables for one repository.
#[derive(Debug, Clone)]
pub struct Variables {
    /// `${name}`.
    pub name: String,
    /// `${path}`.
    pub path: String,
}

/// Why a template's text cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VariableError {
    #[error("unknown variable `${{{0}}}`: a template knows `${{name}}` and `${{path}}`")]
    Unknown(String),
    #[error("`${{` without its closing `}}`")]
    Unclosed,
}

/// Returns `text` with `${name}` and `${path}` replaced; in a mirror's `name` (`in_name`),
/// each `/` of `${path}` is written `-`, since a name is also a file name.
pub fn substitute<'t>(
    text: &'t str,
    variables: &Variables,
    in_name: bool,
) -> Result<Cow<'t, str>, VariableError> {
    if !text.contains("${") {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(VariableError::Unclosed)?;
        match &after[..end] {
            "name" => out.push_str(&variables.name),
            "path" if in_name => out.push_str(&variables.path.replace('/', "-")),
            "path" => out.push_str(&variables.path),
            other => return Err(VariableError::Unknown(other.to_owned())),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// What a configuration keeps of its templates so that the daemon can expand one for a
/// repository created after the load, exactly as the load would have: the text the load
/// validated (not the file, which may have changed since) and the compiled globs.
#[derive(Debug, Clone, Default)]
pub struct Templates(pub(super) Option<Arc<TemplateSource>>);

#[derive(Debug)]
pub(super) struct TemplateSource {
    pub source: String,
    /// The file as named in messages.
    pub path: PathBuf,
    pub base_dir: PathBuf,
    pub globs: Vec<RepoGlob>,
}

impl Templates {
    /// Returns true when the file has no `[[mirror_template]]`.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|s| s.globs.is_empty())
    }

    /// Returns true if some template would take `repo` (canonical), which then deserves a
    /// full expansion ([`super::Config::expand_new_repository`]). Cheap: globs and `stat`s.
    pub fn might_take(&self, repo: &Path) -> bool {
        self.0
            .as_ref()
            .is_some_and(|s| s.globs.iter().any(|g| g.match_new(repo).is_some()))
    }
}

/// Mirrors that templates made for a repository created after the configuration loaded.
#[derive(Debug)]
pub struct NewMirrors {
    pub mirrors: Vec<Mirror>,
    /// What stops one of them (as `Config::mirror_problems`).
    pub problems: Vec<super::MirrorProblem>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str, path: &str) -> Variables {
        Variables {
            name: name.into(),
            path: path.into(),
        }
    }

    #[test]
    fn prefix_stops_at_the_first_glob_component() {
        assert_eq!(fixed_prefix("/srv/git/**/*.git"), Path::new("/srv/git"));
        assert_eq!(fixed_prefix("/srv/g?t/a.git"), Path::new("/srv"));
        assert_eq!(
            fixed_prefix("/srv/git/app.git"),
            Path::new("/srv/git/app.git")
        );
    }

    #[test]
    fn substitution() {
        let v = vars("app", "team/app");
        assert_eq!(
            substitute("https://h/${path}/${name}.git", &v, false).expect("ok"),
            "https://h/team/app/app.git"
        );
        assert_eq!(
            substitute("gh-${path}", &v, true).expect("ok"),
            "gh-team-app"
        );
        assert_eq!(
            substitute("plain $HOME", &v, false).expect("ok"),
            "plain $HOME"
        );
        assert_eq!(
            substitute("${nmae}", &v, false),
            Err(VariableError::Unknown("nmae".into()))
        );
        assert_eq!(
            substitute("a${name", &v, false),
            Err(VariableError::Unclosed)
        );
    }

    #[test]
    fn walk_finds_nested_repositories_and_not_inside_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for repo in ["a.git", "team/b.git", "team/deep/c.git", "a.git/inner.git"] {
            git2::Repository::init_bare(root.join(repo)).expect("init");
        }
        std::fs::create_dir_all(root.join("plain/dir")).expect("mkdir");
        std::os::unix::fs::symlink(root, root.join("team/loop")).expect("symlink");
        let glob = RepoGlob::new(&format!("{}/**/*.git", root.display())).expect("glob");
        let found: Vec<String> = glob.walk().repos.iter().map(|r| glob.path_of(r)).collect();
        assert_eq!(found, ["a", "team/b", "team/deep/c"]);
        let top = RepoGlob::new(&format!("{}/*.git", root.display())).expect("glob");
        assert_eq!(top.walk().repos, [root.join("a.git")]);
        assert_eq!(
            glob.match_new(&root.join("team/b.git")),
            Some(root.join("team/b.git"))
        );
        assert_eq!(glob.match_new(&root.join("a.git/inner.git")), None);
        assert_eq!(glob.match_new(&root.join("plain/dir")), None);
        assert_eq!(top.match_new(&root.join("team/b.git")), None);
        assert_eq!(RepoGlob::name_of(&root.join("team/deep/c.git")), "c");
    }
}
