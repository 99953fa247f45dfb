//! The post-receive hook end to end, without a daemon: `pushmirror notify` spools what it
//! cannot deliver, and `pushmirror install-hook` installs a hook that real `git push`es run,
//! chaining a hook that was already there.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Output, TestEnv, ZERO_OID};

const A: &str = "1111111111111111111111111111111111111111";
const B: &str = "2222222222222222222222222222222222222222";

/// A config with `state_dir = "state"` (created) plus `extra` in `[daemon]`.
fn configure(env: &TestEnv, extra: &str) {
    env.write_config(&format!("[daemon]\nstate_dir = \"state\"\n{extra}"));
    fs::create_dir_all(env.path("state")).unwrap();
}

/// The spooled notifications as (file, JSON), oldest first by name.
fn spooled(env: &TestEnv) -> Vec<(PathBuf, Value)> {
    let dir = env.path("state/spool");
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => return Vec::new(),
    };
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
            (path, json)
        })
        .collect()
}

/// `(ref, old, new)` of each ref in a spooled notification.
fn refs_of(json: &Value) -> Vec<(String, String, String)> {
    let mut refs: Vec<_> = json["refs"]
        .as_array()
        .expect("refs array")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().expect("string").to_owned();
            (s("ref"), s("old"), s("new"))
        })
        .collect();
    refs.sort();
    refs
}

/// Runs `pushmirror notify` as git runs it in bare `repo` (`GIT_DIR=.`, cwd the repository).
fn notify(env: &TestEnv, repo: &Path, input: &str) -> Output {
    let mut cmd = env.pushmirror_command(&["notify"]);
    cmd.current_dir(repo).env("GIT_DIR", ".");
    env.run_with_stdin(&mut cmd, input.as_bytes())
}

