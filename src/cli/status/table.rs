//! The human forms of `status`: the table of all mirrors, and the details of one.
//!
//! Shortening keeps what an operator reads: a repository path loses its start (`…/app.git`,
//! cut at a `/`), a URL keeps its scheme and host whole and loses the start of its path, an
//! error keeps its start and loses its end at a word (`…`). Nothing is shortened when the
//! width is unknown (`None`: not a terminal), so that a pipe or a file gets whole values.

use std::time::SystemTime;

use crate::protocol::MirrorStatus;
use crate::store::state::{Timestamp, UpdateStatus};

/// The narrowest width the table is laid out for; narrower terminals wrap.
const MIN_WIDTH: usize = 60;

/// Below this many columns left for the repository and the URL together, they move to a line
/// of their own under each row.
const NARROW: usize = 50;

/// Returns the width to lay the table out for: `$COLUMNS` when set to a number (it overrides,
/// as in `ls`), else the width of the terminal on stdout (`TIOCGWINSZ`), else `None` when
/// stdout is not a terminal: piped output is not shortened at all.
pub fn terminal_width() -> Option<usize> {
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok());
    columns
        .or_else(stdout_columns)
        .map(|c: usize| c.max(MIN_WIDTH))
}

/// Asks the terminal on stdout for its width; `None` if stdout is not a terminal.
fn stdout_columns() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer it is given, which lives on
    // this stack frame; on a descriptor that is not a terminal it fails and writes nothing.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// Returns the table: one row per mirror, its error on an indented line below (the whole error
/// is in `status NAME`), laid out for `width` columns (`None`: no limit).
pub fn table(entries: &[MirrorStatus], now: SystemTime, width: Option<usize>) -> String {
    struct Row {
        name: String,
        status: String,
        success: String,
        next: String,
    }
    let rows: Vec<Row> = entries
        .iter()
        .map(|e| Row {
            name: e.name.clone(),
            status: status_word(e).to_owned(),
            success: e
                .last_successful_update_at
                .map(|t| ago(t, now))
                .unwrap_or_else(|| "never".into()),
            next: next_update(e, now),
        })
        .collect();
    let column = |header: &str, cell: &dyn Fn(&Row) -> usize| {
        rows.iter()
            .map(cell)
            .max()
            .unwrap_or(0)
            .max(header.chars().count())
    };
    let name_w = column("NAME", &|r| r.name.chars().count());
    let status_w = column("STATUS", &|r| r.status.chars().count());
    let success_w = column("LAST SUCCESS", &|r| r.success.chars().count());
    let next_w = column("NEXT", &|r| r.next.chars().count());
    let repo_max = entries
        .iter()
        .map(|e| e.repo.chars().count())
        .max()
        .unwrap_or(0);
    let url_max = entries
        .iter()
        .map(|e| e.url.chars().count())
        .max()
        .unwrap_or(0);
    let fixed = name_w + status_w + success_w + next_w + 4 * 2 + 2;
    // Too narrow for the two columns: each row's repository and URL go on a line of their
    // own below it, the whole width theirs.
    if let Some(width) = width.filter(|&w| repo_max + url_max > w.saturating_sub(fixed))
        && width.saturating_sub(fixed) < NARROW
    {
        let mut text = format!(
            "{:<name_w$}  {:<status_w$}  {:<success_w$}  NEXT\n",
            "NAME", "STATUS", "LAST SUCCESS"
        );
        let room = width.saturating_sub(2 + 4);
        for (e, row) in entries.iter().zip(&rows) {
            text.push_str(
                format!(
                    "{:<name_w$}  {:<status_w$}  {:<success_w$}  {}",
                    row.name, row.status, row.success, row.next
                )
                .trim_end(),
            );
            let repo_w = e
                .repo
                .chars()
                .count()
                .min((room * 2 / 5).max(room.saturating_sub(e.url.chars().count())));
            let repo = shorten_path(&e.repo, repo_w);
            let url = shorten_url(&e.url, room.saturating_sub(repo.chars().count()));
            text.push_str(&format!("\n  {repo} -> {url}\n"));
            if let Some(error) = &e.last_error {
                text.push_str(&error_line(error, Some(width)));
            }
            text.push_str(&hook_line(e, Some(width)));
        }
        return text;
    }
    let (repo_w, url_w) = match width {
        Some(width) if repo_max + url_max > width.saturating_sub(fixed) => {
            // Two fifths to the repository, unless the URLs leave it more.
            let rest = width.saturating_sub(fixed).max(30);
            let repo_w = repo_max.min((rest * 2 / 5).max(rest.saturating_sub(url_max)));
            (repo_w.max("REPOSITORY".len()), rest.saturating_sub(repo_w))
        }
        _ => (repo_max.max("REPOSITORY".len()), url_max),
    };
    let mut text = format!(
        "{:<name_w$}  {:<status_w$}  {:<success_w$}  {:<next_w$}  {:<repo_w$}  URL\n",
        "NAME", "STATUS", "LAST SUCCESS", "NEXT", "REPOSITORY"
    );
    for (e, row) in entries.iter().zip(&rows) {
        text.push_str(&format!(
            "{:<name_w$}  {:<status_w$}  {:<success_w$}  {:<next_w$}  {:<repo_w$}  {}\n",
            row.name,
            row.status,
            row.success,
            row.next,
            shorten_path(&e.repo, repo_w),
            shorten_url(&e.url, url_w)
        ));
        if let Some(error) = &e.last_error {
            text.push_str(&error_line(error, width));
        }
        text.push_str(&hook_line(e, width));
    }
    text
}

