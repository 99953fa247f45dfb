//! One update of one mirror: read both sides, plan, push, and say what happened.
//!
//! The flow is `credentials` -> `remote::list_refs` -> (blocking) `local` + `refdiff::plan`
//! -> `guard` (the mass-change guard judges the plan) -> `lfs::upload_for` (the LFS
//! objects the plan's refs need, before any ref moves; refs whose objects are missing
//! locally are dropped from the plan) -> `scratch` prepared -> `remote::push_staged` in
//! batches, each under `max_push_size` (`split`) -> [`UpdateReport`]. When a lease fails
//! because the remote moved between the read and the push, the remote is read again and the
//! plan retried once (and judged again).
//! `preview` is the same read and plan with nothing pushed (`pushmirror plan`, `verify`).
//! Nothing here writes status: the caller (the daemon, or `pushmirror update`) turns the
//! result into a `state::Ending`.

pub mod credentials;
pub mod guard;
pub mod job;
pub mod lfs;
pub mod local;
pub mod oid;
pub mod preview;
pub mod refdiff;
pub mod remote;
pub mod scratch;
pub mod split;
pub mod ssh;
pub mod url;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use git2::Oid;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{GitConfigPolicy, Mirror};
use crate::mirror::credentials::CredentialError;
use crate::mirror::local::{LocalError, LocalRepo};
use crate::mirror::refdiff::{Plan, Policy, RefUpdate, UpdateKind};
use crate::mirror::remote::{PushReport, RefOutcome, Remote, RemoteError};
use crate::mirror::scratch::Scratch;
use crate::mirror::split::{SplitError, SplitPushError};
use crate::mirror::url::mask_credentials;
use crate::store::state::{Ending, LfsMissing, RefCounts, RejectedRef};

/// Most bytes of refspecs and leases given to one `git push`, well under Linux's 2 MiB
/// `ARG_MAX`.
const MAX_PUSH_ARG_BYTES: usize = 1 << 20;

/// How one update runs, beside the mirror's own configuration.
#[derive(Debug, Clone)]
pub struct UpdateContext {
    pub git_config: GitConfigPolicy,
    /// Cancelled on shutdown: running git children are killed.
    pub cancel: CancellationToken,
    /// True if the mirror never finished an update: the default timeout is then 3 h.
    pub first_sync: bool,
    /// Where the mirror's scratch repository lives (`<state_dir>/scratch`; see
    /// [`scratch`]). `None`, or a scratch repository that cannot be prepared, pushes from
    /// the real repository with one explicit refspec per ref: the same push, quadratic in
    /// the number of refs.
    pub scratch_dir: Option<PathBuf>,
    /// `sync NAME --allow-mass-change`: this one update passes the mass-change guard
    /// ([`guard`]).
    pub allow_mass_change: bool,
    /// Git LFS: what this update uploaded (and found missing), filled in as it goes so
    /// that the job records uploads done before a failure too.
    pub lfs: lfs::SharedTally,
}

/// What an update did. An update can return a report and still have failed: diverged or
/// rejected refs are outcomes, not errors (see [`UpdateReport::ending`]).
#[derive(Debug, Clone, Default)]
pub struct UpdateReport {
    pub counts: RefCounts,
    /// Refs left alone because they diverged (`keep_divergent_refs`), sorted.
    pub divergent: Vec<String>,
    /// Refs that the remote, or git itself, refused, with the reason.
    pub rejected: Vec<RejectedRef>,
    /// True if every rejection was of a passing kind (a lock on the remote, or a ref that
    /// moved there during the second round): worth a retry.
    pub rejections_transient: bool,
    /// A digest of the mirrored local refs as planned.
    pub fingerprint: String,
    /// Git LFS: objects missing from the local store that the remote lacks, with the refs
    /// that need them; those refs were not pushed.
    pub lfs_missing: Vec<LfsMissing>,
}

