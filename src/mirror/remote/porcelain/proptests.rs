//! Property tests of the parsers of git's output: what `git push --porcelain` and
//! `git ls-remote` print comes from the remote and is outside input.
//!
//! Any output is parsed without a panic; well-formed output (generated the way git prints it,
//! with `To <url>` and `Done` around the ref lines) parses back to exactly what was printed;
//! a secret is never in a recorded reason. `PROPTEST_CASES` runs them longer.

use proptest::prelude::*;
use secrecy::SecretString;

use super::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text shaped like git's output: ref-ish names, tabs, colons, brackets, newlines.
fn outputish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[!*=+ -]?\t?[a-z/:()\\[\\] \t\n^{}0-9]{0,80}",
        prop::collection::vec(
            "[!*=+ -]\t[a-z/]{0,8}:[a-z/]{0,8}\t[\\[\\]() a-z\n]{0,20}",
            0..6
        )
        .prop_map(|lines| lines.join("\n")),
    ]
}

fn refname() -> impl Strategy<Value = String> {
    "refs/(heads|tags)/[a-z0-9][a-z0-9._/-]{0,12}"
}

fn oid() -> impl Strategy<Value = Oid> {
    any::<[u8; 20]>().prop_map(|bytes| Oid::from_bytes(&bytes).expect("20 bytes"))
}

/// One ref line as git prints it, with the outcome it means.
fn ref_report() -> impl Strategy<Value = (String, char, String)> {
    let summaries = prop_oneof![
        Just((' ', "abc..def".to_owned())),
        Just(('*', "[new branch]".to_owned())),
        Just(('+', "abc...def (forced update)".to_owned())),
        Just(('-', "[deleted]".to_owned())),
        Just(('=', "[up to date]".to_owned())),
        "[a-z ]{0,20}".prop_map(|r| ('!', format!("[remote rejected] ({r})"))),
        Just(('!', "[rejected] (stale info)".to_owned())),
    ];
    (refname(), summaries).prop_map(|(name, (flag, summary))| (name, flag, summary))
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn any_push_output_parses_without_a_panic(stdout in outputish(), stderr in outputish()) {
        let secret = SecretString::from("hunter2-secret");
        for line in parse_porcelain(&stdout) {
            let outcome = outcome_of(&line, &stderr, &[&secret]);
            if let RefOutcome::Rejected { reason, .. } | RefOutcome::RemoteRejected { reason, .. } =
                outcome
            {
                prop_assert!(!reason.contains("hunter2-secret"), "{reason:?}");
            }
        }
    }

    #[test]
    fn reported_refs_parse_back_as_printed(reports in prop::collection::vec(ref_report(), 0..8)) {
        let mut stdout = String::from("To file:///srv/remote.git\n");
        for (name, flag, summary) in &reports {
            stdout.push_str(&format!("{flag}\trefs/heads/x:{name}\t{summary}\n"));
        }
        stdout.push_str("Done\n");
        let parsed = parse_porcelain(&stdout);
        prop_assert_eq!(parsed.len(), reports.len());
        for (line, (name, flag, summary)) in parsed.iter().zip(&reports) {
            prop_assert_eq!(&line.dst, name);
            prop_assert_eq!(line.flag, *flag);
            prop_assert_eq!(&line.summary, summary);
            let outcome = outcome_of(line, "", &[]);
            let done = matches!(outcome, RefOutcome::Done | RefOutcome::UpToDate);
            prop_assert_eq!(done, *flag != '!', "{:?}", outcome);
        }
    }

    #[test]
    fn any_ls_remote_output_parses_without_a_panic(stdout in outputish()) {
        if let Ok(remote) = parse_ls_remote(&stdout) {
            for name in remote.refs.keys() {
                prop_assert!(name.starts_with("refs/heads/") || name.starts_with("refs/tags/"));
                prop_assert!(!name.ends_with("^{}"), "{}", name);
            }
        }
    }

    #[test]
    fn ls_remote_output_parses_to_its_branches_and_tags(
        refs in prop::collection::btree_map(refname(), oid(), 0..12),
        others in prop::collection::btree_map("refs/(pull|notes)/[a-z0-9]{1,6}", oid(), 0..3),
        symbolic in prop::collection::btree_set(refname(), 0..2),
    ) {
        let mut stdout = String::new();
        for name in &symbolic {
            stdout.push_str(&format!("ref: refs/heads/main\t{name}\n"));
        }
        for (name, oid) in refs.iter().chain(&others) {
            stdout.push_str(&format!("{oid}\t{name}\n"));
            if name.starts_with("refs/tags/") {
                stdout.push_str(&format!("{oid}\t{name}^{{}}\n"));
            }
        }
        let parsed = parse_ls_remote(&stdout).map_err(TestCaseError::fail)?;
        let mut wanted = refs.clone();
        wanted.retain(|name, _| !symbolic.contains(name));
        prop_assert_eq!(parsed.refs, wanted);
    }
}
