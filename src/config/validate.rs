//! From the file's text to a validated [`Config`], with every problem of the file at once.
//!
//! Three passes, each collecting rather than stopping:
//!
//! 1. TOML syntax (`toml::de::DeTable`, keeping spans). A syntax error is reported alone: what
//!    follows it cannot be trusted.
//! 2. Deserialization into the strict `raw` types. serde stops at the first unknown key or
//!    wrong type, so the offending key is removed from the parsed tree and deserialization
//!    runs again, until it succeeds: each round reports one error, and the file's other
//!    problems are still found.
//! 3. Validation of values and combinations, `[defaults]` applied, into [`Config`]. Problems
//!    of the filesystem that only concern one mirror (its repository, its URL's scheme, its
//!    password file) are kept apart in `Config::mirror_problems`, because one bad mirror must
//!    not stop the daemon serving the others.
//!
//! How `[defaults]` applies: key by key, a mirror's value replaces the default, except for two
//! groups that are replaced as a whole, because their keys exclude each other. A mirror that
//! sets `password_file` or `password_env`, or embeds a password in its URL, ignores both
//! password keys of `[defaults]`; a mirror that chooses a branch filter
//! (`only_protected_branches = true` or `mirror_branch_regex`) ignores the other's default.
//! Exclusive keys written at the same level are errors.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::duration::{format_duration, parse_duration};
use super::error::{Diagnostic, MirrorProblem, line_and_column};
use super::raw::{
    RawConfig, RawDaemon, RawGitConfig, RawIdentity, RawLogFormat, RawMirror, RawOptions, RawPrune,
};
use super::{
    BranchFilter, BranchPattern, Config, ConfigError, DaemonConfig, GitConfigPolicy, LfsMode,
    LogFormat, Mirror, MirrorName, PasswordSource, Prune,
};
use crate::mirror::credentials::too_open;
use crate::mirror::url::RemoteUrl;
use crate::paths::resolve;

const DEFAULT_MAX_PARALLEL_PUSHES: usize = 4;
const DEFAULT_DELAY: Duration = Duration::from_secs(5 * 60);
const DEFAULT_PROTECTED_DELAY: Duration = Duration::from_secs(60);
const DEFAULT_RETRIES: u32 = 3;
/// One push for all but the largest first syncs: a push from the scratch repository is linear
/// in refs, and each further push pays the ref advertisement of every ref pushed so far
/// (a 100,000-ref first sync in 11 pushes took 3.5 times as long as in one). GitHub sets no
/// limit by default; a downstream whose push policy limits refs per push needs a lower value.
const DEFAULT_REFS_PER_PUSH: usize = 100_000;
/// GitHub refuses a push over 2 GiB.
const DEFAULT_MAX_PUSH_SIZE: u64 = 2 << 30;
/// The accepted ranges of the numbers and durations (README.md's configuration tables list
/// them): wide enough for any sensible setting, narrow enough that nothing the daemon computes
/// from them (due times, deadlines, semaphore permits) comes near an overflow.
const MAX_PARALLEL_PUSHES: RangeInclusive<usize> = 1..=1024;
const RETRIES: RangeInclusive<u32> = 0..=100;
const REFS_PER_PUSH: RangeInclusive<usize> = 1..=1_000_000;
const MAX_PUSH_SIZE: RangeInclusive<u64> = 0..=(1 << 40);
/// The mass-change guard: `max_deletes` and `max_forced` (0 = no limit). The default lets
/// ordinary work through (a release branch cleanup, a rebased topic or two) and stops a
/// mistaken mass deletion or a history rewrite of every branch.
const DEFAULT_MASS_CHANGE_LIMIT: usize = 100;
const MASS_CHANGE_LIMIT: RangeInclusive<usize> = 0..=10_000_000;
/// `delay` and `protected_delay`: a mirror updated weekly at most is still a mirror.
const DELAY: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(7 * 86_400);
/// A first sync of a huge repository over a slow link may take days, but not weeks.
const TIMEOUT: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(7 * 86_400);
/// `sun_path` holds 108 bytes on Linux, the terminating NUL included.
const MAX_SOCKET_PATH_BYTES: usize = 107;
/// The keys whose values are durations, for a hint when one is written as a number.
const DURATION_KEYS: [&str; 3] = ["delay", "protected_delay", "timeout"];

/// Reads, parses and validates the configuration file at `path`.
pub(super) fn load(path: &Path) -> Result<Config, ConfigError> {
    let io_error = |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io_error)?;
    let absolute = std::path::absolute(path).map_err(io_error)?;
    let base_dir = absolute
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_owned);
    let source = match String::from_utf8(bytes) {
        Ok(source) => source,
        Err(error) => {
            let valid = error.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&error.as_bytes()[..valid]);
            return Err(ConfigError::Invalid {
                diagnostics: vec![Diagnostic::at(
                    path,
                    &prefix,
                    valid,
                    "the file is not valid UTF-8",
                )],
            });
        }
    };
    from_source(&source, path, &absolute, &base_dir)
}

/// Validates `source`, the text of the file named `path` in messages and `absolute` in the
/// result; relative paths in it resolve against `base_dir`.
fn from_source(
    source: &str,
    path: &Path,
    absolute: &Path,
    base_dir: &Path,
) -> Result<Config, ConfigError> {
    let mut checker = Checker {
        source,
        path,
        base_dir,
        errors: Vec::new(),
        problems: Vec::new(),
        warnings: Vec::new(),
        opened_repos: HashMap::new(),
        expansion: None,
        expansion_warnings: HashSet::new(),
    };
    let Some(mut root) = checker.parse() else {
        return Err(checker.into_error());
    };
    // Fleet (templates): `[[mirror_template]]` is validated apart, from its TOML values.
    let raw_templates = root.get_mut().remove("mirror_template");
    let Some(raw) = checker.deserialize(root) else {
        return Err(checker.into_error());
    };
    let daemon = checker.daemon(raw.daemon.unwrap_or_default());
    let defaults = checker.options(raw.defaults.unwrap_or_default(), Level::Defaults);
    let mut seen = Seen::default();
    let mut mirrors = checker.mirrors(raw.mirror, &defaults, &daemon.state_dir, &mut seen);
    let (globs, templated) = checker.templates(
        raw_templates,
        &defaults,
        &daemon.state_dir,
        &mut seen,
        templates::Scope::Walk,
    );
    mirrors.extend(templated);
    checker.warn_if_default_protected_branches_unused(&defaults, &mirrors);
    let alerts = raw.alerts.and_then(|table| checker.alerts(table));
    let templates = templates::keep(source, path, base_dir, globs);
    checker.into_config(absolute, daemon, mirrors, alerts, templates)
}

/// Returns the problems of a file without errors, each with the mirror it concerns.
fn named_problems(problems: Vec<(Option<MirrorName>, Diagnostic)>) -> Vec<MirrorProblem> {
    // A mirror without a valid name always has an error (its name is missing, invalid or
    // taken), so in a file without errors every problem has its mirror's name.
    debug_assert!(problems.iter().all(|(mirror, _)| mirror.is_some()));
    problems
        .into_iter()
        .filter_map(|(mirror, diagnostic)| {
            Some(MirrorProblem {
                mirror: mirror?,
                diagnostic,
            })
        })
        .collect()
}

/// Where an option was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Defaults,
    Mirror,
}

/// A validated option value and where it was written.
#[derive(Debug, Clone)]
struct Setting<T> {
    value: T,
    span: Range<usize>,
}

impl<T> Setting<T> {
    fn from_spanned(spanned: Spanned<T>) -> Setting<T> {
        let span = spanned.span();
        Setting {
            value: spanned.into_inner(),
            span,
        }
    }
}

/// The per-mirror options of one level (`[defaults]` or one mirror), validated; a value that
/// was invalid is reported and left out.
#[derive(Debug, Clone, Default)]
struct Options {
    enabled: Option<Setting<bool>>,
    only_protected_branches: Option<Setting<bool>>,
    protected_branches: Option<Setting<Vec<BranchPattern>>>,
    mirror_branch_regex: Option<Setting<regex::Regex>>,
    keep_divergent_refs: Option<Setting<bool>>,
    prune: Option<Setting<Prune>>,
    username: Option<Setting<String>>,
    password_file: Option<Setting<PathBuf>>,
    password_env: Option<Setting<String>>,
    delay: Option<Setting<Duration>>,
    protected_delay: Option<Setting<Duration>>,
    retries: Option<Setting<u32>>,
    timeout: Option<Setting<Duration>>,
    refs_per_push: Option<Setting<usize>>,
    ssh_key: Option<Setting<PathBuf>>,
    ssh_known_hosts: Option<Setting<Vec<String>>>,
    max_push_size: Option<Setting<u64>>,
    // The mass-change guard.
    max_deletes: Option<Setting<usize>>,
    max_forced: Option<Setting<usize>>,
    // Git LFS (validate/lfs.rs)
    lfs: Option<Setting<LfsMode>>,
    lfs_url: Option<Setting<String>>,
    lfs_objects: Option<Setting<PathBuf>>,
}

impl Options {
    /// Returns true if these options choose a branch filter.
    fn chooses_branch_filter(&self) -> bool {
        self.only_protected_branches
            .as_ref()
            .is_some_and(|only| only.value)
            || self.mirror_branch_regex.is_some()
    }
}

/// The mirror that a check is about, as its diagnostics name it.
struct Subject {
    /// The mirror's name, if it has a valid one (if not, the mirror has an error).
    name: Option<MirrorName>,
    /// "mirror `<name>`", or "mirror" when the name is missing or invalid.
    label: String,
}

