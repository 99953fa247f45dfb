//! Property tests of the loader: a configuration file is outside input, often mid-edit.
//!
//! The valid fixtures of `tests/it/configs/valid/` are mutated at random, byte by byte and
//! line by line, with values chosen to reach validation (wrong types, huge numbers, empty
//! strings, bad durations and regexes, stray tables, invalid UTF-8), and loaded with
//! [`Config::load`] from a temporary directory: the loader never panics, and either accepts
//! the file or refuses it with diagnostics that each carry the file and a line and column
//! inside it.
//!
//! Case counts are set explicitly so that all the property tests of the crate run in a few
//! seconds; `PROPTEST_CASES=100000 cargo nextest run proptests` runs longer and
//! `PROPTEST_RNG_SEED=<n>` repeats a run. Failures are not persisted to files: proptest prints
//! the shrunk input.

use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The valid fixtures, by file name, in name order.
static FIXTURES: LazyLock<Vec<(String, Vec<u8>)>> = LazyLock::new(|| {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/configs/valid");
    let mut fixtures: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("fixtures directory")
        .map(|entry| entry.expect("fixture").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .map(|path| {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("fixture"))
        })
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 5, "fixtures in {}", dir.display());
    fixtures
});

/// Values that reach validation, or just past what TOML accepts.
const VALUES: &[&str] = &[
    "\"\"",
    "\"0s\"",
    "\"5\"",
    "\"1h1h\"",
    "\"18446744073709551615s\"",
    "\"99999999999999999999d\"",
    "\"213503982334601d\"",
    "0",
    "-1",
    "4294967296",
    "18446744073709551616",
    "9223372036854775807",
    "1.5",
    "nan",
    "-inf",
    "true",
    "[]",
    "[\"\"]",
    "[\"[\", 1]",
    "{}",
    "{ a = 1 }",
    "\"(\"",
    "\"^(main|feature/.*)$\"",
    "\"ftp://example.com/x.git\"",
    "\"https://u:p@example.com/x.git\"",
    "\"https://:@\"",
    "\"ssh://\"",
    "\"git@:\"",
    "\"/\"",
    "\"..\"",
    "\"\\u0000\"",
    "\"a/../../b\"",
    "1979-05-27T07:32:00Z",
    "'''\nx\n'''",
    "\"é\u{301}\u{1f600}\"",
];

/// Lines to insert: table headers, duplicates, exclusive keys, odd keys.
const LINES: &[&str] = &[
    "[[mirror]]",
    "[daemon]",
    "[defaults]",
    "[mirror]",
    "[[daemon]]",
    "[mirror.x]",
    "name = \"app-github\"",
    "name = \"..\"",
    "repo = \"repos/app.git\"",
    "url = \"https://example.com/x.git\"",
    "only_protected_branches = true",
    "mirror_branch_regex = \"a\"",
    "password_file = \"secrets/x\"",
    "password_env = \"X\"",
    "protected_branches = [\"main\"]",
    "delay = 300",
    "timeout = \"0s\"",
    "max_parallel_pushes = 0",
    "mirror = []",
    "mirror = 1",
    "a.b.c = 1",
    "\"\" = 1",
    "x = { y = { z = [1, [2, { w = 3 }]] } }",
    "socket = \"sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss\"",
    "# comment",
    "",
];

