//! One update of one mirror with its status recorded around it: the unit of work that both
//! the daemon and `pushmirror update` run.
//!
//! Invariant: the status says `started` only while an update runs under the mirror's lock;
//! every path out of [`run`] after `start` records an ending. Pushing comes before recording:
//! when the status cannot be written (a full disk), the update still runs and the failed
//! write is reported beside its outcome.

use tracing::{Instrument, error, info_span, warn};

use crate::config::{Config, Mirror};
use crate::mirror::{self, UpdateContext};
use crate::store::state::{
    Ending, MirrorState, RefCounts, StateError, StateStore, Timestamp, Trigger,
};

/// How a recorded update ended.
#[derive(Debug)]
pub enum JobOutcome {
    /// The update ran; the state says `finished`, `failed` or `to_retry`. `unsaved` is the
    /// error that kept it from disk, if one did.
    Ran {
        state: Box<MirrorState>,
        unsaved: Option<StateError>,
    },
    /// Another process holds the mirror's lock: nothing was done.
    Busy,
}

/// Why a recorded update could not even be attempted.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    State(#[from] StateError),
}

/// Runs one update of `mirror` and records it in `store`.
///
/// `retries_left` says whether a transient failure may become `to_retry` rather than
/// `failed`. `ctx.first_sync` is derived from the stored state. `allow_mass_change` lets this
/// one update pass the mass-change guard (`sync NAME --allow-mass-change`).
pub async fn run(
    config: &Config,
    store: &StateStore,
    mirror: &Mirror,
    trigger: Trigger,
    retries_left: bool,
    cancel: tokio_util::sync::CancellationToken,
    allow_mass_change: bool,
) -> Result<JobOutcome, JobError> {
    let Some(_lock) = store.try_lock(&mirror.name)? else {
        return Ok(JobOutcome::Busy);
    };
    let (mut state, recovered) = store.load(&mirror.name)?;
    if let Some(recovered) = recovered {
        warn!(
            mirror = %mirror.name,
            path = %recovered.path.display(),
            moved_to = %recovered.moved_to.display(),
            reason = %recovered.reason,
            "state file was corrupt; set it aside and started afresh"
        );
    }
    let ctx = UpdateContext {
        git_config: config.daemon.git_config,
        cancel,
        first_sync: state.last_successful_update_at.is_none(),
        scratch_dir: Some(config.daemon.state_dir.join("scratch")),
        allow_mass_change,
        lfs: mirror::lfs::SharedTally::default(),
    };
    state.start(Timestamp::now());
    let mut unsaved = store.save(&mirror.name, &state).err();

    let span = info_span!("update", mirror = %mirror.name, %trigger);
    let result = mirror::update(mirror, &ctx).instrument(span.clone()).await;
    let (counts, ending) = match &result {
        Ok(report) => (report.counts, report.ending(retries_left)),
        Err(e) => (RefCounts::default(), e.ending(retries_left)),
    };
    let _entered = span.enter();
    if let Ending::Failed { error, retry, .. } = &ending {
        if *retry {
            warn!(error = %error, "update failed; will retry");
        } else {
            error!(error = %error, "update failed");
        }
    }
    state.end(Timestamp::now(), trigger, counts, ending);
    let lfs = ctx.lfs.lock().map(|t| t.clone()).unwrap_or_default();
    state.record_lfs(lfs.objects_uploaded, lfs.bytes_uploaded, lfs.missing);
    if let Err(e) = store.save(&mirror.name, &state) {
        unsaved = Some(e);
    }
    if let Some(e) = &unsaved {
        error!(error = %crate::error::chain(e), "cannot record the update's status");
    }
    Ok(JobOutcome::Ran {
        state: Box::new(state),
        unsaved,
    })
}

/// Returns the report's counts in words, e.g. `2 created, 1 updated, 0 deleted`.
pub fn describe_counts(counts: &RefCounts) -> String {
    format!(
        "{} created, {} updated, {} deleted",
        counts.created, counts.updated, counts.deleted
    )
}
