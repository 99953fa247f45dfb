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

use super::{RefOutcome, RefResult, RemoteRefs};
use crate::mirror::refdiff::{RefUpdate, UpdateKind};
use crate::mirror::url::scrub_secrets;

/// The arguments of one push, and the updates that cannot be pushed at all.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct PushPlan {
    pub(super) leases: Vec<String>,
    pub(super) refspecs: Vec<String>,
    pub(super) invalid: Vec<RefResult>,
}

/// Returns the `--force-with-lease` options and refspecs of `updates`. Sources are object
/// ids, so that what lands is exactly what was planned.
pub(super) fn plan_push(updates: &[RefUpdate]) -> PushPlan {
    let mut plan = PushPlan::default();
    for update in updates {
        let refname = &update.refname;
        // An empty expected value means "must not exist" to git.
        let lease = || {
            let old = update.old.map(|oid| oid.to_string()).unwrap_or_default();
            format!("--force-with-lease={refname}:{old}")
        };
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

/// One ref line of `git push --porcelain`: `<flag>\t<src>:<dst>\t<summary>`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PorcelainLine {
    flag: char,
    pub(super) dst: String,
    /// `[new branch]`, `[rejected] (stale info)`, `[remote rejected] (hook declined)`, ...
    pub(super) summary: String,
}

/// Returns the ref lines of `git push --porcelain` output (`To <url>` and `Done` skipped).
pub(super) fn parse_porcelain(stdout: &str) -> Vec<PorcelainLine> {
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let mut fields = line.splitn(3, '\t');
        let (Some(flag), Some(refs), Some(summary)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let mut flag_chars = flag.chars();
        let (Some(flag), None) = (flag_chars.next(), flag_chars.next()) else {
            continue;
        };
        // `<src>:<dst>`, `:<dst>` or `(delete):<dst>`; a ref name never contains ':'.
        let Some((_, dst)) = refs.rsplit_once(':') else {
            continue;
        };
        lines.push(PorcelainLine {
            flag,
            dst: dst.to_owned(),
            summary: summary.to_owned(),
        });
    }
    lines
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
                // git's receive-pack says only this of a ref it could not lock; the remote's
                // stderr says why.
                let lock = (reason == "failed to update ref")
                    .then(|| lock_line_for(stderr, &line.dst))
                    .flatten();
                let reason = match lock {
                    Some(lock) => format!("{reason}: {lock}"),
                    None => reason.to_owned(),
                };
                RefOutcome::RemoteRejected {
                    reason: scrub_secrets(&reason, secrets),
                }
            } else {
                RefOutcome::RemoteRejected {
                    reason: scrub_secrets(summary, secrets),
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

/// Returns the remote's "cannot lock ref '<refname>'..." line of `stderr`, without the
/// `remote: error: ` prefix.
fn lock_line_for(stderr: &str, refname: &str) -> Option<String> {
    let needle = format!("cannot lock ref '{refname}'");
    stderr
        .lines()
        .find(|line| line.contains(&needle))
        .map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("remote:").unwrap_or(line).trim_start();
            let line = line.strip_prefix("error:").unwrap_or(line);
            line.trim().to_owned()
        })
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
    for result in invalid.into_iter().chain(reported) {
        if updates.iter().any(|u| u.refname == result.refname) {
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
    let mut refs = BTreeMap::new();
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
        let oid = Oid::from_str(oid)
            .map_err(|_| format!("unexpected object name in git ls-remote output: {line:?}"))?;
        refs.insert(name.to_owned(), oid);
    }
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
                },
            ),
            (
                "refs/heads/p",
                RefOutcome::RemoteRejected {
                    reason: "pre-receive hook declined".to_owned(),
                },
            ),
        ]
        .map(|(r, o)| (r.to_owned(), o));
        assert_eq!(outcomes, expected);
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
