//! The durable queue of pending mirror updates (SPEC section 7).
//!
//! A journal, `<state_dir>/queue.log`, gets one JSON line per accepted notification or forced
//! sync, naming the mirrors it marked; it is fsynced before the daemon answers. A snapshot,
//! `<state_dir>/queue.json`, holds the mirrors pending at the last compaction, after which the
//! journal is emptied. At start, snapshot plus journal say which mirrors to update again; a
//! mirror named there whose update had already finished is only updated once more, which is
//! harmless (a no-op update), while the reverse would lose a push.
//!
//! One writer thread owns both files and serializes appends and compactions. Appends that
//! arrive while it is busy are written and fsynced together (group commit), so a burst of
//! notifications costs a few fsyncs, not one each.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::warn;

use super::write_atomically;

/// One journal line: mirrors marked by one notification or sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub mirrors: Vec<String>,
    /// A forced update (bypasses the window) rather than a push.
    #[serde(default)]
    pub forced: bool,
}

/// What the queue held when the daemon started: mirror name -> forced.
pub type Pending = BTreeMap<String, bool>;

/// Why the queue could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot read the queue {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the queue {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the queue writer has stopped")]
    Stopped,
}

enum Command {
    Append(Entry, oneshot::Sender<Result<(), QueueError>>),
    Compact(Pending, oneshot::Sender<Result<(), QueueError>>),
}

/// The handle to the queue's writer thread.
#[derive(Debug, Clone)]
pub struct Queue {
    commands: mpsc::Sender<Command>,
}

impl Queue {
    /// Reads what is pending from `state_dir` and starts the writer thread.
    pub fn open(state_dir: &Path) -> Result<(Queue, Pending), QueueError> {
        let snapshot_path = state_dir.join("queue.json");
        let log_path = state_dir.join("queue.log");
        let mut pending = read_snapshot(&snapshot_path)?;
        read_log(&log_path, &mut pending)?;
        let log = open_log(&log_path)?;
        let (commands, receiver) = mpsc::channel();
        let writer = Writer {
            log,
            log_path,
            snapshot_path,
            // A crash may have left a partial last line.
            torn: true,
        };
        std::thread::Builder::new()
            .name("pushmirror-queue".into())
            .spawn(move || writer.run(receiver))
            .map_err(|source| QueueError::Write {
                path: state_dir.to_owned(),
                source,
            })?;
        Ok((Queue { commands }, pending))
    }

    /// Queues `entry` for appending now, in call order, and returns a future that completes
    /// once it is on disk.
    ///
    /// The command is sent when this is called, not when the future is polled: the daemon's
    /// loop calls it in event order, so a compaction it asks for later cannot overtake it.
    pub fn append(&self, entry: Entry) -> impl Future<Output = Result<(), QueueError>> + use<> {
        let (done, wait) = oneshot::channel();
        let sent = self.commands.send(Command::Append(entry, done));
        acknowledgement(sent.is_ok(), wait)
    }

    /// Queues replacing the queue's content by `pending` (what is still to do) and emptying
    /// the journal, in call order (see [`Queue::append`]).
    pub fn compact(
        &self,
        pending: Pending,
    ) -> impl Future<Output = Result<(), QueueError>> + use<> {
        let (done, wait) = oneshot::channel();
        let sent = self.commands.send(Command::Compact(pending, done));
        acknowledgement(sent.is_ok(), wait)
    }
}

async fn acknowledgement(
    sent: bool,
    wait: oneshot::Receiver<Result<(), QueueError>>,
) -> Result<(), QueueError> {
    if !sent {
        return Err(QueueError::Stopped);
    }
    wait.await.map_err(|_| QueueError::Stopped)?
}

struct Writer {
    log: File,
    log_path: PathBuf,
    snapshot_path: PathBuf,
    /// The last write failed and may have left a partial line: the next one starts with a
    /// newline of its own, so that what it acknowledges never depends on an earlier write
    /// having succeeded (a repair written apart could fail too, on a full disk).
    torn: bool,
}

impl Writer {
    fn run(mut self, receiver: mpsc::Receiver<Command>) {
        while let Ok(first) = receiver.recv() {
            let mut batch = vec![first];
            batch.extend(receiver.try_iter());
            let mut appends = Vec::new();
            for command in batch {
                match command {
                    Command::Append(entry, done) => appends.push((entry, done)),
                    Command::Compact(pending, done) => {
                        // Appends received before the compaction go first.
                        self.flush(std::mem::take(&mut appends));
                        let _ = done.send(self.compact(&pending));
                    }
                }
            }
            self.flush(appends);
        }
    }

