//! Pure: the mass-change guard. An update whose plan would delete more refs than
//! `max_deletes`, or force more than `max_forced`, is refused before anything is pushed.
//!
//! Why: a mistaken `git push --mirror` from an empty clone, or a history rewrite of every
//! branch, reaches every mirror within minutes; the guard stops it at the first mirror update
//! and leaves the remote as it was, so the operator can look (`pushmirror plan NAME`) and
//! either fix the local repository or let that one update through
//! (`pushmirror sync NAME --wait --allow-mass-change`). The guard judges the plan that is
//! about to be pushed: the engine asks it again when a stale lease makes it plan a second
//! round, and a plan split into several pushes counts as the one plan it is.

use crate::config::Mirror;
use crate::mirror::refdiff::{Plan, UpdateKind};

/// The limits of one mirror; 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_deletes: usize,
    pub max_forced: usize,
}

impl Limits {
    pub fn of(mirror: &Mirror) -> Limits {
        Limits {
            max_deletes: mirror.max_deletes,
            max_forced: mirror.max_forced,
        }
    }
}

/// A plan the guard refuses: its counts and the limits they pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MassChange {
    pub deletes: usize,
    pub forced: usize,
    pub limits: Limits,
}

impl MassChange {
    /// Returns true if the deletes are over their limit (and so held).
    pub fn deletes_over(&self) -> bool {
        over(self.deletes, self.limits.max_deletes)
    }

    /// Returns true if the forced updates are over their limit (and so held).
    pub fn forced_over(&self) -> bool {
        over(self.forced, self.limits.max_forced)
    }

    /// Returns what is over which limit, e.g. `it would delete 150 refs (max_deletes = 100)`.
    pub fn what(&self) -> String {
        let mut parts = Vec::new();
        if self.deletes_over() {
            parts.push(format!(
                "delete {} (max_deletes = {})",
                refs(self.deletes),
                self.limits.max_deletes
            ));
        }
        if self.forced_over() {
            parts.push(format!(
                "force {} (max_forced = {})",
                refs(self.forced),
                self.limits.max_forced
            ));
        }
        format!("it would {}", parts.join(" and "))
    }
}

/// Returns the `last_error` of an update the guard refused: the counts, the limits, and how
/// to look and to let it through. `second_round`: it was the re-plan after a stale lease, so
/// the first round's refs were pushed already.
pub fn refusal_message(mirror: &str, change: &MassChange, second_round: &bool) -> String {
    let (refused, pushed) = if *second_round {
        (
            "the update's second round (after the remote moved) was refused",
            "the first round's refs were pushed, nothing more",
        )
    } else {
        ("the update was refused", "nothing was pushed")
    };
    format!(
        "mass-change guard: {refused}: {}; {pushed}; see what it would do with \
         `pushmirror plan {mirror}`, then let this one update through with \
         `pushmirror sync {mirror} --wait --allow-mass-change` (or raise the limit in the \
         configuration; 0 = no limit)",
        change.what()
    )
}

fn refs(count: usize) -> String {
    format!("{count} ref{}", if count == 1 { "" } else { "s" })
}

fn over(count: usize, limit: usize) -> bool {
    limit != 0 && count > limit
}

/// Returns the plan's deletes and forced updates.
pub fn counts(plan: &Plan) -> (usize, usize) {
    let deletes = plan
        .updates
        .iter()
        .filter(|u| u.kind == UpdateKind::Delete)
        .count();
    let forced = plan
        .updates
        .iter()
        .filter(|u| u.kind == UpdateKind::Force)
        .count();
    (deletes, forced)
}

/// Returns the mass change `plan` is, if it passes a limit.
pub fn check(plan: &Plan, limits: Limits) -> Option<MassChange> {
    let (deletes, forced) = counts(plan);
    let change = MassChange {
        deletes,
        forced,
        limits,
    };
    (change.deletes_over() || change.forced_over()).then_some(change)
}

#[cfg(test)]
mod tests {
    use git2::Oid;

    use super::*;
    use crate::mirror::refdiff::RefUpdate;

    fn plan(deletes: usize, forced: usize, creates: usize) -> Plan {
        let update = |i: usize, kind| RefUpdate {
            refname: format!("refs/heads/{kind:?}-{i}"),
            kind,
            old: Some(Oid::ZERO_SHA1),
            new: Some(Oid::ZERO_SHA1),
        };
        let mut updates = Vec::new();
        updates.extend((0..deletes).map(|i| update(i, UpdateKind::Delete)));
        updates.extend((0..forced).map(|i| update(i, UpdateKind::Force)));
        updates.extend((0..creates).map(|i| update(i, UpdateKind::Create)));
        Plan {
            updates,
            divergent: Vec::new(),
        }
    }

    const LIMITS: Limits = Limits {
        max_deletes: 3,
        max_forced: 2,
    };

    #[test]
    fn up_to_the_limit_passes() {
        assert_eq!(check(&plan(3, 2, 1000), LIMITS), None);
    }

    #[test]
    fn one_over_either_limit_is_refused_and_named() {
        let change = check(&plan(4, 0, 0), LIMITS).expect("refused");
        assert_eq!(change.what(), "it would delete 4 refs (max_deletes = 3)");
        let change = check(&plan(0, 3, 0), LIMITS).expect("refused");
        assert_eq!(change.what(), "it would force 3 refs (max_forced = 2)");
        let change = check(&plan(4, 3, 0), LIMITS).expect("refused");
        assert_eq!(
            change.what(),
            "it would delete 4 refs (max_deletes = 3) and force 3 refs (max_forced = 2)"
        );
        assert!(change.deletes_over() && change.forced_over());
    }

    #[test]
    fn zero_is_no_limit() {
        let unlimited = Limits {
            max_deletes: 0,
            max_forced: 0,
        };
        assert_eq!(check(&plan(100_000, 100_000, 0), unlimited), None);
        let deletes_only = Limits {
            max_deletes: 0,
            max_forced: 1,
        };
        let change = check(&plan(5000, 2, 0), deletes_only).expect("forced over");
        assert!(!change.deletes_over() && change.forced_over());
    }
}
