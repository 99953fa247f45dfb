//! Who is at the other end of a control connection, and whether they may use the socket.
//!
//! The socket's mode 0660 is the first barrier (SPEC.md section 8); this is the second: the
//! kernel's `SO_PEERCRED` gives the peer's pid, uid and primary gid at connect time, and its
//! supplementary groups are read from `/proc/<pid>/status`. The rule itself,
//! [`peer_allowed`], is pure and takes the group lookup as a function, so that it is tested
//! without processes of other users.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;

use super::Peer;

/// Returns the pid of the process at the other end of `stream` (`SO_PEERCRED`).
pub(super) fn peer_pid(stream: &std::os::unix::net::UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` is the size of `cred`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid as u32)
}

/// Returns the credentials of the process at the other end of `stream`, as they were when
/// it connected.
pub(super) fn connected_peer(stream: &tokio::net::UnixStream) -> io::Result<Peer> {
    let cred = stream.peer_cred()?;
    Ok(Peer {
        pid: cred.pid().and_then(|pid| u32::try_from(pid).ok()),
        uid: cred.uid(),
        gid: cred.gid(),
    })
}

/// Returns true when `peer` may use the socket (see [`peer_allowed`]), reading its
/// supplementary groups from `/proc/<pid>/status` if they are needed.
pub(super) fn may_use_socket(peer: &Peer, daemon_uid: u32, allowed_gid: Option<u32>) -> bool {
    peer_allowed(peer, daemon_uid, allowed_gid, |pid| {
        fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|status| supplementary_groups(&status))
            .unwrap_or_default()
    })
}

/// Returns true when `peer` may use the socket: root, the daemon's own user, or a member
/// (primary or supplementary group) of `allowed_gid`. `groups_of` returns the supplementary
/// groups of a pid; it is only asked when the cheaper checks fail.
///
/// The supplementary groups are read from `/proc/<pid>/status` after the connection was
/// made; a process that exits and whose pid is reused in between could be judged by
/// another's groups. The socket's mode 0660 is the first barrier; this is the second.
fn peer_allowed(
    peer: &Peer,
    daemon_uid: u32,
    allowed_gid: Option<u32>,
    groups_of: impl FnOnce(u32) -> Vec<u32>,
) -> bool {
    if peer.uid == 0 || peer.uid == daemon_uid {
        return true;
    }
    let Some(gid) = allowed_gid else {
        return false;
    };
    peer.gid == gid || peer.pid.is_some_and(|pid| groups_of(pid).contains(&gid))
}

/// Returns the gids of the `Groups:` line of a `/proc/<pid>/status` text.
fn supplementary_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_rules() {
        let peer = |uid, gid| Peer {
            pid: Some(1234),
            uid,
            gid,
        };
        let no_groups = |_| Vec::new();
        assert!(peer_allowed(&peer(0, 0), 1000, Some(50), no_groups));
        assert!(peer_allowed(&peer(1000, 7), 1000, Some(50), no_groups));
        assert!(peer_allowed(&peer(2000, 50), 1000, Some(50), no_groups));
        assert!(peer_allowed(&peer(2000, 7), 1000, Some(50), |_| vec![
            3, 50
        ]));
        assert!(!peer_allowed(&peer(2000, 7), 1000, Some(50), |_| vec![3]));
        assert!(!peer_allowed(&peer(2000, 50), 1000, None, no_groups));
    }

    #[test]
    fn groups_line_is_parsed() {
        let status = "Name:\tgit\nUid:\t1 1 1 1\nGroups:\t4 24 1000 \nNgid:\t0\n";
        assert_eq!(supplementary_groups(status), vec![4, 24, 1000]);
        assert_eq!(supplementary_groups("Groups:\n"), Vec::<u32>::new());
        assert_eq!(supplementary_groups(""), Vec::<u32>::new());
    }
}
