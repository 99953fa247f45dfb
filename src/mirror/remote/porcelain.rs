//! git's words for refs, turned into our types and back, without running git: the arguments
//! of a push, the per-ref lines of `git push --porcelain`, and the listing of `git ls-remote`.
//!
//! The refspec and lease a ref is pushed with and the line git reports it on are two halves of
//! one exchange, so they live together: [`plan_push`] writes one half, [`parse_porcelain`] and
//! [`outcome_of`] read the other, and [`collect_results`] matches them up so that every update
//! comes back with exactly one outcome, even when git forgot to report it. A ref the remote
//! refuses is an outcome here, not an error; whole-command failures are `classify`'s.
//!
//! Everything here is pure, and tested on output of git 2.47.

use std::collections::{BTreeMap, BTreeSet};

use git2::Oid;
use secrecy::SecretString;

use super::classify::refusal_of;
use super::{RefOutcome, RefResult, Refusal, RemoteRefs};
use crate::mirror::refdiff::{RefUpdate, UpdateKind};
use crate::mirror::scratch::tracking_ref;
use crate::mirror::url::scrub_secrets;

/// The arguments of one push, and the updates that cannot be pushed at all.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct PushPlan {
    pub(super) leases: Vec<String>,
    pub(super) refspecs: Vec<String>,
    pub(super) invalid: Vec<RefResult>,
}

/// Returns the `--force-with-lease=<ref>:<old>` option of `update`: the remote value just
/// read. An empty expected value means "must not exist" to git.
fn lease_option(update: &RefUpdate) -> String {
    let old = update.old.map(|oid| oid.to_string()).unwrap_or_default();
    format!("--force-with-lease={}:{old}", update.refname)
}

/// Returns the `--force-with-lease` options and refspecs of `updates`. Sources are object
/// ids, so that what lands is exactly what was planned.
pub(super) fn plan_push(updates: &[RefUpdate]) -> PushPlan {
    let mut plan = PushPlan::default();
    for update in updates {
        let refname = &update.refname;
        let lease = || lease_option(update);
        match (update.kind, update.new) {
            (UpdateKind::Create | UpdateKind::FastForward, Some(new)) => {
                plan.refspecs.push(format!("{new}:{refname}"));
            }
            (UpdateKind::Force, Some(new)) => {
                plan.leases.push(lease());
                plan.refspecs.push(format!("{new}:{refname}"));
            }
            (UpdateKind::Delete, _) => {
                plan.leases.push(lease());
                plan.refspecs.push(format!(":{refname}"));
            }
            (kind, None) => plan.invalid.push(RefResult {
                refname: refname.clone(),
                outcome: RefOutcome::Rejected {
                    reason: format!("nothing to push: a {kind:?} update without a new value"),
                    stale: false,
                },
            }),
        }
    }
    plan
}

/// How the forced updates and deletes of a push from a scratch repository carry their
/// leases (the remote value just read, which the remote ref must still have).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Leases {
    /// One `--force-with-lease=<ref>:<old>` each: git checks every one against every remote
    /// ref, so they cost leases x remote refs.
    #[default]
    Explicit,
    /// One bare `--force-with-lease`, from tracking refs staged beside: one lookup per
    /// remote ref, but git then writes one loose tracking ref per pushed ref.
    Tracking,
    /// The scratch repository's `pre-push` hook (see `Scratch::stage_leases`) checks, for
    /// every ref the push would change, that the remote advertised the value the plan read
    /// (none for a create), and refuses the whole push otherwise, before anything is sent:
    /// where git checks its own leases. Then the push is done again with git's leases, which
    /// refuse the stale refs one by one. The patterns carry a `+`, since every ref they
    /// change is checked.
    Hook,
}

/// The arguments of one push from a scratch repository (see `mirror::scratch`), the refs
/// that repository must hold for it, and the updates that cannot be pushed at all.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct StagedPushPlan {
    /// Who checks the leases.
    pub(super) leases_by: Leases,
    /// The options of the push: the leases git checks, `--prune`.
    pub(super) leases: Vec<String>,
    /// The pattern refspecs of the namespaces that `staged` has refs in, then one `:<ref>`
    /// per delete.
    pub(super) refspecs: Vec<String>,
    /// The refs of the scratch repository: each create, fast-forward and forced update at
    /// its new value.
    pub(super) staged: Vec<(String, Oid)>,
    /// The tracking refs of deletes that the leases come from (bare `--force-with-lease`),
    /// staged loose: git deletes each after the push, and deleting a packed ref rewrites the
    /// whole `packed-refs` file, once per ref. Those of the other updates are in `staged`
    /// (see [`stage_tracking`]).
    pub(super) tracking: Vec<(String, Oid)>,
    /// With [`Leases::Hook`]: every ref the push may change, with the value the remote must
    /// have advertised for it (none: absent).
    pub(super) checked: Vec<(String, Option<Oid>)>,
    pub(super) invalid: Vec<RefResult>,
}

