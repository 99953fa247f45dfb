//! Property tests of the framing: what a peer sends is outside input.
//!
//! `decode_request` answers every line, however malformed, with a request or an error reply
//! and never panics; every request the client can build encodes to one line that decodes
//! back to it; `read_line_bounded` splits any byte stream, however it arrives in pieces, into
//! the lines it holds, never holding more than its limit.
//!
//! Case counts are set explicitly so that all the property tests of the crate run in a few
//! seconds; `PROPTEST_CASES=100000 cargo nextest run proptests` runs longer and
//! `PROPTEST_RNG_SEED=<n>` repeats a run. Failures are not persisted to files: proptest prints
//! the shrunk input.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

use super::*;
use crate::protocol::{Notification, RefChange, SyncTarget};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any text: arbitrary Unicode (control characters, quotes, backslashes, newlines
/// included), or the plain names and paths that requests usually carry.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9/._-]{0,24}",
        "[\"\\\\\n\r\t\u{0}\u{2028}\u{fffd}a]{0,8}"
    ]
}

fn path() -> impl Strategy<Value = PathBuf> {
    text().prop_map(PathBuf::from)
}

fn ref_change() -> impl Strategy<Value = RefChange> {
    (text(), text(), text()).prop_map(|(old, new, name)| RefChange { old, new, name })
}

fn target() -> impl Strategy<Value = SyncTarget> {
    prop_oneof![
        prop::collection::vec(text(), 0..4).prop_map(SyncTarget::Mirrors),
        path().prop_map(SyncTarget::Repo),
        Just(SyncTarget::All),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        (
            path(),
            prop::collection::vec(ref_change(), 0..5),
            any::<bool>()
        )
            .prop_map(|(repo, refs, all_refs)| {
                Request::Notify(Notification {
                    repo,
                    refs,
                    all_refs,
                })
            }),
        (target(), any::<bool>(), any::<bool>()).prop_map(|(target, wait, allow_mass_change)| {
            Request::Sync {
                target,
                wait,
                allow_mass_change,
            }
        }),
        target().prop_map(|target| Request::Plan { target }),
        prop::option::of(text()).prop_map(|name| Request::Status { name }),
        Just(Request::Reload),
    ]
}

/// JSON values built from the protocol's own words, so that decoding gets past the syntax.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let word = prop_oneof![
        Just("v"),
        Just("op"),
        Just("ping"),
        Just("notify"),
        Just("sync"),
        Just("status"),
        Just("reload"),
        Just("repo"),
        Just("refs"),
        Just("old"),
        Just("new"),
        Just("ref"),
        Just("target"),
        Just("wait"),
        Just("name"),
        Just("mirrors"),
        Just("all"),
        Just(""),
    ]
    .prop_map(str::to_owned);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(1i64),
            Just(0),
            Just(2),
            Just(-1),
            Just(i64::MAX),
            any::<i64>()
        ]
        .prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        word.clone().prop_map(Value::String),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((word.clone(), inner), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A byte edit of a line: at an index (taken modulo the length), set, insert or remove bytes.
#[derive(Debug, Clone)]
enum Edit {
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![
        prop::sample::select(b"{}[]\":,\\0123456789-.eEtfnul \n".to_vec()),
        any::<u8>()
    ];
    prop_oneof![
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<prop::sample::Index>(), 1..6usize).prop_map(|(i, n)| Edit::Remove(i, n)),
    ]
}

fn apply(line: &mut Vec<u8>, edit: &Edit) {
    match edit {
        Edit::Set(i, b) if !line.is_empty() => {
            let i = i.index(line.len());
            line[i] = *b;
        }
        Edit::Insert(i, b) => {
            let i = i.index(line.len() + 1);
            line.insert(i, *b);
        }
        Edit::Remove(i, n) if !line.is_empty() => {
            let i = i.index(line.len());
            line.drain(i..(i + n).min(line.len()));
        }
        _ => {}
    }
}

/// Checks what `decode_request` answered to `line`: a request that encodes to a line
/// decoding back to it, or an error reply of a kind a malformed line may get.
fn answered(line: &[u8]) -> Result<(), TestCaseError> {
    match decode_request(line) {
        Ok(request) => {
            let again = encode_request(&request);
            prop_assert_eq!(
                decode_request(again.trim_end_matches('\n').as_bytes()),
                Ok(request)
            );
        }
        Err(Response::Error { kind, message }) => {
            prop_assert!(
                matches!(kind, ErrorKind::BadRequest | ErrorKind::UnsupportedVersion),
                "{:?}",
                kind
            );
            prop_assert!(!message.is_empty());
        }
        Err(other) => prop_assert!(false, "not an error reply: {:?}", other),
    }
    Ok(())
}

/// An `AsyncBufRead` that hands out its input in the given pieces, never pending.
struct Pieces {
    pieces: VecDeque<Vec<u8>>,
    at: usize,
}

