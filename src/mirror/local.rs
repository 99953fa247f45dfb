//! The local side of an update, read with libgit2: refs, the default branch, ancestry.
//!
//! libgit2 blocks, and a `Repository` is `Send` but not `Sync`, so callers open a
//! [`LocalRepo`] inside `spawn_blocking` and keep it there. Nothing here touches the network
//! (git2 is built without its transports).

use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository};

use crate::mirror::refdiff::{History, LocalRefs};

mod files;

/// Why the local repository could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("local repository {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot open local repository {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("cannot read the refs of local repository {path}")]
    Refs {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
}

/// An open local repository.
pub struct LocalRepo {
    repo: Repository,
    path: PathBuf,
}

impl LocalRepo {
    /// Opens the repository at `path` (bare or not, no discovery upwards).
    pub fn open(path: &Path) -> Result<LocalRepo, LocalError> {
        if !path.exists() {
            return Err(LocalError::Missing {
                path: path.to_owned(),
            });
        }
        let flags = git2::RepositoryOpenFlags::NO_SEARCH;
        let repo = Repository::open_ext(path, flags, std::iter::empty::<&std::ffi::OsStr>())
            .map_err(|source| LocalError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(LocalRepo {
            repo,
            path: path.to_owned(),
        })
    }

    /// Returns the branches and tags (symbolic refs left out) and the default branch.
    pub fn refs(&self) -> Result<LocalRefs, LocalError> {
        let refs_error = |source| LocalError::Refs {
            path: self.path.clone(),
            source,
        };
        let refs = match files::branches_and_tags(self.repo.commondir()) {
            Some(refs) => refs,
            None => self.refs_by_libgit2().map_err(refs_error)?,
        };
        let default_branch = self
            .repo
            .find_reference("HEAD")
            .ok()
            .and_then(|head| head.symbolic_target().ok().flatten().map(str::to_owned))
            .filter(|target| target.starts_with("refs/heads/"));
        Ok(LocalRefs {
            // Built at once from the collected pairs (sorted first), without comparing
            // names at each insertion.
            refs: refs.into_iter().collect(),
            default_branch,
        })
    }

    /// Returns the branches and tags as libgit2's iterator lists them: any ref storage it
    /// reads, at some 1 µs a ref more than [`files::branches_and_tags`].
    fn refs_by_libgit2(&self) -> Result<Vec<(String, Oid)>, git2::Error> {
        let mut refs = Vec::new();
        for reference in self.repo.references()? {
            let reference = reference?;
            let Some(target) = reference.target() else {
                continue; // symbolic
            };
            let Ok(name) = std::str::from_utf8(reference.name_bytes()) else {
                continue; // git refuses to push such names anyway
            };
            if name.starts_with("refs/heads/") || name.starts_with("refs/tags/") {
                refs.push((name.to_owned(), target));
            }
        }
        Ok(refs)
    }

    /// Reads one object of `refs`, so that the object database (its pack indexes) is open
    /// before the plan asks its first ancestry question: called beside `git ls-remote`.
    pub fn warm_up(&self, refs: &LocalRefs) {
        if let Some(&oid) = refs.refs.values().next() {
            let _ = self.repo.find_object(oid, None);
        }
    }

    fn peel_to_commit(&self, oid: Oid) -> Option<Oid> {
        let object = self.repo.find_object(oid, None).ok()?;
        let commit = object.peel(ObjectType::Commit).ok()?;
        Some(commit.id())
    }
}

impl History for LocalRepo {
    fn is_ancestor(&self, ancestor: Oid, descendant: Oid) -> bool {
        let (Some(ancestor), Some(descendant)) = (
            self.peel_to_commit(ancestor),
            self.peel_to_commit(descendant),
        ) else {
            return false;
        };
        ancestor == descendant
            || self
                .repo
                .graph_descendant_of(descendant, ancestor)
                .unwrap_or(false)
    }
}
