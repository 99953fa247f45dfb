//! The only code that talks to remotes: `git ls-remote` and `git push --porcelain` as child
//! processes.
//!
//! Why the `git` CLI and not libgit2: libgit2 reads the local repository well (refs, ancestry,
//! LFS pointers), but its push recomputes every delta, never sends thin packs, walks every
//! advertised ref, aborts the whole push on one non-fast-forward ref, and cannot be cancelled
//! once the pack streams. `git push` is 4–16x faster on real histories, reports each ref in its
//! own words (`--porcelain`), knows `--force-with-lease`, and uses OpenSSH and the system's TLS
//! setup. A child process can also be killed, which is what timeouts and shutdown need.
//!
//! This file is the public face: [`Remote`] with its two operations, what they return and how
//! they fail. The work is split by the boundary each part guards:
//!
//! - `process`: the git child and its whole environment (credentials in the environment, never
//!   in argv; its own process group, killed on timeout or shutdown; output read bounded);
//! - `porcelain`: git's words for refs and our types, both ways: the refspecs and leases of a
//!   push, and the per-ref lines of `git push --porcelain` and `git ls-remote` read back;
//! - `classify`: git's stderr sorted into a [`RemoteError`] kind, and the remote's words
//!   about one refused ref into a [`Refusal`].
//!
//! git's stderr is classified once, there, into a kind that the scheduler uses to choose
//! between retrying and `failed`; every text that leaves this module went through
//! [`scrub_secrets`].

mod classify;
mod porcelain;
mod process;
mod ssh;
#[cfg(test)]
mod testing;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use git2::Oid;
use secrecy::SecretString;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::GitConfigPolicy;
use crate::mirror::refdiff::{RefUpdate, UpdateKind};
use crate::mirror::scratch::Scratch;
use crate::mirror::url::{RemoteUrl, scrub_secrets};

use classify::{classify_failure, exit_description};
use porcelain::{
    Leases, PorcelainLine, StagedPushPlan, collect_results, outcome_of, parse_ls_remote,
    parse_porcelain, plan_pruning_push, plan_push, plan_staged_push,
};
use process::GitOutput;
pub use ssh::SshAccess;

/// A user name and password (or token) for an HTTP(S) remote.
#[derive(Clone)]
pub struct HttpCredentials {
    pub username: String,
    pub password: SecretString,
}

/// Everything needed to run git against one mirror's remote, for one update.
#[derive(Clone)]
pub struct Remote<'a> {
    /// The local bare repository; git runs with `--git-dir` set to it.
    pub git_dir: &'a Path,
    pub url: &'a RemoteUrl,
    /// Used for HTTP(S) URLs only; never put in argv (see the module documentation).
    pub credentials: Option<HttpCredentials>,
    /// Used for SSH URLs: the mirror's key and pinned host keys (see `ssh`).
    pub ssh: Option<SshAccess>,
    pub git_config: GitConfigPolicy,
    /// When the whole update must be over; a git child still running then is killed.
    pub deadline: Instant,
    /// Cancelled on daemon shutdown; a running git child is killed.
    pub cancel: CancellationToken,
}

/// The remote's branches and tags (symbolic refs and peeled `^{}` entries dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteRefs {
    pub refs: BTreeMap<String, Oid>,
}

/// What git said of each ref of a push, keyed by the destination ref.
#[derive(Debug, Clone, Default)]
pub struct PushReport {
    /// One result per ref of the push, in the order of the updates given to
    /// [`Remote::push`].
    pub results: Vec<RefResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefResult {
    pub refname: String,
    pub outcome: RefOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefOutcome {
    /// Created, updated, forced or deleted (`*`, ` `, `+`, `-`).
    Done,
    /// Already as wanted (`=`).
    UpToDate,
    /// Refused by our own git before sending (`!` with `[rejected]`). `stale` is true for
    /// `stale info`, `fetch first` and `non-fast-forward`: the remote moved since it was read.
    /// Also used, with `stale: false`, for a ref that git did not report at all.
    Rejected { reason: String, stale: bool },
    /// Refused by the remote (`!` with `[remote rejected]`), in the remote's words. When the
    /// remote only said `failed to update ref`, the reason carries its stderr line about that
    /// ref too. `refusal` is what those words mean for another attempt.
    RemoteRejected { reason: String, refusal: Refusal },
}

/// What the remote's refusal of one ref means for another attempt, read once from the
/// remote's words when the push is parsed (only git's and JGit's exact message shapes count,
/// so a hook that happens to use the same words is still a permanent refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The ref moved on the remote between our read and its update: git's `cannot lock ref
    /// '<ref>': is at <oid> but expected <oid>`, `reference already exists` (created
    /// meanwhile) or `unable to resolve reference` (deleted meanwhile). Reading the remote
    /// again is the answer.
    Stale,
    /// A lock on the remote was in the way: another git process holds a `.lock` file there,
    /// or one crashed and left it (`Unable to create '<path>.lock': File exists.`; reftable's
    /// `cannot lock references`; JGit's `failed to lock`). A later attempt may pass.
    Locked,
    /// The pack did not arrive whole (`unpacker error`): cut or garbled in transit, or the
    /// remote could not store it (a full disk). Another attempt sends it again.
    Unpacker,
    /// Anything else: a hook, a protected branch, a ref whose name conflicts with another
    /// ref (`'refs/heads/a/b' exists; cannot create 'refs/heads/a'`). Trying again changes
    /// nothing until the remote or the local refs change.
    Permanent,
}

impl RefOutcome {
    /// Returns true when the ref was refused because the remote moved since it was read: our
    /// git's `stale info` / `fetch first` / `non-fast-forward`, or the remote's own words for
    /// a ref that another push changed between our read and our write ([`Refusal::Stale`]).
    /// Reading the remote again is the answer to both.
    pub fn is_stale(&self) -> bool {
        match self {
            RefOutcome::Rejected { stale, .. } => *stale,
            RefOutcome::RemoteRejected { refusal, .. } => *refusal == Refusal::Stale,
            RefOutcome::Done | RefOutcome::UpToDate => false,
        }
    }

    /// Returns true when another attempt may pass the remote's refusal of the ref: a lock in
    /// the way, or a pack that did not arrive whole.
    pub fn is_transient_refusal(&self) -> bool {
        matches!(
            self,
            RefOutcome::RemoteRejected {
                refusal: Refusal::Locked | Refusal::Unpacker,
                ..
            }
        )
    }

