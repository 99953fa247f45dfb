//! Git LFS for push mirrors (SPEC.md section 9): before any ref moves, upload the LFS objects
//! that the refs about to be created or updated reference and the remote's LFS server lacks.
//!
//! The flow of [`upload_for`]: `scan` (pointers reachable from the new tips and not from the
//! remote's tips, on a blocking thread) -> `batch` (which of them the server lacks, at most
//! 100 per request) -> the objects missing from the local store are set aside with the refs
//! that need them (`scan::refs_needing`), so the caller drops those refs from the push ->
//! `upload` of the rest, several at once, each hashed while read. Any failure is an error
//! before a ref moves; the caller's retry machinery decides what follows.

pub mod batch;
pub mod endpoint;
pub mod pointer;
pub mod scan;
pub mod upload;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use git2::Oid;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::{LfsMode, Mirror};
use crate::mirror::refdiff::RefUpdate;
use crate::mirror::remote::HttpCredentials;
use crate::store::state::LfsMissing;
use pointer::Pointer;

/// Uploads running at once (git-lfs's default `lfs.concurrenttransfers`).
const CONCURRENT_UPLOADS: usize = 8;

/// Why the LFS part of an update failed. Texts never hold a credential: hrefs are shown
/// through `batch::display_href`, server texts are scrubbed, and reqwest errors lose their URL.
#[derive(Debug, thiserror::Error)]
pub enum LfsError {
    #[error(
        "lfs = \"on\" but the LFS object store {path} does not exist: set `lfs_objects` to \
         where the repository's LFS objects are, or `lfs = \"auto\"`"
    )]
    NoStore { path: PathBuf },
    #[error(
        "no LFS endpoint for {url}: set `lfs_url` (the default is derived only from http(s), \
         ssh and git URLs)"
    )]
    NoEndpoint { url: String },
    #[error(transparent)]
    Scan(#[from] scan::ScanError),
    #[error("cannot set up the LFS HTTP client")]
    Client {
        #[source]
        source: reqwest::Error,
    },
    #[error("{what} failed")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what} failed: HTTP {status}{}", colon(message))]
    Status {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what} failed: {reason}")]
    BadResponse { what: String, reason: String },
    #[error("the LFS server refused object {oid}: {code} {message}")]
    ObjectRefused {
        oid: String,
        code: u16,
        message: String,
    },
    #[error(
        "LFS object {oid} in the local store ({path}) does not match its oid or size: the \
         upload was stopped"
    )]
    Mismatch { oid: String, path: PathBuf },
    #[error("cannot read LFS object {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the LFS uploads did not finish within the update's timeout")]
    Timeout,
    #[error("the LFS uploads were cancelled by shutdown")]
    Cancelled,
    #[error("the LFS scan panicked")]
    Panicked,
}

