//! The two messages the daemon sends to systemd (`sd_notify(3)`): `READY=1` once the socket
//! is bound and the queue replayed, so that `Type=notify` units start their dependents only
//! then, and `WATCHDOG=1` at half the unit's `WatchdogSec=`, so that a wedged loop is
//! restarted.
//!
//! Written by hand rather than with a crate: one datagram to `$NOTIFY_SOCKET`, which is a path
//! or, when it starts with `@`, a Linux abstract socket name. Without systemd the variable is
//! unset and nothing is sent.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `state` (e.g. `READY=1`) to the socket named by `$NOTIFY_SOCKET`; does nothing when
/// it is unset.
pub fn notify(state: &str) -> io::Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(name) => send_to(name.as_encoded_bytes(), state),
        None => Ok(()),
    }
}

/// Sends `state` in one datagram to the socket `name` (`@` first for an abstract name).
fn send_to(name: &[u8], state: &str) -> io::Result<()> {
    let address = match name.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None => SocketAddr::from_pathname(OsStr::from_bytes(name))?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &address)?;
    Ok(())
}

/// Returns how often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC` when it is set (and
/// `$WATCHDOG_PID`, if set, is this process), as `sd_watchdog_enabled(3)` recommends.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim() != std::process::id().to_string()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_the_state_to_a_path_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        send_to(path.as_os_str().as_encoded_bytes(), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn sends_the_state_to_an_abstract_socket() {
        let name = format!("pushmirror-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
        let receiver = UnixDatagram::bind_addr(&address).expect("bind");
        send_to(format!("@{name}").as_bytes(), "WATCHDOG=1").expect("send");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}
