//! `pushmirror plan NAME [--json]`: what the next update of NAME would do, ref by ref, with
//! nothing pushed or recorded.
//!
//! Asked of the daemon (a `plan` request), so that the plan is the one the daemon's loaded
//! configuration makes, also while the file is mid-edit (SPEC.md section 2). When no daemon
//! runs, the same dry run (`mirror::preview`) runs in this process from the file, if the
//! file is valid, with a note on stderr. `verify` shares [`fetch`].

use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::contact::{self, Contact};
use super::{EXIT_OK, EXIT_USAGE};
use crate::client::{ClientError, call};
use crate::config::Config;
use crate::protocol::{MirrorPlan, PlannedRef, Request, Response, SyncTarget};

/// How long a dry run may take through the daemon: the remotes are read at most ten minutes
/// each, `max_parallel_pushes` at once.
const PLAN_LIMIT: Duration = Duration::from_secs(4 * 3600);

/// The `--json` document of `plan` (and `verify`): `{"mirrors": [...]}`.
#[derive(Debug, Serialize)]
pub(super) struct PlanDocument<'a> {
    pub(super) mirrors: &'a [MirrorPlan],
}

/// Prints the plan of mirror `name`; returns 0, or 2 when the plan could not be made.
pub async fn run(
    contact: &Contact,
    name: &str,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let target = SyncTarget::Mirrors(vec![name.to_owned()]);
    let plans = match fetch(contact, target, err).await {
        Ok(plans) => plans,
        Err(code) => {
            contact::hint_reload(contact, &[name.to_owned()], err);
            return code;
        }
    };
    if json {
        let document = PlanDocument { mirrors: &plans };
        let _ = serde_json::to_writer_pretty(&mut *out, &document);
        let _ = writeln!(out);
    } else {
        for plan in &plans {
            print_plan(plan, out);
        }
    }
    if plans.iter().any(|p| p.error.is_some()) {
        for plan in &plans {
            if let Some(error) = &plan.error {
                let _ = writeln!(err, "error: {}: {error}", plan.name);
            }
        }
        return EXIT_USAGE;
    }
    EXIT_OK
}

/// Returns the dry runs of `target`: from the daemon, else (no daemon runs) made here from
/// the valid file. Errors are reported on `err` and come back as exit code 2.
pub(super) async fn fetch(
    contact: &Contact,
    target: SyncTarget,
    err: &mut dyn Write,
) -> Result<Vec<MirrorPlan>, u8> {
    let request = Request::Plan {
        target: target.clone(),
    };
    match call(&contact.socket, &request, PLAN_LIMIT).await {
        Ok(Response::Planned { mirrors }) => Ok(mirrors),
        Err(ClientError::NotRunning { .. }) => {
            let Some(config) = &contact.config else {
                let _ = writeln!(
                    err,
                    "error: the daemon is not running, and no plan can be made until {} is fixed",
                    contact.path.display()
                );
                return Err(EXIT_USAGE);
            };
            let _ = writeln!(
                err,
                "pushmirror: the daemon is not running; planned here from {}",
                contact.path.display()
            );
            locally(config, &target, err).await
        }
        other => Err(super::report_unwanted(other, err)),
    }
}

/// Makes the dry runs of `target` in this process, from `config`, as the daemon would.
async fn locally(
    config: &Config,
    target: &SyncTarget,
    err: &mut dyn Write,
) -> Result<Vec<MirrorPlan>, u8> {
    let mirrors: Vec<_> = match target {
        SyncTarget::Mirrors(names) => {
            let mut mirrors = Vec::new();
            for name in names {
                let Some(mirror) = config.mirror(name) else {
                    let _ = writeln!(
                        err,
                        "error: no mirror named {name:?} in {}",
                        config.path.display()
                    );
                    return Err(EXIT_USAGE);
                };
                mirrors.push(mirror);
            }
            mirrors
        }
        SyncTarget::All => config.mirrors.iter().filter(|m| m.enabled).collect(),
        SyncTarget::Repo(repo) => {
            let repo = crate::paths::canonical(repo);
            config
                .mirrors
                .iter()
                .filter(|m| m.enabled && crate::paths::canonical(&m.repo) == repo)
                .collect()
        }
    };
    crate::mirror::init_libgit2();
    let mut plans = Vec::new();
    for mirror in mirrors {
        let ctx =
            crate::mirror::preview::context(config.daemon.git_config, CancellationToken::new());
        let preview = crate::mirror::preview::preview(mirror, &ctx).await;
        plans.push(MirrorPlan::from_preview(mirror, preview));
    }
    Ok(plans)
}

/// Prints one mirror's plan for people: a header, one line per ref that is not up to date
/// (`action`, the ref, remote -> local ids), then the guard's verdict.
fn print_plan(plan: &MirrorPlan, out: &mut dyn Write) {
    let enabled = if plan.enabled { "" } else { " (disabled)" };
    let _ = writeln!(out, "{} -> {}{enabled}", plan.name, plan.url);
    if let Some(error) = &plan.error {
        let _ = writeln!(out, "  cannot plan: {error}");
        return;
    }
    for r in &plan.refs {
        let _ = writeln!(out, "  {}", ref_line(r));
    }
    let changes = plan
        .refs
        .iter()
        .filter(|r| r.action.changes_remote())
        .count();
    let _ = writeln!(
        out,
        "  {} to push, {} up to date",
        refs(changes),
        plan.up_to_date
    );
    if let Some(guard) = &plan.guard {
        let _ = writeln!(out, "  held by the guard: the update would be refused");
        for line in guard.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
}

/// Returns `action ref remote -> local`, short ids, `-` for an absent side, and why a skipped
/// or held ref is so.
pub(super) fn ref_line(r: &PlannedRef) -> String {
    let short = |oid: &Option<String>| match oid {
        Some(oid) => oid.chars().take(12).collect(),
        None => "-".to_owned(),
    };
    let why = match r.action.as_str() {
        _ if r.held => "  (held by the guard)",
        "diverged" => "  (skipped: the remote diverged; keep_divergent_refs)",
        "filtered" => "  (skipped: not carried by the branch filter)",
        "kept" => "  (left alone: only on the remote; prune keeps it)",
        _ => "",
    };
    format!(
        "{:<8} {} {} -> {}{why}",
        r.action.as_str(),
        r.name,
        short(&r.remote),
        short(&r.local)
    )
}

/// Returns "1 ref", "2 refs".
fn refs(count: usize) -> String {
    format!("{count} ref{}", if count == 1 { "" } else { "s" })
}