fn colon(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl LfsError {
    /// Returns true for failures worth retrying: the network, the server's own errors, rate
    /// limits, time. Credentials refused, an endpoint that does not exist, a store that is
    /// not there and a corrupt local object stay until someone changes something.
    pub fn is_transient(&self) -> bool {
        match self {
            LfsError::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            LfsError::Http { .. }
            | LfsError::Timeout
            | LfsError::Cancelled
            | LfsError::BadResponse { .. } => true,
            LfsError::Scan(scan::ScanError::Cancelled) => true,
            LfsError::ObjectRefused { code, .. } => *code == 429 || *code >= 500,
            LfsError::NoStore { .. }
            | LfsError::NoEndpoint { .. }
            | LfsError::Scan(_)
            | LfsError::Client { .. }
            | LfsError::Mismatch { .. }
            | LfsError::Read { .. }
            | LfsError::Panicked => false,
        }
    }
}

/// What the LFS part of the last update did, as the status shows it. Shared between the
/// engine and the job that records it, so that uploads done before a failure are counted.
#[derive(Debug, Default, Clone)]
pub struct LfsTally {
    pub objects_uploaded: u64,
    pub bytes_uploaded: u64,
    pub missing: Vec<LfsMissing>,
}

/// A handle on an update's [`LfsTally`].
pub type SharedTally = Arc<Mutex<LfsTally>>;

/// Sets a flag when dropped: tells the blocking scan to stop when the update's future goes.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Returns true if LFS is to run for `mirror` now; an error for `lfs = "on"` without a store.
fn active(mirror: &Mirror) -> Result<bool, LfsError> {
    let store_exists = mirror.lfs.objects.is_dir();
    match mirror.lfs.mode {
        LfsMode::Off => Ok(false),
        LfsMode::Auto => Ok(store_exists),
        LfsMode::On if store_exists => Ok(true),
        LfsMode::On => Err(LfsError::NoStore {
            path: mirror.lfs.objects.clone(),
        }),
    }
}

/// Uploads the LFS objects that `updates` need and the remote's LFS server lacks, before any
/// of them is pushed. Returns the objects the server lacks that the local store lacks too,
/// each with the refs of `updates` that need it: the caller must not push those refs.
pub async fn upload_for(
    mirror: &Mirror,
    updates: &[RefUpdate],
    remote_refs: &BTreeMap<String, Oid>,
    credentials: Option<HttpCredentials>,
    deadline: Instant,
    cancel: &CancellationToken,
    tally: &SharedTally,
) -> Result<Vec<LfsMissing>, LfsError> {
    if !active(mirror)? {
        return Ok(Vec::new());
    }
    let tips: Vec<(String, Oid)> = updates
        .iter()
        .filter_map(|u| u.new.map(|new| (u.refname.clone(), new)))
        .collect();
    if tips.is_empty() {
        return Ok(Vec::new());
    }
    let work = run(mirror, tips, remote_refs, credentials, deadline, tally);
    tokio::select! {
        result = work => result,
        () = cancel.cancelled() => Err(LfsError::Cancelled),
        () = tokio::time::sleep_until(deadline) => Err(LfsError::Timeout),
    }
}

async fn run(
    mirror: &Mirror,
    tips: Vec<(String, Oid)>,
    remote_refs: &BTreeMap<String, Oid>,
    credentials: Option<HttpCredentials>,
    deadline: Instant,
    tally: &SharedTally,
) -> Result<Vec<LfsMissing>, LfsError> {
    let flag = Arc::new(AtomicBool::new(false));
    let _stop_scan = CancelOnDrop(flag.clone());
    let hide: Vec<Oid> = remote_refs.values().copied().collect();
    let started = std::time::Instant::now();
    let found = {
        let (repo, flag) = (mirror.repo.clone(), flag.clone());
        let tip_ids: Vec<Oid> = tips.iter().map(|(_, oid)| *oid).collect();
        let hide = hide.clone();
        tokio::task::spawn_blocking(move || scan::pointers(&repo, &tip_ids, &hide, &flag))
            .await
            .map_err(|_| LfsError::Panicked)??
    };
    debug!(
        pointers = found.pointers.len(),
        ms = started.elapsed().as_millis() as u64,
        "LFS scan"
    );
    if found.pointers.is_empty() {
        return Ok(Vec::new());
    }
    // Only now: a remote without an LFS endpoint is fine while no pointer needs one.
    let Some(endpoint) = mirror.lfs.url.as_deref() else {
        return Err(LfsError::NoEndpoint {
            url: mirror.display_url(),
        });
    };
    let client = batch::Client::new(endpoint, credentials, deadline)?;
    let store = mirror.lfs.objects.clone();
    let pointers: Vec<&Pointer> = found.pointers.keys().collect();
    let mut to_upload = Vec::new();
    let mut missing: Vec<&Pointer> = Vec::new();
    for chunk in pointers.chunks(batch::MAX_BATCH_OBJECTS) {
        let received = Instant::now();
        let answers = client.batch(chunk).await?;
        let by_oid: HashMap<&str, &Pointer> = chunk.iter().map(|p| (p.oid.as_str(), *p)).collect();
        for answer in answers {
            let Some(pointer) = by_oid.get(answer.oid.as_str()).copied() else {
                continue;
            };
            if let Some(error) = answer.error {
                return Err(LfsError::ObjectRefused {
                    oid: answer.oid,
                    code: error.code,
                    message: client.scrub(&error.message),
                });
            }
            let Some(upload) = answer.actions.as_ref().and_then(|a| a.upload.clone()) else {
                continue; // the server has it
            };
            if !upload::object_path(&store, &pointer.oid).is_file() {
                missing.push(pointer);
                continue;
            }
            let verify = answer.actions.and_then(|a| a.verify);
            to_upload.push(Job {
                pointer,
                upload,
                verify,
                authenticated: answer.authenticated.unwrap_or(false),
                received,
            });
        }
    }
    let missing = if missing.is_empty() {
        Vec::new()
    } else {
        name_refs(mirror, &found, &missing, tips, hide, flag.clone()).await?
    };
    info!(
        wanted = to_upload.len(),
        missing = missing.len(),
        "uploading LFS objects"
    );
    let mut queue = to_upload.into_iter();
    let mut running = futures_util::stream::FuturesUnordered::new();
    loop {
        while running.len() < CONCURRENT_UPLOADS {
            let Some(job) = queue.next() else { break };
            running.push(upload_job(job, &client, &store));
        }
        let Some(done) = running.next().await else {
            break;
        };
        let size = done?;
        if let Ok(mut tally) = tally.lock() {
            tally.objects_uploaded += 1;
            tally.bytes_uploaded += size;
        }
    }
    Ok(missing)
}

/// Uploads one object, returning its size.
async fn upload_job(
    job: Job<'_>,
    client: &batch::Client,
    store: &std::path::Path,
) -> Result<u64, LfsError> {
    job.run(client, store).await?;
    Ok(job.pointer.size)
}

/// One object to upload, with the actions the batch gave for it.
struct Job<'p> {
    pointer: &'p Pointer,
    upload: batch::Action,
    verify: Option<batch::Action>,
    authenticated: bool,
    received: Instant,
}