/// One random change of the file.
#[derive(Debug, Clone)]
enum Mutation {
    SetByte(Index, u8),
    InsertByte(Index, u8),
    DeleteBytes(Index, usize),
    Truncate(Index),
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    InsertLine(Index, &'static str),
    /// Replaces what follows `=` on a line.
    ReplaceValue(Index, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        6 => prop::sample::select(b"[]{}\"'=#,.\n\r\t \\0123456789-_:/*$aA".to_vec()),
        1 => prop::sample::select(vec![0x00u8, 0x7f, 0x80, 0xc3, 0xe2, 0xff]),
        1 => any::<u8>(),
    ];
    let index = any::<Index>;
    prop_oneof![
        1 => (index(), byte.clone()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        1 => (index(), byte).prop_map(|(i, b)| Mutation::InsertByte(i, b)),
        1 => (index(), 1..10usize).prop_map(|(i, n)| Mutation::DeleteBytes(i, n)),
        1 => index().prop_map(Mutation::Truncate),
        1 => index().prop_map(Mutation::DeleteLine),
        1 => index().prop_map(Mutation::DuplicateLine),
        1 => (index(), index()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        3 => (index(), prop::sample::select(LINES)).prop_map(|(i, l)| Mutation::InsertLine(i, l)),
        6 => (index(), prop::sample::select(VALUES)).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
    ]
}

fn lines(text: &[u8]) -> Vec<Vec<u8>> {
    text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
}

fn mutate(text: &mut Vec<u8>, mutation: &Mutation) {
    let mut by_line = lines(text);
    let n = by_line.len();
    match mutation {
        Mutation::SetByte(i, b) if !text.is_empty() => {
            let i = i.index(text.len());
            text[i] = *b;
            return;
        }
        Mutation::InsertByte(i, b) => {
            let i = i.index(text.len() + 1);
            text.insert(i, *b);
            return;
        }
        Mutation::DeleteBytes(i, count) if !text.is_empty() => {
            let i = i.index(text.len());
            text.drain(i..(i + count).min(text.len()));
            return;
        }
        Mutation::Truncate(i) => {
            text.truncate(i.index(text.len() + 1));
            return;
        }
        Mutation::DeleteLine(i) => {
            by_line.remove(i.index(n));
        }
        Mutation::DuplicateLine(i) => {
            let i = i.index(n);
            by_line.insert(i, by_line[i].clone());
        }
        Mutation::SwapLines(a, b) => by_line.swap(a.index(n), b.index(n)),
        Mutation::InsertLine(i, line) => by_line.insert(i.index(n + 1), line.as_bytes().to_vec()),
        Mutation::ReplaceValue(i, value) => {
            // The i-th line that has a `=`, if any.
            let with_value: Vec<usize> = (0..n).filter(|&l| by_line[l].contains(&b'=')).collect();
            if with_value.is_empty() {
                return;
            }
            let line = &mut by_line[with_value[i.index(with_value.len())]];
            let eq = line.iter().position(|&b| b == b'=').expect("has =");
            line.truncate(eq + 1);
            line.push(b' ');
            line.extend_from_slice(value.as_bytes());
        }
        _ => return,
    }
    *text = by_line.join(&b'\n');
}

/// Checks that `rendered` starts with `<path>:<line>:<column>: ` and returns line and column.
fn position(rendered: &str, path: &Path) -> Result<(usize, usize), String> {
    let prefix = format!("{}:", path.display());
    let rest = rendered
        .strip_prefix(&prefix)
        .ok_or_else(|| format!("{rendered:?} does not start with the file"))?;
    let mut parts = rest.splitn(3, ':');
    let (line, column, message) = (parts.next(), parts.next(), parts.next());
    let number = |part: Option<&str>| part.and_then(|p| p.parse::<usize>().ok());
    match (number(line), number(column), message) {
        (Some(line), Some(column), Some(message))
            if message.starts_with(' ') && message.len() > 1 =>
        {
            Ok((line, column))
        }
        _ => Err(format!(
            "{rendered:?} is not <path>:<line>:<column>: <message>"
        )),
    }
}

/// Checks that 1-based `line` and `column` lie in `text` (or just past its end).
fn inside(text: &str, line: usize, column: usize) -> Result<(), String> {
    let lines: Vec<&str> = text.split('\n').collect();
    if line == 0 || line > lines.len() {
        return Err(format!("line {line} of a file of {} lines", lines.len()));
    }
    let width = lines[line - 1].chars().count();
    if column == 0 || column > width + 1 {
        return Err(format!(
            "column {column} of line {line}, {width} characters long"
        ));
    }
    Ok(())
}

/// Loads `text` from a file in a fresh directory and checks what the loader said.
fn loads_or_says_where(text: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("pushmirror.toml");
    std::fs::write(&path, text).expect("write");
    // Positions are checked against the text as read, up to the first invalid byte.
    let readable = match std::str::from_utf8(text) {
        Ok(text) => text.to_owned(),
        Err(e) => String::from_utf8_lossy(&text[..e.valid_up_to()]).into_owned(),
    };
    match Config::load(&path) {
        Ok(config) => {
            let problems = config.mirror_problems.iter().map(|p| p.to_string());
            let rendered = config
                .warnings
                .iter()
                .map(|w| w.to_string())
                .chain(problems);
            for rendered in rendered {
                let (line, column) = position(&rendered, &path)?;
                inside(&readable, line, column).map_err(|e| format!("{rendered:?}: {e}"))?;
            }
        }
        Err(ConfigError::Io { source, .. }) => return Err(format!("I/O error: {source}")),
        Err(ConfigError::Invalid { diagnostics }) => {
            if diagnostics.is_empty() {
                return Err("refused without a diagnostic".to_owned());
            }
            let mut previous = (0, 0);
            for diagnostic in &diagnostics {
                let rendered = diagnostic.to_string();
                if diagnostic.path != path {
                    return Err(format!("{rendered:?} names another file"));
                }
                if diagnostic.message.is_empty() {
                    return Err(format!("{rendered:?}: no message"));
                }
                let (line, column) = position(&rendered, &path)?;
                if (line, column) != (diagnostic.line, diagnostic.column) {
                    return Err(format!("{rendered:?} renders another position"));
                }
                inside(&readable, line, column).map_err(|e| format!("{rendered:?}: {e}"))?;
                if (line, column) < previous {
                    return Err(format!("{rendered:?} is out of file order"));
                }
                previous = (line, column);
            }
        }
    }
    Ok(())
}

/// Loads `text` from a file in a fresh directory and checks that every diagnostic, warning
/// and mirror problem is one line, as `check-config` prints them one per line.
fn says_it_in_one_line(text: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("pushmirror.toml");
    std::fs::write(&path, text).expect("write");
    let said: Vec<String> = match Config::load(&path) {
        Ok(config) => config
            .warnings
            .iter()
            .map(Diagnostic::to_string)
            .chain(config.mirror_problems.iter().map(|p| p.to_string()))
            .collect(),
        Err(error) => error
            .diagnostics()
            .iter()
            .map(Diagnostic::to_string)
            .collect(),
    };
    match said.iter().find(|line| line.contains('\n')) {
        Some(line) => Err(format!("{line:?} is not one line")),
        None => Ok(()),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_fixtures_load_or_say_where(
        fixture in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let (_, original) = &FIXTURES[fixture.index(FIXTURES.len())];
        let mut text = original.clone();
        for mutation in &mutations {
            mutate(&mut text, mutation);
        }
        let result = loads_or_says_where(&text);
        prop_assert!(result.is_ok(), "{}\n--- file:\n{}", result.unwrap_err(), String::from_utf8_lossy(&text));
    }

    #[test]
    fn every_diagnostic_is_one_line(
        fixture in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let (_, original) = &FIXTURES[fixture.index(FIXTURES.len())];
        let mut text = original.clone();
        for mutation in &mutations {
            mutate(&mut text, mutation);
        }
        let result = says_it_in_one_line(&text);
        prop_assert!(result.is_ok(), "{}\n--- file:\n{}", result.unwrap_err(), String::from_utf8_lossy(&text));
    }
}
