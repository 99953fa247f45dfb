//! The fixtures in `support` work with real git: each server takes pushes and serves
//! `git ls-remote`, authentication is enforced, misbehaving peers misbehave, and dropping a
//! fixture really stops it.

use std::io::{ErrorKind, Read};
use std::path::Path;
use std::time::Duration;

use crate::support::{
    DulwichDaemon, GitDaemon, HangingServer, HttpServer, TestEnv, basic_auth_header_env,
    closed_port, connect, credential_helper_env, wait_until,
};

const USER: &str = "mirror";
const PASSWORD: &str = "s3cret";

/// A bare repository `local.git` whose `main` holds one commit; returns (repo, commit).
fn local_with_main(env: &TestEnv) -> (std::path::PathBuf, String) {
    let local = env.bare_repo("local.git");
    let a = env.make_commit_on(&local, None, "a");
    env.set_ref(&local, "refs/heads/main", &a);
    (local, a)
}

/// `git ls-remote <url>` as refname → oid, with `extra_env`.
fn ls_remote(env: &TestEnv, url: &str, extra_env: Vec<(String, String)>) -> Vec<(String, String)> {
    let out = env.git_with_env(env.root(), &["ls-remote", url], extra_env);
    out.assert_success();
    out.stdout
        .lines()
        .map(|line| {
            let (oid, name) = line.split_once('\t').expect("ls-remote line");
            (name.to_owned(), oid.to_owned())
        })
        .collect()
}

fn assert_refused(port: u16, what: &str) {
    match connect(port) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{what}: {e}"),
        Ok(_) => panic!("{what}: port {port} still accepts connections"),
    }
}

fn assert_no_process(pid: u32, what: &str) {
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "{what}: pid {pid} still exists"
    );
}

#[test]
fn git_daemon_takes_a_push_and_serves_ls_remote() {
    let env = TestEnv::new();
    let (local, a) = local_with_main(&env);
    let daemon = GitDaemon::start(&env, "srv");
    let remote = daemon.bare_repo(&env, "remote.git");
    let url = daemon.url("remote.git");

    let push = env.git_with_env(
        &local,
        &["push", &url, "main"],
        Vec::<(String, String)>::new(),
    );
    assert!(
        push.success(),
        "{push}\n--- git daemon log ---\n{}",
        daemon.log()
    );

    assert_eq!(
        ls_remote(&env, &url, vec![]),
        [
            ("HEAD".into(), a.clone()),
            ("refs/heads/main".into(), a.clone())
        ]
    );
    assert_eq!(env.refs(&remote), env.refs(&local));
    assert!(
        daemon.log().contains("Connection from 127.0.0.1"),
        "{}",
        daemon.log()
    );
}

#[test]
fn dulwich_daemon_takes_a_push_serves_ls_remote_and_stops_when_dropped() {
    let env = TestEnv::new();
    let (local, a) = local_with_main(&env);
    let dulwich = DulwichDaemon::start(&env, "srv");
    let remote = dulwich.bare_repo(&env, "remote.git");
    let url = dulwich.url("remote.git");

    let push = env.git_with_env(
        &local,
        &["push", &url, "main"],
        Vec::<(String, String)>::new(),
    );
    assert!(
        push.success(),
        "{push}\n--- dulwich log ---\n{}",
        dulwich.log()
    );
    assert_eq!(env.refs(&remote), env.refs(&local));
    assert!(
        ls_remote(&env, &url, vec![]).contains(&("refs/heads/main".into(), a)),
        "{}",
        dulwich.log()
    );

    let (port, pid) = (dulwich.port(), dulwich.pid());
    drop(dulwich);
    assert_refused(port, "dulwich daemon after drop");
    assert_no_process(pid, "dulwich daemon after drop");
}

#[test]
fn http_server_takes_a_push_with_credentials_from_a_helper() {
    let env = TestEnv::new();
    let (local, a) = local_with_main(&env);
    let http = HttpServer::start(&env, "srv", USER, PASSWORD);
    let remote = http.bare_repo(&env, "remote.git");
    let url = http.url("remote.git");

    let push = env.git_with_env(
        &local,
        &["push", &url, "main"],
        credential_helper_env(USER, PASSWORD),
    );
    assert!(push.success(), "{push}\n{}", http.logs());
    assert!(!push.stderr.contains(PASSWORD), "{push}");

    assert_eq!(env.refs(&remote), env.refs(&local));
    let listed = ls_remote(&env, &url, credential_helper_env(USER, PASSWORD));
    assert!(
        listed.contains(&("refs/heads/main".into(), a)),
        "{listed:?}"
    );
    let access = std::fs::read_to_string(http.access_log_path()).unwrap();
    assert!(access.contains("git-receive-pack"), "{}", http.logs());
}