impl UpdateReport {
    /// Returns how this report ends the update in the status: finished, or failed with GitLab's
    /// divergence message or the list of rejected refs. Transient rejections are retried
    /// only while `retries_left`: the last allowed attempt ends `failed`.
    pub fn ending(&self, retries_left: bool) -> Ending {
        if self.divergent.is_empty() && self.rejected.is_empty() && self.lfs_missing.is_empty() {
            return Ending::Finished {
                fingerprint: Some(self.fingerprint.clone()),
            };
        }
        let mut parts = Vec::new();
        if !self.divergent.is_empty() {
            parts.push(refdiff::divergent_message(&self.divergent));
        }
        if !self.rejected.is_empty() {
            let mut text = String::from("Some refs were rejected by the remote:\n");
            for r in &self.rejected {
                text.push_str(&format!("\n{} ({})", r.refname, r.reason));
            }
            parts.push(text);
        }
        if !self.lfs_missing.is_empty() {
            parts.push(lfs_missing_message(&self.lfs_missing));
        }
        Ending::Failed {
            error: parts.join("\n\n"),
            retry: retries_left
                && self.divergent.is_empty()
                && self.lfs_missing.is_empty()
                && self.rejections_transient,
            divergent_refs: self.divergent.clone(),
            rejected_refs: self.rejected.clone(),
        }
    }
}

/// Returns the error text of LFS objects missing from the local store: one object per line
/// with the refs that need it (at most 100 lines).
fn lfs_missing_message(missing: &[LfsMissing]) -> String {
    let mut text = String::from(
        "Some LFS objects are missing from the local LFS store, and the refs that need them \
         have not been pushed:\n",
    );
    for m in missing.iter().take(100) {
        text.push_str(&format!("\n{} ({})", m.oid, m.refs.join(", ")));
    }
    if missing.len() > 100 {
        text.push_str(&format!("\n... and {} more", missing.len() - 100));
    }
    text
}

