//! Git LFS (SPEC.md section 9) against real LFS servers: giftless (JWT in Basic form, and
//! anonymous) and dulwich's LFS server (which checks SHA-256 on upload), with the git side on
//! lighttpd + `git http-backend` or a local remote. Sources are made with the real git-lfs
//! client, whose pre-push hook fills the bare repository's `lfs/objects`.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::engine::{mirror_toml, mirrored_refs, status, write_config};
use crate::support::lfs::{
    DulwichLfs, Giftless, GiftlessAuth, LfsSource, ThrottlingFront, object_bytes, oid_of,
};
use crate::support::{
    Fault, FaultKind, FaultProxy, HttpServer, SshServer, TestEnv, free_port, processes_with_arg,
    wait_until,
};

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// `status --json` of `name` as the LFS fields: (objects, bytes, missing).
fn lfs_status(s: &Value) -> (u64, u64, Value) {
    (
        s["lfs_objects_uploaded"]
            .as_u64()
            .expect("lfs_objects_uploaded"),
        s["lfs_bytes_uploaded"]
            .as_u64()
            .expect("lfs_bytes_uploaded"),
        s["lfs_missing"].clone(),
    )
}

fn sorted(mut oids: Vec<String>) -> Vec<String> {
    oids.sort();
    oids
}

/// Runs `pushmirror update NAME` with debug logs while a thread watches every process's argv
/// for `secret`; returns the output and what the watcher saw.
fn update_watching_argv(
    env: &TestEnv,
    name: &str,
    secret: &str,
) -> (crate::support::Output, Vec<String>) {
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = std::thread::spawn({
        let (stop, secret) = (stop.clone(), secret.to_owned());
        move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                seen.extend(processes_with_arg(&secret));
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        }
    });
    let out = env.pushmirror_with_env(&[("RUST_LOG", "pushmirror=trace,debug")], &["update", name]);
    stop.store(true, Ordering::SeqCst);
    (out, watcher.join().unwrap())
}