    /// Writes the entries, fsyncs once, and answers each.
    fn flush(&mut self, appends: Vec<(Entry, oneshot::Sender<Result<(), QueueError>>)>) {
        if appends.is_empty() {
            return;
        }
        let mut bytes = Vec::new();
        if self.torn {
            bytes.push(b'\n');
        }
        for (entry, _) in &appends {
            let line = serde_json::to_string(entry).expect("entries always serialize");
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        let result = self
            .log
            .write_all(&bytes)
            .and_then(|()| self.log.sync_data());
        for (_, done) in appends {
            let reply = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(QueueError::Write {
                    path: self.log_path.clone(),
                    source: io::Error::new(e.kind(), e.to_string()),
                }),
            };
            let _ = done.send(reply);
        }
        // A partial line may be on disk: only the torn, unacknowledged entries are lost to
        // the reader, since the next write begins on a fresh line.
        self.torn = result.is_err();
        if let Err(e) = result {
            warn!(path = %self.log_path.display(), error = %e, "cannot write the queue");
        }
    }

    fn compact(&mut self, pending: &Pending) -> Result<(), QueueError> {
        let json = serde_json::to_vec(pending).expect("pending always serializes");
        write_atomically(&self.snapshot_path, &json, 0o600).map_err(|source| {
            QueueError::Write {
                path: self.snapshot_path.clone(),
                source,
            }
        })?;
        let write_error = |source| QueueError::Write {
            path: self.log_path.clone(),
            source,
        };
        self.log.set_len(0).map_err(write_error)?;
        self.torn = false;
        self.log.sync_all().map_err(write_error)
    }
}

fn read_snapshot(path: &Path) -> Result<Pending, QueueError> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(pending) => Ok(pending),
            Err(e) => {
                // Written atomically, so this is damage from outside; the journal and the
                // daemon's start-up scan of local refs still cover what it held.
                warn!(path = %path.display(), error = %e, "queue snapshot is corrupt; ignoring it");
                Ok(Pending::new())
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Pending::new()),
        Err(source) => Err(QueueError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_log(path: &Path, pending: &mut Pending) -> Result<(), QueueError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(QueueError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|source| QueueError::Read {
            path: path.to_owned(),
            source,
        })?;
        if line.is_empty() {
            continue;
        }
        // A torn last line was never acknowledged: skipping it loses nothing promised.
        let Ok(entry) = serde_json::from_slice::<Entry>(&line) else {
            warn!(path = %path.display(), "skipping a torn queue entry");
            continue;
        };
        for mirror in entry.mirrors {
            let forced = pending.entry(mirror).or_insert(false);
            *forced |= entry.forced;
        }
    }
    Ok(())
}

fn open_log(path: &Path) -> Result<File, QueueError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| QueueError::Write {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mirrors: &[&str], forced: bool) -> Entry {
        Entry {
            mirrors: mirrors.iter().map(|m| m.to_string()).collect(),
            forced,
        }
    }

    #[tokio::test]
    async fn appends_survive_a_reopen_and_compaction_keeps_only_pending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (queue, pending) = Queue::open(dir.path()).expect("open");
        assert!(pending.is_empty());
        queue
            .append(entry(&["a", "b"], false))
            .await
            .expect("append");
        queue.append(entry(&["b"], true)).await.expect("append");
        drop(queue);
        let (queue, pending) = Queue::open(dir.path()).expect("reopen");
        assert_eq!(
            pending,
            Pending::from([("a".into(), false), ("b".into(), true)])
        );

        queue
            .compact(Pending::from([("b".into(), true)]))
            .await
            .expect("compact");
        queue.append(entry(&["c"], false)).await.expect("append");
        let (_queue, pending) = Queue::open(dir.path()).expect("reopen");
        assert_eq!(
            pending,
            Pending::from([("b".into(), true), ("c".into(), false)])
        );
    }

    #[tokio::test]
    async fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("queue.log"),
            "{\"mirrors\":[\"a\"]}\n{\"mirrors\":[\"b\"",
        )
        .expect("write");
        let (_queue, pending) = Queue::open(dir.path()).expect("open");
        assert_eq!(pending, Pending::from([("a".into(), false)]));
    }

    #[tokio::test]
    async fn an_append_after_a_torn_line_stands_on_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("queue.log"),
            "{\"mirrors\":[\"a\"]}\n{\"mirr",
        )
        .expect("write");
        let (queue, _) = Queue::open(dir.path()).expect("open");
        queue.append(entry(&["b"], false)).await.expect("append");
        let (_queue, pending) = Queue::open(dir.path()).expect("reopen");
        assert_eq!(
            pending,
            Pending::from([("a".into(), false), ("b".into(), false)])
        );
    }

    #[tokio::test]
    async fn concurrent_appends_are_all_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (queue, _) = Queue::open(dir.path()).expect("open");
        let mut tasks = Vec::new();
        for i in 0..200 {
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                queue.append(entry(&[&format!("m{i}")], false)).await
            }));
        }
        for task in tasks {
            task.await.expect("join").expect("append");
        }
        let (_queue, pending) = Queue::open(dir.path()).expect("reopen");
        assert_eq!(pending.len(), 200);
    }
}