impl Subject {
    fn new(name: Option<MirrorName>) -> Subject {
        let label = name
            .as_ref()
            .map_or_else(|| "mirror".to_owned(), |n| format!("mirror `{n}`"));
        Subject { name, label }
    }
}

/// What validating the earlier mirrors of a file leaves for the later ones.
#[derive(Debug, Default)]
struct Seen {
    /// Each mirror name taken so far, and where it was written.
    names: HashMap<String, NameOrigin>,
    /// Whether the `password_file` of `[defaults]` was checked already: it is checked once,
    /// not once per mirror that uses it.
    defaults_password_file_checked: bool,
}

/// Where a mirror name was taken (fleet: templates name the repository too).
#[derive(Debug, Clone)]
struct NameOrigin {
    /// The `name` value; `None` for a mirror of the configuration in force, when the daemon
    /// expands a template for a new repository.
    span: Option<Range<usize>>,
    /// The repository a `[[mirror_template]]` produced the name for.
    repo: Option<PathBuf>,
}

/// A mirror's `name`, `repo`, `url` and `create`, each left out if missing or invalid.
struct Identity {
    subject: Subject,
    repo: Option<Setting<PathBuf>>,
    url: Option<Setting<RemoteUrl>>,
    create: bool,
}

/// A mirror's identity once the mirror has no errors.
struct CheckedIdentity {
    name: MirrorName,
    repo: PathBuf,
    url: RemoteUrl,
    create: bool,
}

/// Where a mirror's password comes from, and the settings it was chosen from.
struct Credentials<'o> {
    source: PasswordSource,
    /// The password file in force (the mirror's or the defaults'), to check.
    file: Option<&'o Setting<PathBuf>>,
    /// The mirror sets `password_file` or `password_env` itself.
    own_password: bool,
    /// The password keys in force are those of `[defaults]`.
    from_defaults: bool,
}

/// Collects the diagnostics of one file.
struct Checker<'a> {
    source: &'a str,
    /// The file as named in messages.
    path: &'a Path,
    /// Where relative paths start: the file's directory.
    base_dir: &'a Path,
    errors: Vec<Diagnostic>,
    /// Problems of one mirror only (see `Config::mirror_problems`), with the name of the
    /// mirror when it has a valid one.
    problems: Vec<(Option<MirrorName>, Diagnostic)>,
    warnings: Vec<Diagnostic>,
    /// Repositories already opened, and what opening them said.
    opened_repos: HashMap<PathBuf, Result<(), String>>,
    /// Fleet (templates): the repository a `[[mirror_template]]` is being expanded for; every
    /// diagnostic then names it.
    expansion: Option<PathBuf>,
    /// Fleet (templates): warnings given once per template position, not once per repository.
    expansion_warnings: HashSet<(usize, String)>,
}

impl<'a> Checker<'a> {
    fn diagnostic(&self, span: &Range<usize>, message: impl Into<String>) -> Diagnostic {
        let mut message = message.into();
        if let Some(repo) = &self.expansion {
            message.push_str(&templates::context(repo));
        }
        Diagnostic::at(self.path, self.source, span.start, message)
    }

    fn error(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let diagnostic = self.diagnostic(span, message);
        self.errors.push(diagnostic);
    }

    fn warning(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let message = message.into();
        if self.expansion.is_some()
            && !self
                .expansion_warnings
                .insert((span.start, message.clone()))
        {
            return;
        }
        let diagnostic = self.diagnostic(span, message);
        self.warnings.push(diagnostic);
    }

    /// Records a problem of `subject` only; the message is prefixed with its label.
    fn problem(&mut self, subject: &Subject, span: &Range<usize>, message: impl Display) {
        let diagnostic = self.diagnostic(span, format!("{}: {message}", subject.label));
        self.problems.push((subject.name.clone(), diagnostic));
    }

    /// Returns the 1-based line of a span, for messages that refer to another place.
    fn line(&self, span: &Range<usize>) -> usize {
        line_and_column(self.source, span.start).0
    }

    /// Returns every diagnostic as one error: the errors, and the mirror problems found
    /// beside them (they are errors for `check-config` too), in file order.
    fn into_error(mut self) -> ConfigError {
        let problems = self.problems.into_iter().map(|(_, diagnostic)| diagnostic);
        self.errors.extend(problems);
        sort(&mut self.errors);
        ConfigError::Invalid {
            diagnostics: self.errors,
        }
    }

