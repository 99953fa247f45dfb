//! Pure: local refs x remote refs x policy -> the ref updates of one mirror update.
//!
//! This is GitLab's (Gitaly's `UpdateRemoteMirror`) algorithm, with the improvements SPEC
//! section 5 asks for: forced updates carry a lease, branch filters also apply to remote
//! names, and fast-forwards are pushed unforced so git itself guards them. No I/O happens here;
//! ancestry questions go to a [`History`], which the engine answers from the local repository
//! and tests answer from a table.

use std::collections::BTreeMap;

use git2::Oid;

use crate::config::{BranchFilter, Prune};

/// Divergent refs named in `last_error` at most, as Gitaly's `maxDivergentRefs`.
pub const MAX_DIVERGENT_REFS_LISTED: usize = 100;

/// One ref change to make on the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// Full name, `refs/heads/...` or `refs/tags/...`.
    pub refname: String,
    pub kind: UpdateKind,
    /// The remote's value when it was read; `None` for a create.
    pub old: Option<Oid>,
    /// The value to set; `None` for a delete.
    pub new: Option<Oid>,
}

/// How a ref update is pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// The remote lacks the ref: `<new>:<ref>`, no force.
    Create,
    /// The remote value is an ancestor of the new one: `<new>:<ref>`, no force; git's own
    /// fast-forward check protects against a remote that moved meanwhile.
    FastForward,
    /// Anything else (diverged branch, moved tag): `--force-with-lease=<ref>:<old>` and
    /// `<new>:<ref>`.
    Force,
    /// The ref exists only on the remote: `--force-with-lease=<ref>:<old>` and `:<ref>`.
    Delete,
}

/// The local repository's mirrored namespaces: branches and tags, symbolic refs left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalRefs {
    pub refs: BTreeMap<String, Oid>,
    /// The target of the local `HEAD`, e.g. `refs/heads/main`, whether or not it exists.
    pub default_branch: Option<String>,
}

/// Answers ancestry questions about the local repository.
pub trait History {
    /// Returns true if the commit `ancestor` (a tag is peeled) is `descendant` or reachable
    /// from it; false if either is unknown locally.
    fn is_ancestor(&self, ancestor: Oid, descendant: Oid) -> bool;
}

/// How the mirror wants its refs handled.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub branches: &'a BranchFilter,
    pub keep_divergent_refs: bool,
    pub prune: Prune,
}

/// What one update has to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Creates and updates in ref order with the default branch first, then deletes.
    pub updates: Vec<RefUpdate>,
    /// Refs left alone because the remote diverged (only with `keep_divergent_refs`), sorted.
    pub divergent: Vec<String>,
}

/// Returns true for the refs a mirror carries: every tag, and the branches its filter admits.
pub fn is_mirrored(refname: &str, branches: &BranchFilter, default_branch: Option<&str>) -> bool {
    if refname.starts_with("refs/tags/") {
        return true;
    }
    let Some(branch) = refname.strip_prefix("refs/heads/") else {
        return false;
    };
    match branches {
        BranchFilter::All => true,
        BranchFilter::Protected(patterns) => patterns.iter().any(|p| p.matches(branch)),
        BranchFilter::DefaultBranch => default_branch == Some(refname),
        BranchFilter::Regex(regex) => regex.is_match(branch),
    }
}

/// Returns the updates that bring `remote` in line with `local` under `policy`.
pub fn plan(
    local: &LocalRefs,
    remote: &BTreeMap<String, Oid>,
    policy: Policy<'_>,
    history: &dyn History,
) -> Plan {
    let default_branch = local.default_branch.as_deref();
    let mirrored = |name: &str| is_mirrored(name, policy.branches, default_branch);
    let mut plan = creates_and_updates(local, remote, policy, history, &mirrored);

    // Put the default branch first, so that a new remote takes it as its default.
    if let Some(default) = default_branch
        && let Some(i) = plan.updates.iter().position(|u| u.refname == default)
    {
        let update = plan.updates.remove(i);
        plan.updates.insert(0, update);
    }

    let deletes = deletes(local, remote, policy, history, &mirrored);
    plan.updates.extend(deletes);
    plan
}