/// Why an update could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{reason}")]
    UnsupportedUrl { reason: String },
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error(transparent)]
    Ssh(#[from] ssh::SshError),
    #[error(transparent)]
    Local(#[from] LocalError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Split(#[from] SplitError),
    #[error(transparent)]
    Lfs(#[from] lfs::LfsError),
    #[error("the local read of the update panicked")]
    Panicked,
    /// The mass-change guard refused the plan ([`guard`]); permanent: the same plan would
    /// be refused again.
    #[error("{}", guard::refusal_message(.mirror, .change, .second_round))]
    MassChange {
        mirror: String,
        change: guard::MassChange,
        second_round: bool,
    },
}

impl UpdateError {
    /// Returns true for failures worth retrying with backoff.
    pub fn is_transient(&self) -> bool {
        match self {
            UpdateError::Remote(e) => e.is_transient(),
            UpdateError::Split(e) => e.is_transient(),
            UpdateError::Lfs(e) => e.is_transient(),
            // A repository being replaced or a file system hiccup may pass.
            UpdateError::Local(LocalError::Refs { .. }) => true,
            UpdateError::UnsupportedUrl { .. }
            | UpdateError::Credentials(_)
            | UpdateError::Ssh(_)
            | UpdateError::Local(_)
            | UpdateError::Panicked
            | UpdateError::MassChange { .. } => false,
        }
    }

    /// Returns the message with its causes (`a: b: c`), for `last_error` and logs.
    pub fn full_message(&self) -> String {
        crate::error::chain(self)
    }

    /// Returns how this error ends the update in the status; `retries_left` says whether a
    /// transient failure may still be retried. Remote errors arrive scrubbed already; URLs
    /// are masked once more here.
    pub fn ending(&self, retries_left: bool) -> Ending {
        Ending::Failed {
            error: mask_credentials(&self.full_message()),
            retry: retries_left && self.is_transient(),
            divergent_refs: Vec::new(),
            rejected_refs: Vec::new(),
        }
    }
}

/// Prepares libgit2 for this process; call once, before any thread starts.
///
/// libgit2 refuses repositories owned by another user unless told otherwise; the operator
/// names each repository explicitly, as git's `safe.directory` would. Its global and system
/// configuration search paths are emptied so that no user configuration changes local reads.
/// Objects are not hashed again on each read, as git does not (that is `git fsck`'s job): the
/// SHA-1 of every commit read was a seventh of the time of the ancestry checks of an update.
pub fn init_libgit2() {
    git2::opts::strict_hash_verification(false);
    // SAFETY: called before other threads use libgit2, as these process-global setters
    // require.
    unsafe {
        let _ = git2::opts::set_verify_owner_validation(false);
        for level in [
            git2::ConfigLevel::System,
            git2::ConfigLevel::XDG,
            git2::ConfigLevel::Global,
            git2::ConfigLevel::ProgramData,
        ] {
            let _ = git2::opts::set_search_path(level, "");
        }
    }
}

/// Brings `mirror`'s remote in line with its local repository, once.
pub async fn update(mirror: &Mirror, ctx: &UpdateContext) -> Result<UpdateReport, UpdateError> {
    let remote = remote_for(mirror, ctx)?;
    let lfs_credentials = match mirror.lfs.mode {
        crate::config::LfsMode::Off => None,
        _ => credentials::resolve_for_http_service(mirror)?,
    };
    // The scratch repository is prepared, and the local refs read, while the remote
    // advertises its refs: at 100,000 refs each is a good part of a no-op's time.
    let (scratch, first_read) =
        tokio::join!(prepare_scratch(mirror, ctx), read_refs(&remote, mirror));
    let mut first_read = Some(first_read);
    let mut sweep = None;
    let mut report = UpdateReport {
        rejections_transient: true,
        ..UpdateReport::default()
    };
    // A second round only when a lease failed: the remote moved between read and push.
    for round in 0..2 {
        let read = match first_read.take() {
            Some(read) => read,
            None => read_refs(&remote, mirror).await,
        };
        let (remote_refs, local) = read?;
        let (plan, default_branch, fingerprint, remote_refs) =
            plan_locally(mirror, local, remote_refs).await?;
        if sweep.is_none()
            && let Some(scratch) = &scratch
        {
            // The refs of earlier pushes are deleted while this update goes on: after the
            // reads and the plan, which want the cores, and mostly while git pushes.
            let git_dir = scratch.git_dir().to_owned();
            sweep = Some(tokio::task::spawn_blocking(move || {
                Scratch::sweep(&git_dir)
            }));
        }
        report.fingerprint = fingerprint;
        report.divergent = plan.divergent.clone();
        debug!(
            round,
            updates = plan.updates.len(),
            divergent = plan.divergent.len(),
            "planned"
        );
        if plan.updates.is_empty() {
            break;
        }
        if !ctx.allow_mass_change
            && let Some(change) = guard::check(&plan, guard::Limits::of(mirror))
        {
            return Err(UpdateError::MassChange {
                mirror: mirror.name.to_string(),
                change,
                second_round: round > 0,
            });
        }
        // Git LFS: every object the pushed refs need, uploaded before any ref moves.
        let missing = lfs::upload_for(
            mirror,
            &plan.updates,
            &remote_refs,
            lfs_credentials.clone(),
            remote.deadline,
            &ctx.cancel,
            &ctx.lfs,
        )
        .await?;
        let mut plan = plan;
        if !missing.is_empty() {
            let held: std::collections::HashSet<&str> = missing
                .iter()
                .flat_map(|m| m.refs.iter().map(String::as_str))
                .collect();
            warn!(
                objects = missing.len(),
                refs = held.len(),
                "LFS objects missing locally; not pushing the refs that need them"
            );
            plan.updates.retain(|u| !held.contains(u.refname.as_str()));
            for m in &missing {
                if !report.lfs_missing.iter().any(|known| known.oid == m.oid) {
                    report.lfs_missing.push(m.clone());
                }
            }
            if let Ok(mut tally) = ctx.lfs.lock() {
                tally.missing = report.lfs_missing.clone();
            }
        }
        let remote_has_branches = remote_refs.keys().any(|r| r.starts_with("refs/heads/"));
        let pusher = Pusher {
            remote: &remote,
            scratch: scratch.as_ref(),
            local: &mirror.repo,
            max_push_size: mirror.max_push_size,
            refs_per_push: mirror.refs_per_push,
            expected: std::sync::Mutex::new(
                expected_for_pruning(mirror, &plan, &remote_refs).await,
            ),
        };
        let mut remote_has = split::RemoteHas {
            remote_refs: &remote_refs,
            pushed: Vec::new(),
        };
        let stale = push_in_batches(
            &pusher,
            &mut remote_has,
            &plan.updates,
            default_branch.as_deref(),
            remote_has_branches,
            &mut report,
            round == 0,
        )
        .await?;
        if stale.is_empty() {
            break;
        }
        warn!(refs = ?stale, "the remote moved while updating; reading it again");
    }
    if let Some(sweep) = sweep {
        let _ = sweep.await; // a panic there lost nothing but disk space
    }
    info!(
        created = report.counts.created,
        updated = report.counts.updated,
        deleted = report.counts.deleted,
        divergent = report.divergent.len(),
        rejected = report.rejected.len(),
        "update done"
    );
    Ok(report)
}

/// Returns the mirror's scratch repository, prepared for this update, or `None` when the
/// context names no place for it or it cannot be prepared (logged; the update then pushes
/// from the real repository, slower but the same).
async fn prepare_scratch(mirror: &Mirror, ctx: &UpdateContext) -> Option<Scratch> {
    let dir = ctx.scratch_dir.clone()?;
    let name = mirror.name.to_string();
    let repo = mirror.repo.clone();
    let url = mirror.url.for_git().to_owned();
    let job = tokio::task::spawn_blocking(move || Scratch::prepare(&dir, &name, &repo, &url));
    match job.await {
        Ok(Ok(scratch)) => Some(scratch),
        Ok(Err(e)) => {
            warn!(cause = %crate::error::chain(&e), "pushing with explicit refspecs instead");
            None
        }
        Err(_) => None,
    }
}

/// Returns `mirror`'s remote for one update, with its credentials read now and its deadline
/// starting now.
fn remote_for<'a>(mirror: &'a Mirror, ctx: &UpdateContext) -> Result<Remote<'a>, UpdateError> {
    if let Some(reason) = mirror.url.unsupported_reason() {
        return Err(UpdateError::UnsupportedUrl { reason });
    }
    let credentials = credentials::resolve(mirror)?;
    let ssh = ssh::prepare(mirror)?;
    let timeout = mirror.timeout_for(ctx.first_sync);
    Ok(Remote {
        git_dir: &mirror.repo,
        url: &mirror.url,
        credentials,
        ssh,
        git_config: ctx.git_config,
        deadline: crate::clock::later(Instant::now(), timeout),
        cancel: ctx.cancel.clone(),
    })
}

