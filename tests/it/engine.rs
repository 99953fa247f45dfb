//! The mirror engine end to end: the real `pushmirror update` binary against real remotes
//! (`file://` here), one rule of SPEC section 5 per test.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::support::TestEnv;

/// A config with `state_dir` in the test's directory and the given `[[mirror]]` tables.
pub fn write_config(env: &TestEnv, mirrors: &str) {
    env.write_config(&format!("[daemon]\nstate_dir = \"state\"\n\n{mirrors}"));
}

/// One `[[mirror]]` table named `name` from `repo` to `url`, plus `extra` lines.
pub fn mirror_toml(name: &str, repo: &Path, url: &str, extra: &str) -> String {
    format!(
        "[[mirror]]\nname = \"{name}\"\nrepo = \"{}\"\nurl = \"{url}\"\n{extra}\n",
        repo.display()
    )
}

/// Returns `status --json` of mirror `name`.
pub fn status(env: &TestEnv, name: &str) -> Value {
    let out = env.pushmirror(&["status", "--json", name]);
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    doc["mirrors"][0].clone()
}

/// Returns the branches and tags of `repo`, symbolic refs left out.
pub fn mirrored_refs(env: &TestEnv, repo: &Path) -> BTreeMap<String, String> {
    env.mirrored_refs(repo)
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// A local repository with `main` (two commits), `develop` (one more), an annotated tag `v1`
/// on main's first commit, and a symbolic ref; and an empty remote.
struct Fixture {
    env: TestEnv,
    local: std::path::PathBuf,
    remote: std::path::PathBuf,
    c1: String,
    c2: String,
    c3: String,
}

fn fixture() -> Fixture {
    let env = TestEnv::new();
    let local = env.bare_repo("local.git");
    let remote = env.bare_repo("remote.git");
    let c1 = env.make_commit_on(&local, None, "c1");
    let c2 = env.make_commit_on(&local, Some(&c1), "c2");
    let c3 = env.make_commit_on(&local, Some(&c2), "c3");
    env.set_ref(&local, "refs/heads/main", &c2);
    env.set_ref(&local, "refs/heads/develop", &c3);
    env.tag_annotated(&local, "v1", &c1);
    env.symbolic_ref(&local, "refs/heads/alias", "refs/heads/main");
    env.set_ref(&local, "refs/notes/commits", &c1);
    Fixture {
        env,
        local,
        remote,
        c1,
        c2,
        c3,
    }
}

fn update(env: &TestEnv, name: &str) -> crate::support::Output {
    env.pushmirror(&["update", name])
}

#[test]
fn first_update_creates_branches_and_tags_only() {
    let f = fixture();
    write_config(
        &f.env,
        &mirror_toml("m", &f.local, &file_url(&f.remote), ""),
    );
    update(&f.env, "m").assert_success();

    assert_eq!(
        mirrored_refs(&f.env, &f.remote),
        mirrored_refs(&f.env, &f.local)
    );
    assert!(!f.env.refs(&f.remote).contains_key("refs/notes/commits"));
    // The annotated tag arrives as the same tag object.
    assert_eq!(f.env.rev_parse(&f.remote, "refs/tags/v1^{commit}"), f.c1);

    let s = status(&f.env, "m");
    assert_eq!(s["update_status"], "finished", "{s:#}");
    assert_eq!(s["refs_created"], 3, "{s:#}");
    assert_eq!(s["last_error"], Value::Null);
    assert!(s["last_successful_update_at"].is_string(), "{s:#}");
}

#[test]
fn second_update_without_changes_does_nothing() {
    let f = fixture();
    write_config(
        &f.env,
        &mirror_toml("m", &f.local, &file_url(&f.remote), ""),
    );
    update(&f.env, "m").assert_success();
    let out = update(&f.env, "m");
    out.assert_success();
    assert!(
        out.stdout.contains("0 created, 0 updated, 0 deleted"),
        "{out}"
    );
}

#[test]
fn default_branch_is_pushed_alone_first_to_an_empty_remote() {
    let f = fixture();
    f.env.symbolic_ref(&f.local, "HEAD", "refs/heads/develop");
    f.env.install_hook(
        &f.remote,
        "post-receive",
        "#!/bin/sh\n{ cat; echo --; } >> \"$GIT_DIR/pushes.log\"\n",
    );
    write_config(
        &f.env,
        &mirror_toml("m", &f.local, &file_url(&f.remote), ""),
    );
    update(&f.env, "m").assert_success();
    let log = std::fs::read_to_string(f.remote.join("pushes.log")).expect("hook log");
    let pushes: Vec<&str> = log.split("--\n").filter(|p| !p.is_empty()).collect();
    assert_eq!(pushes.len(), 2, "{log}");
    assert!(
        pushes[0].trim_end().ends_with("refs/heads/develop"),
        "{log}"
    );
    assert_eq!(pushes[0].lines().count(), 1, "{log}");
}

#[test]
fn fast_forward_force_and_merged_deletion() {
    let f = fixture();
    let env = &f.env;
    write_config(env, &mirror_toml("m", &f.local, &file_url(&f.remote), ""));
    update(env, "m").assert_success();

    // Locally: main fast-forwards, develop is rewritten, a merged branch is deleted.
    env.set_ref(&f.local, "refs/heads/main", &f.c3);
    let rewritten = env.make_commit_on(&f.local, Some(&f.c1), "rewrite");
    env.set_ref(&f.local, "refs/heads/develop", &rewritten);
    // On the remote only: one branch merged into local main, one unmerged.
    let unmerged = env.make_commit_on(&f.remote, Some(&f.c2), "remote work");
    env.set_ref(&f.remote, "refs/heads/merged", &f.c2);
    env.set_ref(&f.remote, "refs/heads/unmerged", &unmerged);
    env.set_ref(&f.remote, "refs/pull/1/head", &unmerged);

    update(env, "m").assert_success();
    let remote = env.refs(&f.remote);
    assert_eq!(remote["refs/heads/main"], f.c3);
    assert_eq!(remote["refs/heads/develop"], rewritten);
    assert!(!remote.contains_key("refs/heads/merged"), "{remote:#?}");
    assert_eq!(remote["refs/heads/unmerged"], unmerged);
    assert_eq!(remote["refs/pull/1/head"], unmerged);
    let s = status(env, "m");
    assert_eq!(
        (
            s["refs_created"].clone(),
            s["refs_updated"].clone(),
            s["refs_deleted"].clone()
        ),
        (0.into(), 2.into(), 1.into()),
        "{s:#}"
    );
}

#[test]
fn prune_all_and_none() {
    for (prune, kept) in [("all", false), ("none", true)] {
        let f = fixture();
        let env = &f.env;
        let extra = format!("prune = \"{prune}\"");
        write_config(
            env,
            &mirror_toml("m", &f.local, &file_url(&f.remote), &extra),
        );
        let unmerged = env.make_commit_on(&f.remote, None, "remote only");
        env.set_ref(&f.remote, "refs/heads/unmerged", &unmerged);
        update(env, "m").assert_success();
        assert_eq!(
            env.refs(&f.remote).contains_key("refs/heads/unmerged"),
            kept,
            "prune = {prune}"
        );
    }
}

#[test]
fn keep_divergent_refs_gitlab_example() {
    // GitLab's documented example: main and develop mirrored; a commit is added to develop on
    // the remote; the next update fast-forwards main, leaves develop with the remote's commit
    // and marks the update failed.
    let f = fixture();
    let env = &f.env;
    write_config(
        env,
        &mirror_toml(
            "m",
            &f.local,
            &file_url(&f.remote),
            "keep_divergent_refs = true",
        ),
    );
    update(env, "m").assert_success();
    let remote_commit = env.make_commit_on(&f.remote, Some(&f.c3), "on the remote");
    env.set_ref(&f.remote, "refs/heads/develop", &remote_commit);
    let local_only = env.make_commit_on(&f.local, Some(&f.c3), "local develop");
    env.set_ref(&f.local, "refs/heads/develop", &local_only);
    env.set_ref(&f.local, "refs/heads/main", &f.c3);
    // A remote-only branch is left alone when keeping divergent refs.
    env.set_ref(&f.remote, "refs/heads/remote-only", &f.c1);

    let out = update(env, "m");
    out.assert_code(1);
    let remote = env.refs(&f.remote);
    assert_eq!(remote["refs/heads/main"], f.c3, "main fast-forwarded");
    assert_eq!(remote["refs/heads/develop"], remote_commit, "develop kept");
    assert!(remote.contains_key("refs/heads/remote-only"));
    let s = status(env, "m");
    assert_eq!(s["update_status"], "failed", "{s:#}");
    assert_eq!(
        s["last_error"],
        "Some refs have diverged and have not been updated on the remote:\n\nrefs/heads/develop"
    );
    assert_eq!(
        s["divergent_refs"],
        serde_json::json!(["refs/heads/develop"])
    );
    assert_eq!(s["refs_updated"], 1);
}

#[test]
fn moved_tag_is_diverged_when_keeping_and_forced_otherwise() {
    for keep in [true, false] {
        let f = fixture();
        let env = &f.env;
        let extra = format!("keep_divergent_refs = {keep}");
        write_config(
            env,
            &mirror_toml("m", &f.local, &file_url(&f.remote), &extra),
        );
        update(env, "m").assert_success();
        env.delete_ref(&f.local, "refs/tags/v1");
        env.set_ref(&f.local, "refs/tags/v1", &f.c2);
        let out = update(env, "m");
        let remote_tag = env.rev_parse(&f.remote, "refs/tags/v1^{commit}");
        let s = status(env, "m");
        if keep {
            out.assert_code(1);
            assert_eq!(remote_tag, f.c1);
            assert_eq!(
                s["divergent_refs"],
                serde_json::json!(["refs/tags/v1"]),
                "{s:#}"
            );
        } else {
            out.assert_success();
            assert_eq!(remote_tag, f.c2);
        }
    }
}

#[test]
fn protected_branches_filter_branches_never_tags() {
    let f = fixture();
    let env = &f.env;
    env.set_ref(&f.local, "refs/heads/release/1.0", &f.c1);
    let remote_only = env.make_commit_on(&f.remote, None, "remote only");
    env.set_ref(&f.remote, "refs/heads/feature-x", &remote_only);
    let extra = "only_protected_branches = true\nprotected_branches = [\"main\", \"release/*\"]\nprune = \"all\"";
    write_config(
        env,
        &mirror_toml("m", &f.local, &file_url(&f.remote), extra),
    );
    update(env, "m").assert_success();
    let names: Vec<String> = mirrored_refs(env, &f.remote).into_keys().collect();
    assert_eq!(
        names,
        [
            "refs/heads/feature-x",
            "refs/heads/main",
            "refs/heads/release/1.0",
            "refs/tags/v1"
        ],
        "develop is not protected; the unprotected remote-only branch is not pruned"
    );
}

#[test]
fn empty_protected_list_mirrors_tags_only() {
    let f = fixture();
    let extra = "only_protected_branches = true\nprotected_branches = []";
    write_config(
        &f.env,
        &mirror_toml("m", &f.local, &file_url(&f.remote), extra),
    );
    update(&f.env, "m").assert_success();
    let names: Vec<String> = mirrored_refs(&f.env, &f.remote).into_keys().collect();
    assert_eq!(names, ["refs/tags/v1"]);
}

#[test]
fn protected_default_is_the_default_branch_and_regex_filters() {
    let f = fixture();
    write_config(
        &f.env,
        &mirror_toml(
            "m",
            &f.local,
            &file_url(&f.remote),
            "only_protected_branches = true",
        ),
    );
    update(&f.env, "m").assert_success();
    let names: Vec<String> = mirrored_refs(&f.env, &f.remote).into_keys().collect();
    assert_eq!(names, ["refs/heads/main", "refs/tags/v1"]);

    let g = fixture();
    write_config(
        &g.env,
        &mirror_toml(
            "m",
            &g.local,
            &file_url(&g.remote),
            "mirror_branch_regex = \"^dev\"",
        ),
    );
    update(&g.env, "m").assert_success();
    let names: Vec<String> = mirrored_refs(&g.env, &g.remote).into_keys().collect();
    assert_eq!(names, ["refs/heads/develop", "refs/tags/v1"]);
}

#[test]
fn ref_refused_by_remote_hook_is_reported_and_others_land() {
    let f = fixture();
    let env = &f.env;
    env.install_update_hook_refusing(&f.remote, "refs/heads/develop");
    write_config(env, &mirror_toml("m", &f.local, &file_url(&f.remote), ""));
    let out = update(env, "m");
    out.assert_code(1);
    let remote = env.refs(&f.remote);
    assert_eq!(remote.get("refs/heads/main"), Some(&f.c2));
    assert!(remote.contains_key("refs/tags/v1"));
    assert!(!remote.contains_key("refs/heads/develop"));
    let s = status(env, "m");
    assert_eq!(s["update_status"], "failed", "{s:#}");
    assert_eq!(
        s["rejected_refs"],
        serde_json::json!([{
            "ref": "refs/heads/develop",
            "reason": "hook declined: refusing refs/heads/develop: protected by test hook"
        }])
    );
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("refs/heads/develop (hook declined: refusing refs/heads/develop"),
        "{s:#}"
    );
}