/// Every file under `dir`, read as text, that contains `secret`.
fn files_containing(dir: &Path, secret: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if fs::read(&path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(secret)) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn giftless_with_jwt_first_sync_then_one_object_then_none_and_no_credential_leaks() {
    let env = TestEnv::new();
    let lfs = Giftless::start(&env, GiftlessAuth::Jwt);
    let token = lfs.token().to_owned();
    // The git side takes the same credentials: user `_jwt`, the token as password.
    let http = HttpServer::start(&env, "srv", "_jwt", &token);
    let down = http.bare_repo(&env, "down.git");
    let src = LfsSource::new(&env, "src");
    let (big, small, tiny) = (
        object_bytes(1, 300_000),
        object_bytes(2, 5_000),
        b"hi\n".to_vec(),
    );
    src.commit(
        &env,
        "three objects",
        &[
            ("a.bin", big.clone()),
            ("dir/b.bin", small.clone()),
            ("c.bin", tiny.clone()),
            ("readme.txt", b"plain\n".to_vec()),
        ],
    );
    src.push(&env, &["main"]);
    let first_oids = sorted(vec![
        oid_of(&env, &big),
        oid_of(&env, &small),
        oid_of(&env, &tiny),
    ]);
    assert_eq!(crate::support::lfs::stored_files(&src.store()), first_oids);

    env.write_secret("token", &token);
    write_config(
        &env,
        &mirror_toml(
            "m",
            &src.bare,
            &http.url("down.git"),
            &format!(
                "username = \"_jwt\"\npassword_file = \"token\"\nlfs_url = \"{}\"",
                lfs.url("down")
            ),
        ),
    );
    let (out, argv) = update_watching_argv(&env, "m", &token);
    assert!(
        out.success(),
        "{out}\n--- giftless ---\n{}\n{}",
        lfs.log(),
        http.logs()
    );
    assert_eq!(mirrored_refs(&env, &down), mirrored_refs(&env, &src.bare));
    assert_eq!(lfs.stored(), first_oids, "{}", lfs.log());
    let s = status(&env, "m");
    assert_eq!(s["update_status"], "finished", "{s:#}");
    let bytes = (big.len() + small.len() + tiny.len()) as u64;
    assert_eq!(lfs_status(&s), (3, bytes, Value::Array(vec![])), "{s:#}");
    let mut logs = out.stderr.clone() + &out.stdout;

    // A clone of the mirror gets every object from the mirror's LFS server.
    let clone = env.path("clone");
    env.git_with_env(
        env.root(),
        &[
            "clone",
            "-q",
            &http.url_with_credentials("down.git", "_jwt", &token),
            clone.to_str().unwrap(),
        ],
        [("GIT_LFS_SKIP_SMUDGE", "1")],
    )
    .assert_success();
    env.git(&clone, &["config", "lfs.url", &lfs.url_with_token("down")]);
    env.git(&clone, &["lfs", "fetch", "--all"]);
    env.git(&clone, &["lfs", "fsck"]);
    env.git(&clone, &["lfs", "checkout"]);
    assert_eq!(fs::read(clone.join("a.bin")).unwrap(), big);

    // One new object: exactly one upload.
    let new = object_bytes(3, 70_000);
    src.commit(&env, "one more", &[("d.bin", new.clone())]);
    src.push(&env, &["main"]);
    let out = env.pushmirror_with_env(&[("RUST_LOG", "debug")], &["update", "m"]);
    assert!(out.success(), "{out}\n{}", lfs.log());
    logs += &(out.stderr.clone() + &out.stdout);
    let s = status(&env, "m");
    assert_eq!(
        lfs_status(&s),
        (1, new.len() as u64, Value::Array(vec![])),
        "{s:#}"
    );
    assert_eq!(lfs.stored().len(), 4);
    assert!(lfs.stored().contains(&oid_of(&env, &new)));
    assert_eq!(mirrored_refs(&env, &down), mirrored_refs(&env, &src.bare));

    // No LFS change (a plain file, a new branch and a tag on known commits): no upload.
    src.commit(&env, "plain", &[("readme.txt", b"changed\n".to_vec())]);
    env.git(&src.work, &["branch", "side"]);
    env.git(&src.work, &["tag", "v1"]);
    src.push(&env, &["main", "side", "v1"]);
    let out = env.pushmirror(&["update", "m"]);
    assert!(out.success(), "{out}");
    logs += &(out.stderr.clone() + &out.stdout);
    let s = status(&env, "m");
    assert_eq!(lfs_status(&s), (0, 0, Value::Array(vec![])), "{s:#}");
    assert_eq!(mirrored_refs(&env, &down), mirrored_refs(&env, &src.bare));

    // No credential anywhere: logs, status, state files, argv of any child.
    assert!(argv.is_empty(), "the token in argv: {argv:?}");
    assert!(!logs.contains(&token), "the token in the logs:\n{logs}");
    let text = env.pushmirror(&["status", "m"]).stdout;
    assert!(!text.contains(&token) && !s.to_string().contains(&token));
    assert_eq!(
        files_containing(&env.path("state"), &token),
        Vec::<String>::new()
    );
}

#[test]
fn giftless_anonymous_to_a_local_remote_uploads_only_what_it_lacks() {
    let env = TestEnv::new();
    let lfs = Giftless::start(&env, GiftlessAuth::Anonymous);
    let down = env.bare_repo("down.git");
    let src = LfsSource::new(&env, "src");
    let a = object_bytes(10, 2_000);
    src.commit(&env, "a", &[("a.bin", a.clone())]);
    src.push(&env, &["main"]);
    write_config(
        &env,
        &mirror_toml(
            "m",
            &src.bare,
            &file_url(&down),
            &format!("lfs_url = \"{}\"", lfs.url("down")),
        ),
    );
    let out = env.pushmirror(&["update", "m"]);
    assert!(out.success(), "{out}\n{}", lfs.log());
    assert_eq!(lfs.stored(), vec![oid_of(&env, &a)]);
    assert_eq!(lfs_status(&status(&env, "m")).0, 1);

    // The server already holds the object a new branch brings (uploaded by someone else):
    // the batch API says so and nothing is sent.
    let b = object_bytes(11, 3_000);
    src.checkout(&env, "feature");
    src.commit(&env, "b", &[("b.bin", b.clone())]);
    src.push(&env, &["feature"]);
    env.git(
        &src.work,
        &["remote", "add", "origin", &file_url(&src.bare)],
    );
    env.git(&src.work, &["config", "lfs.url", &lfs.url("down")]);
    env.git(
        &src.work,
        &["lfs", "push", "--object-id", "origin", &oid_of(&env, &b)],
    );
    env.git(&src.work, &["config", "--unset", "lfs.url"]);
    assert!(lfs.stored().contains(&oid_of(&env, &b)), "{}", lfs.log());
    let out = env.pushmirror(&["update", "m"]);
    assert!(out.success(), "{out}");
    assert_eq!(lfs_status(&status(&env, "m")), (0, 0, Value::Array(vec![])));
    assert_eq!(mirrored_refs(&env, &down), mirrored_refs(&env, &src.bare));
}

#[test]
fn dulwich_lfs_server_takes_the_objects_and_a_corrupt_local_object_stops_the_update() {
    let env = TestEnv::new();
    let lfs = DulwichLfs::start(&env);
    let http = HttpServer::start(&env, "srv", "mirror", "s3cret");
    let down = http.bare_repo(&env, "down.git");
    let src = LfsSource::new(&env, "src");
    let objects: Vec<Vec<u8>> = (0..5)
        .map(|i| object_bytes(20 + i, 40_000 + i as usize))
        .collect();
    let files: Vec<(String, Vec<u8>)> = objects
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("o{i}.bin"), b.clone()))
        .collect();
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    src.commit(&env, "five", &files);
    src.push(&env, &["main"]);
    env.write_secret("password", "s3cret");
    write_config(
        &env,
        &mirror_toml(
            "m",
            &src.bare,
            &http.url("down.git"),
            &format!(
                "username = \"mirror\"\npassword_file = \"password\"\nlfs_url = \"{}\"",
                lfs.url()
            ),
        ),
    );
    let out = env.pushmirror(&["update", "m"]);
    assert!(out.success(), "{out}\n--- dulwich LFS ---\n{}", lfs.log());
    let want = sorted(objects.iter().map(|b| oid_of(&env, b)).collect());
    assert_eq!(lfs.stored(), want);
    assert_eq!(lfs_status(&status(&env, "m")).0, 5);

    // A local object whose bytes do not match its oid: dulwich would refuse it (400); the
    // upload stops before that, and no ref moves.
    let good = object_bytes(30, 10_000);
    src.commit(&env, "six", &[("six.bin", good.clone())]);
    src.push(&env, &["main"]);
    let oid = oid_of(&env, &good);
    let path = src.store().join(&oid[..2]).join(&oid[2..4]).join(&oid);
    let mut bad = good.clone();
    bad[5000] ^= 1;
    fs::write(&path, &bad).unwrap();
    let before = mirrored_refs(&env, &down);
    let out = env.pushmirror(&["update", "m"]);
    assert_eq!(out.code(), Some(1), "{out}");
    let s = status(&env, "m");
    assert_eq!(s["update_status"], "failed", "{s:#}");
    let error = s["last_error"].as_str().unwrap();
    assert!(
        error.contains(&oid) && error.contains("does not match"),
        "{error}"
    );
    assert_eq!(mirrored_refs(&env, &down), before);
    assert!(!lfs.stored().contains(&oid));

    // Mended: the next update uploads it and pushes.
    fs::write(&path, &good).unwrap();
    let out = env.pushmirror(&["update", "m"]);
    assert!(out.success(), "{out}\n{}", lfs.log());
    assert!(lfs.stored().contains(&oid));
    assert_eq!(mirrored_refs(&env, &down), mirrored_refs(&env, &src.bare));
}

