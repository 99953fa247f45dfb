//! Object formats and shallow repositories end to end, through the scratch repository the
//! engine pushes from: SHA-256 repositories mirrored over `file://`, `git://` and through the
//! daemon and its hook; a remote of the other format refused with a clear, permanent error
//! before anything moves; shallow repositories pushed exactly as `git push` from them would.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::engine::{mirror_toml, status, write_config};
use crate::support::{GitDaemon, TestEnv, wait_until};

/// Makes a bare repository at `name` (relative to the root) in object format `format`
/// (`sha1` or `sha256`), default branch `main`.
fn bare_repo(env: &TestEnv, name: impl AsRef<Path>, format: &str) -> PathBuf {
    let path = env.path(name);
    fs::create_dir_all(&path).expect("repository directory");
    env.git(
        &path,
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            &format!("--object-format={format}"),
        ],
    );
    path
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// `git for-each-ref` of the branches and tags of `repo`, as git prints it (object name,
/// type, ref name): the text both sides must agree on exactly.
fn heads_and_tags(env: &TestEnv, repo: &Path) -> String {
    env.git(repo, &["for-each-ref", "refs/heads/", "refs/tags/"])
}

fn update(env: &TestEnv, name: &str) -> crate::support::Output {
    env.pushmirror(&["update", name])
}

/// The scratch repository of mirror `name`.
fn scratch(env: &TestEnv, name: &str) -> PathBuf {
    env.path(format!("state/scratch/{name}.git"))
}

/// Asserts that mirror `name`'s scratch repository has `real`'s object format in its own
/// config and `real`'s `shallow` file, byte for byte (or none when `real` has none).
fn assert_scratch_matches(env: &TestEnv, name: &str, real: &Path) {
    let scratch = scratch(env, name);
    let format = |repo: &Path| env.git(repo, &["rev-parse", "--show-object-format"]);
    assert_eq!(format(&scratch), format(real), "{}", scratch.display());
    let own_config = fs::read_to_string(scratch.join("config")).expect("scratch config");
    if format(real) == "sha256" {
        assert!(
            own_config.contains("\tobjectformat = sha256\n"),
            "{own_config}"
        );
    }
    assert_eq!(
        fs::read(scratch.join("shallow")).ok(),
        fs::read(real.join("shallow")).ok(),
        "the shallow file of {}",
        scratch.display()
    );
}

/// A SHA-256 local repository: `main` (c2), `develop` (c3), `feature` (c1) and an annotated
/// tag `v1` on c1. Returns it and its commits c1, c2, c3.
fn sha256_local(env: &TestEnv) -> (PathBuf, [String; 3]) {
    let local = bare_repo(env, "local.git", "sha256");
    let c1 = env.make_commit_on(&local, None, "c1");
    let c2 = env.make_commit_on(&local, Some(&c1), "c2");
    let c3 = env.make_commit_on(&local, Some(&c2), "c3");
    assert_eq!(c1.len(), 64, "a SHA-256 commit: {c1}");
    env.set_ref(&local, "refs/heads/main", &c2);
    env.set_ref(&local, "refs/heads/develop", &c3);
    env.set_ref(&local, "refs/heads/feature", &c1);
    env.tag_annotated(&local, "v1", &c1);
    (local, [c1, c2, c3])
}