impl Pieces {
    fn new(input: &[u8], cuts: &[prop::sample::Index]) -> Pieces {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        cuts.push(0);
        cuts.push(input.len());
        cuts.sort_unstable();
        cuts.dedup();
        let pieces = cuts
            .windows(2)
            .map(|w| input[w[0]..w[1]].to_vec())
            .collect();
        Pieces { pieces, at: 0 }
    }
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(piece) = this.pieces.front() {
            let n = (piece.len() - this.at).min(buf.remaining());
            buf.put_slice(&piece[this.at..this.at + n]);
            Pin::new(this).consume(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncBufRead for Pieces {
    fn poll_fill_buf(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        Poll::Ready(Ok(match this.pieces.front() {
            Some(piece) => &piece[this.at..],
            None => &[],
        }))
    }

    fn consume(self: Pin<&mut Self>, amount: usize) {
        let this = self.get_mut();
        this.at += amount;
        if this
            .pieces
            .front()
            .is_some_and(|piece| this.at == piece.len())
        {
            this.pieces.pop_front();
            this.at = 0;
        }
    }
}

/// Runs a future that cannot wait (its reader is never pending) to its end.
fn at_once<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the reader is never pending"),
    }
}

/// What reading `input` line by line with limit `max` must give: each line without its
/// `\n` (the last one also without), until one is longer than `max`; then end of input.
fn expected_reads(input: &[u8], max: usize) -> Vec<(LineRead, Vec<u8>)> {
    let mut reads = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let (line, after) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        if line.len() > max {
            reads.push((LineRead::TooLarge, Vec::new()));
            return reads;
        }
        reads.push((LineRead::Line, line.to_vec()));
        rest = after;
    }
    reads.push((LineRead::Eof, Vec::new()));
    reads
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn every_request_round_trips_as_one_line(request in request()) {
        let line = encode_request(&request);
        prop_assert!(line.ends_with('\n'));
        prop_assert_eq!(line.matches('\n').count(), 1, "{}", line);
        prop_assert_eq!(decode_request(&line.as_bytes()[..line.len() - 1]), Ok(request));
    }

    #[test]
    fn arbitrary_bytes_get_an_answer(line in prop::collection::vec(any::<u8>(), 0..200)) {
        answered(&line)?;
    }

    #[test]
    fn edited_requests_get_an_answer(
        request in request(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let mut line = encode_request(&request).trim_end().as_bytes().to_vec();
        for edit in &edits {
            apply(&mut line, edit);
        }
        answered(&line)?;
    }

    #[test]
    fn json_objects_of_protocol_words_get_an_answer(value in json()) {
        answered(value.to_string().as_bytes())?;
    }

    #[test]
    fn lines_are_split_as_written_whatever_the_pieces(
        input in prop::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..80),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        max in 0..24usize,
    ) {
        let expected = expected_reads(&input, max);
        let mut reader = Pieces::new(&input, &cuts);
        let mut line = Vec::new();
        for (i, (want, want_line)) in expected.iter().enumerate() {
            line.clear();
            let got = at_once(read_line_bounded(&mut reader, &mut line, max)).expect("no I/O error");
            prop_assert!(line.len() <= max, "read {} {:?} holds {} bytes", i, got, line.len());
            prop_assert_eq!(&got, want, "read {}", i);
            match got {
                LineRead::Line => prop_assert_eq!(&line, want_line, "read {}", i),
                // What was read of a line too long is a prefix of it.
                LineRead::TooLarge => {
                    let start: usize = expected[..i].iter().map(|(_, l)| l.len() + 1).sum();
                    prop_assert!(input[start..].starts_with(&line));
                }
                LineRead::Eof => prop_assert!(line.is_empty()),
            }
        }
        if expected.last().is_some_and(|(read, _)| *read == LineRead::Eof) {
            line.clear();
            let again = at_once(read_line_bounded(&mut reader, &mut line, max)).expect("no I/O error");
            prop_assert_eq!(again, LineRead::Eof);
        }
    }

    /// A repository path comes from `$GIT_DIR` or the command line, where any bytes but NUL
    /// may be: encoding it must not panic (the hook would neither notify nor spool).
    #[test]
    fn any_repository_path_encodes_without_a_panic(
        bytes in prop::collection::vec(1..=255u8, 0..24),
        sync in any::<bool>(),
    ) {
        let repo = PathBuf::from(OsString::from_vec(bytes));
        let request = if sync {
            Request::Sync { target: SyncTarget::Repo(repo), wait: false, allow_mass_change: false }
        } else {
            Request::Notify(Notification { repo, refs: Vec::new(), all_refs: false })
        };
        let line = encode_request(&request);
        prop_assert_eq!(line.matches('\n').count(), 1, "{}", line);
    }
}