#[test]
fn http_server_takes_a_push_with_an_authorization_header() {
    let env = TestEnv::new();
    let (local, _) = local_with_main(&env);
    let http = HttpServer::start(&env, "srv", USER, PASSWORD);
    let remote = http.bare_repo(&env, "remote.git");

    let push = env.git_with_env(
        &local,
        &["push", &http.url("remote.git"), "main"],
        basic_auth_header_env(USER, PASSWORD),
    );
    assert!(push.success(), "{push}\n{}", http.logs());
    assert_eq!(env.refs(&remote), env.refs(&local));
}

#[test]
fn http_server_takes_credentials_in_the_url() {
    let env = TestEnv::new();
    let (local, a) = local_with_main(&env);
    let http = HttpServer::start(&env, "srv", USER, PASSWORD);
    http.bare_repo(&env, "remote.git");
    let url = http.url_with_credentials("remote.git", USER, PASSWORD);

    env.git(&local, &["push", &url, "main"]);
    assert!(ls_remote(&env, &url, vec![]).contains(&("refs/heads/main".into(), a)));
}

#[test]
fn http_server_refuses_a_wrong_password_and_no_credentials() {
    let env = TestEnv::new();
    let (local, _) = local_with_main(&env);
    let http = HttpServer::start(&env, "srv", USER, PASSWORD);
    let remote = http.bare_repo(&env, "remote.git");
    let url = http.url("remote.git");

    let wrong = env.git_with_env(
        &local,
        &["push", &url, "main"],
        credential_helper_env(USER, "wrong"),
    );
    wrong.assert_failure();
    assert!(wrong.stderr.contains("Authentication failed"), "{wrong}");

    let anonymous = env.git_with_env(&local, &["push", &url, "main"], Vec::<(&str, &str)>::new());
    anonymous.assert_failure();
    assert!(
        anonymous.stderr.contains("terminal prompts disabled"),
        "{anonymous}"
    );

    assert!(env.refs(&remote).is_empty());
    let access = std::fs::read_to_string(http.access_log_path()).unwrap();
    assert!(access.contains(" 401 "), "{}", http.logs());
}

/// Pack data above `http.postBuffer` (1 MiB) is sent with chunked transfer encoding,
/// which the CGI set-up must pass through to `git http-backend`.
#[test]
fn http_server_takes_a_push_larger_than_the_post_buffer() {
    let env = TestEnv::new();
    let local = env.bare_repo("local.git");
    // 4 MiB of incompressible-ish hex digits from a fixed xorshift sequence.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let content: String = (0..(4 << 20) / 16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x}")
        })
        .collect();
    let big = env.commit_file_on(&local, None, "big.txt", &content, "big");
    env.set_ref(&local, "refs/heads/main", &big);
    let http = HttpServer::start(&env, "srv", USER, PASSWORD);
    let remote = http.bare_repo(&env, "remote.git");

    let push = env.git_with_env(
        &local,
        &["push", &http.url("remote.git"), "main"],
        credential_helper_env(USER, PASSWORD),
    );
    assert!(push.success(), "{push}\n{}", http.logs());
    assert_eq!(env.rev_parse(&remote, "refs/heads/main"), big);
    env.git(&remote, &["fsck", "--no-progress"]);
}

#[test]
fn hanging_server_accepts_and_never_answers() {
    let server = HangingServer::start();
    let mut stream = connect(server.port()).expect("connect to HangingServer");
    wait_until(
        "the connection to be accepted",
        Duration::from_secs(10),
        || match server.accepted() {
            1 => Ok(()),
            n => Err(format!("accepted {n}")),
        },
    );
    // A bounded read proves silence: nothing arrives, and the connection stays open.
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected silence, got {other:?}"),
    }
    assert!(server.http_url("x.git").starts_with("http://127.0.0.1:"));
}

#[test]
fn closed_port_refuses_connections() {
    assert_refused(closed_port(), "closed_port");
}

