//! `pushmirror check-config` through the real binary, over the sample files of
//! `tests/it/configs/`: every `valid/*.toml` must pass, every `invalid/*.toml` must fail with
//! the error its first line announces (`# expect: <line>:<column>: <message...>`). A valid
//! file may announce a warning the same way (`# expect-warning: ...`).
//!
//! The samples name repositories and password files relative to themselves, so each runs from
//! a copy inside a [`TestEnv`] that holds what they refer to (see [`fixture_env`]).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::{Output, TestEnv};

/// Where the sample configuration files live.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/configs");

/// Returns an environment with what the samples refer to: bare repositories
/// `repos/{app,lib,docs}.git`, `secrets/app.token` (mode 0600) and `secrets/public.token`
/// (mode 0644, to be refused).
fn fixture_env() -> TestEnv {
    let env = TestEnv::new();
    for repo in ["repos/app.git", "repos/lib.git", "repos/docs.git"] {
        env.bare_repo(repo);
        // A hook that runs pushmirror, so that no sample warns about a forgotten one.
        let hook = env.write_file(
            format!("{repo}/hooks/post-receive"),
            "#!/bin/sh\nexec pushmirror notify\n",
        );
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).expect("chmod 755");
    }
    env.write_secret("secrets/app.token", "token\n");
    env.write_secret(
        "secrets/ssh.key",
        "a private key, never read by check-config\n",
    );
    let public = env.write_file("secrets/public.token", "token\n");
    fs::set_permissions(&public, fs::Permissions::from_mode(0o644)).expect("chmod 644");
    env
}

/// Returns the sample files of `kind` (`valid` or `invalid`), sorted.
fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(FIXTURES).join(kind);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no samples in {}", dir.display());
    files
}

/// Returns what follows `# <tag>: ` on the first line of `text`.
fn announced<'t>(text: &'t str, tag: &str) -> Option<&'t str> {
    text.lines()
        .next()?
        .strip_prefix("# ")?
        .strip_prefix(tag)?
        .strip_prefix(": ")
}

/// Copies `fixture` into `env` and runs `pushmirror --config <copy> check-config` on it.
fn check_config(env: &TestEnv, fixture: &Path) -> (PathBuf, Output) {
    let config = env.path(fixture.file_name().expect("a file name"));
    fs::copy(fixture, &config).expect("copy the sample");
    let config_arg = config.to_str().expect("a UTF-8 temporary path");
    let output = env.pushmirror(&["--config", config_arg, "check-config"]);
    (config, output)
}

