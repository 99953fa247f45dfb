//! `pushmirror verify [NAME… | --all] [--json] [--quiet]`: drift check, for people and cron.
//!
//! Reads each remote (the same dry run as `plan`) and lists the refs that differ from what
//! the mirror should hold, i.e. what a successful update would leave there: every ref the
//! next update would create, update, force or delete (held by the guard or not), and every
//! ref kept diverged by `keep_divergent_refs` (marked so: an update leaves it, but the remote
//! does not hold what the local repository does). Refs outside the branch filter, and
//! remote-only refs that `prune` keeps, are what the mirror should hold and are not listed.
//! Exit 0 when none differ, 1 when some do, 2 when a remote or repository cannot be read.

use std::io::Write;

use serde::Serialize;

use super::contact::{self, Contact};
use super::plan::{fetch, ref_line};
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::protocol::{MirrorPlan, PlannedRef, SyncTarget};

/// One mirror in `verify --json`.
#[derive(Debug, Serialize)]
struct Verified<'a> {
    name: &'a str,
    url: &'a str,
    /// True when no ref differs (and the remote could be read).
    in_sync: bool,
    error: Option<&'a str>,
    /// The refs that differ, as `plan` describes them.
    differences: Vec<&'a PlannedRef>,
}

#[derive(Debug, Serialize)]
struct VerifyDocument<'a> {
    mirrors: Vec<Verified<'a>>,
}

/// Verifies the mirrors of `target`; returns the exit code. `quiet` prints only the mirrors
/// that differ or cannot be read (nothing at all when every one is in sync: cron mails
/// nothing).
pub async fn run(
    contact: &Contact,
    target: SyncTarget,
    json: bool,
    quiet: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let names = match &target {
        SyncTarget::Mirrors(names) => names.clone(),
        _ => Vec::new(),
    };
    let plans = match fetch(contact, target, err).await {
        Ok(plans) => plans,
        Err(code) => {
            contact::hint_reload(contact, &names, err);
            return code;
        }
    };
    let verified: Vec<Verified<'_>> = plans.iter().map(verified).collect();
    if json {
        let document = VerifyDocument { mirrors: verified };
        let _ = serde_json::to_writer_pretty(&mut *out, &document);
        let _ = writeln!(out);
        return exit_code(&plans);
    }
    for (plan, v) in plans.iter().zip(&verified) {
        print_verified(plan, v, quiet, out);
    }
    exit_code(&plans)
}

fn verified(plan: &MirrorPlan) -> Verified<'_> {
    let differences: Vec<&PlannedRef> = plan.refs.iter().filter(|r| r.differs()).collect();
    Verified {
        name: &plan.name,
        url: &plan.url,
        in_sync: plan.error.is_none() && differences.is_empty(),
        error: plan.error.as_deref(),
        differences,
    }
}

fn print_verified(plan: &MirrorPlan, v: &Verified<'_>, quiet: bool, out: &mut dyn Write) {
    if let Some(error) = v.error {
        let _ = writeln!(out, "{}: cannot verify: {error}", v.name);
        return;
    }
    if v.in_sync {
        if !quiet {
            let _ = writeln!(out, "{}: in sync ({} refs)", v.name, plan.up_to_date);
        }
        return;
    }
    let count = v.differences.len();
    let _ = writeln!(
        out,
        "{}: {count} ref{} differ{} from the local repository ({})",
        v.name,
        if count == 1 { "" } else { "s" },
        if count == 1 { "s" } else { "" },
        v.url
    );
    for r in &v.differences {
        let _ = writeln!(out, "  {}", ref_line(r));
    }
}

/// 2 if a mirror could not be read, else 1 if one differs, else 0.
fn exit_code(plans: &[MirrorPlan]) -> u8 {
    if plans.iter().any(|p| p.error.is_some()) {
        EXIT_USAGE
    } else if plans.iter().any(|p| p.refs.iter().any(PlannedRef::differs)) {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}