    /// Returns true when the remote refused the ref because it could not lock it
    /// ([`Refusal::Locked`]): a transient refusal, unlike a hook, a protected branch or a
    /// ref name that conflicts with another ref.
    pub fn is_lock_failure(&self) -> bool {
        matches!(
            self,
            RefOutcome::RemoteRejected {
                refusal: Refusal::Locked,
                ..
            }
        )
    }
}

/// Why talking to the remote failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "the host key of {host} does not match the pinned `ssh_known_hosts`: the host offered \
         {offered}; if the host's keys really changed, compare that fingerprint with the ones \
         the host publishes (`pushmirror detect-host-keys URL`) and update `ssh_known_hosts`"
    )]
    HostKeyMismatch { host: String, offered: String },
    #[error(
        "unknown host: no `ssh_known_hosts` line names {host}, which offered {offered}; compare \
         its fingerprints with the ones the host publishes (`pushmirror detect-host-keys URL`), \
         then pin its key in `ssh_known_hosts` (written `[host]:port` for a port other than 22)"
    )]
    HostKeyUnknown { host: String, offered: String },
    #[error(
        "the remote refused the credentials: {detail}; register the mirror's public key (the \
         `ssh_key` file with `.pub` appended, as `pushmirror ssh-keygen NAME` printed it) on \
         the remote with write access: a GitHub deploy key with \"Allow write access\", a \
         GitLab deploy key with write access, or the user's authorized_keys"
    )]
    KeyRefused { detail: String },
    #[error("the remote refused the credentials: {detail}")]
    AuthRefused { detail: String },
    #[error("the remote repository was not found: {detail}")]
    NotFound { detail: String },
    #[error("cannot reach the remote: {detail}")]
    Unreachable { detail: String },
    /// The two repositories name objects in different formats (SHA-1 and SHA-256): no push
    /// can pass between them until one is recreated in the other's format. Permanent.
    #[error(
        "the remote repository's object format differs from the local repository's: {detail}; \
         a mirror needs both in the same format (`git rev-parse --show-object-format` in each \
         says which; create the remote with `git init --bare --object-format=<format>`)"
    )]
    ObjectFormat { detail: String },
    #[error("the remote server failed: {detail}")]
    ServerError { detail: String },
    #[error("the remote repository is locked: {detail}")]
    Locked { detail: String },
    #[error("git {operation} did not finish within {timeout}; it was killed with its children")]
    Timeout {
        operation: &'static str,
        timeout: String,
    },
    #[error("git {operation} was cancelled by shutdown")]
    Cancelled { operation: &'static str },
    #[error("git {operation} failed: {detail}")]
    Failed {
        operation: &'static str,
        detail: String,
    },
    /// The scratch repository could not be staged for the push (a full disk, say): nothing
    /// was sent, and the next attempt stages it again.
    #[error(transparent)]
    Scratch(#[from] crate::mirror::scratch::ScratchError),
    #[error("cannot run git {operation}")]
    Spawn {
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl RemoteError {
    /// Returns true for failures worth retrying: network, timeout, server error, lock, and
    /// anything git said that is not recognised (`Failed`). Authentication refused and
    /// repository not found are permanent until the configuration or the remote changes.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            RemoteError::AuthRefused { .. }
                | RemoteError::KeyRefused { .. }
                | RemoteError::HostKeyMismatch { .. }
                | RemoteError::HostKeyUnknown { .. }
                | RemoteError::NotFound { .. }
                | RemoteError::ObjectFormat { .. }
        )
    }
}

impl Remote<'_> {
    /// Returns the remote's branches and tags.
    pub async fn list_refs(&self) -> Result<RemoteRefs, RemoteError> {
        const OPERATION: &str = "ls-remote";
        let args = vec![
            OsString::from("ls-remote"),
            OsString::from("--symref"),
            OsString::from("--"),
            OsString::from(self.url.for_git()),
            OsString::from("refs/heads/*"),
            OsString::from("refs/tags/*"),
        ];
        let output = self.run_git(OPERATION, args).await?;
        if !output.status.success() {
            return Err(self.failure(OPERATION, &output));
        }
        let listed = parse_ls_remote(&output.stdout).map_err(|detail| RemoteError::Failed {
            operation: OPERATION,
            detail: scrub_secrets(&detail, &self.secrets()),
        })?;
        // Checked here, before any plan: a name of the other format must not reach libgit2.
        let local = crate::mirror::oid::repository_format(self.git_dir);
        if let Some((name, oid)) = crate::mirror::oid::foreign_ref(&listed.refs, local) {
            return Err(RemoteError::ObjectFormat {
                detail: format!(
                    "the remote's {name} is {oid}, a {} name, and the local repository is {local}",
                    oid.object_format()
                ),
            });
        }
        Ok(listed)
    }

    /// Pushes `updates` in one `git push`, returning what happened to each ref.
    ///
    /// Refs refused by our git or by the remote are results, not errors; `Err` means git could
    /// not push at all (or cannot say what happened to the refs). Pushing nothing runs no git.
    pub async fn push(&self, updates: &[RefUpdate]) -> Result<PushReport, RemoteError> {
        let plan = plan_push(updates);
        if plan.refspecs.is_empty() {
            return Ok(nothing_pushed(updates, plan.invalid));
        }
        let args = push_args(
            None,
            false,
            plan.leases,
            OsString::from(self.url.for_git()),
            plan.refspecs,
        );
        let output = self.run_git(PUSH, args).await?;
        self.results_of(PUSH, updates, &output, plan.invalid)
    }

    /// Pushes `updates` in one `git push` from the scratch repository `scratch`, returning
    /// what happened to each ref: the same push as [`Remote::push`], in time linear in the
    /// number of refs.
    ///
    /// The scratch repository is staged with exactly the new values of the creates,
    /// fast-forwards and forced updates, and pushed with the pattern refspecs of branches and
    /// tags; deletes are `:<ref>`. git matches explicit refspecs against every ref,
    /// quadratically; patterns go through a sorted index (see `mirror::scratch`). Forced
    /// updates and deletes carry their leases: first through the scratch repository's hook
    /// (see [`Leases::Hook`]), and if it finds a remote ref that moved since it was read,
    /// again with git's own leases, which refuse that ref alone.
    pub async fn push_staged(
        &self,
        scratch: &Scratch,
        updates: &[RefUpdate],
    ) -> Result<PushReport, RemoteError> {
        let leases = updates
            .iter()
            .filter(|u| matches!(u.kind, UpdateKind::Force | UpdateKind::Delete))
            .count();
        if leases > 0 {
            let plan = plan_staged_push(updates, Leases::Hook);
            if let Some(report) = self.push_hooked(scratch, updates, plan).await? {
                return Ok(report);
            }
        }
        // Explicit leases cost leases x remote refs in git; tracking refs cost one lookup
        // each, but git then writes one loose tracking ref per pushed ref.
        let by = if leases >= TRACKING_LEASES_FROM {
            Leases::Tracking
        } else {
            Leases::Explicit
        };
        self.push_staged_plan(scratch, updates, plan_staged_push(updates, by))
            .await
    }

    /// Pushes `updates` from the scratch repository as [`Remote::push_staged`] does, deleting
    /// with `--prune` instead of one `:<ref>` each: for batches of many deletes. `remote` is
    /// what the remote is expected to hold now (as read, with this update's earlier pushes).
    pub async fn push_pruning(
        &self,
        scratch: &Scratch,
        updates: &[RefUpdate],
        remote: &BTreeMap<String, Oid>,
    ) -> Result<PushReport, RemoteError> {
        let hooked = plan_pruning_push(updates, remote, Leases::Hook);
        let mut report = match self.push_hooked(scratch, updates, hooked).await? {
            Some(report) => report,
            None => {
                let plan = plan_pruning_push(updates, remote, Leases::Tracking);
                self.push_staged_plan(scratch, updates, plan).await?
            }
        };
        // The refs outside the plan came back up to date, and any the prune refused: only
        // the updates' results matter.
        report.results.truncate(updates.len());
        Ok(report)
    }

    /// Stages `plan` (whose leases git checks) in `scratch` and pushes it.
    async fn push_staged_plan(
        &self,
        scratch: &Scratch,
        updates: &[RefUpdate],
        plan: StagedPushPlan,
    ) -> Result<PushReport, RemoteError> {
        if plan.refspecs.is_empty() {
            return Ok(nothing_pushed(updates, plan.invalid));
        }
        let output = self.run_staged(scratch, &plan).await?;
        self.results_of(PUSH, updates, &output, plan.invalid)
    }

    /// Stages a [`Leases::Hook`] `plan` and its leases in `scratch` and pushes it. `None`
    /// when the hook refused the leases, or could not run: nothing was pushed.
    async fn push_hooked(
        &self,
        scratch: &Scratch,
        updates: &[RefUpdate],
        plan: StagedPushPlan,
    ) -> Result<Option<PushReport>, RemoteError> {
        if plan.refspecs.is_empty() {
            return Ok(Some(nothing_pushed(updates, plan.invalid)));
        }
        if !scratch.stage_leases(&plan.checked)? {
            debug!("the scratch repository's hook cannot run here: pushing with git's leases");
            return Ok(None);
        }
        let output = self.run_staged(scratch, &plan).await?;
        if let Some(refused) = scratch.refused_leases() {
            debug!(
                refs = refused.len(),
                first = refused.first().map(String::as_str).unwrap_or_default(),
                "remote refs moved since they were read: pushing with git's own leases"
            );
            return Ok(None);
        }
        self.results_of(PUSH, updates, &output, plan.invalid)
            .map(Some)
    }

    /// Stages the refs of `plan` in `scratch` and runs its push: to the scratch repository's
    /// remote when the leases come from tracking refs, else to the URL; with the scratch
    /// repository's hooks only, and its `pre-push` hook only for [`Leases::Hook`].
    async fn run_staged(
        &self,
        scratch: &Scratch,
        plan: &StagedPushPlan,
    ) -> Result<GitOutput, RemoteError> {
        scratch
            .stage(plan.staged.iter().map(|(name, oid)| (name.as_str(), *oid)))
            .and_then(|()| scratch.stage_tracking(&plan.tracking))?;
        let from_scratch = Remote {
            git_dir: scratch.git_dir(),
            ..self.clone()
        };
        let destination = if plan.leases_by == Leases::Tracking {
            OsString::from(scratch.remote_name())
        } else {
            OsString::from(self.url.for_git())
        };
        let hooks = scratch.hooks_dir();
        let args = push_args(
            Some(&hooks),
            plan.leases_by == Leases::Hook,
            plan.leases.clone(),
            destination,
            plan.refspecs.clone(),
        );
        from_scratch.run_git(PUSH, args).await
    }

    /// Returns one result per update from the output of the `git push` that pushed them,
    /// or the error of a push that failed as a whole.
    fn results_of(
        &self,
        operation: &'static str,
        updates: &[RefUpdate],
        output: &GitOutput,
        invalid: Vec<RefResult>,
    ) -> Result<PushReport, RemoteError> {
        let lines = parse_porcelain(&output.stdout);
        let code = output.status.code();
        // git push exits 1 when some ref was refused and still reports every ref; any other
        // failure (128 from die(), a signal) means the refs' fate is unknown.
        if (lines.is_empty() && !output.status.success()) || !matches!(code, Some(0 | 1)) {
            return Err(self.failure(operation, output));
        }
        if let Some(error) = self.remote_failure(operation, &lines, output) {
            return Err(error);
        }
        let secrets = self.secrets();
        let reported = lines
            .into_iter()
            .map(|line| RefResult {
                outcome: outcome_of(&line, &output.stderr, &secrets),
                refname: line.dst,
            })
            .collect();
        Ok(PushReport {
            results: collect_results(updates, reported, invalid),
        })
    }

    /// Returns the error of a push whose report says `[remote failure] (remote failed to report
    /// status)`: the connection broke after the pack was sent. Nothing is known of any ref, so
    /// the push failed as a whole, for the reason stderr gives (usually a network one, hence
    /// retried after a fresh read).
    fn remote_failure(
        &self,
        operation: &'static str,
        lines: &[PorcelainLine],
        output: &GitOutput,
    ) -> Option<RemoteError> {
        let line = lines
            .iter()
            .find(|line| line.summary.starts_with("[remote failure]"))?;
        let stderr = format!("{}\n{}", output.stderr, line.summary);
        Some(classify_failure(
            operation,
            &stderr,
            &exit_description(output.status),
            &self.secrets(),
        ))
    }

    /// Returns the secrets that must never appear in text we pass on.
    fn secrets(&self) -> Vec<&SecretString> {
        let mut secrets = Vec::new();
        if let Some(credentials) = &self.credentials {
            secrets.push(&credentials.password);
        }
        if let Some(password) = self.url.password() {
            secrets.push(password);
        }
        secrets
    }

    /// Returns the error for a git that failed, from its stderr.
    fn failure(&self, operation: &'static str, output: &GitOutput) -> RemoteError {
        let error = classify_failure(
            operation,
            &output.stderr,
            &exit_description(output.status),
            &self.secrets(),
        );
        debug!(operation, cause = %error, "git failed");
        error
    }
}