#[test]
fn ref_whose_name_conflicts_on_the_remote_is_a_permanent_rejection() {
    // The remote has `refs/heads/a/b` (unmerged work, so it is not pruned), which leaves no
    // room for a file `refs/heads/a`: git's receive-pack says "cannot lock ref", but nothing
    // is locked and no retry can help.
    let f = fixture();
    let env = &f.env;
    env.set_ref(&f.local, "refs/heads/a", &f.c1);
    let remote_work = env.make_commit_on(&f.remote, None, "remote work");
    env.set_ref(&f.remote, "refs/heads/a/b", &remote_work);
    write_config(env, &mirror_toml("m", &f.local, &file_url(&f.remote), ""));
    let out = update(env, "m");
    out.assert_code(1);
    let remote = env.refs(&f.remote);
    assert_eq!(remote.get("refs/heads/main"), Some(&f.c2), "{out}");
    assert_eq!(remote.get("refs/heads/a/b"), Some(&remote_work));
    assert!(!remote.contains_key("refs/heads/a"));
    let s = status(env, "m");
    assert_eq!(s["update_status"], "failed", "{s:#}");
    let reason = "failed to update ref: cannot lock ref 'refs/heads/a': 'refs/heads/a/b' exists; \
                  cannot create 'refs/heads/a'";
    assert_eq!(
        s["rejected_refs"],
        serde_json::json!([{"ref": "refs/heads/a", "reason": reason}]),
        "{s:#}"
    );
    assert_eq!(
        s["last_error"],
        format!("Some refs were rejected by the remote:\n\nrefs/heads/a ({reason})")
    );
}