/// Returns how `updates` are pushed from a scratch repository holding exactly their new
/// values: pattern refspecs (`refs/heads/*:refs/heads/*`, `refs/tags/*:refs/tags/*`) and
/// deletes as `:<ref>`, with `leases`:
/// - [`Leases::Explicit`] and [`Leases::Tracking`]: non-forced patterns, so creates and
///   fast-forwards are guarded by git's own fast-forward rule, and a lease per forced update
///   and delete, which alone lets git force that ref. No `+` on a pattern then: that would
///   force every ref of the namespace without a lease. With tracking refs (the remote values
///   as read, under `scratch::TRACKING_NAMESPACE`), one bare `--force-with-lease` leases
///   every ref of the push on its tracking ref (none: must not exist), and the push must
///   name the scratch repository's remote.
/// - [`Leases::Hook`]: forced patterns, and every update checked by the hook.
pub(super) fn plan_staged_push(updates: &[RefUpdate], leases: Leases) -> StagedPushPlan {
    let mut plan = StagedPushPlan {
        leases_by: leases,
        ..StagedPushPlan::default()
    };
    if leases == Leases::Tracking {
        plan.leases.push("--force-with-lease".to_owned());
        for update in updates {
            stage_tracking(&mut plan, update);
        }
    }
    let mut deletes = Vec::new();
    let (mut heads, mut tags) = (false, false);
    for update in updates {
        let refname = &update.refname;
        let lease = || lease_option(update);
        match (update.kind, update.new) {
            (UpdateKind::Delete, _) => {
                match leases {
                    Leases::Explicit => plan.leases.push(lease()),
                    Leases::Tracking => {}
                    Leases::Hook => plan.checked.push((refname.clone(), update.old)),
                }
                deletes.push(format!(":{refname}"));
                continue;
            }
            (kind, None) => {
                plan.invalid.push(RefResult {
                    refname: refname.clone(),
                    outcome: RefOutcome::Rejected {
                        reason: format!("nothing to push: a {kind:?} update without a new value"),
                        stale: false,
                    },
                });
                continue;
            }
            (UpdateKind::Force, Some(_)) if leases == Leases::Explicit => plan.leases.push(lease()),
            (UpdateKind::Force | UpdateKind::Create | UpdateKind::FastForward, Some(_)) => {}
        }
        let (Some(new), true) = (update.new, staged_namespace(refname, &mut heads, &mut tags))
        else {
            plan.invalid.push(RefResult {
                refname: refname.clone(),
                outcome: RefOutcome::Rejected {
                    reason: "not a branch or a tag".to_owned(),
                    stale: false,
                },
            });
            continue;
        };
        if leases == Leases::Hook {
            plan.checked.push((refname.clone(), update.old));
        }
        plan.staged.push((refname.clone(), new));
    }
    plan.refspecs = patterns(heads, tags, leases);
    plan.refspecs.extend(deletes);
    plan
}

/// Returns the pattern refspecs of the namespaces that have staged refs: forced only when
/// the hook checks every ref they change.
fn patterns(heads: bool, tags: bool, leases: Leases) -> Vec<String> {
    let force = if leases == Leases::Hook { "+" } else { "" };
    [(heads, "refs/heads/*"), (tags, "refs/tags/*")]
        .into_iter()
        .filter(|(staged, _)| *staged)
        .map(|(_, pattern)| format!("{force}{pattern}:{pattern}"))
        .collect()
}

/// Returns how `updates`, many of them deletes, are pushed from a scratch repository that
/// holds every branch and tag the remote is expected to keep: `remote`'s refs at their
/// values (refs outside the plan, which git then reports up to date and leaves alone), with
/// the new values of the updates, without the deleted refs; pushed with the patterns and
/// `--prune`, which deletes the remote refs missing from the scratch repository: exactly the
/// planned deletes. git matches explicit `:<ref>` refspecs against every remote ref; this
/// costs one pass. A ref that appeared or moved on the remote since it was read, which the
/// prune would delete or the patterns move back, is refused as stale: with
/// [`Leases::Tracking`] (one bare `--force-with-lease`, non-forced patterns) by git, with
/// [`Leases::Hook`] (forced patterns) by the hook, for which it is a ref outside the plan.
pub(super) fn plan_pruning_push(
    updates: &[RefUpdate],
    remote: &BTreeMap<String, Oid>,
    leases: Leases,
) -> StagedPushPlan {
    let mut plan = StagedPushPlan {
        leases_by: leases,
        refspecs: patterns(true, true, leases),
        ..StagedPushPlan::default()
    };
    if leases != Leases::Hook {
        plan.leases.push("--force-with-lease".to_owned());
    }
    plan.leases.push("--prune".to_owned());
    let mut kept: BTreeMap<&str, Oid> = remote
        .iter()
        .filter(|(name, _)| name.starts_with("refs/heads/") || name.starts_with("refs/tags/"))
        .map(|(name, oid)| (name.as_str(), *oid))
        .collect();
    for update in updates {
        if leases == Leases::Hook {
            plan.checked.push((update.refname.clone(), update.old));
        } else {
            stage_tracking(&mut plan, update);
        }
        match (update.kind, update.new) {
            (UpdateKind::Delete, _) => {
                kept.remove(update.refname.as_str());
            }
            (_, Some(new))
                if update.refname.starts_with("refs/heads/")
                    || update.refname.starts_with("refs/tags/") =>
            {
                kept.insert(update.refname.as_str(), new);
            }
            (kind, _) => plan.invalid.push(RefResult {
                refname: update.refname.clone(),
                outcome: RefOutcome::Rejected {
                    reason: format!("cannot push a {kind:?} update of this ref"),
                    stale: false,
                },
            }),
        }
    }
    plan.staged
        .extend(kept.into_iter().map(|(name, oid)| (name.to_owned(), oid)));
    plan
}