    /// Parses the TOML syntax (pass 1 of the module doc). Returns `None` after reporting a
    /// syntax error.
    fn parse(&mut self) -> Option<Spanned<DeTable<'a>>> {
        match DeTable::parse(self.source) {
            Ok(root) => Some(root),
            Err(error) => {
                let span = error.span().unwrap_or(0..0);
                self.error(&span, format!("invalid TOML: {}", error.message()));
                None
            }
        }
    }

    /// Validates every `[[mirror]]`, in file order. Returns those without errors.
    fn mirrors(
        &mut self,
        raw: Vec<Spanned<RawMirror>>,
        defaults: &Options,
        state_dir: &Path,
        seen: &mut Seen,
    ) -> Vec<Mirror> {
        let mut mirrors = Vec::with_capacity(raw.len());
        for raw_mirror in raw {
            if let Some(mirror) = self.mirror(raw_mirror, defaults, state_dir, seen) {
                mirrors.push(mirror);
            }
        }
        mirrors
    }

    /// Warns about `protected_branches` in `[defaults]` when no mirror (of a file otherwise
    /// without errors) carries only protected branches.
    fn warn_if_default_protected_branches_unused(
        &mut self,
        defaults: &Options,
        mirrors: &[Mirror],
    ) {
        let any_protected = mirrors
            .iter()
            .any(|mirror| only_protected(&mirror.branches));
        match &defaults.protected_branches {
            Some(list) if !any_protected && self.errors.is_empty() => self.warning(
                &list.span,
                "`protected_branches` in [defaults] has no effect: no mirror sets \
                 `only_protected_branches = true`",
            ),
            _ => {}
        }
    }

    /// Returns the validated configuration, or every diagnostic if there were errors.
    fn into_config(
        mut self,
        absolute: &Path,
        daemon: DaemonConfig,
        mirrors: Vec<Mirror>,
        alerts: Option<super::AlertsConfig>,
        templates: super::Templates,
    ) -> Result<Config, ConfigError> {
        if !self.errors.is_empty() {
            return Err(self.into_error());
        }
        sort(&mut self.warnings);
        self.problems.sort_by_key(|(_, d)| (d.line, d.column));
        Ok(Config {
            path: absolute.to_owned(),
            daemon,
            mirrors,
            warnings: self.warnings,
            mirror_problems: named_problems(self.problems),
            alerts,
            templates,
        })
    }

    /// Deserializes the raw types, reporting every unknown key and wrong type (pass 2 of the
    /// module doc). Returns `None` if an error could not be pinned to a key.
    fn deserialize(&mut self, root: Spanned<DeTable<'_>>) -> Option<RawConfig> {
        let span = root.span();
        let mut table = root.into_inner();
        loop {
            let value = Spanned::new(span.clone(), DeValue::Table(table.clone()));
            let error = match RawConfig::deserialize(ValueDeserializer::from(value)) {
                Ok(raw) => return Some(raw),
                Err(error) => error,
            };
            let Some(error_span) = error.span() else {
                self.error(&(0..0), tidy_serde_message(error.message()));
                return None;
            };
            match remove_entry_at(&mut table, &error_span) {
                Some(key) => self.error(&error_span, describe_serde_error(&key, error.message())),
                None => {
                    self.error(&error_span, tidy_serde_message(error.message()));
                    return None;
                }
            }
        }
    }

    /// Returns `key`'s path resolved against the file's directory, or reports it empty.
    fn path_value(&mut self, key: &str, value: &Spanned<String>) -> Option<Setting<PathBuf>> {
        if value.get_ref().is_empty() {
            self.error(&value.span(), format!("`{key}` is empty"));
            return None;
        }
        Some(Setting {
            value: resolve(self.base_dir, value.get_ref()),
            span: value.span(),
        })
    }

    /// Returns `key`'s duration if it parses and lies in `range`, reporting it otherwise;
    /// `advice` ends the message of one out of range.
    fn duration(
        &mut self,
        key: &str,
        value: Option<Spanned<String>>,
        range: &RangeInclusive<Duration>,
        advice: &str,
    ) -> Option<Setting<Duration>> {
        let value = value?;
        match parse_duration(value.get_ref()) {
            Ok(duration) if range.contains(&duration) => Some(Setting {
                value: duration,
                span: value.span(),
            }),
            Ok(_) => {
                self.error(
                    &value.span(),
                    format!(
                        "`{key}` must be from {} to {}, not \"{}\"{advice}",
                        format_duration(*range.start()),
                        format_duration(*range.end()),
                        value.get_ref()
                    ),
                );
                None
            }
            Err(why) => {
                self.error(
                    &value.span(),
                    format!(
                        "`{key}`: invalid duration \"{}\": {why}; write e.g. \"30s\", \"5m\", \
                         \"1h30m\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// Returns `key`'s number if it lies in `range`, reporting it otherwise.
    fn number<T: Copy + PartialOrd + Display>(
        &mut self,
        key: &str,
        value: Option<Spanned<T>>,
        range: &RangeInclusive<T>,
    ) -> Option<Setting<T>> {
        let value = value?;
        if range.contains(value.get_ref()) {
            return Some(Setting::from_spanned(value));
        }
        self.error(
            &value.span(),
            format!(
                "`{key}` must be from {} to {}, not {}",
                range.start(),
                range.end(),
                value.get_ref()
            ),
        );
        None
    }

    /// Validates the `[daemon]` table; an invalid value is reported and its default used.
    fn daemon(&mut self, raw: RawDaemon) -> DaemonConfig {
        let state_dir = raw
            .state_dir
            .as_ref()
            .and_then(|dir| self.path_value("state_dir", dir))
            .map_or_else(|| PathBuf::from(super::DEFAULT_STATE_DIR), |dir| dir.value);
        let socket = self.socket_path(&raw, &state_dir);
        let socket_group = raw.socket_group.and_then(|group| {
            if group.get_ref().is_empty() {
                self.error(&group.span(), "`socket_group` is empty");
                return None;
            }
            Some(group.into_inner())
        });
        let max_parallel_pushes = self
            .number(
                "max_parallel_pushes",
                raw.max_parallel_pushes,
                &MAX_PARALLEL_PUSHES,
            )
            .map_or(DEFAULT_MAX_PARALLEL_PUSHES, |max| max.value);
        let metrics_listen = raw
            .metrics_listen
            .as_ref()
            .and_then(|listen| self.metrics_listen(listen));
        DaemonConfig {
            state_dir,
            socket,
            socket_group,
            max_parallel_pushes,
            log_format: match raw.log_format {
                Some(RawLogFormat::Json) => LogFormat::Json,
                Some(RawLogFormat::Text) | None => LogFormat::Text,
            },
            git_config: match raw.git_config {
                Some(RawGitConfig::Inherit) => GitConfigPolicy::Inherit,
                Some(RawGitConfig::Isolated) | None => GitConfigPolicy::Isolated,
            },
            silent: raw.silent.unwrap_or(false),
            metrics_listen,
        }
    }

    /// Validates `metrics_listen`: an IP address and a port (`127.0.0.1:9479`, `[::1]:9479`).
    fn metrics_listen(&mut self, listen: &Spanned<String>) -> Option<std::net::SocketAddr> {
        match listen.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    &listen.span(),
                    format!(
                        "`metrics_listen` must be an IP address and a port, such as \
                         \"127.0.0.1:9479\" or \"[::1]:9479\", not {:?}",
                        listen.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// Returns the control socket's path (`socket`, else in `state_dir`), reporting one too
    /// long for a Unix socket address.
    fn socket_path(&mut self, raw: &RawDaemon, state_dir: &Path) -> PathBuf {
        let socket = match &raw.socket {
            Some(socket) => self
                .path_value("socket", socket)
                .map_or_else(|| super::default_socket(state_dir), |s| s.value),
            None => super::default_socket(state_dir),
        };
        let socket_bytes = socket.as_os_str().len();
        if socket_bytes > MAX_SOCKET_PATH_BYTES {
            let span = raw
                .socket
                .as_ref()
                .or(raw.state_dir.as_ref())
                .map_or(0..0, Spanned::span);
            self.error(
                &span,
                format!(
                    "the control socket path {} is {socket_bytes} bytes long; Unix sockets \
                     allow at most {MAX_SOCKET_PATH_BYTES}: set a shorter `socket`",
                    socket.display()
                ),
            );
        }
        socket
    }

    /// Validates the options of one level, including the keys that exclude each other there.
    fn options(&mut self, raw: RawOptions, level: Level) -> Options {
        let protected_branches = self.protected_branches(raw.protected_branches);
        let mirror_branch_regex = self.mirror_branch_regex(raw.mirror_branch_regex);
        let username = raw.username.and_then(|user| {
            if user.get_ref().is_empty() {
                self.error(&user.span(), "`username` is empty");
                return None;
            }
            Some(Setting::from_spanned(user))
        });
        let password_file = raw
            .password_file
            .as_ref()
            .and_then(|file| self.path_value("password_file", file));
        let password_env = self.password_env(raw.password_env);
        let delay = self.duration("delay", raw.delay, &DELAY, "");
        let protected_delay = self.duration("protected_delay", raw.protected_delay, &DELAY, "");
        let timeout = self.duration(
            "timeout",
            raw.timeout,
            &TIMEOUT,
            " (leave it out for the default: 1h, 3h for a first sync)",
        );
        let retries = self.number("retries", raw.retries, &RETRIES);
        let refs_per_push = self.number("refs_per_push", raw.refs_per_push, &REFS_PER_PUSH);
        let ssh_key = raw
            .ssh_key
            .as_ref()
            .and_then(|key| self.path_value("ssh_key", key));
        let ssh_known_hosts = self.known_hosts_lines(raw.ssh_known_hosts);
        let max_push_size = self.number("max_push_size", raw.max_push_size, &MAX_PUSH_SIZE);
        // The mass-change guard.
        let max_deletes = self.number("max_deletes", raw.max_deletes, &MASS_CHANGE_LIMIT);
        let max_forced = self.number("max_forced", raw.max_forced, &MASS_CHANGE_LIMIT);
        let (lfs, lfs_url, lfs_objects) = self.lfs_options(raw.lfs, raw.lfs_url, raw.lfs_objects);
        let options = Options {
            enabled: raw.enabled.map(Setting::from_spanned),
            only_protected_branches: raw.only_protected_branches.map(Setting::from_spanned),
            protected_branches,
            mirror_branch_regex,
            keep_divergent_refs: raw.keep_divergent_refs.map(Setting::from_spanned),
            prune: raw.prune.map(prune_setting),
            username,
            password_file,
            password_env,
            delay,
            protected_delay,
            retries,
            timeout,
            refs_per_push,
            ssh_key,
            ssh_known_hosts,
            max_push_size,
            max_deletes,
            max_forced,
            lfs,
            lfs_url,
            lfs_objects,
        };
        self.check_exclusive_keys(&options, level);
        options
    }

    /// Returns the `protected_branches` patterns, reporting (and leaving out) empty ones.
    fn protected_branches(
        &mut self,
        raw: Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Option<Setting<Vec<BranchPattern>>> {
        let list = raw?;
        let span = list.span();
        let mut patterns = Vec::new();
        for pattern in list.into_inner() {
            if pattern.get_ref().is_empty() {
                self.error(&pattern.span(), "empty pattern in `protected_branches`");
            } else {
                patterns.push(BranchPattern::new(pattern.get_ref()));
            }
        }
        Some(Setting {
            value: patterns,
            span,
        })
    }

    /// Returns `mirror_branch_regex` compiled, or reports why it does not compile.
    fn mirror_branch_regex(
        &mut self,
        raw: Option<Spanned<String>>,
    ) -> Option<Setting<regex::Regex>> {
        let regex = raw?;
        match regex::Regex::new(regex.get_ref()) {
            Ok(compiled) => Some(Setting {
                value: compiled,
                span: regex.span(),
            }),
            Err(error) => {
                self.error(
                    &regex.span(),
                    format!(
                        "`mirror_branch_regex` is not a valid regex: {}",
                        regex_error_summary(&error)
                    ),
                );
                None
            }
        }
    }

    /// Returns `password_env` if it can name an environment variable, reporting it otherwise.
    fn password_env(&mut self, raw: Option<Spanned<String>>) -> Option<Setting<String>> {
        let name = raw?;
        let valid = !name.get_ref().is_empty()
            && !name.get_ref().contains(['=', '\0'])
            && !name.get_ref().starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            self.error(
                &name.span(),
                format!(
                    "`password_env`: \"{}\" is not an environment variable name",
                    name.get_ref()
                ),
            );
            return None;
        }
        Some(Setting::from_spanned(name))
    }

    /// Reports keys that exclude each other written at the same `level`.
    fn check_exclusive_keys(&mut self, options: &Options, level: Level) {
        let scope = match level {
            Level::Defaults => " in [defaults]",
            Level::Mirror => "",
        };
        if let (Some(only @ Setting { value: true, .. }), Some(regex)) = (
            &options.only_protected_branches,
            &options.mirror_branch_regex,
        ) {
            let message = format!(
                "`only_protected_branches = true` and `mirror_branch_regex` cannot both be \
                 set{scope} (the other is at line {}): choose one",
                self.line(&only.span)
            );
            self.error(&regex.span, message);
        }
        if let (Some(file), Some(env)) = (&options.password_file, &options.password_env) {
            let message = format!(
                "`password_file` and `password_env` cannot both be set{scope} (the other is \
                 at line {}): choose one",
                self.line(&file.span)
            );
            self.error(&env.span, message);
        }
    }

    /// Validates one `[[mirror]]` with `[defaults]` applied. Returns `None` if it has errors
    /// (they are reported).
    fn mirror(
        &mut self,
        raw: Spanned<RawMirror>,
        defaults: &Options,
        state_dir: &Path,
        seen: &mut Seen,
    ) -> Option<Mirror> {
        let errors_before = self.errors.len();
        let header = raw.span();
        let (identity, own) = raw.into_inner().split();
        let own = self.options(own, Level::Mirror);
        let identity = self.identity(identity, &header, &mut seen.names);
        let branches = branch_filter(&own, defaults);
        if let (Some(list), false) = (&own.protected_branches, only_protected(&branches)) {
            self.warning(
                &list.span,
                format!(
                    "`protected_branches` of {} has no effect without \
                     `only_protected_branches = true`",
                    identity.subject.label
                ),
            );
        }
        let credentials = self.credentials(identity.url.as_ref(), &own, defaults);
        self.check_mirror_files(
            &identity,
            &credentials,
            &mut seen.defaults_password_file_checked,
        );
        let ssh = identity
            .subject
            .name
            .as_ref()
            .map(|name| ssh_settings(name, state_dir, &own, defaults));
        if let (Some(url), Some(ssh)) = (&identity.url, &ssh) {
            self.check_ssh(&identity.subject, url, ssh, &own, defaults);
        }

        if self.errors.len() > errors_before {
            return None;
        }
        let Identity {
            subject,
            repo,
            url,
            create,
        } = identity;
        let checked = CheckedIdentity {
            name: subject.name?,
            repo: repo?.value,
            url: url?.value,
            create,
        };
        Some(assemble_mirror(
            checked,
            branches,
            credentials.source,
            ssh?,
            &own,
            defaults,
        ))
    }

    /// Checks a mirror's `name`, `repo`, `url` and `create`; each one missing or invalid is
    /// reported and left out.
    fn identity(
        &mut self,
        raw: RawIdentity,
        header: &Range<usize>,
        names: &mut HashMap<String, NameOrigin>,
    ) -> Identity {
        let name = match raw.name {
            None => {
                self.error(header, "missing required key `name` in [[mirror]]");
                None
            }
            Some(name) => self.mirror_name(&name, names),
        };
        let repo = match &raw.repo {
            None => {
                self.error(header, "missing required key `repo` in [[mirror]]");
                None
            }
            Some(repo) => self.path_value("repo", repo),
        };
        let url = self.url(raw.url.as_ref(), header);
        let create = raw.create.as_ref().is_some_and(|c| *c.get_ref());
        Identity {
            subject: Subject::new(name),
            repo,
            url,
            create,
        }
    }

    /// Returns the mirror's `url` parsed, reporting it missing or empty. An unsupported
    /// scheme is parsed too (see `check_url`).
    fn url(
        &mut self,
        raw: Option<&Spanned<String>>,
        header: &Range<usize>,
    ) -> Option<Setting<RemoteUrl>> {
        match raw {
            None => {
                self.error(header, "missing required key `url` in [[mirror]]");
                None
            }
            Some(url) if url.get_ref().trim().is_empty() => {
                self.error(&url.span(), "`url` is empty");
                None
            }
            Some(url) => {
                // A relative path names a local remote relative to this file, like `repo`.
                let text = url.get_ref();
                let value = if text.starts_with("./") || text.starts_with("../") {
                    RemoteUrl::parse(&resolve(self.base_dir, text).to_string_lossy())
                } else {
                    RemoteUrl::parse(text)
                };
                Some(Setting {
                    value,
                    span: url.span(),
                })
            }
        }
    }

    /// Returns where a mirror's password comes from: the mirror's own source replaces the
    /// defaults' as a whole, and a password embedded in `url` replaces both (password keys
    /// of the mirror beside it are reported).
    fn credentials<'o>(
        &mut self,
        url: Option<&Setting<RemoteUrl>>,
        own: &'o Options,
        defaults: &'o Options,
    ) -> Credentials<'o> {
        let url_password = url.is_some_and(|url| url.value.password().is_some());
        if url_password {
            self.reject_password_keys_beside_url_password(own);
        }
        let own_password = own.password_file.is_some() || own.password_env.is_some();
        let (file, env, from_defaults) = if own_password {
            (own.password_file.as_ref(), own.password_env.as_ref(), false)
        } else if url_password {
            (None, None, false)
        } else {
            (
                defaults.password_file.as_ref(),
                defaults.password_env.as_ref(),
                true,
            )
        };
        let source = match (file, env) {
            (Some(file), _) => PasswordSource::File(file.value.clone()),
            (None, Some(env)) => PasswordSource::Env(env.value.clone()),
            (None, None) if url_password => PasswordSource::Url,
            (None, None) => PasswordSource::None,
        };
        Credentials {
            source,
            file,
            own_password,
            from_defaults,
        }
    }

    /// Reports the mirror's `password_file` and `password_env`: its URL embeds a password.
    fn reject_password_keys_beside_url_password(&mut self, own: &Options) {
        for (key, span) in [
            ("password_file", own.password_file.as_ref().map(|f| &f.span)),
            ("password_env", own.password_env.as_ref().map(|e| &e.span)),
        ] {
            if let Some(span) = span {
                self.error(
                    span,
                    format!(
                        "`{key}` cannot be used with a password embedded in `url`: keep only \
                         one (preferably `{key}`)"
                    ),
                );
            }
        }
    }

    /// Checks what a mirror names outside the file: its URL's scheme, its repository (unless
    /// the daemon creates it) and its password file (one of `[defaults]` only once).
    fn check_mirror_files(
        &mut self,
        identity: &Identity,
        credentials: &Credentials<'_>,
        defaults_password_file_checked: &mut bool,
    ) {
        let subject = &identity.subject;
        if let Some(url) = &identity.url {
            self.check_url(subject, url, credentials.own_password);
        }
        if let Some(repo) = &identity.repo
            && !identity.create
        {
            self.check_repository(subject, repo);
        }
        // A password file of `[defaults]` is checked once, not once per mirror using it.
        let already_checked = credentials.from_defaults && *defaults_password_file_checked;
        if let (Some(file), false) = (credentials.file, already_checked) {
            *defaults_password_file_checked |= credentials.from_defaults;
            self.check_password_file(subject, file);
        }
    }

    /// Returns the mirror's name if it is valid and not taken, reporting it otherwise.
    fn mirror_name(
        &mut self,
        name: &Spanned<String>,
        names: &mut HashMap<String, NameOrigin>,
    ) -> Option<MirrorName> {
        let Some(valid) = MirrorName::new(name.get_ref()) else {
            self.error(
                &name.span(),
                format!(
                    "invalid mirror name \"{}\": use 1 to 128 of the characters A-Z a-z 0-9 \
                     . _ - (and not \".\" or \"..\")",
                    name.get_ref()
                ),
            );
            return None;
        };
        if let Some(first) = names.get(name.get_ref()) {
            let message = format!(
                "duplicate mirror name \"{}\": already used by {}",
                name.get_ref(),
                self.name_origin(first)
            );
            self.error(&name.span(), message);
            return None;
        }
        let origin = NameOrigin {
            span: Some(name.span()),
            repo: self.expansion.clone(),
        };
        names.insert(name.get_ref().clone(), origin);
        Some(valid)
    }

    /// Reports an unsupported scheme (a mirror problem) and credentials in the URL (a warning).
    fn check_url(&mut self, subject: &Subject, url: &Setting<RemoteUrl>, own_password: bool) {
        let label = &subject.label;
        if let Some(reason) = url.value.unsupported_reason() {
            self.problem(subject, &url.span, reason);
            return;
        }
        if url.value.has_embedded_credentials() {
            let advice = if url.value.password().is_some() {
                "move the password to `password_file` (mode 600) and the user to `username`"
            } else {
                "move the user to `username`"
            };
            self.warning(
                &url.span,
                format!(
                    "the url of {label} embeds credentials ({}): {advice}",
                    url.value.display(true)
                ),
            );
        }
        if own_password && !url.value.is_http() {
            self.warning(
                &url.span,
                format!(
                    "{label} sets a password, but only http(s) URLs use one; {} does not",
                    url.value.display(false)
                ),
            );
        }
    }

    /// Reports a repository that is missing or that libgit2 cannot open (a mirror problem).
    fn check_repository(&mut self, subject: &Subject, repo: &Setting<PathBuf>) {
        let path = repo.value.display();
        match std::fs::metadata(&repo.value) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                self.problem(
                    subject,
                    &repo.span,
                    format!("repository {path} does not exist"),
                );
            }
            Err(error) => {
                self.problem(
                    subject,
                    &repo.span,
                    format!("cannot access repository {path}: {error}"),
                );
            }
            Ok(_) => {
                // Many mirrors often share a repository: open each one once.
                let opened = self
                    .opened_repos
                    .entry(repo.value.clone())
                    .or_insert_with(|| {
                        git2::Repository::open(&repo.value)
                            .map(drop)
                            .map_err(|e| e.message().to_owned())
                    })
                    .clone();
                if let Err(message) = opened {
                    self.problem(
                        subject,
                        &repo.span,
                        format!("{path} is not a readable git repository: {message}"),
                    );
                }
            }
        }
    }

    /// Reports a password file that is missing, unreadable, or open to group or others
    /// (SPEC.md section 8: such a file is refused).
    fn check_password_file(&mut self, subject: &Subject, file: &Setting<PathBuf>) {
        use std::os::unix::fs::PermissionsExt;
        let path = file.value.display();
        let message = match std::fs::metadata(&file.value) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                format!("password file {path} does not exist")
            }
            Err(error) => format!("cannot read password file {path}: {error}"),
            Ok(meta) if !meta.is_file() => {
                format!("password file {path} is not a regular file")
            }
            Ok(meta) if too_open(meta.permissions().mode()) => format!(
                "refusing {path}: it is readable by group or others (mode {:04o}); \
                 chmod 600 it",
                meta.permissions().mode() & 0o7777
            ),
            Ok(_) => match std::fs::File::open(&file.value) {
                Ok(_) => return,
                Err(error) => format!("cannot read password file {path}: {error}"),
            },
        };
        self.problem(subject, &file.span, message);
    }
}

