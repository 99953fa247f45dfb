//! The control-socket protocol: the only types that cross the socket.
//!
//! Framing: JSON lines. A client writes one request object followed by `\n` and reads one
//! response line; a connection may carry several requests in turn. Every request carries
//! `"v": 1`; a daemon answers a version it does not speak with an `unsupported_version` error,
//! so old hooks keep working against a newer daemon as long as it still speaks their version.
//! Requests are bounded (see [`MAX_REQUEST_BYTES`]); see `docs/protocol.md` for examples.
//!
//! API boundary: fields may be added (readers ignore unknown fields); renaming or removing
//! one needs a new version.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::state::{LfsMissing, RejectedRef, Timestamp, UpdateStatus, UpdateSummary};

mod framing;
mod plan;
mod status;

pub use plan::{MirrorPlan, PlanAction, PlannedRef};

pub use framing::{
    LineRead, MAX_REQUEST_BYTES, SMALL_REQUEST_BYTES, decode_request, encode_request,
    encode_response, read_line_bounded,
};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// One request line: the version and the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLine {
    pub v: u32,
    #[serde(flatten)]
    pub request: Request,
}

/// What a client asks of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is the daemon there? Answered with [`Response::Pong`].
    Ping,
    /// Refs of a repository changed (the post-receive hook). Answered with
    /// [`Response::Notified`] only once the notification is durable.
    Notify(Notification),
    /// Force updates now, bypassing the window. With `wait`, the answer comes when every
    /// selected mirror's update ended. `allow_mass_change` lets each selected mirror's next
    /// update pass the mass-change guard; absent when false.
    Sync {
        target: SyncTarget,
        wait: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        allow_mass_change: bool,
    },
    /// Status of one mirror or of all.
    Status { name: Option<String> },
    /// Re-read the configuration (as SIGHUP).
    Reload,
    /// What the next update of each selected mirror would do, ref by ref, read from the
    /// remote now; nothing is pushed or recorded. Named mirrors may be disabled; `all` and
    /// `repo` select the enabled ones. Answered with [`Response::Planned`] once every remote
    /// was read.
    Plan { target: SyncTarget },
    // Operations: pause.
    /// Pause mirrors: notifications and forced syncs are still recorded, no update runs.
    /// Answered with [`Response::Paused`] once the paused set is on disk.
    Pause { target: SyncTarget },
    /// Resume paused mirrors; what became pending runs at once (unless silent mode is on).
    Resume { target: SyncTarget },
}

/// A push to a local repository: which refs changed, in the hook's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The repository (absolute), as the hook found it.
    #[serde(serialize_with = "lossy_path")]
    pub repo: PathBuf,
    /// The changed refs; only a sample of them when `all_refs` is set.
    pub refs: Vec<RefChange>,
    /// The push changed more refs than fit in a request that the daemon reads at once
    /// ([`SMALL_REQUEST_BYTES`]): `refs` is a sample, and the notification concerns every
    /// enabled mirror of the repository, whatever its branch filter (a superset is
    /// harmless: an update with nothing to do pushes nothing). Absent when false; a daemon
    /// older than this field ignores it and matches the sample.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_refs: bool,
}

/// One `<old> <new> <ref>` line of post-receive input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefChange {
    pub old: String,
    pub new: String,
    #[serde(rename = "ref")]
    pub name: String,
}

/// Which mirrors a sync concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncTarget {
    Mirrors(Vec<String>),
    Repo(#[serde(serialize_with = "lossy_path")] PathBuf),
    All,
}

/// Writes a path as the UTF-8 string JSON needs. A path that is not UTF-8 (`$GIT_DIR` may hold
/// any bytes) goes lossily, with U+FFFD for what is not: it then names no configured
/// repository, since those are UTF-8 TOML strings, which is the truth about it.
fn lossy_path<S: serde::Serializer>(
    path: impl AsRef<Path>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.as_ref().to_string_lossy())
}