/// Stages the tracking ref that `update`'s lease comes from (none for a create: the ref must
/// not exist). A delete's is loose (see [`StagedPushPlan::tracking`]); any other's is packed
/// with the staged refs: git writes a loose tracking ref over it after the push, and
/// writing a thousand loose refs first, as git does after, cost as much again.
fn stage_tracking(plan: &mut StagedPushPlan, update: &RefUpdate) {
    let Some(old) = update.old else {
        return;
    };
    let tracking = (tracking_ref(&update.refname), old);
    match update.kind {
        UpdateKind::Delete => plan.tracking.push(tracking),
        _ => plan.staged.push(tracking),
    }
}

/// Returns true, noting its namespace, if `refname` is a branch or a tag: the only refs a
/// pattern refspec of a staged push carries.
fn staged_namespace(refname: &str, heads: &mut bool, tags: &mut bool) -> bool {
    if refname.starts_with("refs/heads/") {
        *heads = true;
    } else if refname.starts_with("refs/tags/") {
        *tags = true;
    } else {
        return false;
    }
    true
}

/// One ref line of `git push --porcelain`: `<flag>\t<src>:<dst>\t<summary>`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PorcelainLine {
    flag: char,
    pub(super) dst: String,
    /// `[new branch]`, `[rejected] (stale info)`, `[remote rejected] (hook declined)`, ...;
    /// a remote's reason that spans lines keeps its newlines here.
    pub(super) summary: String,
}

/// Returns the ref lines of `git push --porcelain` output (`To <url>` and `Done` skipped).
///
/// git prints the remote's reason of a rejected ref verbatim, so it can span lines: dulwich
/// puts a hook's whole stderr, trailing newline included, in it, and the closing `)` comes on
/// a line of its own. Every line after a rejected ref that is not a ref line belongs to it;
/// so do `To ...` and `Done` while its reason is still open (no closing parenthesis yet).
pub(super) fn parse_porcelain(stdout: &str) -> Vec<PorcelainLine> {
    let mut lines: Vec<PorcelainLine> = Vec::new();
    for text in stdout.lines() {
        if let Some(line) = ref_line(text) {
            lines.push(line);
            continue;
        }
        let Some(rejected) = lines.last_mut().filter(|line| line.flag == '!') else {
            continue;
        };
        let open = rejected.summary.contains('(') && !rejected.summary.ends_with(')');
        let framing = text == "Done" || text.starts_with("To ");
        if open || !framing {
            rejected.summary.push('\n');
            rejected.summary.push_str(text);
        }
    }
    lines
}

/// Returns `text` as a ref line, if it is one: a flag git uses, a tab, `<src>:<dst>`, a tab
/// and the summary.
fn ref_line(text: &str) -> Option<PorcelainLine> {
    let mut fields = text.splitn(3, '\t');
    let (Some(flag), Some(refs), Some(summary)) = (fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    let mut flag_chars = flag.chars();
    let (Some(flag), None) = (flag_chars.next(), flag_chars.next()) else {
        return None;
    };
    if !matches!(flag, ' ' | '+' | '-' | '*' | '=' | '!') {
        return None;
    }
    // `<src>:<dst>`, `:<dst>` or `(delete):<dst>`; a ref name never contains ':'.
    let (_, dst) = refs.rsplit_once(':')?;
    Some(PorcelainLine {
        flag,
        dst: dst.to_owned(),
        summary: summary.to_owned(),
    })
}

/// Returns the outcome of one porcelain line; `stderr` explains a lock failure.
pub(super) fn outcome_of(
    line: &PorcelainLine,
    stderr: &str,
    secrets: &[&SecretString],
) -> RefOutcome {
    match line.flag {
        ' ' | '+' | '-' | '*' => RefOutcome::Done,
        '=' => RefOutcome::UpToDate,
        _ => {
            let summary = line.summary.as_str();
            if let Some(reason) = bracketed_reason(summary, "[rejected]") {
                let stale = matches!(reason, "stale info" | "fetch first" | "non-fast-forward");
                RefOutcome::Rejected {
                    reason: reason.to_owned(),
                    stale,
                }
            } else if let Some(reason) = bracketed_reason(summary, "[remote rejected]") {
                let (reason, refusal) = remote_refusal(&one_line(reason), stderr, &line.dst);
                RefOutcome::RemoteRejected {
                    reason: scrub_secrets(&reason, secrets),
                    refusal,
                }
            } else {
                RefOutcome::RemoteRejected {
                    reason: scrub_secrets(&one_line(summary), secrets),
                    refusal: Refusal::Permanent,
                }
            }
        }
    }
}

/// Returns `reason` of `<tag> (<reason>)`, or of `<tag>` alone an empty reason.
fn bracketed_reason<'s>(summary: &'s str, tag: &str) -> Option<&'s str> {
    let rest = summary.strip_prefix(tag)?.trim();
    Some(
        rest.strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or(rest),
    )
}

