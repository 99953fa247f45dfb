//! Creating the control socket file, before the tokio runtime starts, and removing it.
//!
//! Synchronous on purpose: [`bind`] narrows the process umask around `bind(2)` so that the
//! socket is never reachable by others, not even for the moment before its `chmod`, and the
//! umask is process-wide, so this must run while `main` still has one thread. A socket file
//! already at the path is probed after pueue's `socket/unix.rs`: a daemon that answers keeps
//! it (we refuse to start), one that crashed leaves a stale file that is removed, and
//! anything that is not a socket is never touched.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tracing::{info, warn};

use super::peer::peer_pid;
use super::{ControlError, SOCKET_MODE};

/// The mode of a socket directory that [`bind`] creates: the group must be able to traverse
/// it to reach the socket; nobody else needs to.
const SOCKET_DIR_MODE: u32 = 0o750;

/// How long [`bind`] waits for an existing socket to accept a probe connection before
/// concluding that a (busy) daemon is alive behind it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Returns the gid of group `name` (the `socket_group` of the configuration).
pub fn group_id(name: &str) -> Result<u32, ControlError> {
    let unknown = || ControlError::UnknownGroup {
        group: name.to_owned(),
    };
    let c_name = CString::new(name).map_err(|_| unknown())?;
    let mut buffer: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: an all-zero `group` is a valid value for this plain C struct.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the duration of the call, and `buffer.len()` is
        // the true size of `buffer`; getgrnam_r writes only inside `group` and `buffer`.
        let rc = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                &mut group,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buffer.len() < (1 << 20) {
            buffer.resize(buffer.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(ControlError::LookupGroup {
                group: name.to_owned(),
                source: io::Error::from_raw_os_error(rc),
            });
        }
        if found.is_null() {
            return Err(unknown());
        }
        return Ok(group.gr_gid);
    }
}

/// Creates the control socket at `path`, mode 0660, owned by `socket_group` when given, and
/// returns it listening. Call before the tokio runtime starts (see the module docs).
///
/// An existing socket file is probed: if a daemon answers, this fails with
/// [`ControlError::InUse`]; if the connection is refused (a daemon that crashed), the file is
/// removed. Anything else at `path` is left alone and reported. A missing parent directory
/// is created with mode 0750 and given to `socket_group`.
pub fn bind(path: &Path, socket_group: Option<&str>) -> Result<UnixListener, ControlError> {
    let gid = socket_group.map(group_id).transpose()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        create_socket_dir(dir, socket_group, gid)?;
    }
    remove_stale_socket(path)?;

    let listener = bind_closed_to_others(path).map_err(|source| ControlError::Bind {
        path: path.to_owned(),
        source,
    })?;
    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE)).map_err(|source| {
        ControlError::SetMode {
            path: path.to_owned(),
            source,
        }
    })?;
    if let (Some(group), Some(gid)) = (socket_group, gid) {
        give_to_group(path, group, gid)?;
    }
    info!(socket = %path.display(), "control socket bound");
    Ok(listener)
}

/// Binds a listener at `path` with "other" kept out of the socket file's mode from the start.
fn bind_closed_to_others(path: &Path) -> io::Result<UnixListener> {
    // Sockets are created with mode 0777 & !umask. Keep "other" out from the start, so the
    // socket is never reachable by others even before the chmod in `bind`; only bits are
    // removed, so other threads (tests) at worst create files less open to others.
    // SAFETY: umask has no preconditions; it is restored right after `bind`.
    let previous = unsafe { libc::umask(0o007) };
    // SAFETY: as above.
    unsafe { libc::umask(previous | 0o007) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    bound
}

/// Gives `path` to group `group` (whose gid is `gid`), keeping its owner.
fn give_to_group(path: &Path, group: &str, gid: u32) -> Result<(), ControlError> {
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(|source| ControlError::Chown {
        path: path.to_owned(),
        group: group.to_owned(),
        source,
    })
}

/// Creates the missing socket directory `dir` (mode 0750, given to the socket group).
fn create_socket_dir(
    dir: &Path,
    socket_group: Option<&str>,
    gid: Option<u32>,
) -> Result<(), ControlError> {
    let create_error = |source| ControlError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(SOCKET_DIR_MODE)
        .create(dir)
        .map_err(create_error)?;
    // The umask may have removed group bits at creation.
    fs::set_permissions(dir, fs::Permissions::from_mode(SOCKET_DIR_MODE)).map_err(create_error)?;
    if let (Some(group), Some(gid)) = (socket_group, gid) {
        give_to_group(dir, group, gid)?;
    }
    Ok(())
}

/// Removes the socket file a crashed daemon left at `path`; fails if a daemon answers there
/// or if `path` is not a socket.
fn remove_stale_socket(path: &Path) -> Result<(), ControlError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ControlError::Inspect {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotASocket {
            path: path.to_owned(),
        });
    }
    match probe(path) {
        Probe::Alive { pid } => Err(ControlError::InUse {
            path: path.to_owned(),
            pid,
        }),
        Probe::Refused => {
            warn!(socket = %path.display(), "removing the stale socket of a daemon that is gone");
            fs::remove_file(path).map_err(|source| ControlError::RemoveStale {
                path: path.to_owned(),
                source,
            })
        }
        Probe::Error(source) => Err(ControlError::Inspect {
            path: path.to_owned(),
            source,
        }),
    }
}