/// Mirrors a SHA-256 repository to the empty SHA-256 `remote` at `url`: a first sync, then a
/// fast-forward, a forced update (with its lease), a new tag and a delete in one update.
fn sha256_mirror_every_kind_of_change(env: &TestEnv, remote: &Path, url: &str) {
    let (local, [c1, c2, c3]) = sha256_local(env);
    write_config(env, &mirror_toml("m", &local, url, ""));

    let out = update(env, "m");
    out.assert_success();
    assert!(
        out.stdout.contains("(4 created, 0 updated, 0 deleted)"),
        "{out}"
    );
    assert_eq!(heads_and_tags(env, remote), heads_and_tags(env, &local));
    let s = status(env, "m");
    assert_eq!(s["update_status"], "finished", "{s:#}");
    assert_eq!(s["refs_created"], 4, "{s:#}");
    assert_eq!(s["last_error"], Value::Null, "{s:#}");
    assert_scratch_matches(env, "m", &local);

    // main fast-forwards, develop is rewritten (forced, leased on its old value), feature
    // goes (leased too).
    let c4 = env.make_commit_on(&local, Some(&c3), "c4");
    env.set_ref(&local, "refs/heads/main", &c4);
    let rewritten = env.make_commit_on(&local, Some(&c1), "rewrite");
    env.set_ref(&local, "refs/heads/develop", &rewritten);
    env.delete_ref(&local, "refs/heads/feature");
    env.set_ref(&local, "refs/tags/v2", &c4);
    // libgit2 then reads SHA-256 packs, packed refs and a commit-graph, not loose objects.
    env.git(&local, &["gc", "--quiet"]);
    assert!(local.join("packed-refs").exists() && !packs(&local).is_empty());
    let out = env.pushmirror_with_env(&[("RUST_LOG", "pushmirror=debug")], &["update", "m"]);
    out.assert_success();
    assert!(
        out.stdout.contains("(1 created, 2 updated, 1 deleted)"),
        "{out}"
    );
    // The leases, 64 digits each, were checked by the scratch repository's pre-push hook
    // (with the remote's all-zero name of the new tag), which refused none.
    let leases = fs::read_to_string(scratch(env, "m").join("pushmirror-leases")).expect("leases");
    for lease in [
        format!("refs/heads/develop {c3}\n"),
        format!("refs/heads/feature {c1}\n"),
        format!("refs/heads/main {c2}\n"),
        "refs/tags/v2 -\n".to_owned(),
    ] {
        assert!(leases.contains(&lease), "no {lease:?} in\n{leases}");
    }
    assert!(
        !scratch(env, "m").join("pushmirror-refused").exists(),
        "the hook refused a lease\n{out}"
    );
    assert_eq!(heads_and_tags(env, remote), heads_and_tags(env, &local));
    assert_eq!(env.rev_parse(remote, "refs/heads/main"), c4);
    let s = status(env, "m");
    assert_eq!(s["update_status"], "finished", "{s:#}");
    assert_eq!(
        (&s["refs_created"], &s["refs_updated"], &s["refs_deleted"]),
        (&Value::from(1), &Value::from(2), &Value::from(1)),
        "{s:#}"
    );
    assert_scratch_matches(env, "m", &local);

    // Nothing left to do.
    let out = update(env, "m");
    out.assert_success();
    assert!(
        out.stdout.contains("(0 created, 0 updated, 0 deleted)"),
        "{out}"
    );
}

#[test]
fn a_sha256_repository_is_mirrored_over_file_url() {
    let env = TestEnv::new();
    let remote = bare_repo(&env, "remote.git", "sha256");
    sha256_mirror_every_kind_of_change(&env, &remote, &file_url(&remote));
}

#[test]
fn a_sha256_repository_is_mirrored_over_git_daemon() {
    let env = TestEnv::new();
    let daemon = GitDaemon::start(&env, "gd");
    let remote = bare_repo(&env, daemon.base_path().join("remote.git"), "sha256");
    sha256_mirror_every_kind_of_change(&env, &remote, &daemon.url("remote.git"));
}

