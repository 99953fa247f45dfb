//! Fleet: the daemon's side of `[[mirror_template]]` (SPEC.md section 3). A notification, or
//! a spooled one, for a repository that no mirror names is matched against the templates;
//! a match gives the running daemon that repository's mirrors, validated as a load would
//! validate them, without a reload. They then live like any other mirror: in the
//! configuration in force (so `status` lists them and a reload keeps their schedule), with
//! their state and queue entries under their names, and the next load finds the repository
//! on disk and makes the same mirrors again. A reload that no longer finds a templated
//! mirror's repository drops the mirror and says why.

use std::path::Path;
use std::sync::Arc;

use tracing::{info, warn};

use super::Daemon;
use super::mirrors::Tracked;
use crate::config::Config;
use crate::paths::canonical;

impl Daemon {
    /// Gives `repo` the mirrors that the templates make for it, if no mirror names it yet.
    /// Runs on the loop: only a repository that a glob takes costs more than a lookup, and
    /// then one validation of one repository, once (afterwards the repository is known).
    pub(super) fn adopt_new_repository(&mut self, repo: &Path) {
        if self.config.templates.is_empty() {
            return;
        }
        let repo = canonical(repo);
        if self.by_repo.contains_key(&repo) || !self.config.templates.might_take(&repo) {
            return;
        }
        let made = match self.config.expand_new_repository(&repo) {
            Ok(made) => made,
            Err(diagnostics) => {
                for diagnostic in &diagnostics {
                    warn!(
                        repo = %repo.display(),
                        error = %diagnostic,
                        "new repository not mirrored: its template does not expand"
                    );
                }
                return;
            }
        };
        if made.mirrors.is_empty() {
            return;
        }
        for problem in &made.problems {
            warn!(mirror = %problem.mirror, problem = %problem, "new templated mirror cannot update");
        }
        let mut config: Config = (*self.config).clone();
        config.mirrors.extend(made.mirrors.iter().cloned());
        config.mirror_problems.extend(made.problems);
        self.config = Arc::new(config);
        let names: Vec<String> = made.mirrors.iter().map(|m| m.name.to_string()).collect();
        for mirror in made.mirrors {
            let mirror = Arc::new(mirror);
            self.by_repo
                .entry(canonical(&mirror.repo))
                .or_default()
                .push(mirror.name.clone());
            self.mirrors
                .insert(mirror.name.clone(), Tracked::new(mirror));
        }
        info!(
            repo = %repo.display(),
            mirrors = %names.join(", "),
            "new repository: mirrors made from [[mirror_template]]"
        );
    }

    /// Logs each templated mirror that `config`, about to be installed, drops because its
    /// repository is gone from disk.
    pub(super) fn log_deleted_repositories(&self, config: &Config) {
        for (name, tracked) in &self.mirrors {
            let Some(origin) = &tracked.mirror.template else {
                continue;
            };
            if config.mirror(name.as_str()).is_none() && !tracked.mirror.repo.exists() {
                info!(
                    mirror = %name,
                    repo = %tracked.mirror.repo.display(),
                    template_line = origin.line,
                    "repository deleted: its templated mirror is dropped"
                );
            }
        }
    }
}
