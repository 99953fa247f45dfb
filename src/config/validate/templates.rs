//! Fleet: `[[mirror_template]]` validated and expanded into mirrors (SPEC.md section 3).
//!
//! A template is taken out of the TOML tree before the strict deserialization, because its
//! keys are a mirror's with `repos` for `repo`, and serde's `flatten` would disable the
//! unknown-key check. It is checked once as it is written (its keys through the same raw
//! type as a `[[mirror]]`, its options through the same validation, its `${...}` variables),
//! so that a mistake in it is one error, not one per repository. Then, for each matching
//! repository, `${name}` and `${path}` are substituted into every string value of the tree
//! (so any string option, today's and tomorrow's, takes them), `repo` is set, and the result
//! goes through [`Checker::mirror`] exactly as a written mirror does. Every diagnostic of
//! that pass points at the template's key and names the repository.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::super::template::{RepoGlob, TemplateSource, Variables, substitute};
use super::super::{Config, Diagnostic, Mirror, NewMirrors, TemplateOrigin, Templates};
use super::{Checker, Level, NameOrigin, Options, Seen, named_problems, remove_entry_at};
use crate::config::raw::RawMirror;
use crate::paths::resolve;

/// Which repositories the templates are expanded for.
pub(in crate::config) enum Scope<'r> {
    /// Every repository the globs find on disk (a load).
    Walk,
    /// Only this one, canonical, if a glob takes it (a repository created since the load).
    Only(&'r Path),
}

/// Returns what every diagnostic of an expansion for `repo` ends with.
pub(super) fn context(repo: &Path) -> String {
    format!(
        " (in [[mirror_template]], for repository {})",
        repo.display()
    )
}

/// Returns what the configuration keeps of its templates.
pub(super) fn keep(source: &str, path: &Path, base_dir: &Path, globs: Vec<RepoGlob>) -> Templates {
    if globs.is_empty() {
        return Templates(None);
    }
    Templates(Some(Arc::new(TemplateSource {
        source: source.to_owned(),
        path: path.to_owned(),
        base_dir: base_dir.to_owned(),
        globs,
    })))
}

/// Expands the templates of `config` for `repo`, a canonical repository path no mirror of
/// `config` names (see [`Config::expand_new_repository`]).
pub(in crate::config) fn expand_new_repository(
    config: &Config,
    repo: &Path,
) -> Result<NewMirrors, Vec<Diagnostic>> {
    let empty = NewMirrors {
        mirrors: Vec::new(),
        problems: Vec::new(),
    };
    let Some(kept) = &config.templates.0 else {
        return Ok(empty);
    };
    if !config.templates.might_take(repo) {
        return Ok(empty);
    }
    let mut checker = Checker {
        source: &kept.source,
        path: &kept.path,
        base_dir: &kept.base_dir,
        errors: Vec::new(),
        problems: Vec::new(),
        warnings: Vec::new(),
        opened_repos: std::collections::HashMap::new(),
        expansion: None,
        expansion_warnings: std::collections::HashSet::new(),
    };
    let failed = |checker: Checker<'_>| checker.into_error().diagnostics().to_vec();
    let Some(mut root) = checker.parse() else {
        return Err(failed(checker));
    };
    let raw_templates = root.get_mut().remove("mirror_template");
    let Some(raw) = checker.deserialize(root) else {
        return Err(failed(checker));
    };
    let daemon = checker.daemon(raw.daemon.unwrap_or_default());
    let defaults = checker.options(raw.defaults.unwrap_or_default(), Level::Defaults);
    let mut seen = Seen::default();
    for mirror in &config.mirrors {
        let origin = NameOrigin {
            span: None,
            repo: mirror.template.as_ref().map(|_| mirror.repo.clone()),
        };
        seen.names.insert(mirror.name.to_string(), origin);
    }
    let (_, mirrors) = checker.templates(
        raw_templates,
        &defaults,
        &daemon.state_dir,
        &mut seen,
        Scope::Only(repo),
    );
    if !checker.errors.is_empty() {
        return Err(failed(checker));
    }
    Ok(NewMirrors {
        mirrors,
        problems: named_problems(checker.problems),
    })
}