/// Where an update pushes from: the scratch repository when there is one, else the real
/// repository with explicit refspecs.
struct Pusher<'a> {
    remote: &'a Remote<'a>,
    scratch: Option<&'a Scratch>,
    /// The real repository, for size estimates.
    local: &'a std::path::Path,
    /// `max_push_size` in bytes; 0: no limit.
    max_push_size: u64,
    refs_per_push: usize,
    /// What the remote is expected to hold (as read, with this update's pushes applied),
    /// kept only when the plan has [`PRUNE_DELETES_FROM`] deletes or more: batches with that
    /// many deletes are pushed with `--prune` (see `Remote::push_pruning`). A `Mutex` only
    /// so that the pusher is `Sync`; it is never held across an await.
    expected: std::sync::Mutex<Option<BTreeMap<String, Oid>>>,
}

/// Returns the remote's refs as read when the plan has enough deletes to push them with
/// `--prune` and every remote value is a local object (git's pack-objects fails on a ref
/// of the scratch repository whose object is missing); else `None`: deletes go one
/// `:<ref>` refspec each.
async fn expected_for_pruning(
    mirror: &Mirror,
    plan: &Plan,
    remote_refs: &BTreeMap<String, Oid>,
) -> Option<BTreeMap<String, Oid>> {
    let deletes = plan
        .updates
        .iter()
        .filter(|u| u.kind == UpdateKind::Delete)
        .count();
    if deletes < PRUNE_DELETES_FROM {
        return None;
    }
    let repo = mirror.repo.clone();
    let values: Vec<Oid> = remote_refs.values().copied().collect();
    let job = tokio::task::spawn_blocking(move || {
        let repo = git2::Repository::open_bare(&repo).ok()?;
        let odb = repo.odb().ok()?;
        values.iter().all(|oid| odb.exists(*oid)).then_some(())
    });
    job.await.ok().flatten().map(|()| remote_refs.clone())
}

