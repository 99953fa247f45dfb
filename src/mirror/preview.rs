//! What the next update of a mirror would do, ref by ref, with nothing changed anywhere:
//! `pushmirror plan` and `pushmirror verify`.
//!
//! A preview reads the remote exactly as an update does (`remote::list_refs`, through the
//! mirror's credentials and SSH settings) and plans with the same `refdiff::plan` and
//! `guard::check`; [`explain`] only labels each ref with what that plan says, so the preview
//! has no rules of its own and cannot disagree with the update. Nothing is written: no push,
//! no status, no scratch repository, no tracking ref (the one file an SSH mirror's remote
//! access may write is its pinned `known_hosts`, rewritten only when the configuration's
//! keys changed, as the next update would).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use git2::Oid;
use tokio::time::Instant;

use crate::config::{BranchFilter, Mirror};
use crate::mirror::guard::{self, MassChange};
use crate::mirror::local::{LocalError, LocalRepo};
use crate::mirror::refdiff::{self, LocalRefs, Plan, Policy, UpdateKind, is_mirrored};
use crate::mirror::{UpdateContext, UpdateError, remote_for};

/// Longest a preview waits for the remote: a dry run should not hold a terminal (or a cron
/// job) for the hour an update may take.
const PREVIEW_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// What the next update would do to one ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The remote lacks the ref: created.
    Create,
    /// The remote value is an ancestor of the local one: fast-forwarded.
    Update,
    /// Overwritten with a lease (a diverged branch, a moved tag).
    Force,
    /// The ref exists only on the remote and `prune` deletes it.
    Delete,
    /// Skipped: the remote diverged and `keep_divergent_refs` keeps it (the update would
    /// fail listing it).
    Diverged,
    /// Skipped: a branch the mirror's filter (`only_protected_branches`,
    /// `protected_branches`, `mirror_branch_regex`) does not carry.
    Filtered,
    /// Left alone: a ref only the remote has that `prune` (or `keep_divergent_refs`) keeps.
    Kept,
}

impl Action {
    /// Returns true for the actions an update would push.
    pub fn changes_remote(self) -> bool {
        matches!(
            self,
            Action::Create | Action::Update | Action::Force | Action::Delete
        )
    }
}

/// One ref of a preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefAction {
    pub refname: String,
    pub action: Action,
    /// The remote's value, if it has the ref.
    pub remote: Option<Oid>,
    /// The local value, if the local repository has the ref.
    pub local: Option<Oid>,
    /// True if the mass-change guard would refuse the update because of this ref's kind
    /// (a delete over `max_deletes`, a forced update over `max_forced`).
    pub held: bool,
}

/// What the next update of a mirror would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preview {
    /// Every branch and tag on either side that is not already equal, in ref order.
    pub refs: Vec<RefAction>,
    /// Mirrored refs already equal on both sides.
    pub up_to_date: usize,
    /// The guard's refusal, if the update would be refused: then nothing would be pushed.
    pub guard: Option<MassChange>,
}

/// Reads `mirror`'s remote and local refs and returns what its next update would do.
pub async fn preview(mirror: &Mirror, ctx: &UpdateContext) -> Result<Preview, UpdateError> {
    let mut remote = remote_for(mirror, ctx)?;
    remote.deadline = remote
        .deadline
        .min(crate::clock::later(Instant::now(), PREVIEW_TIMEOUT));
    let remote_refs = remote.list_refs().await?.refs;
    let repo_path = mirror.repo.clone();
    let branches = mirror.branches.clone();
    let keep_divergent_refs = mirror.keep_divergent_refs;
    let prune = mirror.prune;
    let limits = guard::Limits::of(mirror);
    let job = tokio::task::spawn_blocking(move || {
        let repo = LocalRepo::open(&repo_path)?;
        let local = repo.refs()?;
        let policy = Policy {
            branches: &branches,
            keep_divergent_refs,
            prune,
        };
        let plan = refdiff::plan(&local, &remote_refs, policy, &repo);
        let change = guard::check(&plan, limits);
        Ok::<_, LocalError>(explain(&local, &remote_refs, &branches, &plan, change))
    });
    match job.await {
        Ok(result) => Ok(result?),
        Err(_) => Err(UpdateError::Panicked),
    }
}

/// Labels every ref of either side with what `plan` (made by `refdiff::plan` from the same
/// refs) does to it; `guard` is the guard's verdict on that plan.
pub fn explain(
    local: &LocalRefs,
    remote: &BTreeMap<String, Oid>,
    branches: &BranchFilter,
    plan: &Plan,
    guard: Option<MassChange>,
) -> Preview {
    let planned: BTreeMap<&str, UpdateKind> = plan
        .updates
        .iter()
        .map(|u| (u.refname.as_str(), u.kind))
        .collect();
    let divergent: BTreeSet<&str> = plan.divergent.iter().map(String::as_str).collect();
    let names: BTreeSet<&str> = local
        .refs
        .keys()
        .chain(remote.keys())
        .map(String::as_str)
        .collect();
    let default_branch = local.default_branch.as_deref();
    let mut preview = Preview {
        guard,
        ..Preview::default()
    };
    for name in names {
        let (local_oid, remote_oid) = (local.refs.get(name).copied(), remote.get(name).copied());
        let (action, held) = match planned.get(name) {
            Some(UpdateKind::Create) => (Action::Create, false),
            Some(UpdateKind::FastForward) => (Action::Update, false),
            Some(UpdateKind::Force) => (Action::Force, guard.is_some_and(|g| g.forced_over())),
            Some(UpdateKind::Delete) => (Action::Delete, guard.is_some_and(|g| g.deletes_over())),
            None if divergent.contains(name) => (Action::Diverged, false),
            None if !is_mirrored(name, branches, default_branch) => (Action::Filtered, false),
            None if local_oid == remote_oid => {
                preview.up_to_date += 1;
                continue;
            }
            // Only the remote has it, and the plan does not delete it.
            None => (Action::Kept, false),
        };
        preview.refs.push(RefAction {
            refname: name.to_owned(),
            action,
            remote: remote_oid,
            local: local_oid,
            held,
        });
    }
    preview
}