impl<'a> Checker<'a> {
    /// Returns how a duplicate-name error names the first holder of the name.
    pub(super) fn name_origin(&self, origin: &NameOrigin) -> String {
        match (&origin.span, &origin.repo) {
            (Some(span), None) => format!("the mirror at line {}", self.line(span)),
            (Some(span), Some(repo)) => {
                let (line, column) = super::line_and_column(self.source, span.start);
                format!(
                    "the [[mirror_template]] at line {line}, column {column}, for repository {}",
                    repo.display()
                )
            }
            (None, Some(repo)) => format!(
                "a mirror of the [[mirror_template]]s in force, for repository {}",
                repo.display()
            ),
            (None, None) => "a [[mirror]] of the configuration in force".to_owned(),
        }
    }

    /// Validates every `[[mirror_template]]` (`raw`, the value of the key as parsed) and
    /// expands it over `scope`. Returns the templates' globs and the mirrors without errors.
    pub(in crate::config) fn templates(
        &mut self,
        raw: Option<Spanned<DeValue<'a>>>,
        defaults: &Options,
        state_dir: &Path,
        seen: &mut Seen,
        scope: Scope<'_>,
    ) -> (Vec<RepoGlob>, Vec<Mirror>) {
        let Some(raw) = raw else {
            return (Vec::new(), Vec::new());
        };
        let span = raw.span();
        let DeValue::Array(items) = raw.into_inner() else {
            self.error(
                &span,
                "`mirror_template` must be an array of tables: write each as [[mirror_template]]",
            );
            return (Vec::new(), Vec::new());
        };
        let mut globs = Vec::new();
        let mut mirrors = Vec::new();
        for item in items {
            let header = item.span();
            let DeValue::Table(table) = item.into_inner() else {
                self.error(&header, "each [[mirror_template]] must be a table");
                continue;
            };
            if let Some((glob, table)) = self.template(table, &header) {
                let repos = match &scope {
                    Scope::Walk => self.walk(&glob, &header),
                    Scope::Only(repo) => glob.match_new(repo).into_iter().collect(),
                };
                for repo in repos {
                    // Found as a bare repository (`HEAD`, `objects`, `refs`) by the walk or
                    // `match_new`: that is the repository check of a templated mirror. Opening
                    // each of 10,000 repositories with libgit2 (its config files read each
                    // time) would double a load's time; an unreadable one still fails its
                    // first update, with the reason in its status.
                    self.opened_repos.entry(repo.clone()).or_insert(Ok(()));
                    if let Some(mirror) =
                        self.expand(&table, &header, &glob, &repo, defaults, state_dir, seen)
                    {
                        mirrors.push(mirror);
                    }
                }
                globs.push(glob);
            }
        }
        (globs, mirrors)
    }

    /// Checks one template as written. Returns its glob and its table (without `repos`),
    /// ready to expand, or `None` after reporting its errors.
    fn template(
        &mut self,
        mut table: DeTable<'a>,
        header: &std::ops::Range<usize>,
    ) -> Option<(RepoGlob, DeTable<'a>)> {
        let errors_before = self.errors.len();
        let repos = table.remove("repos");
        for key in ["repo", "create"] {
            if let Some(value) = table.remove(key) {
                let why = if key == "repo" {
                    "a [[mirror_template]] names its repositories with the glob `repos`, not `repo`"
                } else {
                    "`create` cannot be used in a [[mirror_template]]: it mirrors repositories \
                     that exist"
                };
                self.error(&value.span(), why);
            }
        }
        let glob = match repos {
            None => {
                self.error(
                    header,
                    "missing required key `repos` in [[mirror_template]]",
                );
                None
            }
            Some(value) => self.repos_glob(value),
        };
        for key in ["name", "url"] {
            if !table.contains_key(key) {
                self.error(
                    header,
                    format!("missing required key `{key}` in [[mirror_template]]"),
                );
            }
        }
        self.check_variables(&table);
        // The keys and the options as written, once for every repository to come: a
        // placeholder `repo` stands in for the one each expansion sets.
        let mut probe = table.clone();
        probe.insert(
            Spanned::new(header.clone(), Cow::Borrowed("repo")),
            Spanned::new(header.clone(), DeValue::String(Cow::Borrowed("/"))),
        );
        if let Some(raw) = self.deserialize_mirror(probe, header) {
            let (_, own) = raw.split();
            self.options(own, Level::Mirror);
        }
        // Keys reported unknown or of the wrong type were removed from the probe; the
        // template is not expanded until they are fixed.
        if self.errors.len() > errors_before {
            return None;
        }
        Some((glob?, table))
    }