/// From how many deletes in one batch they are pushed by `--prune` from a scratch repository
/// holding every ref the remote keeps, instead of one `:<ref>` refspec each (git matches each
/// against every remote ref).
const PRUNE_DELETES_FROM: usize = 200;

impl From<SplitPushError> for UpdateError {
    fn from(error: SplitPushError) -> UpdateError {
        match error {
            SplitPushError::Split(e) => UpdateError::Split(e),
            SplitPushError::Remote(e) => UpdateError::Remote(e),
        }
    }
}

impl Pusher<'_> {
    /// Pushes one batch, returning what happened to each ref.
    async fn push(&self, batch: &[RefUpdate]) -> Result<PushReport, RemoteError> {
        let Some(scratch) = self.scratch else {
            return self.remote.push(batch).await;
        };
        let deletes = batch
            .iter()
            .filter(|u| u.kind == UpdateKind::Delete)
            .count();
        let expected = match self.expected.lock() {
            Ok(expected) if deletes >= PRUNE_DELETES_FROM => expected.clone(),
            _ => None,
        };
        let Some(expected) = expected else {
            let report = self.remote.push_staged(scratch, batch).await?;
            self.note_pushed(batch, &report);
            return Ok(report);
        };
        let report = self.remote.push_pruning(scratch, batch, &expected).await?;
        self.note_pushed(batch, &report);
        Ok(report)
    }

    /// Applies what `report` says was done to the expected remote refs, if kept.
    fn note_pushed(&self, batch: &[RefUpdate], report: &PushReport) {
        let Ok(mut expected) = self.expected.lock() else {
            return;
        };
        let Some(expected) = expected.as_mut() else {
            return;
        };
        let by_name: HashMap<&str, &RefUpdate> =
            batch.iter().map(|u| (u.refname.as_str(), u)).collect();
        for result in &report.results {
            if !matches!(result.outcome, RefOutcome::Done | RefOutcome::UpToDate) {
                continue;
            }
            if let Some(update) = by_name.get(result.refname.as_str()) {
                match update.new {
                    Some(new) => expected.insert(update.refname.clone(), new),
                    None => expected.remove(&update.refname),
                };
            }
        }
    }
}

/// Pushes `updates` in the [`batches`] that the remote's state and `refs_per_push` call for,
/// each in pushes under `max_push_size` (see [`split`]), adding what each push did to
/// `report`. Returns the refs refused as stale and set aside for a second round, which only
/// happens when `may_retry` (see [`tally`]).
async fn push_in_batches(
    pusher: &Pusher<'_>,
    remote_has: &mut split::RemoteHas<'_>,
    updates: &[RefUpdate],
    default_branch: Option<&str>,
    remote_has_branches: bool,
    report: &mut UpdateReport,
    may_retry: bool,
) -> Result<Vec<String>, UpdateError> {
    let mut stale = Vec::new();
    let cost = match pusher.scratch {
        Some(_) => staged_argv_bytes,
        None => argv_bytes,
    };
    for batch in batches_by(
        updates,
        default_branch,
        remote_has_branches,
        pusher.refs_per_push,
        cost,
    ) {
        let pushed = split::push_within(
            pusher.local,
            pusher,
            batch,
            remote_has,
            pusher.max_push_size,
        )
        .await?;
        tally(batch, &pushed, report, &mut stale, may_retry);
    }
    Ok(stale)
}