/// Returns the creates and updates of the mirrored local refs, in ref order, and the refs
/// left alone because they diverged (only with `keep_divergent_refs`).
fn creates_and_updates(
    local: &LocalRefs,
    remote: &BTreeMap<String, Oid>,
    policy: Policy<'_>,
    history: &dyn History,
    mirrored: &dyn Fn(&str) -> bool,
) -> Plan {
    let mut plan = Plan::default();
    for (name, new, old) in joined(&local.refs, remote) {
        let Some(new) = new else {
            continue; // only on the remote: see `deletes`
        };
        if !mirrored(name) {
            continue;
        }
        let Some(old) = old else {
            plan.updates.push(RefUpdate {
                refname: name.clone(),
                kind: UpdateKind::Create,
                old: None,
                new: Some(new),
            });
            continue;
        };
        if old == new {
            continue;
        }
        let is_branch = name.starts_with("refs/heads/");
        // A moved tag is never a fast-forward: git refuses to move an existing tag unforced.
        let fast_forward = is_branch && history.is_ancestor(old, new);
        let kind = match (fast_forward, policy.keep_divergent_refs) {
            (true, _) => UpdateKind::FastForward,
            (false, false) => UpdateKind::Force,
            (false, true) => {
                plan.divergent.push(name.clone());
                continue;
            }
        };
        plan.updates.push(RefUpdate {
            refname: name.clone(),
            kind,
            old: Some(old),
            new: Some(new),
        });
    }
    plan
}

/// Returns the deletes of the mirrored refs that exist only on the remote, as `policy.prune`
/// asks.
fn deletes(
    local: &LocalRefs,
    remote: &BTreeMap<String, Oid>,
    policy: Policy<'_>,
    history: &dyn History,
    mirrored: &dyn Fn(&str) -> bool,
) -> Vec<RefUpdate> {
    // Nothing is deleted when keeping divergent refs, nor when the local default branch does
    // not exist: an empty or broken local repository must not empty the remote.
    let default_branch = local.default_branch.as_deref();
    let default_oid = default_branch.and_then(|d| local.refs.get(d)).copied();
    let Some(default_oid) = default_oid else {
        return Vec::new();
    };
    if policy.keep_divergent_refs {
        return Vec::new();
    }
    let mut deletes = Vec::new();
    for (name, new, old) in joined(&local.refs, remote) {
        let (None, Some(old)) = (new, old) else {
            continue;
        };
        if !mirrored(name) {
            continue;
        }
        let delete = match policy.prune {
            Prune::None => false,
            Prune::All => true,
            Prune::Merged => history.is_ancestor(old, default_oid),
        };
        if delete {
            deletes.push(RefUpdate {
                refname: name.clone(),
                kind: UpdateKind::Delete,
                old: Some(old),
                new: None,
            });
        }
    }
    deletes
}

/// Walks `local` and `remote` together in ref order, yielding each name with its local and
/// remote value: one linear pass, where a lookup per ref would compare names (which share
/// long prefixes) log n times each.
fn joined<'a>(
    local: &'a BTreeMap<String, Oid>,
    remote: &'a BTreeMap<String, Oid>,
) -> impl Iterator<Item = (&'a String, Option<Oid>, Option<Oid>)> {
    let mut local = local.iter().peekable();
    let mut remote = remote.iter().peekable();
    std::iter::from_fn(move || match (local.peek(), remote.peek()) {
        (Some((l, _)), Some((r, _))) => match l.cmp(r) {
            std::cmp::Ordering::Less => local.next().map(|(n, &o)| (n, Some(o), None)),
            std::cmp::Ordering::Greater => remote.next().map(|(n, &o)| (n, None, Some(o))),
            std::cmp::Ordering::Equal => {
                let (name, &new) = local.next()?;
                let (_, &old) = remote.next()?;
                Some((name, Some(new), Some(old)))
            }
        },
        (Some(_), None) => local.next().map(|(n, &o)| (n, Some(o), None)),
        (None, Some(_)) => remote.next().map(|(n, &o)| (n, None, Some(o))),
        (None, None) => None,
    })
}