#[test]
fn ref_held_by_a_lock_file_on_the_remote_is_rejected_with_gits_reason() {
    let f = fixture();
    let env = &f.env;
    write_config(env, &mirror_toml("m", &f.local, &file_url(&f.remote), ""));
    update(env, "m").assert_success();
    env.set_ref(&f.local, "refs/heads/main", &f.c3);
    // Another git process is updating main there, or one crashed and left its lock.
    std::fs::write(f.remote.join("refs/heads/main.lock"), "").expect("lock file made");
    let out = update(env, "m");
    out.assert_code(1);
    assert_eq!(env.rev_parse(&f.remote, "refs/heads/main"), f.c2);
    let s = status(env, "m");
    // Transient, but `pushmirror update` retries nothing: its one attempt is the last allowed
    // (the daemon retries it: daemon::the_last_allowed_retry_ends_failed_...).
    assert_eq!(s["update_status"], "failed", "{s:#}");
    let rejected = &s["rejected_refs"];
    assert_eq!(rejected[0]["ref"], "refs/heads/main", "{s:#}");
    let reason = rejected[0]["reason"].as_str().unwrap_or_default();
    let lock = f.remote.join("./refs/heads/main.lock");
    assert_eq!(
        reason,
        format!(
            "failed to update ref: cannot lock ref 'refs/heads/main': Unable to create '{}': \
             File exists.",
            lock.display()
        ),
        "{s:#}"
    );
}

