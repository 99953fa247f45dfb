//! Pushes that stay under the remote's size limit (`max_push_size`): GitHub refuses a push
//! over 2 GiB, and git's own `receive.maxInputSize` refuses one over its setting.
//!
//! Before a batch is pushed, the objects it would send are estimated with `git rev-list
//! --objects --disk-usage <new tips> --not <what the remote has>`: their size as stored
//! locally, which is what pack-objects reuses and sends (git's thin pack). When that exceeds
//! the limit, history is sent in steps: the first ref of the batch whose objects alone
//! exceed it (the default branch first, as planned) is pushed at intermediate commits of its
//! first-parent line, oldest first, each step the furthest commit whose objects fit, then the
//! ref at its planned value, then the rest of the batch. Each step is an update of that same
//! ref, so no ref outside the plan is ever created; the first step of a forced update carries
//! its lease, later steps are fast-forwards. What each ref's last step did is its result.
//!
//! A single object larger than the limit cannot be sent by any split: a permanent error
//! naming it. So is a single commit (a merge bringing a large side history) whose own new
//! objects exceed the limit: splitting follows first parents only.
//!
//! A repository whose whole object store is smaller than the limit is never estimated, so
//! the default limit (2 GiB) costs nothing to most mirrors.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use git2::Oid;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::Pusher;
use crate::mirror::oid::parse_hex;
use crate::mirror::refdiff::{RefUpdate, UpdateKind};
use crate::mirror::remote::{PushReport, RefOutcome, RefResult, Remote, RemoteError};