/// The local repository, open, its refs as read and their [`fingerprint`].
struct LocalRead {
    repo: LocalRepo,
    refs: refdiff::LocalRefs,
    fingerprint: String,
}

/// Reads the remote's refs and the local ones at the same time (the local read on a
/// blocking thread).
async fn read_refs(
    remote: &Remote<'_>,
    mirror: &Mirror,
) -> Result<(BTreeMap<String, Oid>, LocalRead), UpdateError> {
    let repo_path = mirror.repo.clone();
    let branches = mirror.branches.clone();
    // The fingerprint too is taken here, and the object database opened, off the path that
    // waits for the remote.
    let local = tokio::task::spawn_blocking(move || {
        let repo = LocalRepo::open(&repo_path)?;
        let refs = repo.refs()?;
        let fingerprint = fingerprint(&refs, &branches);
        repo.warm_up(&refs);
        Ok::<_, LocalError>(LocalRead {
            repo,
            refs,
            fingerprint,
        })
    });
    let (listed, local) = tokio::join!(remote.list_refs(), local);
    let listed = listed?;
    let local = local.map_err(|_| UpdateError::Panicked)??;
    Ok((listed.refs, local))
}

/// Plans `local` against `remote_refs` on a blocking thread; gives `remote_refs` back.
async fn plan_locally(
    mirror: &Mirror,
    local: LocalRead,
    remote_refs: BTreeMap<String, Oid>,
) -> Result<(Plan, Option<String>, String, BTreeMap<String, Oid>), UpdateError> {
    let branches = mirror.branches.clone();
    let keep_divergent_refs = mirror.keep_divergent_refs;
    let prune = mirror.prune;
    let job = tokio::task::spawn_blocking(move || {
        let LocalRead {
            repo,
            refs,
            fingerprint,
        } = local;
        let policy = Policy {
            branches: &branches,
            keep_divergent_refs,
            prune,
        };
        let plan = refdiff::plan(&refs, &remote_refs, policy, &repo);
        (plan, refs.default_branch, fingerprint, remote_refs)
    });
    job.await.map_err(|_| UpdateError::Panicked)
}

/// Returns a digest of the refs `branches` mirrors, stable across runs and versions.
pub fn fingerprint(local: &refdiff::LocalRefs, branches: &crate::config::BranchFilter) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    for (name, oid) in &local.refs {
        if refdiff::is_mirrored(name, branches, local.default_branch.as_deref()) {
            // Writing to a String cannot fail.
            let _ = writeln!(text, "{oid} {name}");
        }
    }
    Oid::hash_object(git2::ObjectType::Blob, text.as_bytes())
        .map(|oid| oid.to_string())
        .unwrap_or_default()
}

/// Splits the updates into pushes: the default branch alone first when the remote has no
/// branches (so it becomes the remote's default), then at most `refs_per_push` refs and
/// [`MAX_PUSH_ARG_BYTES`] of arguments per push, counted as a push with explicit refspecs
/// costs them.
#[cfg(test)]
fn batches<'a>(
    updates: &'a [RefUpdate],
    default_branch: Option<&str>,
    remote_has_branches: bool,
    refs_per_push: usize,
) -> Vec<&'a [RefUpdate]> {
    batches_by(
        updates,
        default_branch,
        remote_has_branches,
        refs_per_push,
        argv_bytes,
    )
}