/// The daemon mirrors pushes to a SHA-256 repository told by its hook, whose lines carry
/// 64-digit names (a delete's new value is 64 zeros).
#[test]
fn the_daemon_mirrors_pushes_to_a_sha256_repository_through_its_hook() {
    let env = TestEnv::new();
    let repo = bare_repo(&env, "srv/app.git", "sha256");
    let remote = bare_repo(&env, "remotes/m.git", "sha256");
    write_config(
        &env,
        &mirror_toml(
            "m",
            &repo,
            &file_url(&remote),
            // topic is not merged: only `all` prunes it once deleted locally.
            "delay = \"0s\"\nprune = \"all\"",
        ),
    );
    env.pushmirror(&["install-hook", &repo.display().to_string()])
        .assert_success();
    let work = env.work_clone(&repo, "work");
    let daemon = env.start_daemon();
    let wait_in_line = |what: &str| {
        wait_until(what, Duration::from_secs(30), || {
            let (local, mirrored) = (heads_and_tags(&env, &repo), heads_and_tags(&env, &remote));
            if local == mirrored && status(&env, "m")["update_status"] == "finished" {
                Ok(())
            } else {
                Err(format!(
                    "local:\n{local}\nremote:\n{mirrored}\n--- daemon log ---\n{}",
                    daemon.log()
                ))
            }
        })
    };
    let main = env.commit(&work, "main", "file.txt", "one", "one");
    env.commit(&work, "topic", "file.txt", "two", "two");
    assert_eq!(main.len(), 64);
    wait_in_line("main and topic mirrored");

    // The delete arrives as `<old> 0{64} refs/heads/topic`: not skipped as malformed.
    let out = env.run(&mut env.git_command(&work, &["push", "origin", ":refs/heads/topic"]));
    out.assert_success();
    assert!(!out.stderr.contains("skipping"), "{out}");
    wait_in_line("topic deleted");
    assert!(!env.ref_exists(&remote, "refs/heads/topic"));
}

/// A SHA-256 local repository and a SHA-1 remote (and the reverse, whose names once reached
/// libgit2 and crashed the process): a clear permanent error naming both formats, and no
/// ref moves.
#[test]
fn a_remote_of_the_other_object_format_is_refused_and_nothing_moves() {
    let env = TestEnv::new();
    let (local, _) = sha256_local(&env);
    let sha1_remote = bare_repo(&env, "sha1-remote.git", "sha1");
    let sha1_commit = env.make_commit_on(&sha1_remote, None, "theirs");
    env.set_ref(&sha1_remote, "refs/heads/main", &sha1_commit);
    let sha1_empty = bare_repo(&env, "sha1-empty.git", "sha1");
    let sha1_local = bare_repo(&env, "sha1-local.git", "sha1");
    let mine = env.make_commit_on(&sha1_local, None, "mine");
    env.set_ref(&sha1_local, "refs/heads/main", &mine);
    let sha256_remote = bare_repo(&env, "sha256-remote.git", "sha256");
    let theirs = env.make_commit_on(&sha256_remote, None, "theirs");
    env.set_ref(&sha256_remote, "refs/heads/main", &theirs);
    write_config(
        &env,
        &[
            mirror_toml("to-sha1", &local, &file_url(&sha1_remote), ""),
            mirror_toml("to-empty-sha1", &local, &file_url(&sha1_empty), ""),
            mirror_toml("from-sha1", &sha1_local, &file_url(&sha256_remote), ""),
        ]
        .concat(),
    );
    let before: Vec<String> = [&sha1_remote, &sha1_empty, &sha256_remote]
        .iter()
        .map(|r| heads_and_tags(&env, r))
        .collect();

    let advice = "a mirror needs both in the same format (`git rev-parse --show-object-format` \
                  in each says which; create the remote with `git init --bare \
                  --object-format=<format>`)";
    let cases = [
        (
            "to-sha1",
            format!(
                "the remote repository's object format differs from the local repository's: \
                 the remote's refs/heads/main is {sha1_commit}, a sha1 name, and the local \
                 repository is sha256; {advice}"
            ),
        ),
        (
            "from-sha1",
            format!(
                "the remote repository's object format differs from the local repository's: \
                 the remote's refs/heads/main is {theirs}, a sha256 name, and the local \
                 repository is sha1; {advice}"
            ),
        ),
        // An empty remote advertises no names: git's push itself refuses (git 2.47's words).
        (
            "to-empty-sha1",
            format!(
                "the remote repository's object format differs from the local repository's: \
                 fatal: the receiving end does not support this repository's hash algorithm\n\
                 fatal: the remote end hung up unexpectedly; {advice}"
            ),
        ),
    ];
    for (name, error) in cases {
        let out = update(&env, name);
        out.assert_code(1);
        let shown: String = error.lines().map(|l| format!("  {l}\n")).collect();
        assert!(
            out.stdout.contains(&shown),
            "{name}: want\n{shown}in\n{out}"
        );
        let s = status(&env, name);
        assert_eq!(s["update_status"], "failed", "{s:#}");
        assert_eq!(s["last_error"], error.as_str(), "{s:#}");
    }
    let after: Vec<String> = [&sha1_remote, &sha1_empty, &sha256_remote]
        .iter()
        .map(|r| heads_and_tags(&env, r))
        .collect();
    assert_eq!(after, before);
}