/// Fleet: the line under a row whose repository's `post-receive` does not run pushmirror.
fn hook_line(e: &MirrorStatus, width: Option<usize>) -> String {
    const WARNING: &str = "no post-receive hook runs pushmirror: `pushmirror install-hook --all`";
    if e.hook_installed {
        return String::new();
    }
    let room = width.map(|w| w.saturating_sub("  warning: ".len()).max(30));
    let text = match room {
        Some(room) => shorten_end(WARNING, room),
        None => WARNING.to_owned(),
    };
    format!("  warning: {text}\n")
}

/// Returns the indented line under a row that shows the start of its error.
fn error_line(error: &str, width: Option<usize>) -> String {
    let first = error.lines().next().unwrap_or_default();
    let more = error
        .lines()
        .filter(|l| !l.is_empty())
        .count()
        .saturating_sub(1);
    let suffix = if more > 0 {
        format!(" (+{more} more line{})", if more == 1 { "" } else { "s" })
    } else {
        String::new()
    };
    let room = width.map(|w| {
        w.saturating_sub("  error: ".len() + suffix.chars().count())
            .max(30)
    });
    let first = match room {
        Some(room) => shorten_end(first, room),
        None => first.to_owned(),
    };
    format!("  error: {first}{suffix}\n")
}

/// Returns the status word of the table: `disabled` for a disabled mirror, else its status.
fn status_word(e: &MirrorStatus) -> &str {
    if !e.enabled {
        "disabled"
    } else if e.silent {
        "silent"
    } else if e.paused {
        "paused"
    } else {
        e.update_status.as_str()
    }
}

/// Returns the NEXT cell: "in 4 minutes", "retry in 2 minutes", or "-" when nothing is due.
pub fn next_update(e: &MirrorStatus, now: SystemTime) -> String {
    // Held (silent mode, paused): what is pending runs when it is released.
    let pending = matches!(
        e.update_status,
        UpdateStatus::Scheduled | UpdateStatus::ToRetry
    );
    if e.paused && pending {
        return if e.silent {
            "after silent mode"
        } else {
            "on resume"
        }
        .into();
    }
    match e.next_update_at {
        None => "-".into(),
        Some(at) if e.update_status == UpdateStatus::ToRetry => format!("retry {}", until(at, now)),
        Some(at) => until(at, now),
    }
}

/// Returns `path` in at most `max` characters, its start replaced by `…` and cut at a `/`:
/// `…/git/app.git`. No component is cut: a last component too long for `max` is shown whole
/// after `…/` (wider than `max`), and a path without `/` whole.
pub fn shorten_path(path: &str, max: usize) -> String {
    let count = path.chars().count();
    if count <= max {
        return path.to_owned();
    }
    let keep = max.saturating_sub(1);
    let tail: String = path.chars().skip(count - keep).collect();
    match (tail.find('/'), path.rsplit_once('/')) {
        (Some(slash), _) if slash + 1 < tail.len() => format!("…{}", &tail[slash..]),
        (_, Some((_, last))) if !last.is_empty() => format!("…/{last}"),
        _ => path.to_owned(),
    }
}

/// Returns `url` in at most `max` characters where it can be: the scheme and host (with
/// masked user info and port) are kept whole, never cut, and the path is shortened from the
/// left. A URL whose scheme and host alone are too wide is shown whole.
pub fn shorten_url(url: &str, max: usize) -> String {
    if url.chars().count() <= max {
        return url.to_owned();
    }
    // `scheme://authority/path`, or scp-like `user@host:path`.
    let split = match url.find("://") {
        Some(i) => url[i + 3..].find('/').map(|j| i + 3 + j + 1),
        None => url.find(':').map(|i| i + 1),
    };
    let Some(split) = split else {
        return url.to_owned();
    };
    let (head, path) = url.split_at(split);
    let room = max.saturating_sub(head.chars().count());
    if room < 3 {
        return url.to_owned();
    }
    format!("{head}{}", shorten_path(path, room))
}

/// Returns `text` in at most `max` characters: whole, or its start up to a word boundary
/// followed by `…`. A first word longer than `max` is cut inside.
pub fn shorten_end(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let head: String = text.chars().take(max.saturating_sub(1)).collect();
    let cut = match head.rfind(' ') {
        Some(space) if space > 0 => head[..space].trim_end().to_owned(),
        _ => head,
    };
    format!("{cut}…")
}