/// Why a push could not be made to fit the limit.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error(
        "object {object} is {size} bytes, more than max_push_size ({limit} bytes): no push \
         can carry it"
    )]
    ObjectTooLarge { object: Oid, size: u64, limit: u64 },
    #[error(
        "commit {commit} alone brings {size} bytes of new objects, more than max_push_size \
         ({limit} bytes)"
    )]
    CommitTooLarge { commit: Oid, size: u64, limit: u64 },
    #[error("cannot estimate the size of a push: git {operation} failed: {detail}")]
    Git {
        operation: &'static str,
        detail: String,
    },
    #[error("cannot estimate the size of a push: cannot run git {operation}")]
    Spawn {
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl SplitError {
    /// Returns true for failures worth retrying (git could not run or failed); an object or
    /// a commit too large stays so until the limit or the history changes.
    pub fn is_transient(&self) -> bool {
        matches!(self, SplitError::Git { .. } | SplitError::Spawn { .. })
    }
}

/// Why a batch could not be pushed within the limit.
#[derive(Debug, thiserror::Error)]
pub enum SplitPushError {
    #[error(transparent)]
    Split(#[from] SplitError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// What the remote has, as far as estimates go: its ref values as read, and what this
/// update pushed since.
pub(super) struct RemoteHas<'a> {
    pub(super) remote_refs: &'a std::collections::BTreeMap<String, Oid>,
    pub(super) pushed: Vec<Oid>,
}

/// Pushes `batch` with `pusher`, in several pushes if its objects exceed `limit` bytes
/// (0: no limit). Returns one result per update of the batch.
pub(super) async fn push_within(
    local: &Path,
    pusher: &Pusher<'_>,
    batch: &[RefUpdate],
    remote_has: &mut RemoteHas<'_>,
    limit: u64,
) -> Result<PushReport, SplitPushError> {
    let tips: Vec<Oid> = batch.iter().filter_map(|u| u.new).collect();
    if limit == 0 || tips.is_empty() || object_store_size(local) <= limit {
        let report = pusher.push(batch).await?;
        remote_has.pushed.extend(tips);
        return Ok(report);
    }
    let mut have = {
        let local = local.to_owned();
        let values: Vec<Oid> = remote_has.remote_refs.values().copied().collect();
        tokio::task::spawn_blocking(move || known_locally(&local, values.into_iter()))
            .await
            .unwrap_or_default()
    };
    have.extend(remote_has.pushed.iter().copied());
    let report = push_split(local, pusher, batch, &mut have, limit).await;
    remote_has.pushed.extend(tips);
    report
}

/// [`push_within`] once the remote's objects are known: `have` grows with what is pushed.
async fn push_split(
    local: &Path,
    pusher: &Pusher<'_>,
    batch: &[RefUpdate],
    have: &mut Vec<Oid>,
    limit: u64,
) -> Result<PushReport, SplitPushError> {
    let tips: Vec<Oid> = batch.iter().filter_map(|u| u.new).collect();
    let git = LocalGit {
        local,
        remote: pusher.remote,
    };
    if git.disk_usage(&tips, have).await? <= limit {
        return Ok(pusher.push(batch).await?);
    }
    // An object no push can carry fails the batch before any step lands.
    let (object, size) = git.largest_object(&tips, have).await?;
    if size > limit {
        return Err(SplitError::ObjectTooLarge {
            object,
            size,
            limit,
        }
        .into());
    }
    let mut outcomes: HashMap<String, RefOutcome> = HashMap::new();
    let mut pending: Vec<RefUpdate> = batch.iter().filter(|u| u.new.is_some()).cloned().collect();
    let deletes: Vec<RefUpdate> = batch.iter().filter(|u| u.new.is_none()).cloned().collect();
    loop {
        let tips: Vec<Oid> = pending.iter().filter_map(|u| u.new).collect();
        if tips.is_empty() || git.disk_usage(&tips, have).await? <= limit {
            let mut rest = pending.clone();
            rest.extend(deletes.iter().cloned());
            record(&mut outcomes, pusher.push(&rest).await?);
            break;
        }
        let first = pending.remove(0);
        let new = first.new.expect("pending updates have a new value");
        let step = if git.disk_usage(&[new], have).await? <= limit {
            new
        } else {
            git.furthest_fitting(new, have, limit).await?
        };
        let mut update = first.clone();
        update.new = Some(step);
        let report = pusher.push(&[update]).await?;
        let outcome = report
            .results
            .into_iter()
            .find(|r| r.refname == first.refname)
            .map(|r| r.outcome);
        have.push(step);
        match outcome {
            Some(RefOutcome::Done | RefOutcome::UpToDate) if step != new => {
                // The ref is on the remote at `step` now: the rest is a fast-forward.
                pending.insert(
                    0,
                    RefUpdate {
                        kind: UpdateKind::FastForward,
                        old: Some(step),
                        ..first
                    },
                );
            }
            Some(outcome) => {
                outcomes.insert(first.refname.clone(), outcome);
            }
            None => {
                outcomes.insert(
                    first.refname.clone(),
                    RefOutcome::Rejected {
                        reason: "git push did not report this ref".to_owned(),
                        stale: false,
                    },
                );
            }
        }
    }
    let results = batch
        .iter()
        .map(|u| RefResult {
            refname: u.refname.clone(),
            outcome: outcomes.remove(&u.refname).unwrap_or(RefOutcome::Rejected {
                reason: "git push did not report this ref".to_owned(),
                stale: false,
            }),
        })
        .collect();
    Ok(PushReport { results })
}

/// Notes each ref's outcome of one push.
fn record(outcomes: &mut HashMap<String, RefOutcome>, report: PushReport) {
    for result in report.results {
        outcomes.insert(result.refname, result.outcome);
    }
}

/// Returns the bytes of everything under `<git_dir>/objects` (packs, loose objects), or
/// `u64::MAX` if it cannot be read (then the push is estimated).
fn object_store_size(git_dir: &Path) -> u64 {
    fn walk(dir: &Path) -> std::io::Result<u64> {
        let mut total = 0u64;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                total = total.saturating_add(walk(&entry.path())?);
            } else if kind.is_file() {
                total = total.saturating_add(entry.metadata()?.len());
            }
        }
        Ok(total)
    }
    let objects = git_dir.join("objects");
    // Borrowed objects (alternates) are not counted by a walk: estimate then.
    if objects.join("info/alternates").exists() {
        return u64::MAX;
    }
    walk(&objects).unwrap_or(u64::MAX)
}

/// Returns the values of `remote_refs` that exist locally: what a push can leave out and
/// use as delta bases.
fn known_locally(local: &Path, remote_refs: impl Iterator<Item = Oid>) -> Vec<Oid> {
    let Ok(repo) = git2::Repository::open_bare(local) else {
        return Vec::new();
    };
    let Ok(odb) = repo.odb() else {
        return Vec::new();
    };
    remote_refs.filter(|oid| odb.exists(*oid)).collect()
}

/// git run on the local repository, for estimates, under the update's deadline.
struct LocalGit<'a> {
    local: &'a Path,
    remote: &'a Remote<'a>,
}

