//! Which LFS objects a push needs: the pointers reachable from the refs about to be created
//! or updated and not from what the remote already has.
//!
//! `git rev-list --objects <new tips> --not <remote tips>` done with libgit2: a revwalk from
//! the new tips hiding the remote's tips that exist locally gives the new commits; the trees
//! of the commits at the boundary (parents of new commits that are not new themselves) are
//! marked as seen first, then the trees of the new commits are walked once each, with one set
//! of visited trees and blobs for the whole scan. That is what makes a first sync of a long
//! history cost one pass over its distinct trees instead of a diff per commit (measured in the
//! reference notes: 1.6 s against 42 s for 16,000 commits). Blobs of 1024 bytes or more are
//! skipped by their header, without being read.
//!
//! Runs on a blocking thread; the `cancel` flag is checked at every commit and tree, so a
//! cancelled or timed-out update stops the walk promptly.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use git2::{ObjectType, Oid, Repository};

use super::pointer::{self, MAX_POINTER_SIZE, Pointer};

/// Why the scan stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot read the local repository {path} for LFS pointers")]
    Git {
        path: std::path::PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("the LFS scan was cancelled")]
    Cancelled,
}

/// The pointers found, each with the blob ids that hold it (for [`refs_needing`]).
#[derive(Debug, Default)]
pub struct Found {
    pub pointers: BTreeMap<Pointer, BTreeSet<Oid>>,
}

/// A walk over the new objects of some tips, sharing its visited set across tips.
struct Walk<'r> {
    repo: &'r Repository,
    odb: git2::Odb<'r>,
    cancel: &'r AtomicBool,
    seen_trees: HashSet<Oid>,
    seen_blobs: HashSet<Oid>,
}

