use std::time::Duration;

use super::*;
use crate::store::state::{RefCounts, Trigger, UpdateSummary};

const NOW: u64 = 1_000_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
}

fn at(offset: i64) -> Timestamp {
    Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(NOW.saturating_add_signed(offset)))
}

fn entry(name: &str, repo: &str, url: &str) -> MirrorStatus {
    MirrorStatus {
        name: name.into(),
        repo: repo.into(),
        url: url.into(),
        enabled: true,
        update_status: UpdateStatus::Finished,
        last_update_started_at: Some(at(-125)),
        last_update_at: Some(at(-120)),
        last_successful_update_at: Some(at(-120)),
        next_update_at: None,
        last_error: None,
        divergent_refs: Vec::new(),
        rejected_refs: Vec::new(),
        refs_created: 0,
        refs_updated: 1,
        refs_deleted: 0,
        history: Vec::new(),
        paused: false,
        silent: false,
        lfs_objects_uploaded: 0,
        lfs_bytes_uploaded: 0,
        lfs_missing: Vec::new(),
        hook_installed: true,
    }
}

#[test]
fn held_mirrors_say_so_and_when_their_pending_update_runs() {
    let mut paused = entry("p", "/srv/git/a.git", "https://h/a.git");
    paused.paused = true;
    paused.update_status = UpdateStatus::Scheduled;
    let mut silent = entry("s", "/srv/git/a.git", "https://h/a.git");
    silent.paused = true;
    silent.silent = true;
    let text = table(&[paused.clone(), silent], now(), None);
    let rows: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(
        rows[0].starts_with("p paused 2 minutes ago on resume"),
        "{text}"
    );
    assert!(rows[1].starts_with("s silent 2 minutes ago -"), "{text}");
    let details = details(&paused, now());
    assert!(
        details.lines().any(|l| l.starts_with("paused:")
            && l.ends_with("yes ('pushmirror resume' runs what is pending)")),
        "{details}"
    );
}

#[test]
fn ages_read_as_words() {
    let at = |secs_ago: i64| at(-secs_ago);
    assert_eq!(ago(at(3), now()), "just now");
    assert_eq!(ago(at(45), now()), "45 seconds ago");
    assert_eq!(ago(at(60), now()), "1 minute ago");
    assert_eq!(ago(at(150), now()), "2 minutes ago");
    assert_eq!(ago(at(7200), now()), "2 hours ago");
    assert_eq!(ago(at(3 * 86400), now()), "3 days ago");
}

#[test]
fn times_to_come_read_as_words() {
    assert_eq!(until(at(240), now()), "in 4 minutes");
    assert_eq!(until(at(3), now()), "now");
    assert_eq!(until(at(-30), now()), "now");
    assert_eq!(until(at(7200), now()), "in 2 hours");
}

#[test]
fn paths_are_shortened_from_the_left_at_a_slash() {
    assert_eq!(shorten_path("short", 10), "short");
    assert_eq!(
        shorten_path("/srv/git/very/long/path/app.git", 15),
        "…/path/app.git"
    );
    assert!(
        shorten_path("/srv/git/very/long/path/app.git", 15)
            .chars()
            .count()
            <= 15
    );
    // A last component wider than the room is not cut.
    assert_eq!(
        shorten_path("/srv/a-very-long-name.git", 10),
        "…/a-very-long-name.git"
    );
    assert_eq!(
        shorten_path("a-very-long-name.git", 10),
        "a-very-long-name.git"
    );
}

#[test]
fn urls_keep_scheme_and_host_whole() {
    let url = "http://*****:*****@127.0.0.1:18089/group/sub/project.git";
    assert_eq!(shorten_url(url, 200), url);
    assert_eq!(
        shorten_url(url, 45),
        "http://*****:*****@127.0.0.1:18089/…/project.git"
    );
    // Too narrow for the host: shown whole rather than cut inside it.
    assert_eq!(shorten_url(url, 20), url);
    assert_eq!(
        shorten_url("git@github.com:acme/tools/app.git", 25),
        "git@github.com:…/app.git"
    );
}

#[test]
fn errors_keep_their_start_and_lose_their_end_at_a_word() {
    let error = "cannot connect to github.com: connection refused after three attempts";
    assert_eq!(shorten_end(error, 200), error);
    let short = shorten_end(error, 40);
    assert_eq!(short, "cannot connect to github.com:…");
    assert!(short.chars().count() <= 40);
}