#[test]
fn many_refs_are_split_by_refs_per_push() {
    let f = fixture();
    let env = &f.env;
    for i in 0..5 {
        env.set_ref(&f.local, &format!("refs/heads/b{i}"), &f.c1);
    }
    env.install_hook(
        &f.remote,
        "post-receive",
        "#!/bin/sh\necho push >> \"$GIT_DIR/pushes.log\"\n",
    );
    write_config(
        env,
        &mirror_toml("m", &f.local, &file_url(&f.remote), "refs_per_push = 3"),
    );
    update(env, "m").assert_success();
    assert_eq!(mirrored_refs(env, &f.remote), mirrored_refs(env, &f.local));
    // 8 refs: main alone (empty remote), then 3 + 3 + 1.
    let pushes = std::fs::read_to_string(f.remote.join("pushes.log")).expect("hook log");
    assert_eq!(pushes.lines().count(), 4, "{pushes}");
}

#[test]
fn remote_symbolic_refs_are_ignored() {
    let f = fixture();
    let env = &f.env;
    write_config(
        env,
        &mirror_toml("m", &f.local, &file_url(&f.remote), "prune = \"all\""),
    );
    update(env, "m").assert_success();
    env.symbolic_ref(&f.remote, "refs/heads/remote-alias", "refs/heads/main");
    update(env, "m").assert_success();
    let out = env.git(&f.remote, &["symbolic-ref", "refs/heads/remote-alias"]);
    assert_eq!(out.trim(), "refs/heads/main");
}