    /// Returns the compiled `repos` glob, resolved against the file's directory, or reports
    /// why it cannot be one.
    fn repos_glob(&mut self, value: Spanned<DeValue<'a>>) -> Option<RepoGlob> {
        let span = value.span();
        let DeValue::String(text) = value.into_inner() else {
            self.error(
                &span,
                "`repos`: expected a string (a glob such as \"/srv/git/**/*.git\")",
            );
            return None;
        };
        if text.trim().is_empty() {
            self.error(&span, "`repos` is empty");
            return None;
        }
        let pattern = if text.starts_with('/') {
            text.into_owned()
        } else {
            resolve(self.base_dir, text.as_ref())
                .to_string_lossy()
                .into_owned()
        };
        match RepoGlob::new(&pattern) {
            Ok(glob) => Some(glob),
            Err(error) => {
                self.error(
                    &span,
                    format!("`repos` is not a valid glob: {}", error.kind()),
                );
                None
            }
        }
    }

    /// Reports every `${...}` in the template's strings that is not a known variable.
    fn check_variables(&mut self, table: &DeTable<'a>) {
        let probe = Variables {
            name: String::new(),
            path: String::new(),
        };
        let mut bad = Vec::new();
        for_each_string(table, &mut |span, text| {
            if let Err(error) = substitute(text, &probe, false) {
                bad.push((span.clone(), error));
            }
        });
        for (span, error) in bad {
            self.error(&span, error.to_string());
        }
    }

    /// Returns the repositories of `glob` on disk, reporting what the walk could not read.
    fn walk(
        &mut self,
        glob: &RepoGlob,
        header: &std::ops::Range<usize>,
    ) -> Vec<std::path::PathBuf> {
        let walk = glob.walk();
        for (dir, error) in &walk.unreadable {
            self.warning(
                header,
                format!(
                    "[[mirror_template]] cannot read directory {} below {}: {error}",
                    dir.display(),
                    glob.prefix.display()
                ),
            );
        }
        if walk.truncated {
            self.error(
                header,
                format!(
                    "[[mirror_template]] `repos` {} makes a walk of more than {} directories \
                     below {}: give it a narrower fixed prefix",
                    glob.pattern,
                    super::super::template::MAX_DIRECTORIES,
                    glob.prefix.display()
                ),
            );
        }
        walk.repos
    }

    /// Expands `table` for `repo` and validates the mirror it makes, as a written one.
    #[allow(clippy::too_many_arguments)]
    fn expand(
        &mut self,
        table: &DeTable<'a>,
        header: &std::ops::Range<usize>,
        glob: &RepoGlob,
        repo: &Path,
        defaults: &Options,
        state_dir: &Path,
        seen: &mut Seen,
    ) -> Option<Mirror> {
        let variables = Variables {
            name: RepoGlob::name_of(repo),
            path: glob.path_of(repo),
        };
        let mut expanded = table.clone();
        substitute_table(&mut expanded, &variables, true);
        expanded.insert(
            Spanned::new(header.clone(), Cow::Borrowed("repo")),
            Spanned::new(
                header.clone(),
                DeValue::String(Cow::Owned(repo.to_string_lossy().into_owned())),
            ),
        );
        self.expansion = Some(repo.to_owned());
        let mirror = self.deserialize_mirror(expanded, header).and_then(|raw| {
            self.mirror(Spanned::new(header.clone(), raw), defaults, state_dir, seen)
        });
        self.expansion = None;
        let mut mirror = mirror?;
        mirror.template = Some(TemplateOrigin {
            line: self.line(header),
            repos: glob.pattern.clone(),
        });
        Some(mirror)
    }

    /// Deserializes one template's table as a `[[mirror]]`, reporting (and removing) each
    /// unknown key and wrong type, in the words of a template.
    fn deserialize_mirror(
        &mut self,
        mut table: DeTable<'a>,
        header: &std::ops::Range<usize>,
    ) -> Option<RawMirror> {
        loop {
            let value = Spanned::new(header.clone(), DeValue::Table(table.clone()));
            let error = match RawMirror::deserialize(ValueDeserializer::from(value)) {
                Ok(raw) => return Some(raw),
                Err(error) => error,
            };
            let message = error.message().replace(
                "`name`, `repo`, `url`, `create`, ",
                "`name`, `repos`, `url`, ",
            );
            let span = error.span().unwrap_or_else(|| header.clone());
            match remove_entry_at(&mut table, &span) {
                Some(key) => {
                    let text = super::describe_serde_error(&key, &message);
                    self.error(&span, text);
                }
                None => {
                    self.error(&span, super::tidy_serde_message(&message));
                    return None;
                }
            }
        }
    }
}