#[test]
fn dropping_a_fixture_stops_its_server() {
    let env = TestEnv::new();

    let daemon = GitDaemon::start(&env, "srv-git");
    daemon.bare_repo(&env, "r.git");
    ls_remote(&env, &daemon.url("r.git"), vec![]);
    let (port, pid) = (daemon.port(), daemon.pid());
    drop(daemon);
    assert_refused(port, "git daemon after drop");
    assert_no_process(pid, "git daemon after drop");

    let http = HttpServer::start(&env, "srv-http", USER, PASSWORD);
    http.bare_repo(&env, "r.git");
    ls_remote(
        &env,
        &http.url("r.git"),
        credential_helper_env(USER, PASSWORD),
    );
    let (port, pid) = (http.port(), http.pid());
    drop(http);
    assert_refused(port, "lighttpd after drop");
    assert_no_process(pid, "lighttpd after drop");

    let hanging = HangingServer::start();
    let port = hanging.port();
    let held = connect(port).expect("connect to HangingServer");
    wait_until(
        "the connection to be accepted",
        Duration::from_secs(10),
        || match hanging.accepted() {
            1 => Ok(()),
            n => Err(format!("accepted {n}")),
        },
    );
    drop(hanging);
    assert_refused(port, "HangingServer after drop");
    // The held connection was closed too: reading gives end of file or a reset.
    let mut held = held;
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    match held.read(&mut [0u8; 1]) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("held connection still open: {other:?}"),
    }
}

#[test]
fn update_hook_refuses_only_its_ref() {
    let env = TestEnv::new();
    let local = env.bare_repo("local.git");
    let a = env.make_commit_on(&local, None, "a");
    let b = env.make_commit_on(&local, Some(&a), "b");
    env.set_ref(&local, "refs/heads/main", &a);
    env.set_ref(&local, "refs/heads/develop", &b);
    let tag = env.tag_annotated(&local, "v1", &a);
    env.symbolic_ref(&local, "refs/heads/alias", "refs/heads/main");
    let daemon = GitDaemon::start(&env, "srv");
    let remote = daemon.bare_repo(&env, "remote.git");
    env.install_update_hook_refusing(&remote, "refs/heads/develop");

    let push = env.git_with_env(
        &local,
        &[
            "push",
            "--porcelain",
            &daemon.url("remote.git"),
            "refs/heads/main:refs/heads/main",
            "refs/heads/develop:refs/heads/develop",
            "refs/tags/v1:refs/tags/v1",
        ],
        Vec::<(&str, &str)>::new(),
    );
    push.assert_failure();
    assert!(
        push.stdout.contains(
            "!\trefs/heads/develop:refs/heads/develop\t[remote rejected] (hook declined)"
        ),
        "{push}"
    );
    assert!(
        push.stderr
            .contains("refusing refs/heads/develop: protected by test hook"),
        "{push}"
    );

    let expected = [("refs/heads/main", &a), ("refs/tags/v1", &tag)]
        .map(|(name, oid)| (name.to_owned(), oid.clone()))
        .into();
    assert_eq!(env.refs(&remote), expected);
    assert_eq!(env.mirrored_refs(&remote), expected);
    // Locally the symbolic ref shows up in `refs` but not in `mirrored_refs`.
    assert_eq!(env.refs(&local)["refs/heads/alias"], a);
    assert!(!env.mirrored_refs(&local).contains_key("refs/heads/alias"));
    assert_eq!(env.rev_parse(&local, "refs/tags/v1^{commit}"), a);
    assert_eq!(env.rev_parse(&local, "refs/heads/develop~1"), a);
}

#[test]
fn commit_in_a_work_clone_pushes_to_its_origin() {
    let env = TestEnv::new();
    let bare = env.bare_repo("origin.git");
    let work = env.work_clone(&bare, "work");

    let first = env.commit(&work, "main", "a.txt", "a\n", "first");
    let dev = env.commit(&work, "develop", "b.txt", "b\n", "on develop");
    let second = env.commit(&work, "main", "a.txt", "a2\n", "second");

    assert_eq!(env.rev_parse(&bare, "refs/heads/develop~1"), first);
    assert_eq!(env.rev_parse(&bare, "refs/heads/develop"), dev);
    assert_eq!(env.rev_parse(&bare, "refs/heads/main"), second);
    assert_eq!(env.rev_parse(&bare, "refs/heads/main~1"), first);
    assert_eq!(env.git(&bare, &["show", "main:a.txt"]), "a2");
}

#[test]
fn commits_are_reproducible_across_environments() {
    let (one, two) = (TestEnv::new(), TestEnv::new());
    let make = |env: &TestEnv| {
        let repo = env.bare_repo("r.git");
        let a = env.make_commit_on(&repo, None, "a");
        env.commit_file_on(&repo, Some(&a), "other", "x\n", "b")
    };
    let b = make(&one);
    assert_eq!(b, make(&two));
    let repo = one.path("r.git");
    assert_eq!(
        one.git(&repo, &["ls-tree", "--name-only", &b]),
        "README\nother"
    );
}

#[test]
fn pushmirror_binary_runs_in_the_test_environment() {
    let env = TestEnv::new();
    env.write_config("# empty\n");
    env.pushmirror(&["--help"]).assert_success();
}