/// Returns `reason` on one line: the lines of a reason that spans several (a hook's stderr,
/// as dulwich reports it) trimmed, the empty ones dropped, joined with "; ", so that
/// `last_error` still shows one rejected ref per line.
fn one_line(reason: &str) -> String {
    reason
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Returns the reason to record for a ref the remote rejected for `reason`, and what it
/// means for another attempt.
///
/// git's receive-pack says only `failed to update ref` of a ref that its ref transaction
/// refused, and prints the transaction's error on stderr: that line joins the reason and
/// decides. Other servers (GitHub, JGit) put their explanation in the reason itself.
fn remote_refusal(reason: &str, stderr: &str, refname: &str) -> (String, Refusal) {
    if reason == "failed to update ref"
        && let Some(error) = transaction_error_for(stderr, refname)
    {
        let refusal = refusal_of(&error);
        return (format!("{reason}: {error}"), refusal);
    }
    if reason.ends_with("hook declined")
        && let Some(words) = super::classify::hook_words_for(stderr, refname)
    {
        return (format!("{reason}: {words}"), refusal_of(reason));
    }
    (reason.to_owned(), refusal_of(reason))
}

/// Returns the error receive-pack printed on `stderr` (`remote: error: <message>`) about
/// `refname`: the message whose subject it is (`cannot lock ref '<refname>': ...`, or
/// reftable's `... cannot create '<refname>'`), else one about a lock of the whole
/// repository, which names no ref (`Unable to create '<path>/packed-refs.lock': File exists.`,
/// `cannot lock references`). A message that names `refname` only as the other ref of a
/// conflict is about that other ref.
fn transaction_error_for(stderr: &str, refname: &str) -> Option<String> {
    let errors: Vec<&str> = stderr
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("remote:").unwrap_or(line).trim_start();
            Some(line.strip_prefix("error:")?.trim())
        })
        .collect();
    let subject = format!("cannot lock ref '{refname}':");
    let created = format!("cannot create '{refname}'");
    errors
        .iter()
        .find(|error| error.starts_with(&subject) || error.ends_with(&created))
        .or_else(|| {
            errors.iter().find(|error| {
                !error.starts_with("cannot lock ref '") && refusal_of(error) == Refusal::Locked
            })
        })
        .map(|error| (*error).to_owned())
}

/// Returns one result per update, in the order of `updates`: what git reported, else the
/// reason it was not pushed, else a rejection saying that git did not report it.
pub(super) fn collect_results(
    updates: &[RefUpdate],
    reported: Vec<RefResult>,
    invalid: Vec<RefResult>,
) -> Vec<RefResult> {
    let mut by_ref: BTreeMap<String, RefOutcome> = BTreeMap::new();
    let mut extra = Vec::new();
    // A set, not a scan of `updates` per result: a push may carry 100,000 refs.
    let planned: BTreeSet<&str> = updates.iter().map(|u| u.refname.as_str()).collect();
    for result in invalid.into_iter().chain(reported) {
        if planned.contains(result.refname.as_str()) {
            by_ref.entry(result.refname).or_insert(result.outcome);
        } else {
            extra.push(result);
        }
    }
    let mut results: Vec<RefResult> = updates
        .iter()
        .map(|update| RefResult {
            refname: update.refname.clone(),
            outcome: by_ref
                .remove(&update.refname)
                .unwrap_or_else(|| RefOutcome::Rejected {
                    reason: "git push did not report this ref".to_owned(),
                    stale: false,
                }),
        })
        .collect();
    results.extend(extra);
    results
}