/// [`batches`], with `cost` giving the bytes of argv of one update.
fn batches_by<'a>(
    updates: &'a [RefUpdate],
    default_branch: Option<&str>,
    remote_has_branches: bool,
    refs_per_push: usize,
    cost: fn(&RefUpdate) -> usize,
) -> Vec<&'a [RefUpdate]> {
    let mut out = Vec::new();
    let mut rest = updates;
    if !remote_has_branches
        && let Some(first) = rest.first()
        && Some(first.refname.as_str()) == default_branch
        && first.kind == UpdateKind::Create
    {
        out.push(&rest[..1]);
        rest = &rest[1..];
    }
    while !rest.is_empty() {
        let mut len = 0;
        let mut bytes = 0;
        while len < rest.len() && len < refs_per_push.max(1) {
            let cost = cost(&rest[len]);
            if len > 0 && bytes + cost > MAX_PUSH_ARG_BYTES {
                break;
            }
            bytes += cost;
            len += 1;
        }
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    out
}

/// Returns the bytes of argv one update costs: the refspec `<oid>:<ref>` (with its NUL) plus,
/// for forced updates and deletes, `--force-with-lease=<ref>:<oid>`.
fn argv_bytes(update: &RefUpdate) -> usize {
    let refspec = 41 + update.refname.len() + 1;
    let lease = match update.kind {
        UpdateKind::Force | UpdateKind::Delete => {
            // The lease's object name: 40 hex digits, 64 in a SHA-256 repository.
            let hex = update.old.map_or(40, |oid| 2 * oid.as_bytes().len());
            19 + update.refname.len() + 1 + hex + 1
        }
        UpdateKind::Create | UpdateKind::FastForward => 0,
    };
    refspec + lease
}

/// Returns the bytes of argv one update costs in a push from the scratch repository: creates,
/// fast-forwards and forced updates ride on the pattern refspecs, so only leases and the
/// `:<ref>` of deletes count (see [`argv_bytes`]).
fn staged_argv_bytes(update: &RefUpdate) -> usize {
    match update.kind {
        UpdateKind::Create | UpdateKind::FastForward => 0,
        UpdateKind::Force => argv_bytes(update) - (41 + update.refname.len() + 1),
        UpdateKind::Delete => argv_bytes(update),
    }
}