/// Returns GitLab's exact `last_error` for diverged refs, naming at most 100 of them.
pub fn divergent_message(divergent: &[String]) -> String {
    let mut message =
        String::from("Some refs have diverged and have not been updated on the remote:\n");
    for name in divergent.iter().take(MAX_DIVERGENT_REFS_LISTED) {
        message.push('\n');
        message.push_str(name);
    }
    message
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::config::BranchPattern;

    /// A history given as the set of (ancestor, descendant) pairs that hold, plus identity.
    struct Table(HashSet<(Oid, Oid)>);

    impl History for Table {
        fn is_ancestor(&self, ancestor: Oid, descendant: Oid) -> bool {
            ancestor == descendant || self.0.contains(&(ancestor, descendant))
        }
    }

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).expect("20 bytes make an oid")
    }

    const A: u8 = 1;
    const B: u8 = 2;
    const C: u8 = 3;
    const D: u8 = 4;

    /// Commits: A <- B <- C on main; D is unrelated (diverged).
    fn history() -> Table {
        Table(
            [(A, B), (A, C), (B, C)]
                .into_iter()
                .map(|(a, d)| (oid(a), oid(d)))
                .collect(),
        )
    }

    fn refs(pairs: &[(&str, u8)]) -> BTreeMap<String, Oid> {
        pairs
            .iter()
            .map(|(n, o)| (n.to_string(), oid(*o)))
            .collect()
    }

    fn local(pairs: &[(&str, u8)]) -> LocalRefs {
        LocalRefs {
            refs: refs(pairs),
            default_branch: Some("refs/heads/main".into()),
        }
    }

    /// Renders a plan as one line per update, e.g. `force refs/heads/x`, then `diverged ...`.
    fn render(plan: &Plan) -> Vec<String> {
        let mut lines: Vec<String> = plan
            .updates
            .iter()
            .map(|u| {
                let kind = match u.kind {
                    UpdateKind::Create => "create",
                    UpdateKind::FastForward => "ff",
                    UpdateKind::Force => "force",
                    UpdateKind::Delete => "delete",
                };
                format!("{kind} {}", u.refname)
            })
            .collect();
        lines.extend(plan.divergent.iter().map(|d| format!("diverged {d}")));
        lines
    }

    fn check_with(
        branches: BranchFilter,
        keep: bool,
        prune: Prune,
        local: LocalRefs,
        remote: &[(&str, u8)],
        expected: &[&str],
    ) {
        let policy = Policy {
            branches: &branches,
            keep_divergent_refs: keep,
            prune,
        };
        let plan = plan(&local, &refs(remote), policy, &history());
        assert_eq!(render(&plan), expected);
    }

    fn check(local_refs: &[(&str, u8)], remote: &[(&str, u8)], expected: &[&str]) {
        check_with(
            BranchFilter::All,
            false,
            Prune::Merged,
            local(local_refs),
            remote,
            expected,
        );
    }

    #[test]
    fn missing_refs_are_created_default_branch_first() {
        check(
            &[
                ("refs/heads/a", B),
                ("refs/heads/main", C),
                ("refs/tags/v1", A),
            ],
            &[],
            &[
                "create refs/heads/main",
                "create refs/heads/a",
                "create refs/tags/v1",
            ],
        );
    }

    #[test]
    fn equal_refs_are_left_alone() {
        check(&[("refs/heads/main", C)], &[("refs/heads/main", C)], &[]);
    }

    #[test]
    fn ancestor_on_remote_is_fast_forwarded() {
        check(
            &[("refs/heads/main", C)],
            &[("refs/heads/main", A)],
            &["ff refs/heads/main"],
        );
    }

    #[test]
    fn diverged_branch_is_forced_by_default() {
        check(
            &[("refs/heads/main", C)],
            &[("refs/heads/main", D)],
            &["force refs/heads/main"],
        );
    }

    #[test]
    fn remote_ahead_is_forced_back_by_default() {
        // The remote has C, local only B: not a fast-forward, so forced (with a lease).
        check(
            &[("refs/heads/main", B)],
            &[("refs/heads/main", C)],
            &["force refs/heads/main"],
        );
    }

    #[test]
    fn moved_tag_is_forced_even_if_it_moved_forward() {
        check(
            &[("refs/heads/main", C), ("refs/tags/v1", C)],
            &[("refs/heads/main", C), ("refs/tags/v1", A)],
            &["force refs/tags/v1"],
        );
    }

    #[test]
    fn keep_divergent_refs_fast_forwards_and_reports_the_rest() {
        // GitLab's example: main fast-forwards, develop has a remote-only commit.
        check_with(
            BranchFilter::All,
            true,
            Prune::Merged,
            local(&[
                ("refs/heads/main", C),
                ("refs/heads/develop", B),
                ("refs/tags/v1", B),
            ]),
            &[
                ("refs/heads/main", B),
                ("refs/heads/develop", D),
                ("refs/tags/v1", A),
                ("refs/heads/remote-only", A),
            ],
            &[
                "ff refs/heads/main",
                "diverged refs/heads/develop",
                "diverged refs/tags/v1",
            ],
        );
    }

    #[test]
    fn merged_remote_only_branch_is_deleted_unmerged_kept() {
        check(
            &[("refs/heads/main", C)],
            &[
                ("refs/heads/main", C),
                ("refs/heads/merged", B),
                ("refs/heads/unmerged", D),
                ("refs/tags/old", A),
                ("refs/pull/1/head", A),
            ],
            &["delete refs/heads/merged", "delete refs/tags/old"],
        );
    }

    #[test]
    fn prune_all_and_none() {
        let remote = [
            ("refs/heads/main", C),
            ("refs/heads/merged", B),
            ("refs/heads/x", D),
        ];
        check_with(
            BranchFilter::All,
            false,
            Prune::All,
            local(&[("refs/heads/main", C)]),
            &remote,
            &["delete refs/heads/merged", "delete refs/heads/x"],
        );
        check_with(
            BranchFilter::All,
            false,
            Prune::None,
            local(&[("refs/heads/main", C)]),
            &remote,
            &[],
        );
    }

    #[test]
    fn nothing_is_deleted_without_a_local_default_branch() {
        let mut no_default = local(&[("refs/heads/feature", C)]);
        no_default.default_branch = Some("refs/heads/main".into());
        check_with(
            BranchFilter::All,
            false,
            Prune::All,
            no_default,
            &[("refs/heads/merged", A)],
            &["create refs/heads/feature"],
        );
    }

    #[test]
    fn protected_filter_applies_to_branches_not_tags() {
        let filter = BranchFilter::Protected(vec![
            BranchPattern::new("main"),
            BranchPattern::new("release/*"),
        ]);
        check_with(
            filter,
            false,
            Prune::All,
            local(&[
                ("refs/heads/main", C),
                ("refs/heads/release/1.0", B),
                ("refs/heads/feature", B),
                ("refs/tags/v1", A),
            ]),
            &[("refs/heads/gone", A), ("refs/heads/release/0.9", A)],
            &[
                "create refs/heads/main",
                "create refs/heads/release/1.0",
                "create refs/tags/v1",
                "delete refs/heads/release/0.9",
            ],
        );
    }

    #[test]
    fn empty_protected_list_means_no_branches() {
        check_with(
            BranchFilter::Protected(vec![]),
            false,
            Prune::All,
            local(&[("refs/heads/main", C), ("refs/tags/v1", A)]),
            &[("refs/heads/other", A)],
            &["create refs/tags/v1"],
        );
    }

    #[test]
    fn default_branch_filter_and_regex_filter() {
        check_with(
            BranchFilter::DefaultBranch,
            false,
            Prune::Merged,
            local(&[("refs/heads/main", C), ("refs/heads/dev", B)]),
            &[],
            &["create refs/heads/main"],
        );
        let regex = regex::Regex::new("^(main|feature/.*)$").expect("valid regex");
        check_with(
            BranchFilter::Regex(regex),
            false,
            Prune::All,
            local(&[
                ("refs/heads/main", C),
                ("refs/heads/feature/x", B),
                ("refs/heads/dev", B),
            ]),
            &[("refs/heads/feature/old", A), ("refs/heads/other", A)],
            &[
                "create refs/heads/main",
                "create refs/heads/feature/x",
                "delete refs/heads/feature/old",
            ],
        );
    }

    #[test]
    fn divergent_message_is_gitlabs_and_capped() {
        let names: Vec<String> = (0..150).map(|i| format!("refs/heads/b{i:03}")).collect();
        let message = divergent_message(&names);
        assert!(message.starts_with(
            "Some refs have diverged and have not been updated on the remote:\n\nrefs/heads/b000\n"
        ));
        assert_eq!(message.lines().count(), 2 + 100);
        assert!(message.ends_with("refs/heads/b099"));
    }
}