/// Within this an update that can run does (2 cores shared by many tests).
const SOON: Duration = Duration::from_secs(60);

#[test]
fn a_failing_lfs_server_moves_no_ref_and_the_daemon_s_retry_succeeds() {
    let env = TestEnv::new();
    let lfs = Giftless::start(&env, GiftlessAuth::Anonymous);
    let proxy = FaultProxy::start(lfs_port(&lfs));
    let down = env.bare_repo("down.git");
    let src = LfsSource::new(&env, "src");
    let a = object_bytes(40, 50_000);
    src.commit(&env, "a", &[("a.bin", a.clone())]);
    src.push(&env, &["main"]);
    let url = lfs.url("down").replace(
        &format!(":{}/", lfs_port(&lfs)),
        &format!(":{}/", proxy.port()),
    );
    // delay 0s: a transient failure is retried after the backoff's floor, 1 s. Metrics on,
    // to see the uploaded bytes counted.
    let metrics = format!("127.0.0.1:{}", free_port());
    env.write_config(&format!(
        "[daemon]\nstate_dir = \"state\"\nmetrics_listen = \"{metrics}\"\n\n{}",
        mirror_toml(
            "m",
            &src.bare,
            &file_url(&down),
            &format!("lfs_url = \"{url}\"\ndelay = \"0s\"\nretries = 100"),
        )
    ));
    // The LFS server resets every connection: the update fails before any ref moves.
    proxy.set(Fault::Refuse);
    let daemon = env.start_daemon();
    env.pushmirror(&["sync", "m"]).assert_success();
    let s = wait_until("a failed LFS upload, to retry", SOON, || {
        let s = status(&env, "m");
        let failed_on_lfs = s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("the LFS batch request"));
        if failed_on_lfs && s["update_status"] == "to_retry" {
            Ok(s)
        } else {
            Err(format!("{s:#}\n--- daemon log ---\n{}", daemon.log()))
        }
    });
    assert!(proxy.injected(FaultKind::Refuse) > 0, "{}", proxy.stats());
    assert!(
        mirrored_refs(&env, &down).is_empty(),
        "a ref moved before its objects: {s:#}"
    );
    assert!(lfs.stored().is_empty());

    // The server is back: the daemon's own retry uploads, then pushes.
    proxy.set(Fault::PassThrough);
    wait_until("the retry to finish", SOON, || {
        let s = status(&env, "m");
        if s["update_status"] == "finished" {
            Ok(())
        } else {
            Err(format!("{s:#}\n--- daemon log ---\n{}", daemon.log()))
        }
    });
    assert_eq!(lfs.stored(), vec![oid_of(&env, &a)]);
    assert_eq!(mirrored_refs(&env, &down), mirrored_refs(&env, &src.bare));
    let (objects, bytes, _) = lfs_status(&status(&env, "m"));
    assert_eq!((objects, bytes), (1, a.len() as u64));
    let text = crate::metrics::scrape(&metrics);
    assert_eq!(
        crate::metrics::value(&text, "pushmirror_lfs_uploaded_bytes_total{mirror=\"m\"}"),
        Some(a.len() as f64),
        "{text}"
    );
}