/// The operation name of every push, in logs and errors.
const PUSH: &str = "push";

/// Returns the report of a push that had nothing to push: the invalid updates' results.
fn nothing_pushed(updates: &[RefUpdate], invalid: Vec<RefResult>) -> PushReport {
    PushReport {
        results: collect_results(updates, Vec::new(), invalid),
    }
}

/// From how many forced updates and deletes a staged push that the hook refused takes git's
/// leases from tracking refs (measured: 1,000 forced among 10,000 refs take 8x the time of
/// git's unleased push with explicit leases, about 1.2x with tracking refs; below a few
/// hundred the explicit leases cost less than git's loose tracking-ref writes). The hook's
/// leases cost neither: 0.96x, one `sh` and one `awk` per push.
const TRACKING_LEASES_FROM: usize = 200;

/// Returns the arguments of `git push` (after `--git-dir`): porcelain output, no tags beyond
/// the refspecs, the leases, then the destination (the URL, or the scratch repository's
/// remote) and the refspecs. Hooks from `hooks` when given (`core.hooksPath`, over anything
/// the real repository's config says, so that none of its hooks runs for the scratch
/// repository's refs either), and its `pre-push` hook only if `verify`.
fn push_args(
    hooks: Option<&Path>,
    verify: bool,
    leases: Vec<String>,
    destination: OsString,
    refspecs: Vec<String>,
) -> Vec<OsString> {
    let mut args = Vec::new();
    if let Some(hooks) = hooks {
        let mut setting = OsString::from("core.hooksPath=");
        setting.push(hooks);
        args.extend([OsString::from("-c"), setting]);
    }
    args.extend(["push", "--porcelain", "--no-follow-tags"].map(OsString::from));
    if !verify {
        args.push(OsString::from("--no-verify"));
    }
    args.extend(leases.into_iter().map(OsString::from));
    args.push(OsString::from("--"));
    args.push(destination);
    args.extend(refspecs.into_iter().map(OsString::from));
    args
}