/// Returns the total size of the packs in `repo` not named in `known`.
fn new_pack_bytes(repo: &Path, known: &[String]) -> u64 {
    packs(repo)
        .iter()
        .filter(|name| !known.contains(name))
        .map(|name| {
            fs::metadata(repo.join("objects/pack").join(name))
                .expect("pack")
                .len()
        })
        .sum()
}

/// The `.pack` files of `repo`.
fn packs(repo: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(repo.join("objects/pack"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".pack"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A history of four commits on `main` (`develop` at the third) in `format`, each adding a
/// file, in `full.git`; its depth-1 bare clone `shallow.git` (both branches).
fn full_and_shallow(env: &TestEnv, format: &str) -> (PathBuf, PathBuf) {
    let full = bare_repo(env, "full.git", format);
    let mut parent: Option<String> = None;
    for i in 1..=4 {
        let content = format!(
            "file {i}\n{}\n",
            "some text that git packs\n".repeat(40 * i)
        );
        let commit = env.commit_file_on(
            &full,
            parent.as_deref(),
            &format!("f{i}.txt"),
            &content,
            &format!("c{i}"),
        );
        if i == 3 {
            env.set_ref(&full, "refs/heads/develop", &commit);
        }
        parent = Some(commit);
    }
    env.set_ref(
        &full,
        "refs/heads/main",
        parent.as_deref().expect("four commits"),
    );
    let shallow = env.path("shallow.git");
    env.git(
        env.root(),
        &[
            "clone",
            "--quiet",
            "--bare",
            "--depth=1",
            "--no-single-branch",
            &file_url(&full),
            &shallow.display().to_string(),
        ],
    );
    assert!(shallow.join("shallow").exists(), "a shallow clone");
    (full, shallow)
}

/// A shallow repository whose remote has the full history: the update pushes exactly what
/// `git push` from the shallow repository pushes (the same pack bytes), and the remote ends
/// with the local refs.
fn shallow_pushes_as_git_push_would(format: &str) {
    let env = TestEnv::new();
    let (full, shallow) = full_and_shallow(&env, format);
    let remote = bare_repo(&env, "remote.git", format);
    env.git(
        &full,
        &[
            "push",
            "--quiet",
            &file_url(&remote),
            "refs/heads/*:refs/heads/*",
        ],
    );
    // Every push keeps its pack as received, so its size can be read.
    env.set_config(&remote, "transfer.unpackLimit", "1");
    write_config(&env, &mirror_toml("m", &shallow, &file_url(&remote), ""));
    let out = update(&env, "m");
    out.assert_success();
    assert!(
        out.stdout.contains("(0 created, 0 updated, 0 deleted)"),
        "{out}"
    );
    assert_scratch_matches(&env, "m", &shallow);

    // A new commit on main and a new branch off develop, made in the shallow repository.
    let main = env.rev_parse(&shallow, "refs/heads/main");
    let develop = env.rev_parse(&shallow, "refs/heads/develop");
    let text = "new text, not seen before\n".repeat(200);
    let n1 = env.commit_file_on(&shallow, Some(&main), "new.txt", &text, "n1");
    env.set_ref(&shallow, "refs/heads/main", &n1);
    let n2 = env.commit_file_on(&shallow, Some(&develop), "topic.txt", &text, "n2");
    env.set_ref(&shallow, "refs/heads/topic", &n2);
    // The same change pushed by git to a copy of the remote as it is now.
    let plain = env.path("plain.git");
    let copied = env.run(env.command("cp").arg("-a").arg(&remote).arg(&plain));
    copied.assert_success();
    let known = packs(&remote);

    let out = update(&env, "m");
    out.assert_success();
    assert!(
        out.stdout.contains("(1 created, 1 updated, 0 deleted)"),
        "{out}"
    );
    assert_eq!(
        heads_and_tags(&env, &remote),
        heads_and_tags(&env, &shallow)
    );
    assert_scratch_matches(&env, "m", &shallow);
    assert!(
        !remote.join("shallow").exists(),
        "the remote stays complete"
    );

    env.git(
        &shallow,
        &[
            "push",
            "--quiet",
            &file_url(&plain),
            "refs/heads/main",
            "refs/heads/topic",
        ],
    );
    assert_eq!(heads_and_tags(&env, &plain), heads_and_tags(&env, &remote));
    let (ours, gits) = (
        new_pack_bytes(&remote, &known),
        new_pack_bytes(&plain, &known),
    );
    assert!(ours > 0, "the update received no pack");
    assert_eq!(ours, gits, "pack bytes: pushmirror {ours}, git push {gits}");
}

#[test]
fn a_shallow_repository_pushes_what_git_push_from_it_would() {
    shallow_pushes_as_git_push_would("sha1");
}

#[test]
fn a_shallow_sha256_repository_pushes_what_git_push_from_it_would() {
    shallow_pushes_as_git_push_would("sha256");
}

/// A shallow repository to an empty remote: git's receive-pack refuses a shallow update
/// unless `receive.shallowUpdate` is true; the refusal is reported per ref and nothing
/// moves; once the remote allows it, the next update lands and the remote is as shallow.
#[test]
fn a_shallow_update_refused_by_the_remote_is_reported_until_it_is_allowed() {
    let env = TestEnv::new();
    let (_full, shallow) = full_and_shallow(&env, "sha1");
    let remote = bare_repo(&env, "remote.git", "sha1");
    write_config(&env, &mirror_toml("m", &shallow, &file_url(&remote), ""));

    let out = update(&env, "m");
    out.assert_code(1);
    assert!(
        out.stdout
            .contains("refs/heads/main (shallow update not allowed)"),
        "{out}"
    );
    assert_eq!(heads_and_tags(&env, &remote), "");
    let s = status(&env, "m");
    assert_eq!(s["update_status"], "failed", "{s:#}");
    let rejected = s["rejected_refs"].as_array().expect("rejected refs");
    assert!(
        rejected.iter().any(|r| r["ref"] == "refs/heads/main"
            && r["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains("shallow update not allowed"))),
        "{s:#}"
    );
    assert_scratch_matches(&env, "m", &shallow);

    env.set_config(&remote, "receive.shallowUpdate", "true");
    let out = update(&env, "m");
    out.assert_success();
    assert_eq!(
        heads_and_tags(&env, &remote),
        heads_and_tags(&env, &shallow)
    );
    let s = status(&env, "m");
    assert_eq!(s["update_status"], "finished", "{s:#}");
    assert_eq!(s["rejected_refs"], serde_json::json!([]), "{s:#}");
    // receive-pack writes the same boundary commits, in its own order.
    let boundary = |repo: &Path| {
        let text = fs::read_to_string(repo.join("shallow")).expect("a shallow file");
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(boundary(&remote), boundary(&shallow));
    assert_scratch_matches(&env, "m", &shallow);
}