/// What connecting to an existing socket file said about the daemon behind it.
enum Probe {
    Alive { pid: Option<u32> },
    Refused,
    Error(io::Error),
}

/// Connects to the socket at `path` to see whether a daemon is behind it. A blocking
/// `connect` to a live daemon whose backlog is full waits; that wait runs on a helper thread
/// and counts as alive after [`PROBE_TIMEOUT`].
fn probe(path: &Path) -> Probe {
    let (sender, receiver) = std_mpsc::channel();
    let target = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("socket-probe".into())
        .spawn(move || {
            let outcome = match UnixStream::connect(&target) {
                Ok(stream) => Probe::Alive {
                    pid: peer_pid(&stream),
                },
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Probe::Refused,
                Err(e) => Probe::Error(e),
            };
            let _ = sender.send(outcome);
        });
    if let Err(e) = spawned {
        return Probe::Error(e);
    }
    receiver
        .recv_timeout(PROBE_TIMEOUT)
        .unwrap_or(Probe::Alive { pid: None })
}

/// Removes the socket file at `path` if it is a socket (errors other than "already gone" are
/// logged). [`serve`](fn@super::serve) does this itself on shutdown; call this when the daemon
/// bound the socket but stops before running [`serve`](fn@super::serve).
pub fn remove_socket(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if let Err(e) = fs::remove_file(path)
                && e.kind() != io::ErrorKind::NotFound
            {
                warn!(socket = %path.display(), cause = %e, "cannot remove the control socket");
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn socket_mode_is_0660() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        let _listener = bind(&path, None).expect("bind");
        let mode = fs::metadata(&path).expect("socket").mode();
        assert_eq!(mode & 0o777, SOCKET_MODE);
    }

    #[test]
    fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        drop(UnixListener::bind(&path).expect("bind"));
        assert!(path.exists(), "a dropped listener leaves its file behind");
        let listener = bind(&path, None).expect("stale socket replaced");
        drop(listener);
    }

    #[test]
    fn live_socket_is_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        let _live = bind(&path, None).expect("bind");
        match bind(&path, None) {
            Err(ControlError::InUse { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected InUse, got {other:?}"),
        }
        assert!(path.exists());
    }

    #[test]
    fn other_files_are_not_removed() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        fs::write(&path, "precious").expect("write");
        assert!(matches!(
            bind(&path, None),
            Err(ControlError::NotASocket { .. })
        ));
        assert_eq!(fs::read_to_string(&path).expect("still there"), "precious");
    }

    #[test]
    fn missing_directory_is_created_0750() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("run").join("control.sock");
        let _listener = bind(&path, None).expect("bind");
        let mode = fs::metadata(dir.path().join("run")).expect("dir").mode();
        assert_eq!(mode & 0o777, SOCKET_DIR_MODE);
    }

    #[test]
    fn unknown_group_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        let error = bind(&path, Some("no-such-group-pushmirror")).expect_err("unknown group");
        assert_eq!(
            error.to_string(),
            "socket_group \"no-such-group-pushmirror\" does not exist"
        );
        assert!(!path.exists());
    }

    #[test]
    fn own_group_can_be_set() {
        // SAFETY: getegid has no preconditions.
        let egid = unsafe { libc::getegid() };
        let name = group_name(egid);
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        let _listener = bind(&path, Some(&name)).expect("bind with own group");
        assert_eq!(fs::metadata(&path).expect("socket").gid(), egid);
    }

    fn group_name(gid: u32) -> String {
        let text = fs::read_to_string("/etc/group").expect("/etc/group");
        text.lines()
            .find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?;
                (id.parse::<u32>().ok()? == gid).then(|| name.to_owned())
            })
            .expect("own group listed in /etc/group")
    }
}