impl Job<'_> {
    /// Uploads the object, asking the batch endpoint again first if its actions expired.
    async fn run(&self, client: &batch::Client, store: &std::path::Path) -> Result<(), LfsError> {
        let (mut upload, mut verify, mut authenticated) =
            (self.upload.clone(), self.verify.clone(), self.authenticated);
        if upload.expired(self.received) {
            debug!(oid = %self.pointer.oid, "LFS action expired; asking again");
            let answer = client.batch(&[self.pointer]).await?.into_iter().next();
            let Some(answer) = answer else {
                return Err(LfsError::BadResponse {
                    what: "the LFS batch request".to_owned(),
                    reason: format!("no answer for object {}", self.pointer.oid),
                });
            };
            let Some(actions) = answer.actions else {
                return Ok(());
            };
            let Some(fresh) = actions.upload else {
                return Ok(());
            };
            upload = fresh;
            verify = actions.verify;
            authenticated = answer.authenticated.unwrap_or(false);
        }
        client
            .upload(store, self.pointer, &upload, verify.as_ref(), authenticated)
            .await
    }
}

/// Returns each of `missing` with the refs among `tips` that need it (one walk per ref).
async fn name_refs(
    mirror: &Mirror,
    found: &scan::Found,
    missing: &[&Pointer],
    tips: Vec<(String, Oid)>,
    hide: Vec<Oid>,
    flag: Arc<AtomicBool>,
) -> Result<Vec<LfsMissing>, LfsError> {
    let mut blob_to_oid: HashMap<Oid, &str> = HashMap::new();
    for pointer in missing {
        for blob in found.pointers.get(*pointer).into_iter().flatten() {
            blob_to_oid.insert(*blob, &pointer.oid);
        }
    }
    let blobs: HashSet<Oid> = blob_to_oid.keys().copied().collect();
    let repo = mirror.repo.clone();
    let needing =
        tokio::task::spawn_blocking(move || scan::refs_needing(&repo, &tips, &hide, &blobs, &flag))
            .await
            .map_err(|_| LfsError::Panicked)??;
    let mut by_oid: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for pointer in missing {
        by_oid.entry(pointer.oid.clone()).or_default();
    }
    for (blob, refs) in needing {
        if let Some(oid) = blob_to_oid.get(&blob) {
            by_oid.entry((*oid).to_owned()).or_default().extend(refs);
        }
    }
    Ok(by_oid
        .into_iter()
        .map(|(oid, refs)| LfsMissing {
            oid,
            refs: refs.into_iter().collect(),
        })
        .collect())
}