fn lfs_port(lfs: &Giftless) -> u16 {
    let url = lfs.url("x");
    let rest = url.trim_start_matches("http://127.0.0.1:");
    rest.split('/').next().unwrap().parse().unwrap()
}

#[test]
fn an_object_missing_locally_is_named_and_the_refs_that_do_not_need_it_are_pushed() {
    let env = TestEnv::new();
    let lfs = Giftless::start(&env, GiftlessAuth::Anonymous);
    let down = env.bare_repo("down.git");
    let src = LfsSource::new(&env, "src");
    let a = object_bytes(50, 4_000);
    src.commit(&env, "a", &[("a.bin", a.clone())]);
    src.checkout(&env, "feature");
    let b = object_bytes(51, 4_000);
    src.commit(&env, "b", &[("b.bin", b.clone())]);
    src.push(&env, &["main", "feature"]);
    let lost = oid_of(&env, &b);
    fs::remove_file(src.store().join(&lost[..2]).join(&lost[2..4]).join(&lost)).unwrap();
    write_config(
        &env,
        &mirror_toml(
            "m",
            &src.bare,
            &file_url(&down),
            &format!("lfs_url = \"{}\"", lfs.url("down")),
        ),
    );
    let out = env.pushmirror(&["update", "m"]);
    assert_eq!(out.code(), Some(1), "{out}");
    let s = status(&env, "m");
    assert_eq!(s["update_status"], "failed", "{s:#}");
    assert_eq!(
        s["lfs_missing"],
        serde_json::json!([{"oid": lost, "refs": ["refs/heads/feature"]}]),
        "{s:#}"
    );
    let error = s["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("Some LFS objects are missing from the local LFS store")
            && error.contains(&format!("{lost} (refs/heads/feature)")),
        "{error}"
    );
    let pushed = mirrored_refs(&env, &down);
    assert_eq!(
        pushed.get("refs/heads/main"),
        mirrored_refs(&env, &src.bare).get("refs/heads/main")
    );
    assert!(!pushed.contains_key("refs/heads/feature"), "{pushed:?}");
    assert_eq!(lfs.stored(), vec![oid_of(&env, &a)]);
    let details = env.pushmirror(&["status", "m"]).stdout;
    assert!(details.contains(&lost), "{details}");
}