#[cfg(test)]
mod tests {
    use super::testing::{fixture, refmap, remote, update, url_of};
    use super::*;
    use crate::mirror::refdiff::UpdateKind;

    /// Installs `script` as the executable hook `name` of the bare repository `repo`.
    fn install_hook(repo: &Path, name: &str, script: &str) {
        let hook = repo.join("hooks").join(name);
        std::fs::write(&hook, script).expect("hook written");
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("hook made executable");
    }

    #[tokio::test]
    async fn refs_that_move_on_the_remote_during_the_push_are_stale() {
        let f = fixture();
        f.seed(&[
            ("refs/heads/moved", f.a),
            ("refs/heads/deleted", f.a),
            ("refs/heads/other", f.c),
        ]);
        // Between receive-pack's advertisement and its ref updates, another push (played by a
        // pre-receive hook, outside the quarantine that keeps hooks from changing refs) moves
        // one ref, deletes one and creates one.
        install_hook(
            &f.remote,
            "pre-receive",
            &format!(
                "#!/bin/sh
unset GIT_QUARANTINE_PATH
                 git update-ref refs/heads/moved {c}
                 git update-ref -d refs/heads/deleted
                 git update-ref refs/heads/created {c}
",
                c = f.c
            ),
        );
        let url = url_of(&f.remote);
        let report = remote(&f.local, &url)
            .push(&[
                update(
                    "refs/heads/moved",
                    UpdateKind::FastForward,
                    Some(f.a),
                    Some(f.b),
                ),
                update(
                    "refs/heads/deleted",
                    UpdateKind::FastForward,
                    Some(f.a),
                    Some(f.b),
                ),
                update("refs/heads/created", UpdateKind::Create, None, Some(f.b)),
            ])
            .await
            .expect("a refused ref is a result, not an error");
        for result in &report.results {
            assert!(result.outcome.is_stale(), "{result:?}");
            assert!(!result.outcome.is_lock_failure(), "{result:?}");
        }
        let RefOutcome::RemoteRejected { reason, .. } = &report.results[0].outcome else {
            panic!("expected a remote rejection, got {:?}", report.results[0]);
        };
        assert_eq!(
            *reason,
            format!(
                "failed to update ref: cannot lock ref 'refs/heads/moved': is at {} but \
                 expected {}",
                f.c, f.a
            )
        );
    }

    #[tokio::test]
    async fn a_ref_whose_name_conflicts_with_a_remote_ref_is_refused_for_good() {
        let f = fixture();
        f.seed(&[("refs/heads/a/b", f.a), ("refs/heads/c", f.a)]);
        let url = url_of(&f.remote);
        let report = remote(&f.local, &url)
            .push(&[
                update("refs/heads/a", UpdateKind::Create, None, Some(f.b)),
                update("refs/heads/c/d", UpdateKind::Create, None, Some(f.b)),
            ])
            .await
            .expect("a refused ref is a result, not an error");
        let reasons = [
            "failed to update ref: cannot lock ref 'refs/heads/a': 'refs/heads/a/b' exists; \
             cannot create 'refs/heads/a'",
            "failed to update ref: cannot lock ref 'refs/heads/c/d': 'refs/heads/c' exists; \
             cannot create 'refs/heads/c/d'",
        ];
        assert_eq!(
            outcomes(&report),
            [
                (
                    "refs/heads/a",
                    RefOutcome::RemoteRejected {
                        reason: reasons[0].to_owned(),
                        refusal: Refusal::Permanent,
                    }
                ),
                (
                    "refs/heads/c/d",
                    RefOutcome::RemoteRejected {
                        reason: reasons[1].to_owned(),
                        refusal: Refusal::Permanent,
                    }
                ),
            ]
        );
        for result in &report.results {
            assert!(!result.outcome.is_lock_failure(), "{result:?}");
            assert!(!result.outcome.is_stale(), "{result:?}");
        }
    }

    fn outcomes(report: &PushReport) -> Vec<(&str, RefOutcome)> {
        report
            .results
            .iter()
            .map(|r| (r.refname.as_str(), r.outcome.clone()))
            .collect()
    }

    #[tokio::test]
    async fn list_refs_of_an_empty_remote_is_empty() {
        let f = fixture();
        let url = url_of(&f.remote);
        let refs = remote(&f.local, &url)
            .list_refs()
            .await
            .expect("ls-remote works");
        assert_eq!(refs, RemoteRefs::default());
    }

    #[tokio::test]
    async fn list_refs_keeps_branches_and_tags_only() {
        let f = fixture();
        f.seed(&[
            ("refs/heads/main", f.b),
            ("refs/heads/feature", f.c),
            ("refs/tags/light", f.a),
            ("refs/pull/1/head", f.c),
        ]);
        f.env.git_in(
            &f.remote,
            &["tag", "-a", "-m", "release", "v1", &f.b.to_string()],
        );
        let v1 = Oid::from_str(&f.env.git_in(&f.remote, &["rev-parse", "refs/tags/v1"]))
            .expect("an oid");
        assert_ne!(v1, f.b, "an annotated tag has its own object");
        f.env.git_in(
            &f.remote,
            &["symbolic-ref", "refs/heads/alias", "refs/heads/main"],
        );

        let url = url_of(&f.remote);
        let refs = remote(&f.local, &url)
            .list_refs()
            .await
            .expect("ls-remote works");
        assert_eq!(
            refs.refs,
            refmap(&[
                ("refs/heads/feature", f.c),
                ("refs/heads/main", f.b),
                ("refs/tags/light", f.a),
                ("refs/tags/v1", v1),
            ])
        );
    }