fn install_hook(env: &TestEnv, repos: &[&Path]) -> Output {
    let mut args = vec!["install-hook".to_owned()];
    args.extend(repos.iter().map(|r| r.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.pushmirror(&args)
}

/// Commits a change of `file.txt` in `work` on `main` (creating the branch in an empty
/// clone) and returns the new commit.
fn commit(env: &TestEnv, work: &Path, content: &str) -> String {
    if !env.ref_exists(work, "HEAD") {
        env.git(work, &["symbolic-ref", "HEAD", "refs/heads/main"]);
    }
    env.write_file(work.join("file.txt"), content);
    env.git(work, &["add", "file.txt"]);
    env.git(work, &["commit", "--quiet", "-m", content]);
    env.rev_parse(work, "HEAD")
}

/// Pushes `refspecs` from `work` to `repo` through `file://`; returns git's output.
fn push(env: &TestEnv, work: &Path, repo: &Path, refspecs: &[&str]) -> Output {
    let url = format!("file://{}", repo.display());
    let mut args = vec!["push", url.as_str()];
    args.extend_from_slice(refspecs);
    let out = env.run(&mut env.git_command(work, &args));
    out.assert_success();
    out
}

fn canonical(path: &Path) -> String {
    path.canonicalize().unwrap().display().to_string()
}

#[test]
fn notify_without_daemon_spools_and_says_so() {
    let env = TestEnv::new();
    configure(&env, "");
    let repo = env.bare_repo("app.git");
    let input = format!("{ZERO_OID} {A} refs/heads/main\nnot a ref line\n{A} {B} refs/tags/v1\n");
    let started = Instant::now();
    let out = notify(&env, &repo, &input);
    let elapsed = started.elapsed();
    out.assert_success();
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}\n{out}");
    assert_eq!(out.stdout, "", "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[0],
        "pushmirror: skipping malformed hook input line 2: \"not a ref line\""
    );
    let files = spooled(&env);
    assert_eq!(files.len(), 1, "{out}");
    let (file, json) = &files[0];
    assert_eq!(
        lines[1],
        format!(
            "pushmirror: the mirror daemon did not answer (the pushmirror daemon is not running (no socket at {})); the push was queued in {} and will be mirrored when it runs",
            env.path("state/control.sock").display(),
            file.display()
        )
    );
    assert_eq!(json["repo"], canonical(&repo));
    assert_eq!(
        refs_of(json),
        [
            ("refs/heads/main".into(), ZERO_OID.into(), A.into()),
            ("refs/tags/v1".into(), A.into(), B.into()),
        ]
    );
}

#[test]
fn notify_with_a_broken_config_still_spools() {
    let env = TestEnv::new();
    configure(&env, "no_such_key = 1\n\n[[mirror]]\nname = 42\n");
    env.pushmirror(&["check-config"]).assert_code(2);
    let repo = env.bare_repo("app.git");
    let out = notify(&env, &repo, &format!("{ZERO_OID} {A} refs/heads/main\n"));
    out.assert_success();
    assert!(out.stderr.contains("the push was queued in"), "{out}");
    let files = spooled(&env);
    assert_eq!(files.len(), 1, "{out}");
    assert_eq!(files[0].1["repo"], canonical(&repo));
}

#[test]
fn notify_with_nothing_to_do_is_silent() {
    let env = TestEnv::new();
    configure(&env, "");
    let repo = env.bare_repo("app.git");
    let out = notify(&env, &repo, "");
    out.assert_success();
    assert_eq!(out.stderr, "", "{out}");
    assert!(spooled(&env).is_empty());
}

#[test]
fn push_through_the_installed_hook_is_spooled() {
    let env = TestEnv::new();
    configure(&env, "");
    let repo = env.bare_repo("srv/app.git");
    let work = env.work_clone(&repo, "work");
    let out = install_hook(&env, &[&repo]);
    out.assert_success();
    assert_eq!(
        out.stdout.trim_end(),
        format!(
            "{}: installed ({}/hooks/post-receive)",
            repo.display(),
            canonical(&repo)
        ),
        "{out}"
    );
    let hook = fs::read_to_string(repo.join("hooks/post-receive")).unwrap();
    assert!(
        hook.starts_with("#!/bin/sh\n# managed by pushmirror install-hook\n"),
        "{hook}"
    );
    assert!(
        hook.contains(&format!(
            "--config '{}' notify",
            canonical(&env.config_path())
        )),
        "{hook}"
    );

    let head = commit(&env, &work, "one");
    let out = push(&env, &work, &repo, &["HEAD:refs/heads/main"]);
    assert!(
        out.stderr
            .contains("remote: pushmirror: the mirror daemon did not answer ("),
        "{out}"
    );
    let files = spooled(&env);
    assert_eq!(files.len(), 1, "{out}");
    assert_eq!(files[0].1["repo"], canonical(&repo));
    assert_eq!(
        refs_of(&files[0].1),
        [("refs/heads/main".into(), ZERO_OID.into(), head)]
    );
}

#[test]
fn an_existing_hook_keeps_running_with_the_same_input() {
    let env = TestEnv::new();
    configure(&env, "");
    let repo = env.bare_repo("app.git");
    let work = env.work_clone(&repo, "work");
    let seen = env.path("seen-by-old-hook.txt");
    let old_hook = format!("#!/bin/sh\ncat > '{}'\necho old hook ran\n", seen.display());
    env.install_hook(&repo, "post-receive", &old_hook);

    let out = install_hook(&env, &[&repo]);
    out.assert_success();
    assert!(
        out.stdout
            .contains(": installed, chaining the existing hook ("),
        "{out}"
    );
    assert_eq!(
        fs::read_to_string(repo.join("hooks/post-receive.chained")).unwrap(),
        old_hook
    );

    let head = commit(&env, &work, "one");
    env.git(&work, &["tag", "v1"]);
    let out = push(
        &env,
        &work,
        &repo,
        &["HEAD:refs/heads/main", "refs/tags/v1"],
    );
    assert!(out.stderr.contains("remote: old hook ran"), "{out}");
    assert!(
        out.stderr
            .contains("remote: pushmirror: the mirror daemon did not answer"),
        "{out}"
    );

    let text = fs::read_to_string(&seen).unwrap();
    assert!(text.ends_with('\n'), "{text:?}");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("{ZERO_OID} {head} refs/heads/main"),
            format!("{ZERO_OID} {head} refs/tags/v1"),
        ]
    );
    let files = spooled(&env);
    assert_eq!(files.len(), 1, "{out}");
    assert_eq!(
        refs_of(&files[0].1),
        [
            ("refs/heads/main".into(), ZERO_OID.into(), head.clone()),
            ("refs/tags/v1".into(), ZERO_OID.into(), head),
        ]
    );
}