/// Adds what one push did to the report. A stale rejection in the first round is set aside
/// for a second round instead of being reported.
fn tally(
    batch: &[RefUpdate],
    pushed: &PushReport,
    report: &mut UpdateReport,
    stale: &mut Vec<String>,
    may_retry: bool,
) {
    // A map, not a scan of the batch per result: a push may carry 100,000 refs.
    let by_name: HashMap<&str, &RefUpdate> =
        batch.iter().map(|u| (u.refname.as_str(), u)).collect();
    for result in &pushed.results {
        let Some(update) = by_name.get(result.refname.as_str()) else {
            continue;
        };
        match &result.outcome {
            RefOutcome::Done => match update.kind {
                UpdateKind::Create => report.counts.created += 1,
                UpdateKind::FastForward | UpdateKind::Force => report.counts.updated += 1,
                UpdateKind::Delete => report.counts.deleted += 1,
            },
            RefOutcome::UpToDate => {}
            outcome if may_retry && outcome.is_stale() => {
                stale.push(result.refname.clone());
            }
            RefOutcome::Rejected { reason, stale } => {
                report.rejections_transient &= *stale;
                report.rejected.push(RejectedRef {
                    refname: result.refname.clone(),
                    reason: reason.clone(),
                });
            }
            RefOutcome::RemoteRejected { reason, .. } => {
                report.rejections_transient &=
                    result.outcome.is_transient_refusal() || result.outcome.is_stale();
                report.rejected.push(RejectedRef {
                    refname: result.refname.clone(),
                    reason: reason.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    fn update(name: &str, kind: UpdateKind) -> RefUpdate {
        RefUpdate {
            refname: name.to_owned(),
            kind,
            old: None,
            new: Some(Oid::ZERO_SHA1),
        }
    }

    #[test]
    fn default_branch_goes_alone_to_an_empty_remote() {
        let updates = vec![
            update("refs/heads/main", UpdateKind::Create),
            update("refs/heads/a", UpdateKind::Create),
            update("refs/tags/v1", UpdateKind::Create),
        ];
        let split = batches(&updates, Some("refs/heads/main"), false, 10);
        assert_eq!(split.iter().map(|b| b.len()).collect::<Vec<_>>(), [1, 2]);
        let split = batches(&updates, Some("refs/heads/main"), true, 10);
        assert_eq!(split.iter().map(|b| b.len()).collect::<Vec<_>>(), [3]);
        let split = batches(&updates, Some("refs/heads/main"), true, 2);
        assert_eq!(split.iter().map(|b| b.len()).collect::<Vec<_>>(), [2, 1]);
    }

    #[test]
    fn ten_thousand_creates_fit_one_push() {
        let updates: Vec<_> = (0..10_000)
            .map(|i| update(&format!("refs/heads/branch-{i:05}"), UpdateKind::Create))
            .collect();
        assert_eq!(batches(&updates, None, true, 10_000).len(), 1);
    }

    #[test]
    fn batches_stay_under_the_argument_budget() {
        let long = format!("refs/heads/{}", "x".repeat(200));
        let updates: Vec<_> = (0..10_000)
            .map(|i| update(&format!("{long}{i}"), UpdateKind::Force))
            .collect();
        let split = batches(&updates, None, true, 100_000);
        assert!(split.len() > 1);
        assert_eq!(split.iter().map(|b| b.len()).sum::<usize>(), 10_000);
    }

    #[test]
    fn ending_lists_divergent_then_rejected() {
        let report = UpdateReport {
            divergent: vec!["refs/heads/develop".into()],
            rejected: vec![RejectedRef {
                refname: "refs/heads/locked".into(),
                reason: "hook declined".into(),
            }],
            rejections_transient: false,
            ..UpdateReport::default()
        };
        let Ending::Failed { error, retry, .. } = report.ending(true) else {
            panic!("must fail");
        };
        assert!(!retry);
        assert_eq!(
            error,
            "Some refs have diverged and have not been updated on the remote:\n\n\
             refs/heads/develop\n\n\
             Some refs were rejected by the remote:\n\nrefs/heads/locked (hook declined)"
        );
    }

    /// A timeout past any clock (as if it slipped past validation) is a deadline in the far
    /// future, and a whole update runs under it.
    #[tokio::test]
    async fn a_timeout_past_any_clock_is_a_far_deadline() {
        let dir = tempfile::tempdir().expect("temporary directory");
        for repo in ["local.git", "remote.git"] {
            git2::Repository::init_bare(dir.path().join(repo)).expect("init bare repository");
        }
        let path = dir.path().join("pushmirror.toml");
        std::fs::write(
            &path,
            "[[mirror]]\nname = \"m\"\nrepo = \"local.git\"\nurl = \"./remote.git\"\n",
        )
        .expect("write the configuration");
        let mut mirror = Config::load(&path).expect("valid config").mirrors.remove(0);
        mirror.timeout = Some(Duration::MAX);
        let ctx = UpdateContext {
            git_config: GitConfigPolicy::Isolated,
            cancel: CancellationToken::new(),
            first_sync: true,
            scratch_dir: None,
            allow_mass_change: false,
            lfs: lfs::SharedTally::default(),
        };
        let remote = remote_for(&mirror, &ctx).expect("a remote");
        let decade = Duration::from_secs(10 * 365 * 86_400);
        assert!(remote.deadline > Instant::now() + decade);
        let report = super::update(&mirror, &ctx).await.expect("the update runs");
        assert_eq!(report.counts, RefCounts::default());
    }
}
