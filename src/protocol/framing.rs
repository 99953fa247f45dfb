//! Framing of the control-socket protocol: JSON lines, bounded in length, each request
//! carrying its version. The daemon's server and the client share these functions, so that
//! both ends agree on the bytes.

use std::io;

use serde::Deserialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use super::{ErrorKind, PROTOCOL_VERSION, Request, RequestLine, Response};

/// The largest request line accepted (a push of tens of thousands of refs fits).
pub const MAX_REQUEST_BYTES: usize = 8 << 20;

/// The request lines every connection may send without waiting for others: the daemon
/// buffers a line this long for every connection at once, longer ones (up to
/// [`MAX_REQUEST_BYTES`]) for only a few at a time. The hook keeps its notifications within
/// it.
pub const SMALL_REQUEST_BYTES: usize = 64 << 10;

/// Returns the request line for `request`, newline included.
pub fn encode_request(request: &Request) -> String {
    let line = RequestLine {
        v: PROTOCOL_VERSION,
        request: request.clone(),
    };
    let mut text = serde_json::to_string(&line).expect("requests always serialize");
    text.push('\n');
    text
}

/// Returns the response line for `response`, newline included.
pub fn encode_response(response: &Response) -> String {
    let mut text = serde_json::to_string(response).expect("responses always serialize");
    text.push('\n');
    text
}

/// Parses one request line (without its newline); the error is the reply to send.
pub fn decode_request(line: &[u8]) -> Result<Request, Response> {
    #[derive(Deserialize)]
    struct VersionOnly {
        v: Option<u32>,
    }
    let version = serde_json::from_slice::<VersionOnly>(line).map_err(|e| Response::Error {
        kind: ErrorKind::BadRequest,
        message: format!("not a JSON request object: {e}"),
    })?;
    match version.v {
        Some(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(Response::Error {
                kind: ErrorKind::UnsupportedVersion,
                message: format!(
                    "protocol version {v} is not supported; this daemon speaks {PROTOCOL_VERSION}"
                ),
            });
        }
        None => {
            return Err(Response::Error {
                kind: ErrorKind::BadRequest,
                message: "missing protocol version field \"v\"".into(),
            });
        }
    }
    serde_json::from_slice::<RequestLine>(line)
        .map(|l| l.request)
        .map_err(|e| Response::Error {
            kind: ErrorKind::BadRequest,
            message: format!("bad request: {e}"),
        })
}

/// What one bounded line read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A line is in the buffer, without its `\n` (also a last line without one before EOF).
    Line,
    /// The peer closed the connection before sending anything more.
    Eof,
    /// The line is longer than the limit; what was read of it is in the buffer.
    TooLarge,
}

/// Reads one `\n`-terminated line into `line`, never holding more than `max` bytes of it.
/// Shared by the daemon's server and [`crate::client`].
///
/// `line` is empty, or holds the start of this line from an earlier call that returned
/// [`LineRead::TooLarge`] for a smaller `max`: the read then goes on where that one stopped
/// (the server reads a line with a small limit first, then with a larger one).
pub async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if line.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (end, true),
            None => (available.len(), false),
        };
        if line.len() + chunk > max {
            return Ok(LineRead::TooLarge);
        }
        line.extend_from_slice(&available[..chunk]);
        reader.consume(if done { chunk + 1 } else { chunk });
        if done {
            return Ok(LineRead::Line);
        }
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn bounded_line_reader() {
        let mut input: &[u8] = b"abc\ndefgh\nlast";
        let mut reader = BufReader::with_capacity(2, &mut input);
        let mut line = Vec::new();
        assert_eq!(
            read_line_bounded(&mut reader, &mut line, 4)
                .await
                .expect("read"),
            LineRead::Line
        );
        assert_eq!(line, b"abc");
        line.clear();
        assert_eq!(
            read_line_bounded(&mut reader, &mut line, 4)
                .await
                .expect("read"),
            LineRead::TooLarge
        );
        assert!(line.len() <= 4);
    }
}