/// The daemon's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Pong {
        version: u32,
        /// The daemon's process id.
        pid: u32,
    },
    /// The notification is durable; `mirrors` were marked for an update.
    Notified {
        mirrors: Vec<String>,
    },
    /// Without `wait`: these mirrors were scheduled. With `wait`: these are their endings.
    Synced {
        mirrors: Vec<SyncResult>,
    },
    Status {
        mirrors: Vec<MirrorStatus>,
    },
    /// The new configuration is in force.
    Reloaded {
        mirrors: usize,
    },
    /// The dry runs of a `plan` request, in the order asked.
    Planned {
        mirrors: Vec<MirrorPlan>,
    },
    // Operations: pause.
    /// These mirrors are paused now (on disk). `silent`: the daemon is in silent mode too.
    Paused {
        mirrors: Vec<String>,
        silent: bool,
    },
    /// These mirrors are no longer paused; the held updates of `started` were started now
    /// (none while `silent`: they run when silent mode ends).
    Resumed {
        mirrors: Vec<String>,
        started: Vec<String>,
        silent: bool,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

/// How one forced update went (`update_status` is `scheduled` when not waiting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResult {
    pub name: String,
    pub update_status: SyncStatus,
    pub last_error: Option<String>,
    /// When the daemon will try again, for a waited update that ended `to_retry`. Absent
    /// otherwise, and from daemons older than this field (readers default it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_update_at: Option<Timestamp>,
}

/// The `update_status` of a [`SyncResult`]: a mirror's [`UpdateStatus`], or one of the two
/// answers that only a waiting sync can get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    None,
    Scheduled,
    Started,
    Finished,
    Failed,
    ToRetry,
    /// A reload removed the mirror before its update ended.
    Removed,
    /// The daemon stopped before the update ran.
    Cancelled,
    // Operations: pause.
    /// The mirror is paused (or the daemon silent): the forced update was recorded and runs
    /// on resume; nothing ran now.
    Paused,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::None => UpdateStatus::None.as_str(),
            SyncStatus::Scheduled => UpdateStatus::Scheduled.as_str(),
            SyncStatus::Started => UpdateStatus::Started.as_str(),
            SyncStatus::Finished => UpdateStatus::Finished.as_str(),
            SyncStatus::Failed => UpdateStatus::Failed.as_str(),
            SyncStatus::ToRetry => UpdateStatus::ToRetry.as_str(),
            SyncStatus::Removed => "removed",
            SyncStatus::Cancelled => "cancelled",
            SyncStatus::Paused => "paused",
        }
    }
}

impl From<UpdateStatus> for SyncStatus {
    fn from(status: UpdateStatus) -> SyncStatus {
        match status {
            UpdateStatus::None => SyncStatus::None,
            UpdateStatus::Scheduled => SyncStatus::Scheduled,
            UpdateStatus::Started => SyncStatus::Started,
            UpdateStatus::Finished => SyncStatus::Finished,
            UpdateStatus::Failed => SyncStatus::Failed,
            UpdateStatus::ToRetry => SyncStatus::ToRetry,
        }
    }
}

impl std::fmt::Display for SyncStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classes of error replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The line is not JSON, or not a request of this protocol.
    BadRequest,
    UnsupportedVersion,
    TooLarge,
    /// The peer's uid/gid may not use the socket.
    Forbidden,
    /// A named mirror or repository is unknown.
    NotFound,
    /// The new configuration is invalid; the old one stays in force.
    BadConfig,
    /// The daemon could not make the request durable (e.g. a full disk).
    Unavailable,
    ShuttingDown,
    /// Too many clients are doing the same at once (waiting for updates, or sending long
    /// requests); nothing was done. Retry later; a hook spools.
    Busy,
}

/// One mirror in `status`: the stable machine form of SPEC section 6, also printed by
/// `pushmirror status --json`. Absent values are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorStatus {
    pub name: String,
    pub repo: String,
    /// Masked: `https://*****:*****@host/path`.
    pub url: String,
    pub enabled: bool,
    pub update_status: UpdateStatus,
    pub last_update_started_at: Option<Timestamp>,
    pub last_update_at: Option<Timestamp>,
    pub last_successful_update_at: Option<Timestamp>,
    pub next_update_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub divergent_refs: Vec<String>,
    pub rejected_refs: Vec<RejectedRef>,
    pub refs_created: usize,
    pub refs_updated: usize,
    pub refs_deleted: usize,
    pub history: Vec<UpdateSummary>,
    // Operations: silent mode and pause.
    /// No update of this mirror runs now: it is paused, or the daemon is in silent mode.
    /// What is pending shows in `update_status` (`scheduled`) and runs on resume.
    #[serde(default)]
    pub paused: bool,
    /// The daemon is in silent mode (`[daemon] silent = true`).
    #[serde(default)]
    pub silent: bool,
    // Git LFS (SPEC sections 6 and 9), by the last update; absent from older daemons.
    #[serde(default)]
    pub lfs_objects_uploaded: u64,
    #[serde(default)]
    pub lfs_bytes_uploaded: u64,
    #[serde(default)]
    pub lfs_missing: Vec<LfsMissing>,
    /// Fleet: whether the repository's `post-receive` hook runs pushmirror. A mirror without
    /// it silently stops being notified (`pushmirror install-hook --all` fixes it). Absent
    /// from daemons older than this field; readers take it as installed.
    #[serde(default = "hook_installed_default")]
    pub hook_installed: bool,
}