impl<'r> Walk<'r> {
    fn check(&self) -> Result<(), git2::Error> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(git2::Error::from_str("cancelled"));
        }
        Ok(())
    }

    /// Marks every tree and blob under `tree` as seen, without reading blobs.
    fn mark_seen(&mut self, tree: Oid) -> Result<(), git2::Error> {
        let mut stack = vec![tree];
        while let Some(id) = stack.pop() {
            if !self.seen_trees.insert(id) {
                continue;
            }
            self.check()?;
            let tree = self.repo.find_tree(id)?;
            for entry in tree.iter() {
                match entry.kind() {
                    Some(ObjectType::Tree) => stack.push(entry.id()),
                    Some(ObjectType::Blob) => {
                        self.seen_blobs.insert(entry.id());
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Visits every tree and blob under `tree` not seen yet, calling `blob` for each new blob.
    fn visit(
        &mut self,
        tree: Oid,
        blob: &mut dyn FnMut(&mut Self, Oid) -> Result<(), git2::Error>,
    ) -> Result<(), git2::Error> {
        let mut stack = vec![tree];
        while let Some(id) = stack.pop() {
            if !self.seen_trees.insert(id) {
                continue;
            }
            self.check()?;
            let tree = self.repo.find_tree(id)?;
            let mut blobs = Vec::new();
            for entry in tree.iter() {
                match entry.kind() {
                    Some(ObjectType::Tree) => stack.push(entry.id()),
                    // Submodule commits (gitlinks) are not in this repository.
                    Some(ObjectType::Blob) if self.seen_blobs.insert(entry.id()) => {
                        blobs.push(entry.id());
                    }
                    _ => {}
                }
            }
            for id in blobs {
                blob(self, id)?;
            }
        }
        Ok(())
    }

    /// Visits the objects reachable from `tips` and not from `hide`, calling `blob` for
    /// each new blob.
    fn run(
        &mut self,
        tips: &[Oid],
        hide: &[Oid],
        blob: &mut dyn FnMut(&mut Self, Oid) -> Result<(), git2::Error>,
    ) -> Result<(), git2::Error> {
        let mut walk = self.repo.revwalk()?;
        let mut roots = Vec::new();
        let mut pushed = false;
        for &tip in tips {
            // A tag may point at a tree or a blob: walk that directly.
            let object = self.repo.find_object(tip, None)?.peel_to_commit();
            match object {
                Ok(commit) => {
                    walk.push(commit.id())?;
                    pushed = true;
                }
                Err(_) => roots.push(self.repo.find_object(tip, None)?.peel(ObjectType::Any)?),
            }
        }
        for &oid in hide {
            // A remote value that is not a local commit hides nothing (it cannot be an
            // ancestor of a local commit).
            if let Ok(commit) = self
                .repo
                .find_object(oid, None)
                .and_then(|o| o.peel_to_commit())
            {
                walk.hide(commit.id())?;
            }
        }
        let mut new_commits = Vec::new();
        if pushed {
            for oid in walk {
                self.check()?;
                new_commits.push(oid?);
            }
        }
        let new: HashSet<Oid> = new_commits.iter().copied().collect();
        // The boundary: what the remote has, next to what it lacks.
        for &oid in &new_commits {
            let commit = self.repo.find_commit(oid)?;
            for parent in commit.parent_ids() {
                if !new.contains(&parent)
                    && let Ok(parent) = self.repo.find_commit(parent)
                {
                    self.mark_seen(parent.tree_id())?;
                }
            }
        }
        for oid in new_commits {
            self.check()?;
            let tree = self.repo.find_commit(oid)?.tree_id();
            self.visit(tree, blob)?;
        }
        for root in roots {
            match root.kind() {
                Some(ObjectType::Tree) => self.visit(root.id(), blob)?,
                Some(ObjectType::Blob) if self.seen_blobs.insert(root.id()) => {
                    blob(self, root.id())?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Returns the pointer that blob `id` is, reading it only if it is small enough.
    fn pointer_of(&self, id: Oid) -> Result<Option<Pointer>, git2::Error> {
        let (size, _) = self.odb.read_header(id)?;
        if size >= MAX_POINTER_SIZE {
            return Ok(None);
        }
        let object = self.odb.read(id)?;
        Ok(pointer::parse(object.data()))
    }
}

fn open<'r>(repo: &'r Repository, cancel: &'r AtomicBool) -> Result<Walk<'r>, git2::Error> {
    Ok(Walk {
        repo,
        odb: repo.odb()?,
        cancel,
        seen_trees: HashSet::new(),
        seen_blobs: HashSet::new(),
    })
}

fn scan_error(path: &Path, cancel: &AtomicBool, source: git2::Error) -> ScanError {
    if cancel.load(Ordering::Relaxed) {
        ScanError::Cancelled
    } else {
        ScanError::Git {
            path: path.to_owned(),
            source,
        }
    }
}

/// Returns the LFS pointers reachable from `tips` and not from `hide` in the repository at
/// `path` (`hide` may hold ids the repository lacks: they are ignored).
pub fn pointers(
    path: &Path,
    tips: &[Oid],
    hide: &[Oid],
    cancel: &AtomicBool,
) -> Result<Found, ScanError> {
    let inner = || -> Result<Found, git2::Error> {
        let repo = Repository::open_bare(path)?;
        let mut walk = open(&repo, cancel)?;
        let mut found = Found::default();
        walk.run(tips, hide, &mut |walk, id| {
            if let Some(pointer) = walk.pointer_of(id)? {
                found.pointers.entry(pointer).or_default().insert(id);
            }
            Ok(())
        })?;
        Ok(found)
    };
    inner().map_err(|e| scan_error(path, cancel, e))
}

/// Returns, for each ref of `refs` (name, new value), which of `blobs` it reaches that `hide`
/// does not: one walk per ref, only when some objects are missing and the refs that need
/// them must be told apart from those that do not.
pub fn refs_needing(
    path: &Path,
    refs: &[(String, Oid)],
    hide: &[Oid],
    blobs: &HashSet<Oid>,
    cancel: &AtomicBool,
) -> Result<HashMap<Oid, BTreeSet<String>>, ScanError> {
    let inner = || -> Result<HashMap<Oid, BTreeSet<String>>, git2::Error> {
        let repo = Repository::open_bare(path)?;
        let mut needing: HashMap<Oid, BTreeSet<String>> = HashMap::new();
        for (name, tip) in refs {
            let mut walk = open(&repo, cancel)?;
            walk.run(&[*tip], hide, &mut |_, id| {
                if blobs.contains(&id) {
                    needing.entry(id).or_default().insert(name.clone());
                }
                Ok(())
            })?;
        }
        Ok(needing)
    };
    inner().map_err(|e| scan_error(path, cancel, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer_text(n: u8) -> (String, String) {
        let oid = format!("{:064x}", n);
        (
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {n}\n"),
            oid,
        )
    }

    /// Commits `files` (path, content) on top of `parent` with the tree of `parent` plus them.
    fn commit(repo: &Repository, parent: Option<Oid>, files: &[(&str, &str)]) -> Oid {
        let mut index = git2::Index::new().unwrap();
        if let Some(parent) = parent {
            let tree = repo.find_commit(parent).unwrap().tree().unwrap();
            index.read_tree(&tree).unwrap();
        }
        for (path, content) in files {
            let blob = repo.blob(content.as_bytes()).unwrap();
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: 0o100644,
                uid: 0,
                gid: 0,
                file_size: content.len() as u32,
                id: blob,
                flags: path.len() as u16,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            index.add(&entry).unwrap();
        }
        let tree = repo.find_tree(index.write_tree_to(repo).unwrap()).unwrap();
        let sig = git2::Signature::new("t", "t@t", &git2::Time::new(0, 0)).unwrap();
        let parents: Vec<_> = parent
            .map(|p| repo.find_commit(p).unwrap())
            .into_iter()
            .collect();
        let parents: Vec<_> = parents.iter().collect();
        repo.commit(None, &sig, &sig, "c", &tree, &parents).unwrap()
    }

    fn oids(found: &Found) -> Vec<String> {
        found.pointers.keys().map(|p| p.oid.clone()).collect()
    }

    #[test]
    fn only_what_the_hidden_tips_do_not_reach_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let (p1, o1) = pointer_text(1);
        let (p2, o2) = pointer_text(2);
        let (p3, o3) = pointer_text(3);
        let big = "x".repeat(2000);
        let c1 = commit(
            &repo,
            None,
            &[("a.bin", &p1), ("big.txt", &big), ("t.txt", "text\n")],
        );
        let c2 = commit(&repo, Some(c1), &[("dir/b.bin", &p2)]);
        let side = commit(&repo, Some(c1), &[("c.bin", &p3)]);
        let no = AtomicBool::new(false);
        let all = pointers(dir.path(), &[c2, side], &[], &no).unwrap();
        assert_eq!(oids(&all), [o1.clone(), o2.clone(), o3.clone()]);
        // The remote has c1: only what c2 and the side branch add.
        let new = pointers(dir.path(), &[c2, side], &[c1], &no).unwrap();
        assert_eq!(oids(&new), [o2.clone(), o3.clone()]);
        // A remote value unknown locally hides nothing and is no error.
        let unknown = Oid::from_str("1234567890123456789012345678901234567890").unwrap();
        assert_eq!(
            oids(&pointers(dir.path(), &[c2], &[unknown], &no).unwrap()).len(),
            2
        );
        // Nothing new: nothing found.
        assert!(
            pointers(dir.path(), &[c2], &[c2], &no)
                .unwrap()
                .pointers
                .is_empty()
        );
        // Which refs need the pointer of the side branch.
        let blob = *new
            .pointers
            .iter()
            .find(|(p, _)| p.oid == o3)
            .unwrap()
            .1
            .iter()
            .next()
            .unwrap();
        let needing = refs_needing(
            dir.path(),
            &[
                ("refs/heads/main".into(), c2),
                ("refs/heads/side".into(), side),
            ],
            &[c1],
            &HashSet::from([blob]),
            &no,
        )
        .unwrap();
        assert_eq!(
            needing[&blob],
            BTreeSet::from(["refs/heads/side".to_owned()])
        );
        // Cancelled: the walk stops with that error.
        let yes = AtomicBool::new(true);
        assert!(matches!(
            pointers(dir.path(), &[c2], &[], &yes),
            Err(ScanError::Cancelled)
        ));
    }
}