/// Returns the branch filter of a mirror: its own choice replaces the default's as a whole.
fn branch_filter(own: &Options, defaults: &Options) -> BranchFilter {
    let filter_source = if own.chooses_branch_filter() {
        own
    } else {
        defaults
    };
    let only_protected = own
        .only_protected_branches
        .as_ref()
        .or(filter_source.only_protected_branches.as_ref())
        .is_some_and(|only| only.value);
    let protected_branches = own
        .protected_branches
        .as_ref()
        .or(defaults.protected_branches.as_ref());
    if only_protected {
        match protected_branches {
            Some(list) => BranchFilter::Protected(list.value.clone()),
            None => BranchFilter::DefaultBranch,
        }
    } else {
        match filter_source.mirror_branch_regex.as_ref() {
            Some(regex) => BranchFilter::Regex(regex.value.clone()),
            None => BranchFilter::All,
        }
    }
}

/// Returns true for the filters of `only_protected_branches = true`.
fn only_protected(filter: &BranchFilter) -> bool {
    matches!(
        filter,
        BranchFilter::Protected(_) | BranchFilter::DefaultBranch
    )
}

/// Returns the mirror that `identity`, its branch filter and password source make, with
/// every other option taken from the mirror, else `[defaults]`, else the built-in default.
fn assemble_mirror(
    identity: CheckedIdentity,
    branches: BranchFilter,
    password: PasswordSource,
    ssh: super::SshSettings,
    own: &Options,
    defaults: &Options,
) -> Mirror {
    let username = own
        .username
        .as_ref()
        .or(defaults.username.as_ref())
        .map(|user| user.value.clone())
        // An ssh URL's user is part of the address git is given, not an HTTP user name.
        .or_else(|| {
            identity
                .url
                .user()
                .filter(|_| identity.url.is_http())
                .map(str::to_owned)
        });
    let lfs = lfs_settings(&identity, own, defaults);
    Mirror {
        ssh,
        lfs,
        template: None,
        name: identity.name,
        repo: identity.repo,
        url: identity.url,
        create: identity.create,
        enabled: value_or(&own.enabled, &defaults.enabled, true),
        branches,
        keep_divergent_refs: value_or(
            &own.keep_divergent_refs,
            &defaults.keep_divergent_refs,
            false,
        ),
        prune: value_or(&own.prune, &defaults.prune, Prune::Merged),
        username,
        password,
        delay: value_or(&own.delay, &defaults.delay, DEFAULT_DELAY),
        protected_delay: value_or(
            &own.protected_delay,
            &defaults.protected_delay,
            DEFAULT_PROTECTED_DELAY,
        ),
        retries: value_or(&own.retries, &defaults.retries, DEFAULT_RETRIES),
        timeout: own
            .timeout
            .as_ref()
            .or(defaults.timeout.as_ref())
            .map(|t| t.value),
        refs_per_push: value_or(
            &own.refs_per_push,
            &defaults.refs_per_push,
            DEFAULT_REFS_PER_PUSH,
        ),
        max_push_size: value_or(
            &own.max_push_size,
            &defaults.max_push_size,
            DEFAULT_MAX_PUSH_SIZE,
        ),
        // The mass-change guard.
        max_deletes: value_or(
            &own.max_deletes,
            &defaults.max_deletes,
            DEFAULT_MASS_CHANGE_LIMIT,
        ),
        max_forced: value_or(
            &own.max_forced,
            &defaults.max_forced,
            DEFAULT_MASS_CHANGE_LIMIT,
        ),
    }
}