/// Returns the refs of `git ls-remote --symref` output: branches and tags only, without peeled
/// `^{}` entries and without any ref reported as symbolic.
pub(super) fn parse_ls_remote(stdout: &str) -> Result<RemoteRefs, String> {
    // Collected in order, then built at once: git lists refs sorted, and building a map from
    // sorted pairs costs no name comparisons beyond one check of the order.
    let mut refs = Vec::new();
    let mut symbolic = BTreeSet::new();
    for line in stdout.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(symref) = line.strip_prefix("ref: ") {
            // `ref: <target>\t<name>`: <name> is the symbolic ref.
            if let Some((_, name)) = symref.split_once('\t') {
                symbolic.insert(name.to_owned());
            }
            continue;
        }
        let Some((oid, name)) = line.split_once('\t') else {
            return Err(format!("unexpected line in git ls-remote output: {line:?}"));
        };
        if name.ends_with("^{}")
            || !(name.starts_with("refs/heads/") || name.starts_with("refs/tags/"))
        {
            continue;
        }
        let oid = crate::mirror::oid::parse_hex(oid)
            .map_err(|_| format!("unexpected object name in git ls-remote output: {line:?}"))?;
        refs.push((name.to_owned(), oid));
    }
    let mut refs: BTreeMap<String, Oid> = refs.into_iter().collect();
    for name in &symbolic {
        refs.remove(name);
    }
    Ok(RemoteRefs { refs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::remote::testing::{refmap, update};

    #[test]
    fn push_plan_uses_oids_and_leases_forced_updates_only() {
        let a = Oid::from_str("1111111111111111111111111111111111111111").expect("oid");
        let b = Oid::from_str("2222222222222222222222222222222222222222").expect("oid");
        let plan = plan_push(&[
            update("refs/heads/new", UpdateKind::Create, None, Some(a)),
            update("refs/heads/ff", UpdateKind::FastForward, Some(a), Some(b)),
            update("refs/heads/forced", UpdateKind::Force, Some(b), Some(a)),
            update("refs/tags/gone", UpdateKind::Delete, Some(a), None),
            update("refs/heads/odd", UpdateKind::Force, None, Some(a)),
        ]);
        assert_eq!(
            plan.leases,
            [
                format!("--force-with-lease=refs/heads/forced:{b}"),
                format!("--force-with-lease=refs/tags/gone:{a}"),
                "--force-with-lease=refs/heads/odd:".to_owned(),
            ]
        );
        assert_eq!(
            plan.refspecs,
            [
                format!("{a}:refs/heads/new"),
                format!("{b}:refs/heads/ff"),
                format!("{a}:refs/heads/forced"),
                ":refs/tags/gone".to_owned(),
                format!("{a}:refs/heads/odd"),
            ]
        );
        assert!(plan.invalid.is_empty());
    }

    #[test]
    fn staged_push_plan_stages_new_values_and_leases_forced_updates_and_deletes() {
        let a = Oid::from_str("1111111111111111111111111111111111111111").expect("oid");
        let b = Oid::from_str("2222222222222222222222222222222222222222").expect("oid");
        let plan = plan_staged_push(
            &[
                update("refs/heads/new", UpdateKind::Create, None, Some(a)),
                update("refs/heads/ff", UpdateKind::FastForward, Some(a), Some(b)),
                update("refs/heads/forced", UpdateKind::Force, Some(b), Some(a)),
                update("refs/tags/gone", UpdateKind::Delete, Some(a), None),
                update("refs/notes/x", UpdateKind::Create, None, Some(a)),
            ],
            Leases::Explicit,
        );
        assert_eq!(
            plan.leases,
            [
                format!("--force-with-lease=refs/heads/forced:{b}"),
                format!("--force-with-lease=refs/tags/gone:{a}"),
            ]
        );
        // No `+`: only a lease forces; no tag pattern when no tag is staged.
        assert_eq!(
            plan.refspecs,
            [
                "refs/heads/*:refs/heads/*".to_owned(),
                ":refs/tags/gone".to_owned()
            ]
        );
        assert_eq!(
            plan.staged,
            [
                ("refs/heads/new".to_owned(), a),
                ("refs/heads/ff".to_owned(), b),
                ("refs/heads/forced".to_owned(), a),
            ]
        );
        assert_eq!(plan.invalid.len(), 1);
        assert_eq!(plan.invalid[0].refname, "refs/notes/x");
    }

    /// With the hook's leases: forced patterns, no lease for git, and every pushed ref
    /// checked at the value read (a create: absent), including the fast-forwards.
    #[test]
    fn hooked_push_plans_force_the_patterns_and_check_every_ref() {
        let a = Oid::from_str("1111111111111111111111111111111111111111").expect("oid");
        let b = Oid::from_str("2222222222222222222222222222222222222222").expect("oid");
        let updates = [
            update("refs/heads/new", UpdateKind::Create, None, Some(a)),
            update("refs/heads/ff", UpdateKind::FastForward, Some(a), Some(b)),
            update("refs/tags/forced", UpdateKind::Force, Some(b), Some(a)),
            update("refs/heads/gone", UpdateKind::Delete, Some(a), None),
            update("refs/notes/x", UpdateKind::Create, None, Some(a)),
        ];
        let plan = plan_staged_push(&updates, Leases::Hook);
        assert!(plan.leases.is_empty(), "{:?}", plan.leases);
        assert_eq!(
            plan.refspecs,
            [
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
                ":refs/heads/gone"
            ]
        );
        assert_eq!(
            plan.checked,
            [
                ("refs/heads/new".to_owned(), None),
                ("refs/heads/ff".to_owned(), Some(a)),
                ("refs/tags/forced".to_owned(), Some(b)),
                ("refs/heads/gone".to_owned(), Some(a)),
            ]
        );
        assert!(plan.tracking.is_empty());
        assert_eq!(
            plan.staged.len(),
            3,
            "no tracking ref staged: {:?}",
            plan.staged
        );
        assert_eq!(plan.invalid.len(), 1);

        let remote = BTreeMap::from([
            ("refs/heads/ff".to_owned(), a),
            ("refs/heads/gone".to_owned(), a),
            ("refs/heads/outside".to_owned(), b),
        ]);
        let plan = plan_pruning_push(&updates[..4], &remote, Leases::Hook);
        assert_eq!(plan.leases, ["--prune"]);
        assert_eq!(
            plan.refspecs,
            ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
        );
        assert_eq!(plan.checked.len(), 4);
        assert_eq!(
            plan.staged,
            [
                ("refs/heads/ff".to_owned(), b),
                ("refs/heads/new".to_owned(), a),
                ("refs/heads/outside".to_owned(), b),
                ("refs/tags/forced".to_owned(), a),
            ]
        );
    }

    #[test]
    fn porcelain_lines_become_outcomes() {
        // Real output of git 2.47, gathered from the pushes in the tests above.
        let stdout = "To /tmp/r.git\n\
            *\tb16798ff6c2a8a903535e1241159342bce69c1a0:refs/heads/new\t[new branch]\n\
            \t3d348f81af766cb6798822c179651dad95baa82b:refs/heads/ff\tb16798f..3d348f8\n\
            +\tb16798ff6c2a8a903535e1241159342bce69c1a0:refs/heads/forced\t3d348f8...b16798f (forced update)\n\
            -\t:refs/heads/gone\t[deleted]\n\
            =\tb16798ff6c2a8a903535e1241159342bce69c1a0:refs/heads/same\t[up to date]\n\
            !\t(delete):refs/heads/zz\t[rejected] (stale info)\n\
            !\tb16798ff6c2a8a903535e1241159342bce69c1a0:refs/heads/b\t[rejected] (non-fast-forward)\n\
            !\t1111111111111111111111111111111111111111:refs/tags/t\t[rejected] (needs force)\n\
            !\t3d348f81af766cb6798822c179651dad95baa82b:refs/heads/main\t[remote rejected] (failed to update ref)\n\
            !\t3d348f81af766cb6798822c179651dad95baa82b:refs/heads/p\t[remote rejected] (pre-receive hook declined)\n\
            Done\n";
        // The fast-forward line starts with a space flag, which the literal above loses.
        let stdout = stdout.replace("\n\t3d348f81", "\n \t3d348f81");
        let stderr = "remote: error: cannot lock ref 'refs/heads/main': Unable to create \
                      '/tmp/r.git/./refs/heads/main.lock': File exists.        \n";
        let outcomes: Vec<(String, RefOutcome)> = parse_porcelain(&stdout)
            .iter()
            .map(|line| (line.dst.clone(), outcome_of(line, stderr, &[])))
            .collect();
        let rejected = |reason: &str, stale| RefOutcome::Rejected {
            reason: reason.to_owned(),
            stale,
        };
        let expected = [
            ("refs/heads/new", RefOutcome::Done),
            ("refs/heads/ff", RefOutcome::Done),
            ("refs/heads/forced", RefOutcome::Done),
            ("refs/heads/gone", RefOutcome::Done),
            ("refs/heads/same", RefOutcome::UpToDate),
            ("refs/heads/zz", rejected("stale info", true)),
            ("refs/heads/b", rejected("non-fast-forward", true)),
            ("refs/tags/t", rejected("needs force", false)),
            (
                "refs/heads/main",
                RefOutcome::RemoteRejected {
                    reason: "failed to update ref: cannot lock ref 'refs/heads/main': Unable \
                             to create '/tmp/r.git/./refs/heads/main.lock': File exists."
                        .to_owned(),
                    refusal: Refusal::Locked,
                },
            ),
            (
                "refs/heads/p",
                RefOutcome::RemoteRejected {
                    reason: "pre-receive hook declined".to_owned(),
                    refusal: Refusal::Permanent,
                },
            ),
        ]
        .map(|(r, o)| (r.to_owned(), o));
        assert_eq!(outcomes, expected);
    }

    #[test]
    fn reasons_that_span_lines_are_kept_whole() {
        // Real output of git 2.47 pushing to `dulwich daemon` 1.2.21, whose update hook
        // printed three lines for `protected` (one ending in ")", one starting with a tab),
        // one for `oneline` and nothing for `silent`: dulwich puts the hook's stderr, newlines
        // included, in the reason.
        let stdout = "To git://127.0.0.1:38069/tmp/tmp.lpbseeV3Du/d.git\n\
            *\t6a0d0c253c0d2e1a0450401b046fb547bc149964:refs/heads/free\t[new branch]\n\
            !\t6a0d0c253c0d2e1a0450401b046fb547bc149964:refs/heads/protected\t[remote rejected] \
            (update hook exited with status 1: protected branch: refs/heads/protected\n\
            ask an admin (see docs)\n\
            \tthen push again\n\
            )\n\
            !\t6a0d0c253c0d2e1a0450401b046fb547bc149964:refs/heads/oneline\t[remote rejected] \
            (update hook exited with status 1: no: refs/heads/oneline\n\
            )\n\
            !\t6a0d0c253c0d2e1a0450401b046fb547bc149964:refs/heads/silent\t[remote rejected] \
            (update hook exited with status 1: )\n\
            Done\n";
        let outcomes: Vec<(String, RefOutcome)> = parse_porcelain(stdout)
            .iter()
            .map(|line| (line.dst.clone(), outcome_of(line, "", &[])))
            .collect();
        let refused = |reason: &str| RefOutcome::RemoteRejected {
            reason: reason.to_owned(),
            refusal: Refusal::Permanent,
        };
        let expected = [
            ("refs/heads/free", RefOutcome::Done),
            (
                "refs/heads/protected",
                refused(
                    "update hook exited with status 1: protected branch: refs/heads/protected; \
                     ask an admin (see docs); then push again",
                ),
            ),
            (
                "refs/heads/oneline",
                refused("update hook exited with status 1: no: refs/heads/oneline"),
            ),
            (
                "refs/heads/silent",
                refused("update hook exited with status 1:"),
            ),
        ]
        .map(|(r, o)| (r.to_owned(), o));
        assert_eq!(outcomes, expected);

        // A reason that is still open keeps lines that look like porcelain's own; a rejection
        // without a reason does not take the `Done` after it.
        let stdout = "To /tmp/r.git\n\
            !\tHEAD:refs/heads/p\t[remote rejected] (update hook exited with status 1: To do:\n\
            Done\n\
            )\n\
            !\tHEAD:refs/heads/q\t[remote rejected]\n\
            Done\n";
        let reasons: Vec<RefOutcome> = parse_porcelain(stdout)
            .iter()
            .map(|line| outcome_of(line, "", &[]))
            .collect();
        assert_eq!(
            reasons,
            [
                refused("update hook exited with status 1: To do:; Done"),
                refused(""),
            ]
        );
    }

    /// Returns the outcome of `[remote rejected] (<reason>)` for `refname`, with `stderr`.
    fn remote_rejected(refname: &str, reason: &str, stderr: &str) -> RefOutcome {
        let stdout =
            format!("To /tmp/r.git\n!\tHEAD:{refname}\t[remote rejected] ({reason})\nDone\n");
        let lines = parse_porcelain(&stdout);
        assert_eq!(lines.len(), 1, "{stdout}");
        outcome_of(&lines[0], stderr, &[])
    }

    #[test]
    fn remote_refusals_mean_what_git_says_and_nothing_looser() {
        /// What the remote said of the ref, and what it must mean.
        struct Case {
            refname: &'static str,
            reason: &'static str,
            stderr: &'static str,
            recorded: &'static str,
            stale: bool,
            locked: bool,
        }
        let refused = |refname, reason, stderr, recorded| Case {
            refname,
            reason,
            stderr,
            recorded,
            stale: false,
            locked: false,
        };
        let stale = |refname, reason, stderr, recorded| Case {
            stale: true,
            ..refused(refname, reason, stderr, recorded)
        };
        let locked = |refname, reason, stderr, recorded| Case {
            locked: true,
            ..refused(refname, reason, stderr, recorded)
        };
        // The stderr lines are git 2.47's (files backend unless marked reftable) from pushes
        // to a local bare repository, padding included; the others are marked.
        let cases = [
            // A ref whose name conflicts with an existing one: nothing is locked.
            refused(
                "refs/heads/a",
                "failed to update ref",
                "remote: error: cannot lock ref 'refs/heads/a': 'refs/heads/a/b' exists; \
                 cannot create 'refs/heads/a'        \n\
                 error: failed to push some refs to '../r.git'\n",
                "failed to update ref: cannot lock ref 'refs/heads/a': 'refs/heads/a/b' \
                 exists; cannot create 'refs/heads/a'",
            ),
            refused(
                "refs/heads/f/g",
                "failed to update ref",
                "remote: error: cannot lock ref 'refs/heads/f/g': 'refs/heads/f' exists; \
                 cannot create 'refs/heads/f/g'        \n",
                "failed to update ref: cannot lock ref 'refs/heads/f/g': 'refs/heads/f' \
                 exists; cannot create 'refs/heads/f/g'",
            ),
            // reftable: the same conflict without "cannot lock ref"
            refused(
                "refs/heads/a",
                "failed to update ref",
                "remote: error: 'refs/heads/a/b' exists; cannot create 'refs/heads/a'        \n",
                "failed to update ref: 'refs/heads/a/b' exists; cannot create 'refs/heads/a'",
            ),
            // a directory that holds no ref but a stray file
            refused(
                "refs/heads/d",
                "failed to update ref",
                "remote: error: cannot lock ref 'refs/heads/d': there is a non-empty \
                 directory './refs/heads/d' blocking reference 'refs/heads/d'        \n",
                "failed to update ref: cannot lock ref 'refs/heads/d': there is a non-empty \
                 directory './refs/heads/d' blocking reference 'refs/heads/d'",
            ),
            // GitHub puts git's message in the reason itself (not provoked here)
            refused(
                "refs/heads/feature/x",
                "cannot lock ref 'refs/heads/feature/x': 'refs/heads/feature' exists; \
                 cannot create 'refs/heads/feature/x'",
                "",
                "cannot lock ref 'refs/heads/feature/x': 'refs/heads/feature' exists; \
                 cannot create 'refs/heads/feature/x'",
            ),
            // The ref moved between the remote's advertisement and its update (a pre-receive
            // hook moved it): updated, created or deleted meanwhile.
            stale(
                "refs/heads/upd",
                "failed to update ref",
                "remote: error: cannot lock ref 'refs/heads/upd': is at \
                 6a0d0c253c0d2e1a0450401b046fb547bc149964 but expected \
                 30b752bbbee6ccca4e9070154461b1bdaf5b77d7        \n",
                "failed to update ref: cannot lock ref 'refs/heads/upd': is at \
                 6a0d0c253c0d2e1a0450401b046fb547bc149964 but expected \
                 30b752bbbee6ccca4e9070154461b1bdaf5b77d7",
            ),
            stale(
                "refs/heads/appeared",
                "failed to update ref",
                "remote: error: cannot lock ref 'refs/heads/appeared': reference already \
                 exists        \n",
                "failed to update ref: cannot lock ref 'refs/heads/appeared': reference \
                 already exists",
            ),
            stale(
                "refs/heads/gone",
                "failed to update ref",
                "remote: error: cannot lock ref 'refs/heads/gone': unable to resolve \
                 reference 'refs/heads/gone'        \n",
                "failed to update ref: cannot lock ref 'refs/heads/gone': unable to resolve \
                 reference 'refs/heads/gone'",
            ),
            // GitHub (not provoked here)
            stale(
                "refs/heads/main",
                "cannot lock ref 'refs/heads/main': is at \
                 98bf7e54a615d7e23cbcf8688d22c4099a1d2240 but expected \
                 00da1b358846ae9a8ffa71b34eb1e330e3a37e3d",
                "",
                "cannot lock ref 'refs/heads/main': is at \
                 98bf7e54a615d7e23cbcf8688d22c4099a1d2240 but expected \
                 00da1b358846ae9a8ffa71b34eb1e330e3a37e3d",
            ),
            // A lock file in the way: the ref's own, packed-refs' (a delete), reftable's.
            locked(
                "refs/heads/k",
                "failed to update ref",
                "remote: error: cannot lock ref 'refs/heads/k': Unable to create \
                 '/tmp/r2.git/./refs/heads/k.lock': File exists.        \n\
                 remote: \n\
                 remote: Another git process seems to be running in this repository, e.g.        \n",
                "failed to update ref: cannot lock ref 'refs/heads/k': Unable to create \
                 '/tmp/r2.git/./refs/heads/k.lock': File exists.",
            ),
            locked(
                "refs/heads/b",
                "failed to update ref",
                "remote: error: Unable to create '/tmp/s.git/./packed-refs.lock': File \
                 exists.        \n\
                 remote: \n\
                 remote: Another git process seems to be running in this repository, e.g.        \n",
                "failed to update ref: Unable to create '/tmp/s.git/./packed-refs.lock': \
                 File exists.",
            ),
            locked(
                "refs/heads/new",
                "failed to update ref",
                "remote: error: cannot lock references        \n\
                 remote: error: cannot lock references        \n",
                "failed to update ref: cannot lock references",
            ),
            // JGit (Gerrit and others): its words for a lock failure (not provoked here)
            locked("refs/heads/main", "failed to lock", "", "failed to lock"),
            // A hook that uses git's words is still a hook refusing the ref.
            refused(
                "refs/heads/x",
                "update hook exited with status 1: cannot lock ref 'refs/heads/x': is at \
                 98bf7e54a615d7e23cbcf8688d22c4099a1d2240 but expected \
                 00da1b358846ae9a8ffa71b34eb1e330e3a37e3d",
                "",
                "update hook exited with status 1: cannot lock ref 'refs/heads/x': is at \
                 98bf7e54a615d7e23cbcf8688d22c4099a1d2240 but expected \
                 00da1b358846ae9a8ffa71b34eb1e330e3a37e3d",
            ),
            refused(
                "refs/heads/release",
                "update hook exited with status 1: failed to lock the release: ask the team",
                "",
                "update hook exited with status 1: failed to lock the release: ask the team",
            ),
            refused(
                "refs/heads/x",
                "hook declined",
                "remote: cannot lock ref 'refs/heads/x': Unable to create 'x.lock': File \
                 exists.        \n\
                 remote: error: hook declined to update refs/heads/x        \n",
                // The hook's words are kept as its reason, and still mean no lock.
                "hook declined: cannot lock ref 'refs/heads/x': Unable to create \
                 'x.lock': File exists.",
            ),
            // A broken ref on the remote is not one that moved.
            refused(
                "refs/heads/broken",
                "failed to update ref",
                "remote: error: cannot lock ref 'refs/heads/broken': unable to resolve \
                 reference 'refs/heads/broken': reference broken        \n",
                "failed to update ref: cannot lock ref 'refs/heads/broken': unable to \
                 resolve reference 'refs/heads/broken': reference broken",
            ),
        ];
        for case in cases {
            let outcome = remote_rejected(case.refname, case.reason, case.stderr);
            let recorded = match &outcome {
                RefOutcome::RemoteRejected { reason, .. } => reason.as_str(),
                other => panic!("{}: not a remote rejection: {other:?}", case.refname),
            };
            assert_eq!(recorded, case.recorded, "{}", case.reason);
            assert_eq!(outcome.is_stale(), case.stale, "stale? {recorded}");
            assert_eq!(outcome.is_lock_failure(), case.locked, "locked? {recorded}");
        }
    }

    #[test]
    fn refs_that_git_did_not_report_are_not_lost() {
        let a = Oid::from_str("1111111111111111111111111111111111111111").expect("oid");
        let updates = [
            update("refs/heads/a", UpdateKind::Create, None, Some(a)),
            update("refs/heads/b", UpdateKind::Create, None, Some(a)),
        ];
        let reported = vec![RefResult {
            refname: "refs/heads/b".to_owned(),
            outcome: RefOutcome::Done,
        }];
        let results = collect_results(&updates, reported, Vec::new());
        assert_eq!(results[0].refname, "refs/heads/a");
        assert!(matches!(
            &results[0].outcome,
            RefOutcome::Rejected { reason, stale: false } if reason.contains("did not report")
        ));
        assert_eq!(results[1].outcome, RefOutcome::Done);
    }

    #[test]
    fn ls_remote_output_is_parsed() {
        let stdout = "ref: refs/heads/main\trefs/heads/alias\n\
            b16798ff6c2a8a903535e1241159342bce69c1a0\trefs/heads/alias\n\
            b16798ff6c2a8a903535e1241159342bce69c1a0\trefs/heads/main\n\
            3d348f81af766cb6798822c179651dad95baa82b\trefs/tags/light\n\
            4ea55ee7cccff1af18d3f816ae9bbfc989d1c1e0\trefs/tags/v1\n\
            3d348f81af766cb6798822c179651dad95baa82b\trefs/tags/v1^{}\n\
            3d348f81af766cb6798822c179651dad95baa82b\trefs/pull/1/head\n";
        let refs = parse_ls_remote(stdout).expect("valid output");
        let oid = |s: &str| Oid::from_str(s).expect("oid");
        assert_eq!(
            refs.refs,
            refmap(&[
                (
                    "refs/heads/main",
                    oid("b16798ff6c2a8a903535e1241159342bce69c1a0")
                ),
                (
                    "refs/tags/light",
                    oid("3d348f81af766cb6798822c179651dad95baa82b")
                ),
                (
                    "refs/tags/v1",
                    oid("4ea55ee7cccff1af18d3f816ae9bbfc989d1c1e0")
                ),
            ])
        );
        assert!(parse_ls_remote("garbage\n").is_err());
    }
}

#[cfg(test)]
mod proptests;