/// Updates push from the mirror's scratch repository (`<state_dir>/scratch/<name>.git`), which
/// borrows the local objects and holds only the refs of the last push, packed.
#[test]
fn updates_push_from_a_scratch_repository_holding_only_planned_refs() {
    let f = fixture();
    let env = &f.env;
    write_config(env, &mirror_toml("m", &f.local, &file_url(&f.remote), ""));
    update(env, "m").assert_success();
    let scratch = env.path("state/scratch/m.git");
    let alternates =
        std::fs::read_to_string(scratch.join("objects/info/alternates")).expect("alternates");
    assert_eq!(
        alternates.trim_end(),
        f.local.join("objects").display().to_string()
    );
    // The default branch went alone first; the last push carried develop and v1.
    let packed = std::fs::read_to_string(scratch.join("packed-refs")).expect("packed-refs");
    let names: Vec<&str> = packed
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(' ').map(|(_, n)| n))
        .collect();
    assert_eq!(names, ["refs/heads/develop", "refs/tags/v1"], "{packed}");
    assert_eq!(mirrored_refs(env, &f.remote), mirrored_refs(env, &f.local));

    // A rewrite and a fast-forward: only those two are staged, and they land.
    env.set_ref(&f.local, "refs/heads/main", &f.c3);
    let rewritten = env.make_commit_on(&f.local, Some(&f.c1), "rewrite");
    env.set_ref(&f.local, "refs/heads/develop", &rewritten);
    update(env, "m").assert_success();
    let packed = std::fs::read_to_string(scratch.join("packed-refs")).expect("packed-refs");
    assert_eq!(packed.lines().count(), 3, "{packed}");
    assert_eq!(mirrored_refs(env, &f.remote), mirrored_refs(env, &f.local));
}

/// Returns `len` hexadecimal digits that do not compress below half their size: 4 bits of
/// entropy a byte, from a fixed-seed generator.
fn incompressible(seed: u64, len: usize) -> String {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            char::from_digit(((state >> 59) & 0xf) as u32, 16).expect("a hex digit")
        })
        .collect()
}