/// Returns the validated `prune` setting.
fn prune_setting(prune: Spanned<RawPrune>) -> Setting<Prune> {
    let span = prune.span();
    let value = match prune.into_inner() {
        RawPrune::Merged => Prune::Merged,
        RawPrune::All => Prune::All,
        RawPrune::None => Prune::None,
    };
    Setting { value, span }
}

/// Returns the mirror's value, else the default's, else `fallback`.
fn value_or<T: Clone>(own: &Option<Setting<T>>, default: &Option<Setting<T>>, fallback: T) -> T {
    own.as_ref()
        .or(default.as_ref())
        .map_or(fallback, |setting| setting.value.clone())
}

fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by_key(|d| (d.line, d.column));
}

/// Removes from `table`, searching nested tables and arrays, the innermost key whose name or
/// value contains `span`. Returns the removed key's name.
fn remove_entry_at(table: &mut DeTable<'_>, span: &Range<usize>) -> Option<String> {
    let mut hit = None;
    for (key, value) in table.iter_mut() {
        if let Some(inner) = remove_in_value(value.get_mut(), span) {
            return Some(inner);
        }
        if hit.is_none() && (contains(&key.span(), span) || contains(&value.span(), span)) {
            hit = Some(key.get_ref().to_string());
        }
    }
    let name = hit?;
    table.remove(name.as_str());
    Some(name)
}

