//! The wire form of a dry run (`plan` request, used by `pushmirror plan` and `verify`), and
//! the one conversion of the engine's [`Preview`] into it.

use serde::{Deserialize, Serialize};

use crate::config::Mirror;
use crate::mirror::UpdateError;
use crate::mirror::guard;
use crate::mirror::preview::{Action, Preview};

/// What the next update of one mirror would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorPlan {
    pub name: String,
    /// Masked, as in `status`.
    pub url: String,
    pub enabled: bool,
    /// Why the remote or the local repository could not be read (credentials masked);
    /// `refs` is then empty.
    pub error: Option<String>,
    /// Every branch and tag of either side that is not already equal, in ref order.
    pub refs: Vec<PlannedRef>,
    /// Mirrored refs already equal on both sides.
    pub up_to_date: usize,
    /// Set when the mass-change guard would refuse the update (nothing would be pushed):
    /// the error the update would end with.
    pub guard: Option<String>,
}

/// One ref of a [`MirrorPlan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedRef {
    #[serde(rename = "ref")]
    pub name: String,
    pub action: PlanAction,
    /// The remote's object id, `null` if the remote lacks the ref.
    pub remote: Option<String>,
    /// The local object id, `null` if the local repository lacks the ref.
    pub local: Option<String>,
    /// True if this ref is why the guard would refuse the update (a delete over
    /// `max_deletes`, a forced update over `max_forced`).
    pub held: bool,
}

impl PlannedRef {
    /// Returns true if the remote's value differs from what the mirror should hold: the
    /// update would change it, or it diverged (kept by `keep_divergent_refs`). What
    /// `pushmirror verify` lists, and the daemon's drift metric counts.
    pub fn differs(&self) -> bool {
        self.action.changes_remote() || self.action == PlanAction::Diverged
    }
}

/// What the next update would do to one ref (see `mirror::preview::Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanAction {
    Create,
    /// A fast-forward.
    Update,
    Force,
    Delete,
    /// Skipped: diverged, kept by `keep_divergent_refs`.
    Diverged,
    /// Skipped: a branch the mirror's filter does not carry.
    Filtered,
    /// Left alone: a ref only the remote has, kept by `prune`.
    Kept,
}

impl PlanAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanAction::Create => "create",
            PlanAction::Update => "update",
            PlanAction::Force => "force",
            PlanAction::Delete => "delete",
            PlanAction::Diverged => "diverged",
            PlanAction::Filtered => "filtered",
            PlanAction::Kept => "kept",
        }
    }

    /// Returns true for the actions an update would push.
    pub fn changes_remote(self) -> bool {
        matches!(
            self,
            PlanAction::Create | PlanAction::Update | PlanAction::Force | PlanAction::Delete
        )
    }
}

impl From<Action> for PlanAction {
    fn from(action: Action) -> PlanAction {
        match action {
            Action::Create => PlanAction::Create,
            Action::Update => PlanAction::Update,
            Action::Force => PlanAction::Force,
            Action::Delete => PlanAction::Delete,
            Action::Diverged => PlanAction::Diverged,
            Action::Filtered => PlanAction::Filtered,
            Action::Kept => PlanAction::Kept,
        }
    }
}

impl MirrorPlan {
    /// Returns how many refs differ ([`PlannedRef::differs`]), or `None` if the remote or
    /// the local repository could not be read.
    pub fn differing(&self) -> Option<usize> {
        self.error
            .is_none()
            .then(|| self.refs.iter().filter(|r| r.differs()).count())
    }

    /// Returns the wire form of `mirror`'s preview, or of the error that stopped it.
    pub fn from_preview(mirror: &Mirror, preview: Result<Preview, UpdateError>) -> MirrorPlan {
        let mut plan = MirrorPlan {
            name: mirror.name.to_string(),
            url: mirror.display_url(),
            enabled: mirror.enabled,
            error: None,
            refs: Vec::new(),
            up_to_date: 0,
            guard: None,
        };
        match preview {
            Err(e) => plan.error = Some(crate::mirror::url::mask_credentials(&e.full_message())),
            Ok(preview) => {
                plan.up_to_date = preview.up_to_date;
                plan.guard = preview
                    .guard
                    .map(|change| guard::refusal_message(mirror.name.as_str(), &change, &false));
                plan.refs = preview
                    .refs
                    .into_iter()
                    .map(|r| PlannedRef {
                        name: r.refname,
                        action: r.action.into(),
                        remote: r.remote.map(|o| o.to_string()),
                        local: r.local.map(|o| o.to_string()),
                        held: r.held,
                    })
                    .collect();
            }
        }
        plan
    }
}