#[test]
fn valid_samples_pass() {
    let env = fixture_env();
    let mut failures = Vec::new();
    for fixture in fixtures("valid") {
        let text = fs::read_to_string(&fixture).expect("read the sample");
        let (config, output) = check_config(&env, &fixture);
        let summary_ok = output
            .stdout
            .strip_prefix(&format!("{}: ok, ", config.display()))
            .is_some_and(|rest| rest.ends_with(" mirror\n") || rest.ends_with(" mirrors\n"));
        let only_warnings = output.stderr.lines().all(|l| l.starts_with("warning: "));
        let warning_ok = match announced(&text, "expect-warning") {
            Some(expected) => output
                .stderr
                .contains(&format!("warning: {}:{expected}", config.display())),
            None => output.stderr.is_empty(),
        };
        if output.code() != Some(0) || !summary_ok || !only_warnings || !warning_ok {
            failures.push(format!("{}:\n{output}", fixture.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The invalid samples whose only problems concern one mirror: the daemon loads them and
/// serves the other mirrors, so `check-config` exits 1 for them, not 2.
const MIRROR_PROBLEMS: [&str; 7] = [
    "missing-repository.toml",
    "not-a-repository.toml",
    "password-file-missing.toml",
    "password-file-readable.toml",
    "ssh-key-readable.toml",
    "ssh-without-pinned-host-keys.toml",
    "unsupported-scheme.toml",
];

#[test]
fn invalid_samples_fail_with_the_announced_error() {
    let env = fixture_env();
    let mut failures = Vec::new();
    for fixture in fixtures("invalid") {
        let text = fs::read_to_string(&fixture).expect("read the sample");
        let Some(expected) = announced(&text, "expect") else {
            failures.push(format!(
                "{}: the first line must be `# expect: <line>:<column>: <message>`",
                fixture.display()
            ));
            continue;
        };
        let (config, output) = check_config(&env, &fixture);
        let wanted = format!("error: {}:{expected}", config.display());
        // A file the daemon loads, with problems of one mirror, is 1; one it refuses is 2.
        let name = fixture.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let code = if MIRROR_PROBLEMS.contains(&name) {
            1
        } else {
            2
        };
        if output.code() != Some(code)
            || !output.stdout.is_empty()
            || !output.stderr.contains(&wanted)
        {
            failures.push(format!(
                "{}: expected exit {code} and `{wanted}` on stderr\n{output}",
                fixture.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_config_environment_variable_is_honoured_and_config_wins_over_it() {
    let env = fixture_env();
    // `pushmirror_command` points PUSHMIRROR_CONFIG at `config_path()`.
    let from_env = env.write_config(
        "[[mirror]]\nname = \"app\"\nrepo = \"repos/app.git\"\nurl = \"https://h/app.git\"\n",
    );
    let output = env.pushmirror(&["check-config"]);
    output.assert_code(0);
    assert_eq!(
        output.stdout,
        format!("{}: ok, 1 mirror\n", from_env.display())
    );
    assert_eq!(output.stderr, "");

    let explicit = env.write_file("explicit.toml", "[daemon]\nstate_dir = \"state\"\n");
    let explicit_arg = explicit.to_str().expect("a UTF-8 temporary path");
    let output = env.pushmirror(&["--config", explicit_arg, "check-config"]);
    output.assert_code(0);
    assert_eq!(output.stdout, format!("{explicit_arg}: ok, 0 mirrors\n"));
}

#[test]
fn a_missing_file_is_named_with_its_cause() {
    let env = TestEnv::new();
    let missing = env.path("absent.toml");
    let missing_arg = missing.to_str().expect("a UTF-8 temporary path");
    let output = env.pushmirror(&["--config", missing_arg, "check-config"]);
    output.assert_code(2);
    assert_eq!(output.stdout, "");
    assert_eq!(
        output.stderr,
        format!(
            "error: cannot read configuration file {missing_arg}\n  \
             caused by: No such file or directory (os error 2)\n"
        )
    );
}

#[test]
fn a_missing_repository_is_an_error_with_its_position() {
    let env = fixture_env();
    let config = env.write_config(
        "[[mirror]]\nname = \"good\"\nrepo = \"repos/app.git\"\nurl = \"https://h/a.git\"\n\n\
         [[mirror]]\nname = \"gone\"\nrepo = \"repos/gone.git\"\nurl = \"https://h/b.git\"\n",
    );
    let output = env.pushmirror(&["check-config"]);
    // 1, not 2: the daemon loads this file and mirrors `good` (issue 12, point 2).
    output.assert_code(1);
    assert_eq!(output.stdout, "");
    assert_eq!(
        output.stderr,
        format!(
            "error: {}:8:8: mirror `gone`: repository {} does not exist\n",
            config.display(),
            env.path("repos/gone.git").display()
        )
    );
}

#[test]
fn a_file_the_daemon_refuses_is_2_even_with_mirror_problems_too() {
    let env = fixture_env();
    env.write_config(
        "[daemon]\nbogus = 1\n\n[[mirror]]\nname = \"gone\"\nrepo = \"repos/gone.git\"\n\
         url = \"https://h/b.git\"\n",
    );
    let output = env.pushmirror(&["check-config"]);
    output.assert_code(2);
    assert!(
        output.stderr.contains(":2:1: unknown key `bogus`"),
        "{output}"
    );
}

#[test]
fn every_error_of_a_file_is_reported_in_file_order() {
    let env = fixture_env();
    let config = env.write_config(
        "[daemon]\nmax_parallel_pushes = 0\n\n[defaults]\ndelay = 5\n\n\
         [[mirror]]\nname = \"a\"\nrepo = \"repos/app.git\"\nurl = \"https://h/a.git\"\n\
         color = \"red\"\n\n\
         [[mirror]]\nname = \"a\"\nrepo = \"repos/lib.git\"\nurl = \"\"\n",
    );
    let output = env.pushmirror(&["check-config"]);
    output.assert_code(2);
    let path = config.display();
    let expected = [
        format!("error: {path}:2:23: `max_parallel_pushes` must be from 1 to 1024, not 0"),
        format!(
            "error: {path}:5:9: `delay`: invalid type: integer `5`, expected a string; \
             durations are strings such as \"30s\", \"5m\", \"1h\""
        ),
        format!("error: {path}:11:1: unknown key `color`, expected one of `name`, "),
        format!(
            "error: {path}:14:8: duplicate mirror name \"a\": already used by the mirror at \
             line 8"
        ),
        format!("error: {path}:16:7: `url` is empty"),
    ];
    let lines: Vec<&str> = output.stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{output}");
    for (line, expected) in lines.iter().zip(&expected) {
        assert!(line.starts_with(expected.as_str()), "{line}\n{output}");
    }
}

/// The shipped unit's `ExecStartPre=` line, run as systemd would run it (`$$` unescaped) on
/// this binary and configuration: it fails only on a file the daemon cannot load.
#[test]
fn the_units_start_check_refuses_only_a_file_the_daemon_cannot_load() {
    let unit = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/pushmirror.service"
    ))
    .expect("read the shipped unit");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .expect("an ExecStartPre= line");
    let script = line
        .strip_prefix("/bin/sh -c '")
        .and_then(|rest| rest.strip_suffix('\''))
        .expect("ExecStartPre=/bin/sh -c '...'");
    let env = fixture_env();
    let config = env.config_path();
    let script = script
        .replace("$$", "$")
        .replace(
            "/usr/local/bin/pushmirror",
            env!("CARGO_BIN_EXE_pushmirror"),
        )
        .replace(
            "/etc/pushmirror/pushmirror.toml",
            config.to_str().expect("a UTF-8 temporary path"),
        );
    let start_check = |toml: &str| {
        env.write_config(toml);
        env.run(env.command("/bin/sh").args(["-c", &script]))
    };
    let good = "[[mirror]]\nname = \"good\"\nrepo = \"repos/app.git\"\nurl = \"https://h/a.git\"\n";
    start_check(good).assert_success();
    let one_bad = format!(
        "{good}\n[[mirror]]\nname = \"gone\"\nrepo = \"repos/gone.git\"\nurl = \"https://h/b.git\"\n"
    );
    let out = start_check(&one_bad);
    out.assert_success();
    assert!(out.stderr.contains("mirror `gone`: repository"), "{out}");
    let broken = start_check(&format!("{good}bogus = 1\n"));
    assert_ne!(broken.code(), Some(0), "{broken}");
}