fn remove_in_value(value: &mut DeValue<'_>, span: &Range<usize>) -> Option<String> {
    match value {
        DeValue::Table(table) => remove_entry_at(table, span),
        DeValue::Array(items) => items
            .iter_mut()
            .find_map(|item| remove_in_value(item.get_mut(), span)),
        _ => None,
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// Returns serde's message about `key` in the configuration's words.
fn describe_serde_error(key: &str, message: &str) -> String {
    // A number of the wrong type or beyond its Rust type is told the key's accepted range.
    let message = match accepted_integers(key) {
        Some(accepted) => message
            .replace("expected usize", &format!("expected {accepted}"))
            .replace("expected u32", &format!("expected {accepted}")),
        None => message.to_owned(),
    };
    let message = tidy_serde_message(&message);
    if message.starts_with("unknown key") {
        return message;
    }
    let hint = if DURATION_KEYS.contains(&key) && message.contains("expected a string") {
        "; durations are strings such as \"30s\", \"5m\", \"1h\""
    } else {
        ""
    };
    format!("`{key}`: {message}{hint}")
}

/// Returns what the numeric `key` accepts, e.g. "an integer from 1 to 1024".
fn accepted_integers(key: &str) -> Option<String> {
    fn from_to<T: Display>(range: &RangeInclusive<T>) -> String {
        format!("an integer from {} to {}", range.start(), range.end())
    }
    match key {
        "max_parallel_pushes" => Some(from_to(&MAX_PARALLEL_PUSHES)),
        "refs_per_push" => Some(from_to(&REFS_PER_PUSH)),
        "max_push_size" => Some(from_to(&MAX_PUSH_SIZE)),
        "max_deletes" | "max_forced" => Some(from_to(&MASS_CHANGE_LIMIT)),
        "retries" => Some(from_to(&RETRIES)),
        _ => None,
    }
}

/// Returns serde's message with Rust's type names replaced by what a TOML writer knows.
fn tidy_serde_message(message: &str) -> String {
    let message = match message.strip_prefix("unknown field ") {
        Some(rest) => format!("unknown key {rest}"),
        None => message.to_owned(),
    };
    message
        .replace("expected usize", "expected a non-negative integer")
        .replace("expected u32", "expected an integer from 0 to 4294967295")
        .replace("expected a sequence", "expected an array")
}

/// Returns the gist of a regex error on one line: syntax errors come as several lines (the
/// regex, a caret under the fault, then `error: ...`).
fn regex_error_summary(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .map_or_else(
            || {
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            },
            str::to_owned,
        )
}

mod lfs;
#[cfg(test)]
mod proptests;
mod ssh;
// Operations: alerts.
mod alerts;
mod templates;

pub(super) use templates::expand_new_repository;

use lfs::lfs_settings;
use ssh::ssh_settings;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Validates `text` as if it were `/base/c.toml` (named `c.toml` in messages).
    fn check(text: &str) -> Result<Config, Vec<String>> {
        check_in(text, Path::new("/base"))
    }

    fn check_in(text: &str, base_dir: &Path) -> Result<Config, Vec<String>> {
        from_source(
            text,
            Path::new("c.toml"),
            &base_dir.join("c.toml"),
            base_dir,
        )
        .map_err(|error| {
            error
                .diagnostics()
                .iter()
                .map(Diagnostic::to_string)
                .collect()
        })
    }

    /// Returns each diagnostic as `check-config` prints it.
    fn texts(diagnostics: &[impl std::fmt::Display]) -> Vec<String> {
        diagnostics.iter().map(ToString::to_string).collect()
    }

    fn valid(text: &str) -> Config {
        match check(text) {
            Ok(config) => config,
            Err(errors) => panic!("expected a valid configuration, got {errors:#?}"),
        }
    }

    /// Returns the diagnostics of an invalid `text`, except the one that every use of
    /// [`MIRROR`] brings (its repository does not exist), to keep expectations short.
    fn errors(text: &str) -> Vec<String> {
        match check(text) {
            Ok(config) => panic!("expected errors, got {config:#?}"),
            Err(errors) => errors
                .into_iter()
                .filter(|e| !e.ends_with("repository /base/repos/app.git does not exist"))
                .collect(),
        }
    }

    const MIRROR: &str = "[[mirror]]\nname = \"app\"\nrepo = \"repos/app.git\"\n\
                          url = \"https://example.com/app.git\"\n";

    #[test]
    fn minimal_mirror_gets_every_default() {
        let config = valid(MIRROR);
        assert_eq!(config.path, Path::new("/base/c.toml"));
        assert_eq!(config.daemon.state_dir, Path::new("/var/lib/pushmirror"));
        assert_eq!(
            config.daemon.socket,
            Path::new("/var/lib/pushmirror/control.sock")
        );
        assert_eq!(config.daemon.socket_group, None);
        assert_eq!(config.daemon.max_parallel_pushes, 4);
        assert_eq!(config.daemon.log_format, LogFormat::Text);
        assert_eq!(config.daemon.git_config, GitConfigPolicy::Isolated);
        let [mirror] = config.mirrors.as_slice() else {
            panic!("one mirror expected: {:?}", config.mirrors);
        };
        assert_eq!(mirror.name.as_str(), "app");
        assert_eq!(mirror.repo, Path::new("/base/repos/app.git"));
        assert_eq!(mirror.url.for_git(), "https://example.com/app.git");
        assert!(mirror.enabled);
        assert!(matches!(mirror.branches, BranchFilter::All));
        assert!(!mirror.keep_divergent_refs);
        assert_eq!(mirror.prune, Prune::Merged);
        assert_eq!(mirror.username, None);
        assert!(matches!(mirror.password, PasswordSource::None));
        assert_eq!(mirror.delay, Duration::from_secs(300));
        assert_eq!(mirror.protected_delay, Duration::from_secs(60));
        assert_eq!(mirror.window(), Duration::from_secs(300));
        assert_eq!(mirror.retries, 3);
        assert_eq!(mirror.timeout, None);
        assert_eq!(mirror.refs_per_push, 100_000);
        assert_eq!((mirror.max_deletes, mirror.max_forced), (100, 100));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        // The repository does not exist: a problem of that mirror, not an error of the file.
        assert_eq!(
            texts(&config.mirror_problems),
            ["c.toml:3:8: mirror `app`: repository /base/repos/app.git does not exist"]
        );
    }

    #[test]
    fn daemon_table_and_relative_paths() {
        let config = valid(
            "[daemon]\nstate_dir = \"./state\"\nsocket_group = \"git\"\n\
             max_parallel_pushes = 16\nlog_format = \"json\"\ngit_config = \"inherit\"\n",
        );
        assert_eq!(config.daemon.state_dir, Path::new("/base/state"));
        assert_eq!(config.daemon.socket, Path::new("/base/state/control.sock"));
        assert_eq!(config.daemon.socket_group.as_deref(), Some("git"));
        assert_eq!(config.daemon.max_parallel_pushes, 16);
        assert_eq!(config.daemon.log_format, LogFormat::Json);
        assert_eq!(config.daemon.git_config, GitConfigPolicy::Inherit);
        assert_eq!(config.daemon.metrics_listen, None);
        let config =
            valid("[daemon]\nsocket = \"/run/pm.sock\"\nmetrics_listen = \"[::1]:9479\"\n");
        assert_eq!(config.daemon.socket, Path::new("/run/pm.sock"));
        assert_eq!(
            config.daemon.metrics_listen,
            Some("[::1]:9479".parse().expect("an address"))
        );
        assert!(config.mirrors.is_empty());
    }

    /// The mass-change guard: `[defaults]`, overridden per mirror, 0 = no limit.
    #[test]
    fn mass_change_limits_default_and_override() {
        let config = valid(&format!(
            "[defaults]\nmax_deletes = 5\nmax_forced = 0\n\n{MIRROR}\
             [[mirror]]\nname = \"other\"\nrepo = \"/srv/other.git\"\n\
             url = \"https://example.com/other.git\"\nmax_deletes = 0\nmax_forced = 7\n"
        ));
        let [app, other] = config.mirrors.as_slice() else {
            panic!("two mirrors expected");
        };
        assert_eq!((app.max_deletes, app.max_forced), (5, 0));
        assert_eq!((other.max_deletes, other.max_forced), (0, 7));
    }

    #[test]
    fn defaults_apply_and_mirror_values_override_them() {
        let config = valid(&format!(
            "[defaults]\ndelay = \"10m\"\nprotected_delay = \"30s\"\nretries = 5\n\
             timeout = \"2h\"\nprune = \"none\"\nkeep_divergent_refs = true\n\
             refs_per_push = 100\nenabled = false\nusername = \"bot\"\n\n{MIRROR}\
             [[mirror]]\nname = \"other\"\nrepo = \"/srv/other.git\"\n\
             url = \"https://example.com/other.git\"\ndelay = \"1h30m\"\nretries = 0\n\
             prune = \"all\"\nenabled = true\nusername = \"me\"\ntimeout = \"90s\"\n"
        ));
        let [app, other] = config.mirrors.as_slice() else {
            panic!("two mirrors expected");
        };
        assert_eq!(app.delay, Duration::from_secs(600));
        assert_eq!(app.protected_delay, Duration::from_secs(30));
        assert_eq!(app.retries, 5);
        assert_eq!(app.timeout, Some(Duration::from_secs(7200)));
        assert_eq!(app.timeout_for(true), Duration::from_secs(7200));
        assert_eq!(app.prune, Prune::None);
        assert!(app.keep_divergent_refs);
        assert_eq!(app.refs_per_push, 100);
        assert!(!app.enabled);
        assert_eq!(app.username.as_deref(), Some("bot"));
        assert_eq!(other.delay, Duration::from_secs(5400));
        assert_eq!(other.retries, 0);
        assert_eq!(other.prune, Prune::All);
        assert!(other.enabled);
        assert_eq!(other.username.as_deref(), Some("me"));
        assert_eq!(other.timeout, Some(Duration::from_secs(90)));
        assert_eq!(other.repo, Path::new("/srv/other.git"));
    }

    #[test]
    fn branch_filters() {
        let filter = |options: &str| {
            let config = valid(&format!("{MIRROR}{options}"));
            config.mirrors[0].branches.clone()
        };
        assert!(matches!(filter(""), BranchFilter::All));
        assert!(matches!(
            filter("only_protected_branches = false\n"),
            BranchFilter::All
        ));
        assert!(matches!(
            filter("only_protected_branches = true\n"),
            BranchFilter::DefaultBranch
        ));
        match filter(
            "only_protected_branches = true\nprotected_branches = [\"main\", \"release/*\"]\n",
        ) {
            BranchFilter::Protected(patterns) => {
                let names: Vec<&str> = patterns.iter().map(BranchPattern::as_str).collect();
                assert_eq!(names, ["main", "release/*"]);
            }
            other => panic!("expected a protected list, got {other:?}"),
        }
        match filter("only_protected_branches = true\nprotected_branches = []\n") {
            BranchFilter::Protected(patterns) => assert!(patterns.is_empty()),
            other => panic!("expected an empty protected list, got {other:?}"),
        }
        match filter("mirror_branch_regex = \"^(main|feature/.*)$\"\n") {
            BranchFilter::Regex(regex) => {
                assert!(regex.is_match("feature/x"));
                assert!(!regex.is_match("fix/x"));
            }
            other => panic!("expected a regex, got {other:?}"),
        }
        let config = valid(&format!("{MIRROR}only_protected_branches = true\n"));
        assert_eq!(config.mirrors[0].window(), Duration::from_secs(60));
    }

    #[test]
    fn a_mirror_branch_filter_replaces_the_default_one() {
        let config = valid(&format!(
            "[defaults]\nonly_protected_branches = true\nprotected_branches = [\"main\"]\n\
             {MIRROR}\
             [[mirror]]\nname = \"regex\"\nrepo = \"/r.git\"\nurl = \"/m.git\"\n\
             mirror_branch_regex = \"^x$\"\n\
             [[mirror]]\nname = \"all\"\nrepo = \"/r.git\"\nurl = \"/m.git\"\n\
             only_protected_branches = false\n"
        ));
        assert!(matches!(
            config.mirrors[0].branches,
            BranchFilter::Protected(_)
        ));
        assert!(matches!(config.mirrors[1].branches, BranchFilter::Regex(_)));
        assert!(matches!(config.mirrors[2].branches, BranchFilter::All));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn protected_branches_without_only_protected_is_a_warning() {
        let config = valid(&format!("{MIRROR}protected_branches = [\"main\"]\n"));
        assert!(matches!(config.mirrors[0].branches, BranchFilter::All));
        assert_eq!(
            texts(&config.warnings),
            [
                "c.toml:5:22: `protected_branches` of mirror `app` has no effect without \
              `only_protected_branches = true`"
            ]
        );
        let config = valid(&format!(
            "[defaults]\nprotected_branches = [\"main\"]\n{MIRROR}"
        ));
        assert_eq!(
            texts(&config.warnings),
            [
                "c.toml:2:22: `protected_branches` in [defaults] has no effect: no mirror sets \
              `only_protected_branches = true`"
            ]
        );
    }

    #[test]
    fn unknown_keys_everywhere_are_all_reported_with_the_allowed_ones() {
        let found = errors(&format!(
            "colour = 1\n[daemon]\nstate = \"x\"\n[defaults]\ndelays = \"5m\"\n{MIRROR}\
             branch = \"main\"\n[mirror.extra]\nx = 1\n"
        ));
        assert_eq!(
            found,
            [
                "c.toml:1:1: unknown key `colour`, expected one of `daemon`, `defaults`, \
                 `mirror`, `mirror_template`, `alerts`",
                "c.toml:3:1: unknown key `state`, expected one of `state_dir`, `socket`, \
                 `socket_group`, `max_parallel_pushes`, `log_format`, `git_config`, `silent`, \
                 `metrics_listen`",
                "c.toml:5:1: unknown key `delays`, expected one of `enabled`, \
                 `only_protected_branches`, `protected_branches`, `mirror_branch_regex`, \
                 `keep_divergent_refs`, `prune`, `username`, `password_file`, \
                 `password_env`, `delay`, `protected_delay`, `retries`, `timeout`, \
                 `refs_per_push`, `ssh_key`, `ssh_known_hosts`, `max_push_size`, \
                 `max_deletes`, `max_forced`, `lfs`, `lfs_url`, `lfs_objects`",
                "c.toml:10:1: unknown key `branch`, expected one of `name`, `repo`, `url`, \
                 `create`, `enabled`, `only_protected_branches`, `protected_branches`, \
                 `mirror_branch_regex`, `keep_divergent_refs`, `prune`, `username`, \
                 `password_file`, `password_env`, `delay`, `protected_delay`, `retries`, \
                 `timeout`, `refs_per_push`, `ssh_key`, `ssh_known_hosts`, `max_push_size`, \
                 `max_deletes`, `max_forced`, `lfs`, `lfs_url`, `lfs_objects`",
                "c.toml:11:9: unknown key `extra`, expected one of `name`, `repo`, `url`, \
                 `create`, `enabled`, `only_protected_branches`, `protected_branches`, \
                 `mirror_branch_regex`, `keep_divergent_refs`, `prune`, `username`, \
                 `password_file`, `password_env`, `delay`, `protected_delay`, `retries`, \
                 `timeout`, `refs_per_push`, `ssh_key`, `ssh_known_hosts`, `max_push_size`, \
                 `max_deletes`, `max_forced`, `lfs`, `lfs_url`, `lfs_objects`",
            ]
        );
    }

    #[test]
    fn wrong_types_are_all_reported() {
        let found = errors(&format!(
            "[daemon]\nmax_parallel_pushes = \"4\"\nlog_format = \"xml\"\n\
             [defaults]\ndelay = 300\nretries = -1\n{MIRROR}enabled = \"yes\"\n\
             protected_branches = [\"main\", 2]\nprune = \"some\"\n"
        ));
        assert_eq!(
            found,
            [
                "c.toml:2:23: `max_parallel_pushes`: invalid type: string \"4\", expected \
                 an integer from 1 to 1024",
                "c.toml:3:14: `log_format`: unknown variant `xml`, expected `text` or `json`",
                "c.toml:5:9: `delay`: invalid type: integer `300`, expected a string; \
                 durations are strings such as \"30s\", \"5m\", \"1h\"",
                "c.toml:6:11: `retries`: invalid value: integer `-1`, expected an integer \
                 from 0 to 100",
                "c.toml:11:11: `enabled`: invalid type: string \"yes\", expected a boolean",
                "c.toml:12:31: `protected_branches`: invalid type: integer `2`, expected a \
                 string",
                "c.toml:13:9: `prune`: unknown variant `some`, expected one of `merged`, \
                 `all`, `none`",
            ]
        );
    }

    #[test]
    fn tables_of_the_wrong_type() {
        assert_eq!(
            errors("daemon = 3\nmirror = \"x\"\n"),
            [
                "c.toml:1:10: `daemon`: invalid type: integer `3`, expected a table",
                "c.toml:2:10: `mirror`: invalid type: string \"x\", expected an array",
            ]
        );
    }

    #[test]
    fn bad_values_are_all_reported() {
        let found = errors(&format!(
            "[daemon]\nmax_parallel_pushes = 0\nstate_dir = \"\"\n[defaults]\n\
             delay = \"5\"\nprotected_delay = \"1x\"\ntimeout = \"0s\"\n{MIRROR}\
             refs_per_push = 0\nmirror_branch_regex = \"(unclosed\"\ndelay = \"\"\n\
             password_env = \"A=B\"\n"
        ));
        assert_eq!(
            found,
            [
                "c.toml:2:23: `max_parallel_pushes` must be from 1 to 1024, not 0",
                "c.toml:3:13: `state_dir` is empty",
                "c.toml:5:9: `delay`: invalid duration \"5\": missing unit after 5: use s, \
                 m, h or d; write e.g. \"30s\", \"5m\", \"1h30m\"",
                "c.toml:6:19: `protected_delay`: invalid duration \"1x\": unknown unit \"x\": \
                 use s, m, h or d; write e.g. \"30s\", \"5m\", \"1h30m\"",
                "c.toml:7:11: `timeout` must be from 1s to 7d, not \"0s\" (leave it out for \
                 the default: 1h, 3h for a first sync)",
                "c.toml:12:17: `refs_per_push` must be from 1 to 1000000, not 0",
                "c.toml:13:23: `mirror_branch_regex` is not a valid regex: unclosed group",
                "c.toml:14:9: `delay`: invalid duration \"\": empty duration; write e.g. \
                 \"30s\", \"5m\", \"1h30m\"",
                "c.toml:15:16: `password_env`: \"A=B\" is not an environment variable name",
            ]
        );
    }

    #[test]
    fn numbers_and_durations_past_their_range_are_reported_with_it() {
        let found = errors(&format!(
            "[daemon]\nmax_parallel_pushes = 1025\n[defaults]\ndelay = \"100000000000h\"\n\
             protected_delay = \"7d1s\"\ntimeout = \"8d\"\nretries = 101\n{MIRROR}\
             refs_per_push = 1000001\ntimeout = \"18446744073709551615s\"\n"
        ));
        assert_eq!(
            found,
            [
                "c.toml:2:23: `max_parallel_pushes` must be from 1 to 1024, not 1025",
                "c.toml:4:9: `delay` must be from 0s to 7d, not \"100000000000h\"",
                "c.toml:5:19: `protected_delay` must be from 0s to 7d, not \"7d1s\"",
                "c.toml:6:11: `timeout` must be from 1s to 7d, not \"8d\" (leave it out for \
                 the default: 1h, 3h for a first sync)",
                "c.toml:7:11: `retries` must be from 0 to 100, not 101",
                "c.toml:12:17: `refs_per_push` must be from 1 to 1000000, not 1000001",
                "c.toml:13:11: `timeout` must be from 1s to 7d, not \"18446744073709551615s\" \
                 (leave it out for the default: 1h, 3h for a first sync)",
            ]
        );
    }

    #[test]
    fn the_ends_of_every_range_are_accepted() {
        let config = valid(&format!(
            "[daemon]\nmax_parallel_pushes = 1024\n[defaults]\ndelay = \"7d\"\n\
             protected_delay = \"168h\"\ntimeout = \"604800s\"\nretries = 100\n\
             refs_per_push = 1_000_000\n{MIRROR}\
             [[mirror]]\nname = \"low\"\nrepo = \"/r.git\"\nurl = \"/m.git\"\n\
             delay = \"0s\"\nprotected_delay = \"0s\"\ntimeout = \"1s\"\nretries = 0\n\
             refs_per_push = 1\n"
        ));
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(config.daemon.max_parallel_pushes, 1024);
        let [high, low] = config.mirrors.as_slice() else {
            panic!("two mirrors expected");
        };
        assert_eq!(
            (high.delay, high.protected_delay, high.timeout),
            (week, week, Some(week))
        );
        assert_eq!((high.retries, high.refs_per_push), (100, 1_000_000));
        assert_eq!(
            (low.delay, low.protected_delay, low.timeout),
            (Duration::ZERO, Duration::ZERO, Some(Duration::from_secs(1)))
        );
        assert_eq!((low.retries, low.refs_per_push), (0, 1));
    }

    #[test]
    fn mirror_names_must_be_valid_and_unique() {
        let found = errors(
            "[[mirror]]\nname = \"a b\"\nrepo = \"/r.git\"\nurl = \"/m.git\"\n\
             [[mirror]]\nname = \"app\"\nrepo = \"/r.git\"\nurl = \"/m.git\"\n\
             [[mirror]]\nname = \"..\"\nrepo = \"/r.git\"\nurl = \"/m.git\"\n\
             [[mirror]]\nname = \"app\"\nrepo = \"/r.git\"\nurl = \"/m.git\"\n",
        );
        let expected: Vec<String> = [
            "c.toml:2:8: invalid mirror name \"a b\": use 1 to 128 of the characters A-Z a-z \
             0-9 . _ - (and not \".\" or \"..\")",
            "c.toml:3:8: mirror: repository /r.git does not exist",
            "c.toml:7:8: mirror `app`: repository /r.git does not exist",
            "c.toml:10:8: invalid mirror name \"..\": use 1 to 128 of the characters A-Z a-z \
             0-9 . _ - (and not \".\" or \"..\")",
            "c.toml:11:8: mirror: repository /r.git does not exist",
            "c.toml:14:8: duplicate mirror name \"app\": already used by the mirror at line 6",
            "c.toml:15:8: mirror: repository /r.git does not exist",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn required_keys_and_empty_url() {
        assert_eq!(
            errors("[[mirror]]\n\n[[mirror]]\nname = \"x\"\nrepo = \"/\"\nurl = \" \"\n"),
            [
                "c.toml:1:1: missing required key `name` in [[mirror]]",
                "c.toml:1:1: missing required key `repo` in [[mirror]]",
                "c.toml:1:1: missing required key `url` in [[mirror]]",
                "c.toml:5:8: mirror `x`: / is not a readable git repository: could not find \
                 repository at '/'",
                "c.toml:6:7: `url` is empty",
            ]
        );
    }

    #[test]
    fn exclusive_keys() {
        let found = errors(&format!(
            "[defaults]\npassword_file = \"/t\"\npassword_env = \"T\"\n{MIRROR}\
             only_protected_branches = true\nmirror_branch_regex = \"x\"\n"
        ));
        assert_eq!(
            found,
            [
                // Checked once for all the mirrors that use it.
                "c.toml:2:17: mirror `app`: password file /t does not exist",
                "c.toml:3:16: `password_file` and `password_env` cannot both be set in \
                 [defaults] (the other is at line 2): choose one",
                "c.toml:9:23: `only_protected_branches = true` and `mirror_branch_regex` \
                 cannot both be set (the other is at line 8): choose one",
            ]
        );
    }

    #[test]
    fn password_in_url_excludes_password_keys() {
        let found = errors(
            "[[mirror]]\nname = \"app\"\nrepo = \"/r.git\"\n\
             url = \"https://u:p@example.com/app.git\"\npassword_env = \"TOKEN\"\n",
        );
        assert_eq!(
            found,
            [
                "c.toml:3:8: mirror `app`: repository /r.git does not exist",
                "c.toml:5:16: `password_env` cannot be used with a password embedded in \
                 `url`: keep only one (preferably `password_env`)",
            ]
        );
    }

    #[test]
    fn url_credentials_are_a_warning_that_never_shows_the_secret() {
        let config = valid(
            "[defaults]\npassword_env = \"DEFAULT_TOKEN\"\n\
             [[mirror]]\nname = \"app\"\nrepo = \"/r.git\"\n\
             url = \"https://bot:hunter22@example.com/app.git\"\n",
        );
        let mirror = &config.mirrors[0];
        // The URL's password replaces the default's password source.
        assert!(matches!(mirror.password, PasswordSource::Url));
        assert_eq!(mirror.username.as_deref(), Some("bot"));
        assert_eq!(
            texts(&config.warnings),
            ["c.toml:6:7: the url of mirror `app` embeds credentials \
              (https://*****:*****@example.com/app.git): move the password to \
              `password_file` (mode 600) and the user to `username`"]
        );
        assert!(!format!("{config:?}").contains("hunter22"));
    }

    #[test]
    fn password_sources() {
        let config = valid(
            "[defaults]\npassword_env = \"DEFAULT_TOKEN\"\n\
             [[mirror]]\nname = \"a\"\nrepo = \"/r.git\"\nurl = \"https://h/a.git\"\n\
             [[mirror]]\nname = \"b\"\nrepo = \"/r.git\"\nurl = \"https://h/b.git\"\n\
             password_file = \"secrets/b.token\"\n",
        );
        assert!(matches!(
            &config.mirrors[0].password,
            PasswordSource::Env(name) if name == "DEFAULT_TOKEN"
        ));
        assert!(matches!(
            &config.mirrors[1].password,
            PasswordSource::File(path) if path == Path::new("/base/secrets/b.token")
        ));
        assert!(
            texts(&config.mirror_problems).contains(
                &"c.toml:11:17: mirror `b`: password file /base/secrets/b.token does not exist"
                    .to_owned()
            ),
            "{:?}",
            config.mirror_problems
        );
    }

    #[test]
    fn mirror_problems_name_their_mirror() {
        let config = valid(
            "[[mirror]]\nname = \"a\"\nrepo = \"/r.git\"\nurl = \"https://h/a.git\"\n\
             [[mirror]]\nname = \"b\"\nrepo = \"/r.git\"\nurl = \"ftp://h/b.git\"\n",
        );
        let named: Vec<(&str, usize)> = config
            .mirror_problems
            .iter()
            .map(|problem| (problem.mirror.as_str(), problem.diagnostic.line))
            .collect();
        assert_eq!(named, [("a", 3), ("b", 7), ("b", 8)]);
    }

    #[test]
    fn ssh_mirrors_need_pinned_host_keys_and_a_private_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        git2::Repository::init_bare(dir.path().join("app.git")).expect("init bare repo");
        let key = "AAAAC3NzaC1lZDI1NTE5AAAAIIVIC02vnjFyL+I4RHfvIGNtOgJMe769VTF1VR4EB3ZB";
        let text = format!(
            "[daemon]\nstate_dir = \"state\"\n\
             [[mirror]]\nname = \"bare\"\nrepo = \"app.git\"\nurl = \"git@h.example:a/b.git\"\n\
             [[mirror]]\nname = \"pinned\"\nrepo = \"app.git\"\n\
             url = \"ssh://git@h.example:2222/a/b.git\"\nssh_key = \"keys/pinned\"\n\
             ssh_known_hosts = [\"[h.example]:2222 ssh-ed25519 {key}\"]\n\
             [[mirror]]\nname = \"wrong-port\"\nrepo = \"app.git\"\n\
             url = \"ssh://git@h.example:2222/a/b.git\"\n\
             ssh_known_hosts = [\"h.example ssh-ed25519 {key}\"]\n"
        );
        let config = check_in(&text, dir.path()).expect("valid file");
        let base = dir.path().display();
        assert_eq!(
            texts(&config.mirror_problems),
            [
                "c.toml:6:7: mirror `bare`: an SSH remote needs pinned host keys: set \
                 `ssh_known_hosts` to the host's known_hosts lines, after comparing their \
                 fingerprints with the ones the host publishes (`pushmirror detect-host-keys \
                 git@h.example:a/b.git` prints both)"
                    .to_owned(),
                format!(
                    "c.toml:6:7: mirror `bare`: ssh key {base}/state/keys/bare does not exist: \
                     `pushmirror ssh-keygen bare` makes one"
                ),
                format!(
                    "c.toml:11:11: mirror `pinned`: ssh key {base}/keys/pinned does not exist: \
                     `pushmirror ssh-keygen pinned` makes one"
                ),
                format!(
                    "c.toml:16:7: mirror `wrong-port`: ssh key {base}/state/keys/wrong-port \
                     does not exist: `pushmirror ssh-keygen wrong-port` makes one"
                ),
            ]
        );
        assert_eq!(
            texts(&config.warnings),
            [
                "c.toml:17:19: no `ssh_known_hosts` line of mirror `wrong-port` names \
              `[h.example]:2222`, the host its url connects to: ssh will not find the host's \
              key there"
            ]
        );
        let pinned = config.mirror("pinned").expect("pinned");
        assert_eq!(pinned.ssh.key, dir.path().join("keys/pinned"));
        assert_eq!(
            pinned.ssh.known_hosts_file,
            dir.path().join("state/ssh/pinned.known_hosts")
        );
        assert_eq!(
            pinned.ssh.known_hosts,
            [format!("[h.example]:2222 ssh-ed25519 {key}")]
        );
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).expect("mkdir");
        std::fs::write(keys.join("pinned"), "k").expect("write");
        std::fs::set_permissions(keys.join("pinned"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let config = check_in(&text, dir.path()).expect("valid file");
        assert!(
            texts(&config.mirror_problems).contains(&format!(
                "c.toml:11:11: mirror `pinned`: refusing ssh key {base}/keys/pinned: it is \
                 readable by group or others (mode 0644); chmod 600 it"
            )),
            "{:?}",
            config.mirror_problems
        );
        let found = errors(
            "[[mirror]]\nname = \"m\"\nrepo = \"/r.git\"\nurl = \"h:x\"\n\
             ssh_known_hosts = [\"h ssh-ed25519\"]\n",
        );
        assert_eq!(
            found.last().map(String::as_str),
            Some(
                "c.toml:5:20: not a known_hosts line: expected `host key-type base64-key` (for a \
              port other than 22, `[host]:port key-type base64-key`), as `pushmirror \
              detect-host-keys URL` prints it"
            )
        );
    }

    #[test]
    fn unsupported_scheme_is_a_mirror_problem() {
        let config =
            valid("[[mirror]]\nname = \"app\"\nrepo = \"/r.git\"\nurl = \"ftp://h/app.git\"\n");
        assert_eq!(
            texts(&config.mirror_problems),
            [
                "c.toml:3:8: mirror `app`: repository /r.git does not exist",
                "c.toml:4:7: mirror `app`: unsupported URL scheme 'ftp' in ftp://h/app.git: \
                 expected https, http, ssh, git or file",
            ]
        );
    }

    #[test]
    fn real_repository_and_password_file_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        git2::Repository::init_bare(dir.path().join("app.git")).expect("init bare repo");
        std::fs::create_dir(dir.path().join("plain")).expect("mkdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "secret\n").expect("write token");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let text = "[[mirror]]\nname = \"app\"\nrepo = \"app.git\"\n\
                    url = \"https://h/app.git\"\npassword_file = \"token\"\n\
                    [[mirror]]\nname = \"plain\"\nrepo = \"plain\"\nurl = \"https://h/p.git\"\n";
        let config = check_in(text, dir.path()).expect("valid file");
        let base = dir.path().display();
        assert_eq!(
            texts(&config.mirror_problems),
            [
                format!(
                    "c.toml:5:17: mirror `app`: refusing {base}/token: it is readable by \
                     group or others (mode 0644); chmod 600 it"
                ),
                format!(
                    "c.toml:8:8: mirror `plain`: {base}/plain is not a readable git \
                     repository: could not find repository at '{base}/plain'"
                ),
            ]
        );
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let config = check_in(text, dir.path()).expect("valid file");
        assert_eq!(
            config.mirror_problems.len(),
            1,
            "{:?}",
            config.mirror_problems
        );
        assert_eq!(config.mirrors[0].repo, dir.path().join("app.git"));
    }

    #[test]
    fn a_syntax_error_is_reported_alone() {
        assert_eq!(
            errors("[daemon]\nmax_parallel_pushes = 0\nbad key\n"),
            ["c.toml:3:5: invalid TOML: key with no value, expected `=`"]
        );
    }

    #[test]
    fn socket_path_length_is_checked() {
        let long = "x".repeat(120);
        assert_eq!(
            errors(&format!("[daemon]\nstate_dir = \"/{long}\"\n")),
            [format!(
                "c.toml:2:13: the control socket path /{long}/control.sock is 134 bytes long; \
                 Unix sockets allow at most 107: set a shorter `socket`"
            )]
        );
    }

    #[test]
    fn load_reports_a_missing_file_and_resolves_against_the_file_directory() {
        let missing = Path::new("/nonexistent/dir/pm.toml");
        match load(missing) {
            Err(ConfigError::Io { path, source }) => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pm.toml");
        std::fs::write(&path, "[daemon]\nstate_dir = \"state\"\n").expect("write");
        let config = load(&path).expect("valid");
        assert_eq!(config.path, path);
        assert_eq!(config.daemon.state_dir, dir.path().join("state"));
        std::fs::write(&path, b"# caf\xc3\xa9\n\xff\n").expect("write");
        assert_eq!(
            load(&path).expect_err("invalid utf-8").to_string(),
            format!("{}:2:1: the file is not valid UTF-8", path.display())
        );
    }
}