#[test]
fn lfs_off_uploads_nothing_and_on_without_a_store_is_an_error() {
    let env = TestEnv::new();
    let lfs = Giftless::start(&env, GiftlessAuth::Anonymous);
    let down = env.bare_repo("down.git");
    let src = LfsSource::new(&env, "src");
    src.commit(&env, "a", &[("a.bin", object_bytes(60, 1_000))]);
    src.push(&env, &["main"]);
    let url = lfs.url("down");
    write_config(
        &env,
        &mirror_toml(
            "m",
            &src.bare,
            &file_url(&down),
            &format!("lfs = \"off\"\nlfs_url = \"{url}\""),
        ),
    );
    env.pushmirror(&["update", "m"]).assert_success();
    assert_eq!(mirrored_refs(&env, &down), mirrored_refs(&env, &src.bare));
    assert!(lfs.stored().is_empty());
    assert_eq!(lfs_status(&status(&env, "m")), (0, 0, Value::Array(vec![])));

    let plain = env.bare_repo("plain.git");
    let c = env.make_commit_on(&plain, None, "c");
    env.set_ref(&plain, "refs/heads/main", &c);
    let down2 = env.bare_repo("down2.git");
    write_config(
        &env,
        &mirror_toml(
            "n",
            &plain,
            &file_url(&down2),
            &format!("lfs = \"on\"\nlfs_url = \"{url}\""),
        ),
    );
    let out = env.pushmirror(&["update", "n"]);
    assert_eq!(out.code(), Some(1), "{out}");
    let s = status(&env, "n");
    let error = s["last_error"].as_str().unwrap();
    assert!(
        error.contains("lfs = \"on\" but the LFS object store") && error.contains("lfs_objects"),
        "{error}"
    );
    assert_eq!(s["update_status"], "failed");
    assert!(mirrored_refs(&env, &down2).is_empty());
}

#[test]
fn an_ssh_remote_gets_its_objects_over_https_with_the_mirror_s_http_credentials() {
    let env = TestEnv::new();
    let lfs = Giftless::start(&env, GiftlessAuth::Jwt);
    let server = SshServer::start(&env);
    let remote = server.bare_repo(&env, "down.git");
    let src = LfsSource::new(&env, "src");
    let a = object_bytes(70, 30_000);
    src.commit(&env, "a", &[("a.bin", a.clone())]);
    src.push(&env, &["main"]);
    env.write_secret("token", lfs.token());
    let pinned = format!("{:?}", server.known_hosts_line());
    write_config(
        &env,
        &mirror_toml(
            "m",
            &src.bare,
            &server.url(&remote),
            &format!(
                "ssh_known_hosts = [{pinned}]\nusername = \"_jwt\"\npassword_file = \"token\"\n\
                 lfs_url = \"{}\"",
                lfs.url("down")
            ),
        ),
    );
    let public = env.pushmirror(&["ssh-keygen", "m"]);
    public.assert_success();
    server.authorize_only(public.stdout.trim_end());
    let (out, argv) = update_watching_argv(&env, "m", lfs.token());
    assert!(out.success(), "{out}\n{}\n{}", lfs.log(), server.log());
    assert_eq!(lfs.stored(), vec![oid_of(&env, &a)]);
    assert_eq!(env.mirrored_refs(&remote), mirrored_refs(&env, &src.bare));
    assert!(argv.is_empty(), "{argv:?}");
    assert!(!(out.stdout + &out.stderr).contains(lfs.token()));
    assert_eq!(lfs_status(&status(&env, "m")).0, 1);
}

#[test]
fn a_rate_limited_batch_is_retried_after_the_wait_the_server_asks_for() {
    let env = TestEnv::new();
    let lfs = Giftless::start(&env, GiftlessAuth::Anonymous);
    let front = ThrottlingFront::start(&env, &format!("http://127.0.0.1:{}", lfs_port(&lfs)), 2);
    let down = env.bare_repo("down.git");
    let src = LfsSource::new(&env, "src");
    let a = object_bytes(80, 20_000);
    src.commit(&env, "a", &[("a.bin", a.clone())]);
    src.push(&env, &["main"]);
    let url = lfs.url("down").replace(
        &format!(":{}/", lfs_port(&lfs)),
        &format!(":{}/", front.port()),
    );
    write_config(
        &env,
        &mirror_toml(
            "m",
            &src.bare,
            &file_url(&down),
            &format!("lfs_url = \"{url}\""),
        ),
    );
    let out = env.pushmirror(&["update", "m"]);
    assert!(out.success(), "{out}\n{}", front.log());
    let batches: Vec<_> = front
        .requests()
        .into_iter()
        .filter(|(_, method, path, _)| method == "POST" && path.ends_with("/objects/batch"))
        .collect();
    let statuses: Vec<u16> = batches.iter().map(|b| b.3).collect();
    assert_eq!(statuses, [429, 429, 200], "{}", front.log());
    for pair in batches.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= 0.95,
            "Retry-After: 1 not honoured: {}",
            front.log()
        );
    }
    assert_eq!(lfs.stored(), vec![oid_of(&env, &a)]);
    assert_eq!(mirrored_refs(&env, &down), mirrored_refs(&env, &src.bare));
}