#[test]
fn the_table_fits_the_width_and_shows_next() {
    let mut waiting = entry(
        "app-github",
        "/srv/git/department/team/app.git",
        "https://*****:*****@github.com/acme-corporation/app.git",
    );
    waiting.update_status = UpdateStatus::Scheduled;
    waiting.next_update_at = Some(at(240));
    let mut retrying = entry(
        "lib",
        "/srv/git/lib.git",
        "ssh://git@gitlab.example.com/lib.git",
    );
    retrying.update_status = UpdateStatus::ToRetry;
    retrying.next_update_at = Some(at(120));
    retrying.last_error = Some(
        "cannot connect to gitlab.example.com: connection timed out after 30 seconds\nmore".into(),
    );
    let idle = entry("docs", "/srv/git/docs.git", "file:///srv/mirror/docs.git");
    let entries = [waiting, retrying, idle];
    let text = table(&entries, now(), Some(140));
    for line in text.lines() {
        assert!(
            line.chars().count() <= 140,
            "{}: {line}\n{text}",
            line.chars().count()
        );
    }
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("  NEXT  "), "{text}");
    assert!(lines[1].contains("in 4 minutes"), "{text}");
    assert!(
        lines[1].contains("https://*****:*****@github.com/"),
        "{text}"
    );
    assert!(lines[2].contains("retry in 2 minutes"), "{text}");
    assert!(
        lines[3].starts_with("  error: cannot connect to gitlab.example.com:"),
        "{text}"
    );
    assert!(lines[3].ends_with("(+1 more line)"), "{text}");
    assert!(lines[4].starts_with("docs "), "{text}");
    assert!(lines[4].contains("  -  "), "{text}");
    // 80 columns: repository and URL go below each row, shortened, hosts whole.
    let narrow = table(&entries, now(), Some(80));
    for line in narrow.lines() {
        assert!(
            line.chars().count() <= 80,
            "{}: {line}\n{narrow}",
            line.chars().count()
        );
    }
    let lines: Vec<&str> = narrow.lines().collect();
    assert_eq!(lines[0].split_whitespace().last(), Some("NEXT"), "{narrow}");
    assert!(lines[1].ends_with("in 4 minutes"), "{narrow}");
    assert!(
        lines[2].starts_with(
            "  …/git/department/team/app.git -> https://*****:*****@github.com/…/app.git"
        ),
        "{narrow}"
    );
    assert!(
        lines[4].starts_with("  /srv/git/lib.git -> ssh://git@gitlab.example.com/lib.git"),
        "{narrow}"
    );
    assert!(
        lines[5].starts_with("  error: cannot connect to gitlab.example.com: connection"),
        "{narrow}"
    );
    // Unknown width (a pipe): nothing is shortened.
    let whole = table(&entries, now(), None);
    assert!(
        whole.contains("/srv/git/department/team/app.git"),
        "{whole}"
    );
    assert!(whole.contains("acme-corporation/app.git"), "{whole}");
    assert!(!whole.contains('…'), "{whole}");
}

#[test]
fn details_show_every_field_and_the_history() {
    let mut e = entry("app", "/srv/git/app.git", "https://github.com/acme/app.git");
    e.update_status = UpdateStatus::ToRetry;
    e.next_update_at = Some(at(120));
    e.last_error = Some("first line\nsecond line".into());
    e.history = vec![
        UpdateSummary {
            trigger: Trigger::Push,
            started_at: at(-600),
            duration_ms: 2751,
            counts: RefCounts {
                created: 1,
                updated: 2,
                deleted: 0,
            },
            outcome: UpdateStatus::Finished,
            error: None,
        },
        UpdateSummary {
            trigger: Trigger::Forced,
            started_at: at(-125),
            duration_ms: 850,
            counts: RefCounts::default(),
            outcome: UpdateStatus::ToRetry,
            error: Some("first line\nsecond line".into()),
        },
    ];
    let text = details(&e, now());
    for wanted in [
        "name:                app\n",
        "repository:          /srv/git/app.git\n",
        "url:                 https://github.com/acme/app.git\n",
        "enabled:             yes\n",
        "hook installed:      yes\n",
        "status:              to_retry\n",
        "last success:        1970-01-12T13:44:40.000Z (2 minutes ago)\n",
        "next update:         retry in 2 minutes (1970-01-12T13:48:40.000Z)\n",
        "refs (last update):  0 created, 1 updated, 0 deleted\n",
        "divergent refs:      none\n",
        "last error:\n  first line\n  second line\n",
        "history (newest first):\n  1970-01-12T13:44:35.000Z  forced   to_retry    850ms  +0 ~0 -0\n      first line\n      second line\n  1970-01-12T13:36:40.000Z  push     finished     2.7s  +1 ~2 -0\n",
    ] {
        assert!(text.contains(wanted), "{wanted:?} not in\n{text}");
    }
}

#[test]
fn a_mirror_without_its_hook_gets_a_warning_line_that_fits() {
    let mut e = entry("app", "/srv/git/app.git", "https://github.com/acme/app.git");
    e.hook_installed = false;
    let wide = table(std::slice::from_ref(&e), now(), None);
    assert!(
        wide.ends_with(
            "\n  warning: no post-receive hook runs pushmirror: `pushmirror install-hook --all`\n"
        ),
        "{wide}"
    );
    let narrow = table(&[e.clone()], now(), Some(60));
    assert!(narrow.lines().all(|l| l.chars().count() <= 60), "{narrow}");
    assert!(
        narrow.contains("  warning: no post-receive hook runs"),
        "{narrow}"
    );
    assert!(details(&e, now()).contains("hook installed:      no: pushes are not notified"));
}