/// A local history of `commits` commits on main, each adding a file of about 60 KB
/// compressed; a tag on the second commit and a branch on the fourth. Returns the commits.
fn large_history(env: &crate::support::TestEnv, local: &Path, commits: u64) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for i in 0..commits {
        let content = incompressible(i, 120_000);
        let id = env.commit_file_on(
            local,
            ids.last().map(String::as_str),
            &format!("f{i}"),
            &content,
            &format!("c{i}"),
        );
        ids.push(id);
    }
    env.set_ref(local, "refs/heads/main", ids.last().expect("commits"));
    env.set_ref(local, "refs/tags/early", &ids[1]);
    env.set_ref(local, "refs/heads/side", &ids[3]);
    ids
}

/// A history several times the remote's `receive.maxInputSize` fails in one push, and lands
/// whole under `max_push_size`: the engine pushes main at intermediate commits, oldest
/// first, then the rest.
#[test]
fn a_history_larger_than_the_remotes_limit_is_pushed_in_steps() {
    let env = TestEnv::new();
    let local = env.bare_repo("local.git");
    let remote = env.bare_repo("remote.git");
    large_history(&env, &local, 8);
    env.set_config(&remote, "receive.maxInputSize", "200000");
    env.install_hook(
        &remote,
        "post-receive",
        "#!/bin/sh\necho push >> \"$GIT_DIR/pushes.log\"\n",
    );

    // Without a limit of our own, the remote refuses the one big push.
    write_config(
        &env,
        &mirror_toml("m", &local, &file_url(&remote), "max_push_size = 0"),
    );
    let out = update(&env, "m");
    assert!(!out.status.success(), "{out}");
    assert!(mirrored_refs(&env, &remote).is_empty());

    write_config(
        &env,
        &mirror_toml("m", &local, &file_url(&remote), "max_push_size = 150000"),
    );
    update(&env, "m").assert_success();
    assert_eq!(mirrored_refs(&env, &remote), mirrored_refs(&env, &local));
    let s = status(&env, "m");
    assert_eq!(s["update_status"], "finished", "{s:#}");
    assert_eq!(s["refs_created"], 3, "{s:#}");
    let pushes = std::fs::read_to_string(remote.join("pushes.log")).expect("hook log");
    assert!(pushes.lines().count() >= 4, "{pushes}");
}

/// One object larger than `max_push_size` cannot be split: a permanent error naming it.
#[test]
fn an_object_larger_than_max_push_size_is_a_clear_permanent_error() {
    let env = TestEnv::new();
    let local = env.bare_repo("local.git");
    let remote = env.bare_repo("remote.git");
    let small = env.make_commit_on(&local, None, "small");
    let big = env.commit_file_on(
        &local,
        Some(&small),
        "big",
        &incompressible(7, 600_000),
        "big",
    );
    env.set_ref(&local, "refs/heads/main", &big);
    let blob = env.rev_parse(&local, &format!("{big}:big"));
    write_config(
        &env,
        &mirror_toml("m", &local, &file_url(&remote), "max_push_size = 150000"),
    );
    let out = update(&env, "m");
    assert!(!out.status.success(), "{out}");
    let s = status(&env, "m");
    let error = s["last_error"].as_str().expect("an error");
    assert!(error.contains(&format!("object {blob} is ")), "{error}");
    assert!(
        error.contains("more than max_push_size (150000 bytes)"),
        "{error}"
    );
    assert_eq!(s["update_status"], "failed", "{s:#}");
    // Nothing of main reached the remote, and the error is not retried.
    assert!(mirrored_refs(&env, &remote).is_empty());
}

/// Sets 250 branches `<prefix>000`.. of `repo` on `oid`.
fn many_branches_on(env: &TestEnv, repo: &Path, prefix: &str, oid: &str) {
    let commands: String = (0..250)
        .map(|i| format!("update refs/heads/{prefix}{i:03} {oid}\n"))
        .collect();
    env.git_stdin(repo, &["update-ref", "--stdin"], &commands);
}

/// Sets 250 remote-only branches `gone000`.. on `oid` (merged into local main).
fn many_remote_only_branches(env: &TestEnv, remote: &Path, oid: &str) {
    many_branches_on(env, remote, "gone", oid);
}

