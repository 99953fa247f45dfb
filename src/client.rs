//! The control-socket client: speaks `protocol.rs` to a running daemon. Used by the
//! post-receive hook (`hook.rs`) and by the admin commands (`sync`, `status`, `reload`).
//!
//! Every step is bounded in time, because the hook must never delay a push noticeably and
//! an admin command must never hang on a wedged daemon: [`Client::connect`] and
//! [`Client::request`] each take a timeout, and [`call`] bounds both together. Replies are
//! bounded in size too ([`MAX_RESPONSE_BYTES`]), so a confused peer cannot make a client
//! buffer without end.
//!
//! Errors say what the operator can do about them: a daemon that is not running (no socket,
//! or a stale one), a socket this user may not open, a daemon that does not answer in time,
//! or one that answers something that is not this protocol.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

use crate::protocol::{LineRead, read_line_bounded};
use crate::protocol::{Request, Response, encode_request};

/// The longest reply line accepted (a `status` of thousands of mirrors fits easily).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Why talking to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket file, or a socket file nobody listens on (a daemon that crashed).
    #[error(
        "the pushmirror daemon is not running ({} at {})",
        if *stale { "stale socket" } else { "no socket" },
        path.display()
    )]
    NotRunning {
        path: PathBuf,
        /// The file exists but the connection was refused.
        stale: bool,
    },
    #[error(
        "permission denied on the control socket {} (run as the daemon's user or a member of its socket_group)",
        path.display()
    )]
    PermissionDenied {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the pushmirror daemon did not answer within {}", humantime::format_duration(*timeout))]
    Timeout { timeout: Duration },
    #[error("cannot connect to the control socket {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lost the connection to the pushmirror daemon")]
    Io {
        #[source]
        source: io::Error,
    },
    #[error("the pushmirror daemon closed the connection without answering")]
    Closed,
    #[error("the pushmirror daemon answered something this client does not understand: {detail}")]
    Protocol { detail: String },
}

/// One connection to the daemon, carrying any number of requests in turn.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    /// Connects to the daemon's socket at `path`, waiting at most `timeout` (a busy daemon's
    /// full listen backlog makes a connection attempt fail at once; it is retried until the
    /// timeout passes).
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let deadline = crate::clock::later(Instant::now(), timeout);
        let mut pause = Duration::from_millis(2);
        loop {
            let attempt = tokio::time::timeout_at(deadline, UnixStream::connect(path)).await;
            let error = match attempt {
                Err(_elapsed) => return Err(ClientError::Timeout { timeout }),
                Ok(Ok(stream)) => {
                    let (reader, writer) = stream.into_split();
                    return Ok(Client {
                        reader: BufReader::new(reader),
                        writer,
                    });
                }
                Ok(Err(e)) => e,
            };
            match error.kind() {
                io::ErrorKind::NotFound => {
                    return Err(ClientError::NotRunning {
                        path: path.to_owned(),
                        stale: false,
                    });
                }
                io::ErrorKind::ConnectionRefused => {
                    return Err(ClientError::NotRunning {
                        path: path.to_owned(),
                        stale: true,
                    });
                }
                io::ErrorKind::PermissionDenied => {
                    return Err(ClientError::PermissionDenied {
                        path: path.to_owned(),
                        source: error,
                    });
                }
                io::ErrorKind::WouldBlock => {
                    // The backlog is full: the daemon is alive but busy.
                    if crate::clock::later(Instant::now(), pause) >= deadline {
                        return Err(ClientError::Timeout { timeout });
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                _ => {
                    return Err(ClientError::Connect {
                        path: path.to_owned(),
                        source: error,
                    });
                }
            }
        }
    }

    /// Sends `request` and returns the daemon's answer (an error reply is an `Ok`
    /// [`Response::Error`]), waiting at most `timeout` for writing and reading together.
    pub async fn request(
        &mut self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ClientError::Timeout { timeout }),
        }
    }

    async fn exchange(&mut self, request: &Request) -> Result<Response, ClientError> {
        let line = encode_request(request);
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|source| ClientError::Io { source })?;
        let mut reply = Vec::new();
        match read_line_bounded(&mut self.reader, &mut reply, MAX_RESPONSE_BYTES)
            .await
            .map_err(|source| ClientError::Io { source })?
        {
            LineRead::Line => {}
            LineRead::Eof => return Err(ClientError::Closed),
            LineRead::TooLarge => {
                return Err(ClientError::Protocol {
                    detail: format!("a reply longer than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
        }
        serde_json::from_slice(&reply).map_err(|e| ClientError::Protocol {
            detail: e.to_string(),
        })
    }
}

/// Connects to `path`, sends `request` and returns the answer, all within `timeout`.
pub async fn call(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let work = async {
        let mut client = Client::connect(path, timeout).await?;
        client.request(request, timeout).await
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ClientError::Timeout { timeout }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    const SHORT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn missing_socket_means_not_running() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        let error = call(&path, &Request::Ping, SHORT)
            .await
            .expect_err("no daemon");
        assert!(
            matches!(error, ClientError::NotRunning { stale: false, .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "the pushmirror daemon is not running (no socket at {})",
                path.display()
            )
        );
    }

    #[tokio::test]
    async fn stale_socket_means_not_running() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let error = call(&path, &Request::Ping, SHORT)
            .await
            .expect_err("no daemon");
        assert!(
            matches!(error, ClientError::NotRunning { stale: true, .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn silent_daemon_times_out() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        // Accepted by the backlog, never answered.
        let _listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let started = Instant::now();
        let error = call(&path, &Request::Ping, SHORT)
            .await
            .expect_err("no answer");
        assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            error.to_string(),
            "the pushmirror daemon did not answer within 300ms"
        );
    }

    #[tokio::test]
    async fn garbage_answer_is_a_protocol_error() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("control.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            if let Ok((stream, _)) = listener.accept().await {
                let (reader, mut writer) = stream.into_split();
                let mut lines = BufReader::new(reader).lines();
                while let Ok(Some(_)) = lines.next_line().await {
                    let _ = writer.write_all(b"{\"result\":\"launched\"}\n").await;
                }
            }
        });
        let error = call(&path, &Request::Ping, Duration::from_secs(10))
            .await
            .expect_err("not a response");
        assert!(matches!(error, ClientError::Protocol { .. }), "{error:?}");
    }
}