/// Fleet: what a reader assumes of a daemon that does not say.
fn hook_installed_default() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Ping,
            Request::Notify(Notification {
                repo: "/srv/git/app.git".into(),
                refs: vec![RefChange {
                    old: "0".repeat(40),
                    new: "a".repeat(40),
                    name: "refs/heads/main".into(),
                }],
                all_refs: false,
            }),
            Request::Notify(Notification {
                repo: "/srv/git/big.git".into(),
                refs: Vec::new(),
                all_refs: true,
            }),
            Request::Sync {
                target: SyncTarget::Mirrors(vec!["a".into()]),
                wait: true,
                allow_mass_change: false,
            },
            Request::Sync {
                target: SyncTarget::All,
                wait: false,
                allow_mass_change: false,
            },
            Request::Sync {
                target: SyncTarget::Mirrors(vec!["a".into()]),
                wait: true,
                allow_mass_change: true,
            },
            Request::Plan {
                target: SyncTarget::Mirrors(vec!["a".into()]),
            },
            Request::Status { name: None },
            Request::Reload,
            Request::Pause {
                target: SyncTarget::Mirrors(vec!["a".into()]),
            },
            Request::Resume {
                target: SyncTarget::All,
            },
        ];
        for request in requests {
            let line = encode_request(&request);
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(decode_request(line.trim_end().as_bytes()), Ok(request));
        }
    }

    #[test]
    fn wire_form_is_stable() {
        assert_eq!(
            encode_request(&Request::Ping),
            "{\"v\":1,\"op\":\"ping\"}\n"
        );
        assert_eq!(
            encode_request(&Request::Sync {
                target: SyncTarget::All,
                wait: false,
                allow_mass_change: false,
            }),
            "{\"v\":1,\"op\":\"sync\",\"target\":\"all\",\"wait\":false}\n"
        );
        assert_eq!(
            encode_response(&Response::Notified {
                mirrors: vec!["m".into()]
            }),
            "{\"result\":\"notified\",\"mirrors\":[\"m\"]}\n"
        );
    }

    #[test]
    fn garbage_and_other_versions_get_error_replies() {
        let kind = |line: &str| match decode_request(line.as_bytes()) {
            Err(Response::Error { kind, .. }) => kind,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(kind("hello"), ErrorKind::BadRequest);
        assert_eq!(kind("{\"op\":\"ping\"}"), ErrorKind::BadRequest);
        assert_eq!(
            kind("{\"v\":2,\"op\":\"ping\"}"),
            ErrorKind::UnsupportedVersion
        );
        assert_eq!(kind("{\"v\":1,\"op\":\"launch\"}"), ErrorKind::BadRequest);
    }

    /// Every example line of `docs/protocol.md` is the exact wire form of this build.
    #[test]
    fn documented_lines_parse() {
        let doc = include_str!("../../docs/protocol.md");
        let (mut requests, mut responses) = (0, 0);
        for line in doc.lines() {
            if line.starts_with("{\"v\":") {
                let request =
                    decode_request(line.as_bytes()).unwrap_or_else(|e| panic!("{line}\n{e:?}"));
                assert_eq!(encode_request(&request), format!("{line}\n"));
                requests += 1;
            } else if line.starts_with("{\"result\":") {
                let response: Response =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}\n{e}"));
                assert_eq!(encode_response(&response), format!("{line}\n"));
                responses += 1;
            }
        }
        assert!(requests >= 8 && responses >= 10, "{requests} {responses}");
    }
}
