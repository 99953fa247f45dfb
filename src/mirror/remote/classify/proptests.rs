//! Property tests of the stderr classifier: a remote's stderr is outside input. Any text is
//! classified without a panic, and what is kept of it for people never holds a secret or a
//! URL's password. `PROPTEST_CASES` runs them longer.

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

/// Lines like git's, mixed with anything.
fn stderr_line() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        Just("fatal: Authentication failed for 'https://h/r.git/'".to_owned()),
        Just("fatal: repository 'https://h/r.git/' not found".to_owned()),
        Just("fatal: unable to access 'https://h/': The requested URL returned error: 503".to_owned()),
        Just("remote: error: cannot lock ref 'refs/heads/a': Unable to create 'x.lock': File exists.".to_owned()),
        Just("fatal: Could not read from remote repository.".to_owned()),
        Just("hint: see 'git help push'".to_owned()),
        "(remote: |error: |fatal: )?[a-z ':/.]{0,40}",
    ]
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn any_stderr_is_classified_without_leaking(
        lines in prop::collection::vec(stderr_line(), 0..12),
        at in any::<prop::sample::Index>(),
    ) {
        let secret = SecretString::from("s3cr3t-token-value");
        let mut lines = lines;
        // The secret, and a URL carrying a password, somewhere in what git said.
        let position = at.index(lines.len() + 1);
        lines.insert(position, "fatal: https://bot:pa55word@host/r.git said s3cr3t-token-value".into());
        let stderr = lines.join("\n");
        let error = classify_failure("git push", &stderr, "git exited with status 128", &[&secret]);
        let shown = error.to_string();
        prop_assert!(!shown.contains("s3cr3t-token-value"), "{shown}");
        prop_assert!(!shown.contains("pa55word"), "{shown}");
        let _ = error.is_transient();
    }

    #[test]
    fn any_refusal_words_are_sorted_without_a_panic(words in any::<String>()) {
        let _ = refusal_of(&words);
    }
}