/// Returns `t` relative to `now` in words: "just now", "2 minutes ago", "3 days ago".
pub fn ago(t: Timestamp, now: SystemTime) -> String {
    let secs = now.duration_since(t.0).map(|d| d.as_secs()).unwrap_or(0);
    match span(secs) {
        None => "just now".into(),
        Some(words) => format!("{words} ago"),
    }
}

/// Returns when `t` comes, relative to `now`, in words: "in 4 minutes", "now".
pub fn until(t: Timestamp, now: SystemTime) -> String {
    let secs = t.0.duration_since(now).map(|d| d.as_secs()).unwrap_or(0);
    match span(secs) {
        None => "now".into(),
        Some(words) => format!("in {words}"),
    }
}

/// Returns `secs` in the largest whole unit ("2 minutes"), or `None` under ten seconds.
fn span(secs: u64) -> Option<String> {
    let (n, unit) = match secs {
        0..10 => return None,
        10..60 => (secs, "second"),
        60..3600 => (secs / 60, "minute"),
        3600..86400 => (secs / 3600, "hour"),
        _ => (secs / 86400, "day"),
    };
    Some(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }))
}

/// Returns every field of one mirror and its recent history, one `label: value` per line.
pub fn details(e: &MirrorStatus, now: SystemTime) -> String {
    let when = |t: Option<Timestamp>| match t {
        Some(t) => format!("{} ({})", t.rfc3339(), ago(t, now)),
        None => "never".into(),
    };
    let next = match e.next_update_at {
        Some(t) => format!("{} ({})", next_update(e, now), t.rfc3339()),
        None => "-".into(),
    };
    let mut text = String::new();
    let mut field = |label: &str, value: &str| {
        text.push_str(&format!("{label:<21}{value}\n"));
    };
    field("name:", &e.name);
    field("repository:", &e.repo);
    field("url:", &e.url);
    field("enabled:", if e.enabled { "yes" } else { "no" });
    let paused = match (e.silent, e.paused) {
        (true, _) => "yes (silent mode: [daemon] silent = true)",
        (false, true) => "yes ('pushmirror resume' runs what is pending)",
        (false, false) => "no",
    };
    field("paused:", paused);
    field(
        "hook installed:",
        if e.hook_installed {
            "yes"
        } else {
            "no: pushes are not notified; `pushmirror install-hook --all`"
        },
    );
    field("status:", e.update_status.as_str());
    field("last update started:", &when(e.last_update_started_at));
    field("last update ended:", &when(e.last_update_at));
    field("last success:", &when(e.last_successful_update_at));
    field("next update:", &next);
    field(
        "refs (last update):",
        &format!(
            "{} created, {} updated, {} deleted",
            e.refs_created, e.refs_updated, e.refs_deleted
        ),
    );
    let divergent = if e.divergent_refs.is_empty() {
        "none".to_owned()
    } else {
        e.divergent_refs.join(", ")
    };
    field("divergent refs:", &divergent);
    if e.rejected_refs.is_empty() {
        field("rejected refs:", "none");
    } else {
        field("rejected refs:", "");
        for rejected in &e.rejected_refs {
            text.push_str(&format!("  {} ({})\n", rejected.refname, rejected.reason));
        }
    }
    // Git LFS: shown once the mirror's updates uploaded or missed LFS objects.
    if e.lfs_objects_uploaded > 0 || !e.lfs_missing.is_empty() {
        text.push_str(&format!(
            "{:<21}{} objects, {} bytes uploaded\n",
            "lfs (last update):", e.lfs_objects_uploaded, e.lfs_bytes_uploaded
        ));
        if !e.lfs_missing.is_empty() {
            text.push_str("lfs objects missing:\n");
            for missing in &e.lfs_missing {
                text.push_str(&format!(
                    "  {} ({})\n",
                    missing.oid,
                    missing.refs.join(", ")
                ));
            }
        }
    }
    match &e.last_error {
        None => text.push_str(&format!("{:<21}none\n", "last error:")),
        Some(error) => {
            text.push_str("last error:\n");
            for line in error.lines() {
                text.push_str(&format!("  {line}\n"));
            }
        }
    }
    if e.history.is_empty() {
        text.push_str(&format!("{:<21}none\n", "history:"));
        return text;
    }
    text.push_str("history (newest first):\n");
    for past in e.history.iter().rev() {
        text.push_str(&format!(
            "  {}  {:<7}  {:<8}  {:>7}  +{} ~{} -{}\n",
            past.started_at.rfc3339(),
            past.trigger.to_string(),
            past.outcome.as_str(),
            duration(past.duration_ms),
            past.counts.created,
            past.counts.updated,
            past.counts.deleted
        ));
        if let Some(error) = &past.error {
            for line in error.lines().filter(|l| !l.is_empty()) {
                text.push_str(&format!("      {line}\n"));
            }
        }
    }
    text
}

/// Returns a duration in milliseconds as people read it: "850ms", "2.8s", "3m05s".
fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{}.{}s", ms / 1000, ms % 1000 / 100),
        _ => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
    }
}

#[cfg(test)]
mod tests;