#[test]
fn installing_twice_changes_nothing() {
    let env = TestEnv::new();
    configure(&env, "");
    let plain = env.bare_repo("plain.git");
    let chained = env.bare_repo("chained.git");
    env.install_hook(&chained, "post-receive", "#!/bin/sh\nexit 0\n");

    install_hook(&env, &[&plain, &chained]).assert_success();
    let read = |repo: &Path, name: &str| fs::read(repo.join("hooks").join(name)).ok();
    let before = [
        read(&plain, "post-receive"),
        read(&chained, "post-receive"),
        read(&chained, "post-receive.chained"),
    ];

    let out = install_hook(&env, &[&plain, &chained]);
    out.assert_success();
    assert_eq!(
        out.stdout.matches(": already installed (").count(),
        2,
        "{out}"
    );
    let after = [
        read(&plain, "post-receive"),
        read(&chained, "post-receive"),
        read(&chained, "post-receive.chained"),
    ];
    assert_eq!(before, after);
    assert!(read(&plain, "post-receive.chained").is_none());
    let hooks: Vec<String> = fs::read_dir(chained.join("hooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("post-receive"))
        .collect();
    assert_eq!(hooks.len(), 2, "{hooks:?}");
}

#[test]
fn core_hooks_path_gets_the_hook() {
    let env = TestEnv::new();
    configure(&env, "");
    let repo = env.bare_repo("app.git");
    let shared = env.path("shared-hooks");
    fs::create_dir_all(&shared).unwrap();
    env.set_config(&repo, "core.hooksPath", &shared.display().to_string());
    let work = env.work_clone(&repo, "work");

    let out = install_hook(&env, &[&repo]);
    out.assert_success();
    assert!(
        out.stdout.contains("uses core.hooksPath")
            && out.stdout.contains("serves every repository"),
        "{out}"
    );
    assert!(shared.join("post-receive").exists(), "{out}");
    assert!(!repo.join("hooks/post-receive").exists(), "{out}");

    let head = commit(&env, &work, "one");
    push(&env, &work, &repo, &["HEAD:refs/heads/main"]);
    let files = spooled(&env);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].1["repo"], canonical(&repo));
    assert_eq!(
        refs_of(&files[0].1),
        [("refs/heads/main".into(), ZERO_OID.into(), head)]
    );
}

#[test]
fn a_path_that_is_not_a_repository_fails_after_the_others() {
    let env = TestEnv::new();
    configure(&env, "");
    let repo = env.bare_repo("app.git");
    let plain = env.path("not-a-repo");
    fs::create_dir_all(&plain).unwrap();
    let out = install_hook(&env, &[&plain, &repo]);
    out.assert_code(2);
    assert!(
        out.stderr.contains(&format!(
            "error: {} is not a git repository",
            plain.display()
        )),
        "{out}"
    );
    assert!(repo.join("hooks/post-receive").exists(), "{out}");
}

#[test]
fn garbage_input_is_summed_up_in_one_line() {
    let env = TestEnv::new();
    configure(&env, "");
    let repo = env.bare_repo("app.git");
    let mut input = "garbage that is no ref line\n".repeat(100_000);
    input.push_str(&format!("{ZERO_OID} {A} refs/heads/main\n"));
    let out = notify(&env, &repo, &input);
    out.assert_success();
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "{}",
        &out.stderr[..out.stderr.len().min(2000)]
    );
    assert_eq!(
        lines[0],
        "pushmirror: skipping 100000 malformed hook input lines (1, 2, 3, 4, 5, ...); line 1: \"garbage that is no ref line\""
    );
    assert!(lines[1].contains("the push was queued in"), "{out}");
    assert_eq!(spooled(&env).len(), 1, "{out}");
}