impl LocalGit<'_> {
    /// Returns the bytes, as stored locally, of the objects reachable from `tips` and not
    /// from `have`.
    async fn disk_usage(&self, tips: &[Oid], have: &[Oid]) -> Result<u64, SplitError> {
        const OPERATION: &str = "rev-list --disk-usage";
        let out = self
            .run(
                OPERATION,
                &["rev-list", "--objects", "--disk-usage", "--stdin"],
                &rev_input(tips, have),
            )
            .await?;
        out.trim().parse().map_err(|_| SplitError::Git {
            operation: OPERATION,
            detail: format!("unexpected output {:?}", out.trim()),
        })
    }

    /// Returns the furthest commit of `tip`'s first-parent line, not in `have`, whose new
    /// objects fit `limit`; or the error saying why none does.
    async fn furthest_fitting(
        &self,
        tip: Oid,
        have: &[Oid],
        limit: u64,
    ) -> Result<Oid, SplitError> {
        const OPERATION: &str = "rev-list --first-parent";
        let out = self
            .run(
                OPERATION,
                &["rev-list", "--first-parent", "--reverse", "--stdin"],
                &rev_input(&[tip], have),
            )
            .await?;
        let chain: Vec<Oid> = out
            .lines()
            .filter_map(|line| parse_hex(line.trim()).ok())
            .collect();
        // Binary search for the last commit whose objects fit: sizes grow along the line.
        let (mut lo, mut hi) = (0usize, chain.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.disk_usage(&[chain[mid]], have).await? <= limit {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo > 0 {
            return Ok(chain[lo - 1]);
        }
        let commit = chain.first().copied().unwrap_or(tip);
        let (object, size) = self.largest_object(&[commit], have).await?;
        if size > limit {
            return Err(SplitError::ObjectTooLarge {
                object,
                size,
                limit,
            });
        }
        Err(SplitError::CommitTooLarge {
            commit,
            size: self.disk_usage(&[commit], have).await?,
            limit,
        })
    }

    /// Returns the largest object (by its size as stored) reachable from `tips` and not from
    /// `have`.
    async fn largest_object(&self, tips: &[Oid], have: &[Oid]) -> Result<(Oid, u64), SplitError> {
        const OPERATION: &str = "rev-list --objects";
        let list = self
            .run(
                OPERATION,
                &["rev-list", "--objects", "--no-object-names", "--stdin"],
                &rev_input(tips, have),
            )
            .await?;
        let sizes = self
            .run(
                "cat-file --batch-check",
                &["cat-file", "--batch-check=%(objectname) %(objectsize:disk)"],
                list.as_bytes(),
            )
            .await?;
        let mut best = (Oid::ZERO_SHA1, 0u64);
        for line in sizes.lines() {
            if let Some((oid, size)) = line.split_once(' ')
                && let (Ok(oid), Ok(size)) = (parse_hex(oid), size.trim().parse::<u64>())
                && size > best.1
            {
                best = (oid, size);
            }
        }
        Ok(best)
    }

    /// Runs git on the local repository with `input` on stdin; returns its stdout. The
    /// child is killed at the update's deadline or on cancellation (dropped).
    async fn run(
        &self,
        operation: &'static str,
        args: &[&str],
        input: &[u8],
    ) -> Result<String, SplitError> {
        let spawn = |source| SplitError::Spawn { operation, source };
        let mut git_dir = OsString::from("--git-dir=");
        git_dir.push(self.local.as_os_str());
        let mut child = Command::new("git")
            .arg(git_dir)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn)?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
        let output = tokio::select! {
            output = child.wait_with_output() => output.map_err(spawn)?,
            () = tokio::time::sleep_until(self.remote.deadline) => {
                return Err(SplitError::Git { operation, detail: "the update's deadline passed".to_owned() });
            }
            () = self.remote.cancel.cancelled() => {
                return Err(SplitError::Git { operation, detail: "cancelled by shutdown".to_owned() });
            }
        };
        let _ = writer.await;
        if !output.status.success() {
            return Err(SplitError::Git {
                operation,
                detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// Returns rev-list's stdin: each tip, then `^<oid>` for each object the remote has.
fn rev_input(tips: &[Oid], have: &[Oid]) -> Vec<u8> {
    let mut text = String::with_capacity((tips.len() + have.len()) * 42);
    for tip in tips {
        text.push_str(&tip.to_string());
        text.push('\n');
    }
    for oid in have {
        text.push('^');
        text.push_str(&oid.to_string());
        text.push('\n');
    }
    text.into_bytes()
}
