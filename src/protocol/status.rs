//! The conversion of a mirror's stored state into its wire form: the one place where a disk
//! type ([`MirrorState`]) becomes a protocol type ([`MirrorStatus`]).

use super::MirrorStatus;
use crate::config::Mirror;
use crate::store::state::MirrorState;

impl MirrorStatus {
    /// Returns the status entry of `mirror` given its stored state.
    pub fn from_state(mirror: &Mirror, state: MirrorState) -> MirrorStatus {
        MirrorStatus {
            name: mirror.name.to_string(),
            repo: mirror.repo.display().to_string(),
            url: mirror.display_url(),
            enabled: mirror.enabled,
            update_status: state.update_status,
            last_update_started_at: state.last_update_started_at,
            last_update_at: state.last_update_at,
            last_successful_update_at: state.last_successful_update_at,
            next_update_at: state.next_update_at,
            last_error: state.last_error,
            divergent_refs: state.divergent_refs,
            rejected_refs: state.rejected_refs,
            refs_created: state.counts.created,
            refs_updated: state.counts.updated,
            refs_deleted: state.counts.deleted,
            history: state.history.into(),
            paused: false,
            silent: false,
            lfs_objects_uploaded: state.lfs_objects_uploaded,
            lfs_bytes_uploaded: state.lfs_bytes_uploaded,
            lfs_missing: state.lfs_missing,
            // Fleet: the callers check the hook (it is the repository's, not the state's).
            hook_installed: true,
        }
    }
}