/// Calls `each` with the span and text of every string value in `table`, nested ones too.
fn for_each_string(table: &DeTable<'_>, each: &mut dyn FnMut(&std::ops::Range<usize>, &str)) {
    fn value(v: &Spanned<DeValue<'_>>, each: &mut dyn FnMut(&std::ops::Range<usize>, &str)) {
        match v.get_ref() {
            DeValue::String(text) => each(&v.span(), text),
            DeValue::Array(items) => items.iter().for_each(|item| value(item, each)),
            DeValue::Table(table) => for_each_string(table, each),
            _ => {}
        }
    }
    for (_, v) in table.iter() {
        value(v, each);
    }
}

/// Substitutes the variables into every string value of `table`; `top` marks the mirror's
/// own table, whose `name` takes `${path}` with `-` for `/`.
fn substitute_table(table: &mut DeTable<'_>, variables: &Variables, top: bool) {
    fn value(v: &mut DeValue<'_>, variables: &Variables, in_name: bool) {
        match v {
            DeValue::String(text) => {
                // Checked before any expansion (`check_variables`): an error cannot occur.
                if let Ok(Cow::Owned(new)) = substitute(text, variables, in_name) {
                    *text = Cow::Owned(new);
                }
            }
            DeValue::Array(items) => items
                .iter_mut()
                .for_each(|item| value(item.get_mut(), variables, false)),
            DeValue::Table(table) => substitute_table(table, variables, false),
            _ => {}
        }
    }
    for (key, v) in table.iter_mut() {
        let in_name = top && key.get_ref() == "name";
        value(v.get_mut(), variables, in_name);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::from_source;
    use super::*;

    /// A directory with bare repositories at `repos` (relative), and the file's text.
    fn fleet(repos: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for repo in repos {
            git2::Repository::init_bare(dir.path().join(repo)).expect("init bare");
        }
        dir
    }

    fn load(dir: &Path, text: &str) -> Result<Config, Vec<String>> {
        from_source(text, Path::new("c.toml"), &dir.join("c.toml"), dir).map_err(|error| {
            error
                .diagnostics()
                .iter()
                .map(|d| d.to_string().replace(&dir.display().to_string(), "D"))
                .collect()
        })
    }

    const TEMPLATE: &str = "[[mirror_template]]\nname = \"gh-${path}\"\nrepos = \"srv/**/*.git\"\n\
                            url = \"https://h.example/acme/${name}.git\"\n";

    #[test]
    fn a_template_expands_over_nested_repositories() {
        let dir = fleet(&[
            "srv/a.git",
            "srv/team/b.git",
            "srv/team/b.git/x/c.git",
            "other/d.git",
        ]);
        let text =
            format!("[defaults]\ndelay = \"7s\"\n{TEMPLATE}password_file = \"${{name}}.token\"\n");
        let config = load(dir.path(), &text).expect("valid");
        let got: Vec<(&str, PathBuf, String)> = config
            .mirrors
            .iter()
            .map(|m| (m.name.as_str(), m.repo.clone(), m.display_url()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "gh-a",
                    dir.path().join("srv/a.git"),
                    "https://*****:*****@h.example/acme/a.git".to_owned()
                ),
                (
                    "gh-team-b",
                    dir.path().join("srv/team/b.git"),
                    "https://*****:*****@h.example/acme/b.git".to_owned()
                ),
            ]
        );
        let b = config.mirror("gh-team-b").expect("b");
        assert_eq!(b.delay, std::time::Duration::from_secs(7));
        assert!(
            matches!(&b.password, crate::config::PasswordSource::File(f) if f == &dir.path().join("b.token"))
        );
        assert_eq!(b.template.as_ref().map(|t| t.line), Some(3));
        // Each expansion is validated as a written mirror: its own password file is missing.
        let problems: Vec<String> = config
            .mirror_problems
            .iter()
            .map(|p| {
                p.to_string()
                    .replace(&dir.path().display().to_string(), "D")
            })
            .collect();
        assert_eq!(
            problems,
            [
                "c.toml:7:17: mirror `gh-a`: password file D/a.token does not exist (in \
                 [[mirror_template]], for repository D/srv/a.git)",
                "c.toml:7:17: mirror `gh-team-b`: password file D/b.token does not exist (in \
                 [[mirror_template]], for repository D/srv/team/b.git)",
            ]
        );
    }

    #[test]
    fn names_produced_twice_are_errors_naming_both() {
        let dir = fleet(&["srv/a.git", "srv/x/b.git", "srv/y/b.git"]);
        let text = format!(
            "[[mirror]]\nname = \"gh-a\"\nrepo = \"srv/a.git\"\nurl = \"https://h/a.git\"\n\
             {TEMPLATE}\
             [[mirror_template]]\nname = \"${{name}}\"\nrepos = \"srv/*/*.git\"\nurl = \"https://h/${{path}}.git\"\n"
        );
        assert_eq!(
            load(dir.path(), &text).expect_err("clashes"),
            [
                "c.toml:6:8: duplicate mirror name \"gh-a\": already used by the mirror at \
                 line 2 (in [[mirror_template]], for repository D/srv/a.git)",
                "c.toml:10:8: duplicate mirror name \"b\": already used by the \
                 [[mirror_template]] at line 10, column 8, for repository D/srv/x/b.git (in \
                 [[mirror_template]], for repository D/srv/y/b.git)",
            ]
        );
    }

    #[test]
    fn a_template_is_checked_once_as_written() {
        let dir = fleet(&["srv/a.git", "srv/b.git"]);
        let text = "[[mirror_template]]\nname = \"m-${nmae}\"\nrepos = \"srv/*.git\"\n\
                    repo = \"x\"\nurl = \"https://h/${name}.git\"\ndelay = \"5 minutes\"\n\
                    colour = 1\n[[mirror_template]]\nrepos = \"srv/[.git\"\n";
        let mut found = load(dir.path(), text).expect_err("invalid");
        // The list of keys grows with the options: only its start is the template's own.
        let unknown = found.remove(3);
        assert!(
            unknown.starts_with(
                "c.toml:7:1: unknown key `colour`, expected one of `name`, `repos`, `url`, \
                 `enabled`, "
            ),
            "{unknown}"
        );
        assert_eq!(
            found,
            [
                "c.toml:2:8: unknown variable `${nmae}`: a template knows `${name}` and `${path}`",
                "c.toml:4:8: a [[mirror_template]] names its repositories with the glob `repos`, \
                 not `repo`",
                "c.toml:6:9: `delay`: invalid duration \"5 minutes\": unknown unit \" minutes\": \
                 use s, m, h or d; write e.g. \"30s\", \"5m\", \"1h30m\"",
                "c.toml:8:1: missing required key `name` in [[mirror_template]]",
                "c.toml:8:1: missing required key `url` in [[mirror_template]]",
                "c.toml:9:9: `repos` is not a valid glob: unclosed character class; missing ']'",
            ]
        );
    }

    #[test]
    fn a_new_repository_is_expanded_against_the_loaded_text() {
        let dir = fleet(&["srv/a.git"]);
        let config = load(dir.path(), TEMPLATE).expect("valid");
        assert_eq!(config.mirrors.len(), 1);
        let new = dir.path().join("srv/team/new.git");
        git2::Repository::init_bare(&new).expect("init");
        let made = config.expand_new_repository(&new).expect("expands");
        let names: Vec<&str> = made.mirrors.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["gh-team-new"]);
        assert!(
            config
                .expand_new_repository(&dir.path().join("elsewhere.git"))
                .expect("ok")
                .mirrors
                .is_empty()
        );
        // A repository whose name a mirror already has is refused, naming both.
        let text = "[[mirror_template]]\nname = \"${name}\"\nrepos = \"srv/**/*.git\"\nurl = \"https://h/${name}.git\"\n";
        let config = load(dir.path(), text).expect("valid");
        let clash2 = dir.path().join("srv/y/a.git");
        git2::Repository::init_bare(&clash2).expect("init");
        let errors: Vec<String> = config
            .expand_new_repository(&clash2)
            .expect_err("clash")
            .iter()
            .map(|d| {
                d.to_string()
                    .replace(&dir.path().display().to_string(), "D")
            })
            .collect();
        assert_eq!(
            errors,
            [
                "c.toml:2:8: duplicate mirror name \"a\": already used by a mirror of the \
              [[mirror_template]]s in force, for repository D/srv/a.git (in \
              [[mirror_template]], for repository D/srv/y/a.git)"
            ]
        );
    }
}