/// Many deletes are pushed with `--prune` from a scratch repository holding every ref the
/// remote keeps: exactly the merged remote-only branches go; refs outside the mirrored
/// namespaces stay.
#[test]
fn many_deletes_remove_exactly_the_planned_refs() {
    let f = fixture();
    let env = &f.env;
    // 250 deletes: past the mass-change guard's default, which is not what this test is about.
    let unguarded = "max_deletes = 0";
    write_config(
        env,
        &mirror_toml("m", &f.local, &file_url(&f.remote), unguarded),
    );
    update(env, "m").assert_success();
    many_remote_only_branches(env, &f.remote, &f.c1);
    env.set_ref(&f.remote, "refs/pull/1/head", &f.c1);
    env.set_ref(&f.local, "refs/heads/main", &f.c3);
    update(env, "m").assert_success();
    assert_eq!(mirrored_refs(env, &f.remote), mirrored_refs(env, &f.local));
    assert!(env.ref_exists(&f.remote, "refs/pull/1/head"));
    let s = status(env, "m");
    assert_eq!(s["refs_deleted"], 250, "{s:#}");
    assert_eq!(s["refs_updated"], 1, "{s:#}");
    // The last push staged the kept refs too: the pruning path ran.
    let packed =
        std::fs::read_to_string(env.path("state/scratch/m.git/packed-refs")).expect("packed-refs");
    assert!(packed.contains(" refs/heads/develop\n"), "{packed}");
}

/// With a remote ref on a commit the local repository lacks (unmerged work, kept), many
/// deletes go one refspec each: the same outcome.
#[test]
fn many_deletes_beside_unmerged_remote_work_keep_it() {
    let f = fixture();
    let env = &f.env;
    // 250 deletes: past the mass-change guard's default, which is not what this test is about.
    let unguarded = "max_deletes = 0";
    write_config(
        env,
        &mirror_toml("m", &f.local, &file_url(&f.remote), unguarded),
    );
    update(env, "m").assert_success();
    many_remote_only_branches(env, &f.remote, &f.c1);
    let unmerged = env.make_commit_on(&f.remote, Some(&f.c2), "remote work");
    env.set_ref(&f.remote, "refs/heads/unmerged", &unmerged);
    update(env, "m").assert_success();
    let mut expected = mirrored_refs(env, &f.local);
    expected.insert("refs/heads/unmerged".to_owned(), unmerged);
    assert_eq!(mirrored_refs(env, &f.remote), expected);
    assert_eq!(status(env, "m")["refs_deleted"], 250);
}

/// Many forced updates take their leases from tracking refs staged in the scratch
/// repository; git writes loose tracking refs after such a push. Those of one update must
/// not become the next update's leases: here the remote is moved back by someone else
/// between two forced updates, and the second still lands (a stale loose ref would expect
/// the first update's values and refuse every ref).
#[test]
fn many_forced_updates_in_a_row_lease_on_what_was_read_each_time() {
    let f = fixture();
    let env = &f.env;
    write_config(
        env,
        &mirror_toml("m", &f.local, &file_url(&f.remote), "max_forced = 0"),
    );
    many_branches_on(env, &f.local, "f", &f.c2);
    update(env, "m").assert_success();
    let first = env.make_commit_on(&f.local, Some(&f.c1), "first rewrite");
    many_branches_on(env, &f.local, "f", &first);
    update(env, "m").assert_success();
    assert_eq!(mirrored_refs(env, &f.remote), mirrored_refs(env, &f.local));
    assert_eq!(status(env, "m")["refs_updated"], 250);

    many_branches_on(env, &f.remote, "f", &f.c2);
    let second = env.make_commit_on(&f.local, Some(&f.c1), "second rewrite");
    many_branches_on(env, &f.local, "f", &second);
    let out = update(env, "m");
    out.assert_success();
    assert_eq!(
        mirrored_refs(env, &f.remote),
        mirrored_refs(env, &f.local),
        "{out}"
    );
    let s = status(env, "m");
    assert_eq!(s["refs_updated"], 250, "{s:#}");
    assert_eq!(s["rejected_refs"], serde_json::json!([]), "{s:#}");
    // The loose tracking refs of the first push were moved aside and deleted.
    assert!(!env.path("state/scratch/m.git/pushmirror-trash").exists());
}
