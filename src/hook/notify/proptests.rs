//! Property tests of the hook's input parser: git writes the lines, but whatever reaches
//! stdin must neither panic the hook nor lose a well-formed line.
//!
//! Case counts are set explicitly so that all the property tests of the crate run in a few
//! seconds; `PROPTEST_CASES=100000 cargo nextest run proptests` runs longer and
//! `PROPTEST_RNG_SEED=<n>` repeats a run. Failures are not persisted to files: proptest prints
//! the shrunk input.

use std::sync::LazyLock;

use proptest::prelude::*;
use regex::Regex;

use super::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// An object id of `len` hex digits, in either case.
fn oid(len: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(b"0123456789abcdefABCDEF".to_vec()),
        len,
    )
    .prop_map(|digits| String::from_utf8(digits).expect("hex"))
}

/// A ref name as git may pass it: under `refs/`, no space, no ASCII control character.
fn ref_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "refs/(heads|tags)/[a-zA-Z0-9._/-]{1,30}",
        "refs/[^ \\x00-\\x1f\\x7f]{1,20}",
    ]
}

/// A well-formed `<old> <new> <ref>` line, SHA-1 or SHA-256.
fn valid_line() -> impl Strategy<Value = (String, String, String)> {
    prop_oneof![Just(40usize), Just(64)].prop_flat_map(|len| (oid(len), oid(len), ref_name()))
}

/// Lines that are nearly well-formed, or not at all.
fn other_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\n'), 0..90),
        (oid(40), oid(64), ref_name()).prop_map(|(a, b, r)| format!("{a} {b} {r}").into_bytes()),
        (oid(40), oid(40), "[^\n]{0,12}").prop_map(|(a, b, r)| format!("{a} {b} {r}").into_bytes()),
        (oid(39), oid(40), ref_name()).prop_map(|(a, b, r)| format!("{a} {b} {r}").into_bytes()),
        (valid_line(), "[ \r\t\u{0}x]")
            .prop_map(|((a, b, r), end)| format!("{a} {b} {r}{end}").into_bytes()),
        valid_line().prop_map(|(a, b, r)| format!("{a}  {b} {r}").into_bytes()),
    ]
}

/// The line rule, written independently of `parse_line`: two object ids of one length (40 or
/// 64 hex digits), then a ref name under `refs/` without spaces or ASCII control characters.
fn is_well_formed(line: &[u8]) -> bool {
    static RULE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"^(?:[0-9a-fA-F]{40} [0-9a-fA-F]{40}|[0-9a-fA-F]{64} [0-9a-fA-F]{64}) refs/[^ \x00-\x1f\x7f]+$",
        )
        .expect("regex")
    });
    std::str::from_utf8(line).is_ok_and(|line| RULE.is_match(line))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn well_formed_lines_parse_to_their_ref_change((old, new, name) in valid_line()) {
        let line = format!("{old} {new} {name}");
        prop_assert_eq!(parse_line(&line), Some(RefChange { old, new, name }));
    }

    #[test]
    fn arbitrary_input_never_panics(input in prop::collection::vec(any::<u8>(), 0..400)) {
        let (refs, skipped) = parse_input(&input);
        let lines = input.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
        prop_assert_eq!(refs.len() + skipped.count, lines);
        // However much garbage, the pusher reads one line about it.
        for message in skipped.messages().iter().chain(&skipped.summary()) {
            prop_assert!(!message.chars().any(char::is_control), "{:?}", message);
        }
    }

    /// Mixed input: every well-formed line comes out, in order, each other non-empty line is
    /// reported once, on one line, with its line number.
    #[test]
    fn mixed_input_keeps_every_well_formed_line(
        lines in prop::collection::vec(
            prop_oneof![
                valid_line().prop_map(|(a, b, r)| format!("{a} {b} {r}").into_bytes()),
                other_line(),
            ],
            0..12,
        ),
        trailing_newline in any::<bool>(),
    ) {
        let mut input = lines.join(&b'\n');
        if trailing_newline {
            input.push(b'\n');
        }
        let (refs, skipped) = parse_input(&input);
        let messages = skipped.messages();
        let mut expected_refs = Vec::new();
        let mut expected_lines = Vec::new();
        for (index, line) in lines.iter().enumerate() {
            if is_well_formed(line) {
                let text = std::str::from_utf8(line).expect("checked");
                let mut parts = text.splitn(3, ' ');
                let (old, new, name) = (parts.next(), parts.next(), parts.next());
                expected_refs.push(RefChange {
                    old: old.expect("old").to_owned(),
                    new: new.expect("new").to_owned(),
                    name: name.expect("name").to_owned(),
                });
            } else if !line.is_empty() {
                expected_lines.push(index + 1);
            }
        }
        prop_assert_eq!(refs, expected_refs);
        let reported: Vec<usize> = messages
            .iter()
            .map(|m| {
                let rest = m
                    .strip_prefix("pushmirror: skipping malformed hook input line ")
                    .expect("the message names the line");
                rest[..rest.find(':').expect("a colon after the number")]
                    .parse()
                    .expect("a line number")
            })
            .collect();
        prop_assert_eq!(skipped.count, expected_lines.len());
        expected_lines.truncate(LISTED_LINES);
        prop_assert_eq!(reported, expected_lines);
        for message in &messages {
            prop_assert!(!message.chars().any(char::is_control), "{:?}", message);
        }
    }
}