    #[tokio::test]
    async fn push_creates_then_fast_forwards() {
        let f = fixture();
        let url = url_of(&f.remote);
        let remote = remote(&f.local, &url);

        let report = remote
            .push(&[
                update("refs/heads/main", UpdateKind::Create, None, Some(f.a)),
                update("refs/tags/t1", UpdateKind::Create, None, Some(f.c)),
            ])
            .await
            .expect("push works");
        assert_eq!(
            outcomes(&report),
            [
                ("refs/heads/main", RefOutcome::Done),
                ("refs/tags/t1", RefOutcome::Done)
            ]
        );
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[("refs/heads/main", f.a), ("refs/tags/t1", f.c)])
        );

        let report = remote
            .push(&[update(
                "refs/heads/main",
                UpdateKind::FastForward,
                Some(f.a),
                Some(f.b),
            )])
            .await
            .expect("push works");
        assert_eq!(outcomes(&report), [("refs/heads/main", RefOutcome::Done)]);
        assert_eq!(f.env.refs(&f.remote)["refs/heads/main"], f.b);
    }

    #[tokio::test]
    async fn push_forces_with_a_good_lease_and_deletes() {
        let f = fixture();
        f.seed(&[
            ("refs/heads/main", f.b),
            ("refs/heads/old", f.a),
            ("refs/tags/moved", f.a),
        ]);
        let url = url_of(&f.remote);
        let report = remote(&f.local, &url)
            .push(&[
                update("refs/heads/main", UpdateKind::Force, Some(f.b), Some(f.c)),
                update("refs/tags/moved", UpdateKind::Force, Some(f.a), Some(f.b)),
                update("refs/heads/old", UpdateKind::Delete, Some(f.a), None),
            ])
            .await
            .expect("push works");
        assert_eq!(
            outcomes(&report),
            [
                ("refs/heads/main", RefOutcome::Done),
                ("refs/tags/moved", RefOutcome::Done),
                ("refs/heads/old", RefOutcome::Done),
            ]
        );
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[("refs/heads/main", f.c), ("refs/tags/moved", f.b)])
        );
    }

    #[tokio::test]
    async fn stale_leases_are_rejected_as_stale_and_change_nothing() {
        let f = fixture();
        f.seed(&[("refs/heads/main", f.b), ("refs/heads/old", f.b)]);
        let url = url_of(&f.remote);
        // Both were read as A, but the remote has moved to B since.
        let report = remote(&f.local, &url)
            .push(&[
                update("refs/heads/main", UpdateKind::Force, Some(f.a), Some(f.c)),
                update("refs/heads/old", UpdateKind::Delete, Some(f.a), None),
            ])
            .await
            .expect("a refused ref is a result, not an error");
        let stale = RefOutcome::Rejected {
            reason: "stale info".to_owned(),
            stale: true,
        };
        assert_eq!(
            outcomes(&report),
            [
                ("refs/heads/main", stale.clone()),
                ("refs/heads/old", stale)
            ]
        );
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[("refs/heads/main", f.b), ("refs/heads/old", f.b)])
        );
    }

    #[tokio::test]
    async fn fast_forward_onto_a_remote_that_moved_is_rejected_as_stale() {
        let f = fixture();
        // Both were read as A. Since then main moved on the remote to a commit we do not
        // have, and other to one we have (C) that B does not descend from.
        f.seed(&[("refs/heads/main", f.a), ("refs/heads/other", f.c)]);
        let theirs = f.env.commit(&f.remote, "theirs", Some(f.a));
        f.env.set_ref(&f.remote, "refs/heads/main", theirs);

        let url = url_of(&f.remote);
        let report = remote(&f.local, &url)
            .push(&[
                update(
                    "refs/heads/main",
                    UpdateKind::FastForward,
                    Some(f.a),
                    Some(f.b),
                ),
                update(
                    "refs/heads/other",
                    UpdateKind::FastForward,
                    Some(f.a),
                    Some(f.b),
                ),
            ])
            .await
            .expect("a refused ref is a result, not an error");
        assert_eq!(
            outcomes(&report),
            [
                (
                    "refs/heads/main",
                    RefOutcome::Rejected {
                        reason: "fetch first".to_owned(),
                        stale: true
                    }
                ),
                (
                    "refs/heads/other",
                    RefOutcome::Rejected {
                        reason: "non-fast-forward".to_owned(),
                        stale: true
                    }
                ),
            ]
        );
        assert_eq!(f.env.refs(&f.remote)["refs/heads/main"], theirs);
    }

    #[tokio::test]
    async fn a_ref_already_as_wanted_is_up_to_date() {
        let f = fixture();
        f.seed(&[("refs/heads/main", f.b)]);
        let url = url_of(&f.remote);
        let report = remote(&f.local, &url)
            .push(&[update(
                "refs/heads/main",
                UpdateKind::FastForward,
                Some(f.a),
                Some(f.b),
            )])
            .await
            .expect("push works");
        assert_eq!(
            outcomes(&report),
            [("refs/heads/main", RefOutcome::UpToDate)]
        );
    }

    #[tokio::test]
    async fn a_hook_declining_one_ref_leaves_the_others_pushed() {
        let f = fixture();
        let hook = f.remote.join("hooks/update");
        std::fs::write(
            &hook,
            "#!/bin/sh\ncase \"$1\" in refs/heads/protected) exit 1;; esac\nexit 0\n",
        )
        .expect("hook written");
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("hook made executable");

        let url = url_of(&f.remote);
        let report = remote(&f.local, &url)
            .push(&[
                update("refs/heads/main", UpdateKind::Create, None, Some(f.b)),
                update("refs/heads/protected", UpdateKind::Create, None, Some(f.b)),
                update("refs/tags/v1", UpdateKind::Create, None, Some(f.a)),
            ])
            .await
            .expect("a refused ref is a result, not an error");
        assert_eq!(
            outcomes(&report),
            [
                ("refs/heads/main", RefOutcome::Done),
                (
                    "refs/heads/protected",
                    RefOutcome::RemoteRejected {
                        reason: "hook declined".to_owned(),
                        refusal: Refusal::Permanent,
                    }
                ),
                ("refs/tags/v1", RefOutcome::Done),
            ]
        );
        assert!(!report.results[1].outcome.is_lock_failure());
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[("refs/heads/main", f.b), ("refs/tags/v1", f.a)])
        );
    }

    #[tokio::test]
    async fn a_locked_remote_ref_is_a_lock_failure() {
        let f = fixture();
        f.seed(&[("refs/heads/main", f.a), ("refs/heads/free", f.a)]);
        std::fs::write(f.remote.join("refs/heads/main.lock"), "").expect("lock file made");

        let url = url_of(&f.remote);
        let report = remote(&f.local, &url)
            .push(&[
                update(
                    "refs/heads/main",
                    UpdateKind::FastForward,
                    Some(f.a),
                    Some(f.b),
                ),
                update(
                    "refs/heads/free",
                    UpdateKind::FastForward,
                    Some(f.a),
                    Some(f.b),
                ),
            ])
            .await
            .expect("a refused ref is a result, not an error");
        let main = &report.results[0];
        assert_eq!(main.refname, "refs/heads/main");
        let RefOutcome::RemoteRejected { reason, .. } = &main.outcome else {
            panic!("expected a remote rejection, got {main:?}");
        };
        assert!(
            reason.starts_with("failed to update ref: cannot lock ref 'refs/heads/main'"),
            "{reason}"
        );
        assert!(main.outcome.is_lock_failure());
        assert_eq!(report.results[1].outcome, RefOutcome::Done);
    }

    #[tokio::test]
    async fn pushing_nothing_runs_no_git() {
        let f = fixture();
        let url = url_of(&f.path_that_does_not_exist());
        let report = remote(&f.local, &url)
            .push(&[])
            .await
            .expect("nothing to do");
        assert!(report.results.is_empty());
        let invalid = [update("refs/heads/x", UpdateKind::Create, None, None)];
        let report = remote(&f.local, &url)
            .push(&invalid)
            .await
            .expect("nothing to push");
        assert!(matches!(
            report.results[0].outcome,
            RefOutcome::Rejected { stale: false, .. }
        ));
    }

    /// Returns the scratch repository of the fixture's local repository.
    fn scratch_of(f: &super::testing::Fixture) -> Scratch {
        let url = f.remote.to_string_lossy().into_owned();
        Scratch::prepare(&f.env.path("scratch"), "m", &f.local, &url).expect("scratch prepared")
    }

    /// The fast path: every kind of change in one push from the scratch repository, and the
    /// refs outside the plan (a branch, a pull request ref) untouched.
    #[tokio::test]
    async fn staged_push_creates_fast_forwards_forces_with_leases_and_deletes() {
        let f = fixture();
        f.seed(&[
            ("refs/heads/main", f.a),
            ("refs/heads/rewritten", f.b),
            ("refs/heads/old", f.a),
            ("refs/heads/outside", f.c),
            ("refs/tags/moved", f.a),
            ("refs/pull/1/head", f.c),
        ]);
        let url = url_of(&f.remote);
        let scratch = scratch_of(&f);
        let report = remote(&f.local, &url)
            .push_staged(
                &scratch,
                &[
                    update(
                        "refs/heads/main",
                        UpdateKind::FastForward,
                        Some(f.a),
                        Some(f.b),
                    ),
                    update("refs/heads/new", UpdateKind::Create, None, Some(f.c)),
                    update("refs/tags/t1", UpdateKind::Create, None, Some(f.a)),
                    update(
                        "refs/heads/rewritten",
                        UpdateKind::Force,
                        Some(f.b),
                        Some(f.c),
                    ),
                    update("refs/tags/moved", UpdateKind::Force, Some(f.a), Some(f.b)),
                    update("refs/heads/old", UpdateKind::Delete, Some(f.a), None),
                ],
            )
            .await
            .expect("push works");
        assert_eq!(
            outcomes(&report),
            [
                ("refs/heads/main", RefOutcome::Done),
                ("refs/heads/new", RefOutcome::Done),
                ("refs/tags/t1", RefOutcome::Done),
                ("refs/heads/rewritten", RefOutcome::Done),
                ("refs/tags/moved", RefOutcome::Done),
                ("refs/heads/old", RefOutcome::Done),
            ]
        );
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[
                ("refs/heads/main", f.b),
                ("refs/heads/new", f.c),
                ("refs/heads/outside", f.c),
                ("refs/heads/rewritten", f.c),
                ("refs/tags/moved", f.b),
                ("refs/tags/t1", f.a),
            ])
        );
        let pull = f.env.git_in(&f.remote, &["rev-parse", "refs/pull/1/head"]);
        assert_eq!(pull, f.c.to_string());
        // Only the staged refs, in the sorted packed-refs; nothing loose: the hook checked
        // the leases, and refused none, so git wrote no tracking ref.
        let packed =
            std::fs::read_to_string(scratch.git_dir().join("packed-refs")).expect("packed-refs");
        assert_eq!(packed.lines().count(), 6, "{packed}");
        assert_eq!(f.env.refs(scratch.git_dir()).len(), 5);
        let leases = std::fs::read_to_string(scratch.git_dir().join("pushmirror-leases"))
            .expect("leases written");
        assert!(
            leases.contains(&format!(
                "refs/heads/new -\nrefs/tags/t1 -\nrefs/heads/rewritten {}\n",
                f.b
            )),
            "{leases}"
        );
        assert_eq!(scratch.refused_leases(), None);
    }

    /// A hook git would not run (its mode changed here; a `noexec` file system likewise)
    /// is never relied on: git's own leases refuse the stale ref, and the others land.
    #[tokio::test]
    async fn a_hook_that_cannot_run_leaves_the_leases_to_git() {
        let f = fixture();
        f.seed(&[("refs/heads/main", f.b), ("refs/heads/stale", f.b)]);
        let url = url_of(&f.remote);
        let scratch = scratch_of(&f);
        scratch.stage_leases(&[]).expect("hook written");
        let hook = scratch.hooks_dir().join("pre-push");
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("hook made plain");
        let report = remote(&f.local, &url)
            .push_staged(
                &scratch,
                &[
                    update("refs/heads/main", UpdateKind::Force, Some(f.b), Some(f.a)),
                    // Read as A, B on the remote.
                    update("refs/heads/stale", UpdateKind::Force, Some(f.a), Some(f.c)),
                ],
            )
            .await
            .expect("a refused ref is a result, not an error");
        assert_eq!(
            outcomes(&report),
            [
                ("refs/heads/main", RefOutcome::Done),
                (
                    "refs/heads/stale",
                    RefOutcome::Rejected {
                        reason: "stale info".to_owned(),
                        stale: true
                    }
                ),
            ]
        );
        assert_eq!(scratch.refused_leases(), None, "the hook ran");
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[("refs/heads/main", f.a), ("refs/heads/stale", f.b)])
        );
    }

    /// The hook's leases: a ref that moved on the remote since it was read (or appeared, for
    /// a create) refuses the whole push before git sends anything, and the hook names it;
    /// the real repository's hooks, wherever its config puts them, never run.
    #[tokio::test]
    async fn the_hook_refuses_a_push_whose_remote_refs_moved_and_nothing_is_sent() {
        let f = fixture();
        f.seed(&[("refs/heads/main", f.b), ("refs/heads/taken", f.c)]);
        let theirs = f.env.path("their-hooks");
        std::fs::create_dir_all(&theirs).expect("hooks directory");
        install_hook(&f.local, "pre-push", "#!/bin/sh\nexit 1\n");
        std::fs::write(theirs.join("pre-push"), "#!/bin/sh\nexit 1\n").expect("hook");
        std::fs::set_permissions(
            theirs.join("pre-push"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("hook made executable");
        f.env.git_in(
            &f.local,
            &["config", "core.hooksPath", &theirs.to_string_lossy()],
        );
        let url = url_of(&f.remote);
        let scratch = scratch_of(&f);
        let push = |updates: Vec<RefUpdate>| {
            let remote = remote(&f.local, &url);
            let scratch = &scratch;
            async move {
                let plan = plan_staged_push(&updates, Leases::Hook);
                remote.push_hooked(scratch, &updates, plan).await
            }
        };
        let packs = || f.env.git_in(&f.remote, &["count-objects", "-v"]);
        let before = packs();
        // main was read as A (B now); taken as absent (C now); new and the fast-forward are
        // as read, and are not pushed either.
        let refused = push(vec![
            update("refs/heads/main", UpdateKind::Force, Some(f.a), Some(f.c)),
            update("refs/heads/taken", UpdateKind::Create, None, Some(f.a)),
            update("refs/heads/new", UpdateKind::Create, None, Some(f.a)),
        ])
        .await
        .expect("a refused lease is no error");
        assert!(refused.is_none(), "pushed: {refused:?}");
        let mut named = scratch.refused_leases().expect("the hook names the refs");
        named.sort();
        assert_eq!(named, ["refs/heads/main", "refs/heads/taken"]);
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[("refs/heads/main", f.b), ("refs/heads/taken", f.c)])
        );
        assert_eq!(packs(), before, "objects were sent");

        // Leases that hold: pushed, with the real repository's failing hooks ignored.
        let report = push(vec![
            update("refs/heads/main", UpdateKind::Force, Some(f.b), Some(f.a)),
            update("refs/heads/taken", UpdateKind::Delete, Some(f.c), None),
            update("refs/heads/new", UpdateKind::Create, None, Some(f.c)),
        ])
        .await
        .expect("push works")
        .expect("the leases hold");
        assert!(
            report.results.iter().all(|r| r.outcome == RefOutcome::Done),
            "{report:?}"
        );
        assert_eq!(scratch.refused_leases(), None);
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[("refs/heads/main", f.a), ("refs/heads/new", f.c)])
        );
    }

    /// A stale lease refuses its forced update or delete and changes nothing, while the
    /// other refs of the push land.
    #[tokio::test]
    async fn staged_push_with_stale_leases_changes_only_the_other_refs() {
        let f = fixture();
        f.seed(&[("refs/heads/main", f.b), ("refs/heads/old", f.b)]);
        let url = url_of(&f.remote);
        let scratch = scratch_of(&f);
        // Both were read as A, but the remote has moved to B since.
        let report = remote(&f.local, &url)
            .push_staged(
                &scratch,
                &[
                    update("refs/heads/main", UpdateKind::Force, Some(f.a), Some(f.c)),
                    update("refs/heads/old", UpdateKind::Delete, Some(f.a), None),
                    update("refs/heads/new", UpdateKind::Create, None, Some(f.a)),
                ],
            )
            .await
            .expect("a refused ref is a result, not an error");
        let stale = RefOutcome::Rejected {
            reason: "stale info".to_owned(),
            stale: true,
        };
        assert_eq!(
            outcomes(&report),
            [
                ("refs/heads/main", stale.clone()),
                ("refs/heads/old", stale),
                ("refs/heads/new", RefOutcome::Done),
            ]
        );
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[
                ("refs/heads/main", f.b),
                ("refs/heads/new", f.a),
                ("refs/heads/old", f.b)
            ])
        );
        // The hook refused the first push; git's leases refused the two refs of the second.
        let mut refused = scratch.refused_leases().expect("the hook refused");
        refused.sort();
        assert_eq!(refused, ["refs/heads/main", "refs/heads/old"]);
    }

    /// The pattern refspecs carry no `+`: a create or fast-forward whose remote ref moved
    /// meanwhile is refused, never forced.
    #[tokio::test]
    async fn staged_push_never_forces_creates_or_fast_forwards() {
        let f = fixture();
        f.seed(&[
            ("refs/heads/main", f.a),
            ("refs/heads/other", f.c),
            ("refs/tags/v1", f.c),
        ]);
        let theirs = f.env.commit(&f.remote, "theirs", Some(f.a));
        f.env.set_ref(&f.remote, "refs/heads/main", theirs);
        let url = url_of(&f.remote);
        let report = remote(&f.local, &url)
            .push_staged(
                &scratch_of(&f),
                &[
                    update(
                        "refs/heads/main",
                        UpdateKind::FastForward,
                        Some(f.a),
                        Some(f.b),
                    ),
                    update(
                        "refs/heads/other",
                        UpdateKind::FastForward,
                        Some(f.a),
                        Some(f.b),
                    ),
                    // Read as absent, created on the remote since.
                    update("refs/tags/v1", UpdateKind::Create, None, Some(f.a)),
                ],
            )
            .await
            .expect("a refused ref is a result, not an error");
        let results = outcomes(&report);
        assert_eq!(
            results[..2],
            [
                (
                    "refs/heads/main",
                    RefOutcome::Rejected {
                        reason: "fetch first".to_owned(),
                        stale: true
                    }
                ),
                (
                    "refs/heads/other",
                    RefOutcome::Rejected {
                        reason: "non-fast-forward".to_owned(),
                        stale: true
                    }
                ),
            ]
        );
        assert!(
            matches!(results[2].1, RefOutcome::Rejected { .. }),
            "{results:?}"
        );
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[
                ("refs/heads/main", theirs),
                ("refs/heads/other", f.c),
                ("refs/tags/v1", f.c)
            ])
        );
    }

    /// The remote refusing one ref of a staged push leaves the others pushed, each ref
    /// reported; a ref already as wanted is up to date.
    #[tokio::test]
    async fn staged_push_reports_a_remote_rejection_and_the_others_land() {
        let f = fixture();
        install_hook(
            &f.remote,
            "update",
            "#!/bin/sh\ncase \"$1\" in refs/heads/protected) exit 1;; esac\nexit 0\n",
        );
        f.seed(&[("refs/heads/same", f.b)]);
        let url = url_of(&f.remote);
        let report = remote(&f.local, &url)
            .push_staged(
                &scratch_of(&f),
                &[
                    update("refs/heads/main", UpdateKind::Create, None, Some(f.b)),
                    update("refs/heads/protected", UpdateKind::Create, None, Some(f.b)),
                    update(
                        "refs/heads/same",
                        UpdateKind::FastForward,
                        Some(f.a),
                        Some(f.b),
                    ),
                ],
            )
            .await
            .expect("a refused ref is a result, not an error");
        assert_eq!(
            outcomes(&report),
            [
                ("refs/heads/main", RefOutcome::Done),
                (
                    "refs/heads/protected",
                    RefOutcome::RemoteRejected {
                        reason: "hook declined".to_owned(),
                        refusal: Refusal::Permanent,
                    }
                ),
                ("refs/heads/same", RefOutcome::UpToDate),
            ]
        );
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[("refs/heads/main", f.b), ("refs/heads/same", f.b)])
        );
    }

    /// Many forced updates and deletes take their leases from tracking refs: the same
    /// outcomes, a stale lease still refused, a create that finds its ref taken refused.
    #[tokio::test]
    async fn staged_push_with_many_leases_uses_tracking_refs_with_the_same_rules() {
        let f = fixture();
        let names: Vec<String> = (0..TRACKING_LEASES_FROM)
            .map(|i| format!("refs/heads/f{i:03}"))
            .collect();
        let mut seed: Vec<(&str, Oid)> = names.iter().map(|n| (n.as_str(), f.b)).collect();
        seed.extend([
            ("refs/heads/stale", f.b),
            ("refs/heads/gone", f.a),
            ("refs/heads/taken", f.c),
            ("refs/heads/main", f.a),
            ("refs/heads/outside", f.c),
        ]);
        f.seed(&seed);
        let mut updates: Vec<RefUpdate> = names
            .iter()
            .map(|n| update(n, UpdateKind::Force, Some(f.b), Some(f.c)))
            .collect();
        updates.extend([
            // Read as A, but B on the remote now.
            update("refs/heads/stale", UpdateKind::Force, Some(f.a), Some(f.c)),
            update("refs/heads/gone", UpdateKind::Delete, Some(f.a), None),
            // Read as absent, created on the remote since.
            update("refs/heads/taken", UpdateKind::Create, None, Some(f.a)),
            update("refs/heads/new", UpdateKind::Create, None, Some(f.a)),
            update(
                "refs/heads/main",
                UpdateKind::FastForward,
                Some(f.a),
                Some(f.b),
            ),
        ]);
        let url = url_of(&f.remote);
        let scratch = scratch_of(&f);
        let report = remote(&f.local, &url)
            .push_staged(&scratch, &updates)
            .await
            .expect("a refused ref is a result, not an error");
        let results = outcomes(&report);
        for (name, outcome) in &results[..names.len()] {
            assert_eq!(*outcome, RefOutcome::Done, "{name}");
        }
        let stale = RefOutcome::Rejected {
            reason: "stale info".to_owned(),
            stale: true,
        };
        assert_eq!(
            results[names.len()..],
            [
                ("refs/heads/stale", stale.clone()),
                ("refs/heads/gone", RefOutcome::Done),
                ("refs/heads/taken", stale),
                ("refs/heads/new", RefOutcome::Done),
                ("refs/heads/main", RefOutcome::Done),
            ]
        );
        let mut expected: Vec<(&str, Oid)> = names.iter().map(|n| (n.as_str(), f.c)).collect();
        expected.extend([
            ("refs/heads/stale", f.b),
            ("refs/heads/taken", f.c),
            ("refs/heads/new", f.a),
            ("refs/heads/main", f.b),
            ("refs/heads/outside", f.c),
        ]);
        assert_eq!(f.env.refs(&f.remote), refmap(&expected));
        // git updated the tracking refs of what it pushed: the leases came from them.
        let tracked = scratch.git_dir().join("refs/pushmirror-remote/heads/f000");
        assert!(tracked.exists(), "no tracking ref written");
    }

    /// Many deletes go by `--prune` from a scratch repository holding every ref the remote
    /// keeps: exactly the planned deletes happen; refs outside the plan stay; a ref that
    /// appeared on the remote since it was read is not pruned.
    #[tokio::test]
    async fn pruning_push_deletes_exactly_the_planned_refs() {
        let f = fixture();
        let gone: Vec<String> = (0..200).map(|i| format!("refs/heads/gone{i:03}")).collect();
        let mut seed: Vec<(&str, Oid)> = gone.iter().map(|n| (n.as_str(), f.a)).collect();
        seed.extend([
            ("refs/heads/main", f.a),
            ("refs/heads/rewritten", f.b),
            ("refs/tags/kept", f.c),
            ("refs/heads/outside", f.c),
        ]);
        f.seed(&seed);
        let theirs = f.env.commit(&f.remote, "theirs", Some(f.a));
        // A remote ref on a commit we lack would make git's pack-objects fail: the engine
        // prunes only when it has every remote value (`mirror::Pusher`).
        let _ = theirs;
        // As read: everything above. Then a ref appears on the remote.
        let mut read: BTreeMap<String, Oid> = f.env.refs(&f.remote);
        read.remove("refs/heads/outside");
        read.insert("refs/heads/outside".to_owned(), f.c);
        f.env.set_ref(&f.remote, "refs/heads/appeared", f.b);
        let mut updates: Vec<RefUpdate> = gone
            .iter()
            .map(|n| update(n, UpdateKind::Delete, Some(f.a), None))
            .collect();
        updates.extend([
            update(
                "refs/heads/main",
                UpdateKind::FastForward,
                Some(f.a),
                Some(f.b),
            ),
            update(
                "refs/heads/rewritten",
                UpdateKind::Force,
                Some(f.b),
                Some(f.c),
            ),
            update("refs/heads/new", UpdateKind::Create, None, Some(f.a)),
        ]);
        let url = url_of(&f.remote);
        let report = remote(&f.local, &url)
            .push_pruning(&scratch_of(&f), &updates, &read)
            .await
            .expect("a refused ref is a result, not an error");
        assert_eq!(report.results.len(), updates.len());
        for (name, outcome) in outcomes(&report) {
            assert_eq!(outcome, RefOutcome::Done, "{name}");
        }
        assert_eq!(
            f.env.refs(&f.remote),
            refmap(&[
                ("refs/heads/appeared", f.b),
                ("refs/heads/main", f.b),
                ("refs/heads/new", f.a),
                ("refs/heads/outside", f.c),
                ("refs/heads/rewritten", f.c),
                ("refs/tags/kept", f.c),
            ])
        );
    }

    #[tokio::test]
    async fn a_missing_remote_path_is_not_found() {
        let f = fixture();
        let url = url_of(&f.path_that_does_not_exist());
        let remote = remote(&f.local, &url);
        let error = remote.list_refs().await.expect_err("no such remote");
        assert!(matches!(error, RemoteError::NotFound { .. }), "{error:?}");
        assert!(!error.is_transient());
        assert!(
            error
                .to_string()
                .contains("does not appear to be a git repository"),
            "{error}"
        );
        let error = remote
            .push(&[update(
                "refs/heads/main",
                UpdateKind::Create,
                None,
                Some(f.a),
            )])
            .await
            .expect_err("no such remote");
        assert!(matches!(error, RemoteError::NotFound { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable() {
        let f = fixture();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("an address").port()
        };
        let url = RemoteUrl::parse(&format!("git://127.0.0.1:{port}/x.git"));
        let remote = remote(&f.local, &url);
        let error = remote.list_refs().await.expect_err("nothing listens");
        assert!(
            matches!(error, RemoteError::Unreachable { .. }),
            "{error:?}"
        );
        assert!(error.is_transient());
        assert!(error.to_string().contains("Connection refused"), "{error}");
        let error = remote
            .push(&[update(
                "refs/heads/main",
                UpdateKind::Create,
                None,
                Some(f.a),
            )])
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(error, RemoteError::Unreachable { .. }),
            "{error:?}"
        );
    }
}