/// Returns a context for previews: no scratch repository, the guard as configured.
pub fn context(
    git_config: crate::config::GitConfigPolicy,
    cancel: tokio_util::sync::CancellationToken,
) -> UpdateContext {
    UpdateContext {
        git_config,
        cancel,
        first_sync: false,
        scratch_dir: None,
        allow_mass_change: false,
        // A preview uploads nothing: the tally stays empty.
        lfs: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::config::{BranchPattern, Prune};
    use crate::mirror::refdiff::History;

    struct Table(HashSet<(Oid, Oid)>);

    impl History for Table {
        fn is_ancestor(&self, ancestor: Oid, descendant: Oid) -> bool {
            ancestor == descendant || self.0.contains(&(ancestor, descendant))
        }
    }

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).expect("20 bytes make an oid")
    }

    fn refs(pairs: &[(&str, u8)]) -> BTreeMap<String, Oid> {
        pairs
            .iter()
            .map(|(n, o)| (n.to_string(), oid(*o)))
            .collect()
    }

    /// Renders a preview as `action ref` lines, `held` appended, and the count of equal refs.
    fn render(preview: &Preview) -> (Vec<String>, usize) {
        let lines = preview
            .refs
            .iter()
            .map(|r| {
                let held = if r.held { " held" } else { "" };
                format!("{:?} {}{held}", r.action, r.refname).to_lowercase()
            })
            .collect();
        (lines, preview.up_to_date)
    }

    fn explain_with(
        branches: BranchFilter,
        keep: bool,
        limits: guard::Limits,
        local: &[(&str, u8)],
        remote: &[(&str, u8)],
    ) -> Preview {
        // A <- B <- C on main; D unrelated.
        let history = Table(
            [(1, 2), (1, 3), (2, 3)]
                .into_iter()
                .map(|(a, d)| (oid(a), oid(d)))
                .collect(),
        );
        let local = LocalRefs {
            refs: refs(local),
            default_branch: Some("refs/heads/main".into()),
        };
        let remote = refs(remote);
        let policy = Policy {
            branches: &branches,
            keep_divergent_refs: keep,
            prune: Prune::Merged,
        };
        let plan = refdiff::plan(&local, &remote, policy, &history);
        let change = guard::check(&plan, limits);
        explain(&local, &remote, &branches, &plan, change)
    }

    const NO_LIMIT: guard::Limits = guard::Limits {
        max_deletes: 0,
        max_forced: 0,
    };

    #[test]
    fn every_kind_of_action_is_labelled() {
        let filter =
            BranchFilter::Protected(vec![BranchPattern::new("main"), BranchPattern::new("rel*")]);
        let preview = explain_with(
            filter,
            false,
            NO_LIMIT,
            &[
                ("refs/heads/main", 3),
                ("refs/heads/rel-new", 1),
                ("refs/heads/rel-forced", 3),
                ("refs/heads/rel-same", 2),
                ("refs/heads/wip", 1),
                ("refs/tags/v1", 2),
            ],
            &[
                ("refs/heads/main", 1),
                ("refs/heads/rel-forced", 4),
                ("refs/heads/rel-same", 2),
                ("refs/heads/rel-merged", 2),
                ("refs/heads/rel-unmerged", 4),
                ("refs/heads/other", 1),
            ],
        );
        assert_eq!(
            render(&preview),
            (
                vec![
                    "update refs/heads/main".to_owned(),
                    "filtered refs/heads/other".to_owned(),
                    "force refs/heads/rel-forced".to_owned(),
                    "delete refs/heads/rel-merged".to_owned(),
                    "create refs/heads/rel-new".to_owned(),
                    "kept refs/heads/rel-unmerged".to_owned(),
                    "filtered refs/heads/wip".to_owned(),
                    "create refs/tags/v1".to_owned(),
                ],
                1
            )
        );
        assert!(preview.guard.is_none());
        let main = &preview.refs[0];
        assert_eq!((main.remote, main.local), (Some(oid(1)), Some(oid(3))));
    }

    #[test]
    fn kept_divergent_refs_are_diverged() {
        let preview = explain_with(
            BranchFilter::All,
            true,
            NO_LIMIT,
            &[("refs/heads/main", 3), ("refs/heads/dev", 2)],
            &[("refs/heads/main", 4), ("refs/heads/dev", 1)],
        );
        assert_eq!(
            render(&preview).0,
            ["update refs/heads/dev", "diverged refs/heads/main"]
        );
    }

    #[test]
    fn refs_over_a_limit_are_held() {
        let limits = guard::Limits {
            max_deletes: 1,
            max_forced: 5,
        };
        let preview = explain_with(
            BranchFilter::All,
            false,
            limits,
            &[("refs/heads/main", 3), ("refs/heads/x", 3)],
            &[
                ("refs/heads/main", 3),
                ("refs/heads/x", 4),
                ("refs/heads/a", 1),
                ("refs/heads/b", 2),
            ],
        );
        assert_eq!(
            render(&preview).0,
            [
                "delete refs/heads/a held",
                "delete refs/heads/b held",
                "force refs/heads/x"
            ]
        );
        let change = preview.guard.expect("refused");
        assert_eq!((change.deletes, change.forced), (2, 1));
    }
}
