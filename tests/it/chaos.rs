//! Chaos: several repositories, each mirrored to a `git daemon` (`git://`) and a `file://`
//! remote with short windows, take pushes through the installed hook while the daemon is
//! SIGKILLed at random moments and restarted. After a final restart the daemon must settle
//! with every downstream equal to its upstream and every mirror `finished`: nothing lost,
//! nothing stuck in `started`, nothing `failed`.
//!
//! The moments come from a seeded PRNG; the seed is printed first, so a failing run can be
//! replayed (the schedule, not the exact timing, repeats). Environment variables make it
//! longer: `PUSHMIRROR_CHAOS_SEED`, `PUSHMIRROR_CHAOS_KILLS`, `PUSHMIRROR_CHAOS_PUSHES`.
//! RELIABILITY.md at the repository root describes this trial and its figures.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use pushmirror::protocol::{Request, Response};
use serde_json::Value;

use crate::engine::mirror_toml;
use crate::support::{
    Background, GitDaemon, TestEnv, ask, env_number, processes_with_arg, wait_until,
};

/// Upstream repositories, each with two mirrors.
const REPOS: usize = 3;
/// Kills and pushes of a default run (well under a minute on 2 shared cores).
const DEFAULT_KILLS: u64 = 6;
const DEFAULT_PUSHES: u64 = 40;
/// Feature branches the pushes create, move, force and delete (besides `main`).
const FEATURES: [&str; 3] = ["f0", "f1", "f2"];
/// Generous deadline for anything the daemon does "soon".
const SOON: Duration = Duration::from_secs(30);
/// Deadline for the final settle (every mirror converged); generous, not a timing claim.
const SETTLE: Duration = Duration::from_secs(90);
/// How long a mid-update kill waits for a `git` child of the daemon before killing anyway.
const MID_UPDATE_WAIT: Duration = Duration::from_secs(3);

/// SplitMix64: a tiny deterministic PRNG, enough to pick moments and actions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True `percent` times out of 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// When a kill strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum KillAt {
    /// While a push's hook (`pushmirror notify`) runs: before or after the daemon made the
    /// notification durable and answered, so the hook either has its answer or spools.
    DuringHook,
    /// Right after a push returned: its notification was just acknowledged (or spooled).
    AfterPush,
    /// While the daemon has a `git` child (an `ls-remote` or a `push` in flight).
    MidUpdate,
    /// After a random pause of up to 400 ms: anywhere in a window, an update, or idle.
    Jitter,
    /// Within 80 ms of starting: during recovery (state, queue, spool intake, scan).
    AtStartup,
    /// After the last push, when the daemon was up: amid the last pushes' updates.
    Final,
}

/// An upstream repository, the work clone pushing to it, and its two mirrors.
struct Repo {
    upstream: PathBuf,
    work: PathBuf,
    /// (mirror name, downstream bare repository).
    mirrors: [(String, PathBuf); 2],
    /// Feature branches that exist upstream.
    features: BTreeSet<String>,
    /// Tags that exist upstream.
    tags: BTreeSet<String>,
}

/// What the run did, for the closing line and RELIABILITY.md.
#[derive(Default)]
struct Figures {
    pushes: usize,
    /// Pushes whose hook found no daemon and spooled the notification.
    spooled: usize,
    by_action: BTreeMap<&'static str, usize>,
    kills: BTreeMap<KillAt, usize>,
    /// Mid-update kills that found no `git` child within [`MID_UPDATE_WAIT`].
    mid_update_missed: usize,
    /// During-hook kills that found no hook running before the push ended.
    hook_missed: usize,
    starts: usize,
}

struct Chaos {
    env: TestEnv,
    /// Serves the `git://` downstreams; kept alive for the whole run.
    _git: GitDaemon,
    repos: Vec<Repo>,
    daemon: Option<Background>,
    /// The log of every daemon started, in order.
    logs: Vec<PathBuf>,
    rng: Rng,
    seed: u64,
    figures: Figures,
}

impl Chaos {
    fn new(seed: u64) -> Chaos {
        let env = TestEnv::new();
        let git = GitDaemon::start(&env, "gd");
        let mut config = String::from(
            "[daemon]\nstate_dir = \"state\"\n\n\
             [defaults]\nprune = \"all\"\nretries = 5\ntimeout = \"30s\"\n\n",
        );
        let mut repos = Vec::new();
        for r in 0..REPOS {
            let upstream = env.bare_repo(format!("up/r{r}.git"));
            let work = env.work_clone(&upstream, format!("work/r{r}"));
            let over_git = git.bare_repo(&env, &format!("r{r}.git"));
            let over_file = env.bare_repo(format!("file/r{r}.git"));
            let file_url = format!("file://{}", over_file.display());
            config += &mirror_toml(
                &format!("r{r}-git"),
                &upstream,
                &git.url(&format!("r{r}.git")),
                "delay = \"1s\"",
            );
            config += &mirror_toml(
                &format!("r{r}-file"),
                &upstream,
                &file_url,
                "delay = \"0s\"",
            );
            repos.push(Repo {
                upstream,
                work,
                mirrors: [
                    (format!("r{r}-git"), over_git),
                    (format!("r{r}-file"), over_file),
                ],
                features: BTreeSet::new(),
                tags: BTreeSet::new(),
            });
        }
        env.write_config(&config);
        let mut install = vec!["install-hook".to_owned()];
        install.extend(repos.iter().map(|r| r.upstream.display().to_string()));
        let install: Vec<&str> = install.iter().map(String::as_str).collect();
        env.pushmirror(&install).assert_success();
        Chaos {
            env,
            _git: git,
            repos,
            daemon: None,
            logs: Vec::new(),
            rng: Rng(seed),
            seed,
            figures: Figures::default(),
        }
    }

    /// The seed and the tail of the last daemon logs, for failure messages.
    fn context(&self) -> String {
        let mut s = format!("seed {} (PUSHMIRROR_CHAOS_SEED={0})", self.seed);
        for log in self.logs.iter().rev().take(2).rev() {
            let text = fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            s.push_str(&format!("\n--- tail of {} ---\n{tail}", log.display()));
        }
        s
    }

    /// Starts a daemon without waiting for it.
    fn spawn(&mut self) {
        assert!(self.daemon.is_none(), "a daemon is already running");
        let daemon = self.env.spawn_pushmirror(&["daemon"]);
        self.logs.push(daemon.log_path().to_owned());
        self.daemon = Some(daemon);
        self.figures.starts += 1;
    }

    /// Starts a daemon and waits until it answers a ping.
    fn start(&mut self) {
        self.spawn();
        let socket = self.env.path("state/control.sock");
        wait_until("the daemon answers a ping", SOON, || {
            match ask(&socket, &Request::Ping) {
                Ok(Response::Pong { .. }) => Ok(()),
                other => Err(format!("{other:?}\n{}", self.context())),
            }
        });
    }

    /// SIGKILLs the daemon (its whole process group; its `git` children die with it).
    fn sigkill(&mut self) {
        let mut daemon = self.daemon.take().expect("a daemon to kill");
        daemon.kill();
    }

    /// Kills the daemon at a random kind of moment (starting it first if it is down).
    fn kill_at_random(&mut self) {
        let at = if self.daemon.is_none() && self.rng.chance(50) {
            KillAt::AtStartup
        } else {
            *self
                .rng
                .pick(&[KillAt::AfterPush, KillAt::MidUpdate, KillAt::Jitter])
        };
        match at {
            KillAt::AtStartup => {
                self.spawn();
                // The random moment itself: nothing waits on it for correctness.
                thread::sleep(Duration::from_millis(self.rng.below(80) as u64));
            }
            _ if self.daemon.is_none() => self.start(),
            _ => {}
        }
        match at {
            KillAt::MidUpdate => {
                let pid = self.daemon.as_ref().unwrap().pid();
                let deadline = Instant::now() + MID_UPDATE_WAIT;
                while git_children(pid) == 0 {
                    if Instant::now() >= deadline {
                        self.figures.mid_update_missed += 1;
                        break;
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            }
            // The random moment itself: nothing waits on it for correctness.
            KillAt::Jitter => thread::sleep(Duration::from_millis(self.rng.below(400) as u64)),
            KillAt::DuringHook | KillAt::AfterPush | KillAt::AtStartup | KillAt::Final => {}
        }
        self.sigkill();
        *self.figures.kills.entry(at).or_default() += 1;
    }

    /// Makes push number `n` and SIGKILLs the daemon (started first if it is down) as soon as
    /// the push's hook is seen running.
    fn push_while_killing(&mut self, n: usize) {
        if self.daemon.is_none() {
            self.start();
        }
        let mut daemon = self.daemon.take().expect("a daemon to kill");
        // The installed hook runs `pushmirror --config '<config>' notify`.
        let config = self.env.config_path().canonicalize().expect("config path");
        let needle = config.display().to_string();
        let seen = thread::scope(|scope| {
            let pusher = scope.spawn(|| self.push(n));
            let deadline = Instant::now() + MID_UPDATE_WAIT;
            let mut seen = false;
            while !pusher.is_finished() && Instant::now() < deadline {
                if !processes_with_arg(&needle).is_empty() {
                    seen = true;
                    break;
                }
                thread::sleep(Duration::from_millis(1));
            }
            daemon.kill();
            if let Err(panic) = pusher.join() {
                std::panic::resume_unwind(panic);
            }
            seen
        });
        if !seen {
            self.figures.hook_missed += 1;
        }
        *self.figures.kills.entry(KillAt::DuringHook).or_default() += 1;
    }

    /// Runs `git <args>` in work clone `work`; panics unless it succeeds.
    fn git(&self, work: &Path, args: &[&str]) -> String {
        self.env.git(work, args)
    }

    /// `git push <args>` from `work` through the hook; counts a spooled notification.
    fn push_raw(&mut self, work: &Path, args: &[&str], action: &'static str) {
        let mut all = vec!["push", "origin"];
        all.extend_from_slice(args);
        let out = self.env.run(&mut self.env.git_command(work, &all));
        assert!(out.success(), "{out}\n{}", self.context());
        if out.stderr.contains("the push was queued in") {
            self.figures.spooled += 1;
        }
        self.figures.pushes += 1;
        *self.figures.by_action.entry(action).or_default() += 1;
    }

    /// Makes a commit on `branch` in repository `r`'s work clone (creating the branch from
    /// `main` if needed) and returns the branch's refspec.
    fn commit(&mut self, r: usize, branch: &str, n: usize) -> String {
        let work = self.repos[r].work.clone();
        if branch == "main" && !self.env.ref_exists(&work, "HEAD") {
            self.git(&work, &["symbolic-ref", "HEAD", "refs/heads/main"]);
        } else if self.env.ref_exists(&work, &format!("refs/heads/{branch}")) {
            self.git(&work, &["checkout", "-q", branch]);
        } else {
            self.git(&work, &["checkout", "-q", "-b", branch, "main"]);
        }
        let file = format!("{branch}.txt");
        self.env.write_file(
            work.join(&file),
            &format!("push {n} of seed {}\n", self.seed),
        );
        self.git(&work, &["add", "--", &file]);
        self.git(&work, &["commit", "-q", "-m", &format!("push {n}")]);
        format!("refs/heads/{branch}")
    }

    /// Push number `n`: the first push of each repository creates `main`, then a random
    /// action on a random repository.
    fn push(&mut self, n: usize) {
        let r = if n < REPOS { n } else { self.rng.below(REPOS) };
        let work = self.repos[r].work.clone();
        if n < REPOS {
            let spec = self.commit(r, "main", n);
            return self.push_raw(&work, &[&spec], "create main");
        }
        let roll = self.rng.below(100);
        let features: Vec<String> = self.repos[r].features.iter().cloned().collect();
        let tags: Vec<String> = self.repos[r].tags.iter().cloned().collect();
        let mut branches = vec!["main".to_owned()];
        branches.extend(features.iter().cloned());
        match roll {
            // Force a branch one commit back (when it has one to go back to).
            0..10 => {
                let branch = self.rng.pick(&branches).clone();
                self.git(&work, &["checkout", "-q", &branch]);
                if self.env.ref_exists(&work, "HEAD~1") {
                    self.git(&work, &["reset", "-q", "--hard", "HEAD~1"]);
                    return self.push_raw(&work, &["--force", &branch], "force a branch back");
                }
            }
            // A new tag, lightweight or annotated, with the commit it points at.
            10..25 => {
                let branch = self.rng.pick(&branches).clone();
                let spec = self.commit(r, &branch, n);
                let tag = format!("t{n}");
                if self.rng.chance(50) {
                    self.git(&work, &["tag", "-a", "-m", &tag, &tag, &spec]);
                } else {
                    self.git(&work, &["tag", &tag, &spec]);
                }
                self.repos[r].tags.insert(tag.clone());
                let tag_spec = format!("refs/tags/{tag}");
                return self.push_raw(&work, &[&spec, &tag_spec], "commit and tag");
            }
            // Move a tag (a new annotated tag object: always a change).
            25..30 if !tags.is_empty() => {
                let tag = self.rng.pick(&tags).clone();
                let branch = self.rng.pick(&branches).clone();
                let message = format!("{tag} moved by push {n}");
                self.git(&work, &["tag", "-f", "-a", "-m", &message, &tag, &branch]);
                let spec = format!("refs/tags/{tag}");
                return self.push_raw(&work, &["--force", &spec], "move a tag");
            }
            // Delete a feature branch.
            30..40 if !features.is_empty() => {
                let branch = self.rng.pick(&features).clone();
                self.git(&work, &["checkout", "-q", "main"]);
                self.repos[r].features.remove(&branch);
                self.push_raw(&work, &["--delete", &branch], "delete a branch");
                self.git(&work, &["branch", "-q", "-D", &branch]);
                return;
            }
            // Delete a tag.
            40..50 if !tags.is_empty() => {
                let tag = self.rng.pick(&tags).clone();
                self.repos[r].tags.remove(&tag);
                let spec = format!("refs/tags/{tag}");
                self.push_raw(&work, &["--delete", &spec], "delete a tag");
                self.git(&work, &["tag", "-d", &tag]);
                return;
            }
            _ => {}
        }
        // Otherwise (and when the action drawn had nothing to act on): a commit on `main` or
        // on a feature branch (created if it does not exist yet).
        let branch = if self.rng.chance(50) {
            "main".to_owned()
        } else {
            self.rng.pick(&FEATURES).to_string()
        };
        let created = branch != "main" && self.repos[r].features.insert(branch.clone());
        let spec = self.commit(r, &branch, n);
        let action = if created { "create a branch" } else { "commit" };
        self.push_raw(&work, &[&spec], action);
    }

    /// Every mirror's `update_status`, from `status --json`.
    fn statuses(&self) -> Result<BTreeMap<String, String>, String> {
        let out = self.env.pushmirror(&["status", "--json"]);
        if !out.success() {
            return Err(out.to_string());
        }
        let doc: Value = serde_json::from_str(&out.stdout).map_err(|e| format!("{e}\n{out}"))?;
        let mirrors = doc["mirrors"].as_array().ok_or_else(|| out.to_string())?;
        Ok(mirrors
            .iter()
            .map(|m| {
                let s = |k: &str| m[k].as_str().unwrap_or("?").to_owned();
                (s("name"), s("update_status"))
            })
            .collect())
    }

    /// `Ok` when every downstream equals its upstream and every mirror is `finished`, else
    /// what differs.
    fn converged(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for repo in &self.repos {
            let up = self.env.mirrored_refs(&repo.upstream);
            for (name, down) in &repo.mirrors {
                let down = self.env.mirrored_refs(down);
                if down != up {
                    problems.push(format!("{name}: upstream {up:?}\n  downstream {down:?}"));
                }
            }
        }
        let statuses = self.statuses()?;
        let unfinished: Vec<_> = statuses.iter().filter(|(_, s)| *s != "finished").collect();
        if !unfinished.is_empty() {
            problems.push(format!("not finished: {unfinished:?}"));
        }
        if statuses.len() != 2 * REPOS {
            problems.push(format!("{} mirrors in status", statuses.len()));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

/// How many live `git` processes have `pid` as their parent (the daemon's updates run git
/// as its direct children), from `/proc/<pid>/stat`.
fn git_children(pid: u32) -> usize {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| {
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                return false;
            };
            // `pid (comm) state ppid ...`
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                return false;
            };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            &stat[open + 1..close] == "git"
                && fields.len() > 1
                && fields[0] != "Z"
                && fields[1].parse::<u32>() == Ok(pid)
        })
        .count()
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_leaves_nothing_started() {
    let seed = match std::env::var("PUSHMIRROR_CHAOS_SEED") {
        Ok(_) => env_number("PUSHMIRROR_CHAOS_SEED", 0),
        Err(_) => {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        }
    };
    let kills = env_number("PUSHMIRROR_CHAOS_KILLS", DEFAULT_KILLS) as usize;
    let pushes = (env_number("PUSHMIRROR_CHAOS_PUSHES", DEFAULT_PUSHES) as usize).max(REPOS);
    eprintln!(
        "chaos: seed {seed} (rerun with PUSHMIRROR_CHAOS_SEED={seed}), {kills} kills, {pushes} pushes"
    );
    let started = Instant::now();
    let mut chaos = Chaos::new(seed);

    // At which push each kill strikes: during it (its hook) or after it; several may strike
    // at the same push.
    let mut kill_after: Vec<usize> = (0..kills).map(|_| chaos.rng.below(pushes)).collect();
    kill_after.sort_unstable();
    let mut kill_after = kill_after.into_iter().peekable();
    // Pushes to make while the daemon stays down after a kill.
    let mut down_for = 0;
    for n in 0..pushes {
        if chaos.daemon.is_none() {
            if down_for == 0 {
                chaos.start();
            } else {
                down_for -= 1;
            }
        }
        let mut strikes = 0;
        while kill_after.next_if_eq(&n).is_some() {
            strikes += 1;
        }
        let killed = strikes > 0;
        if killed && chaos.rng.chance(30) {
            chaos.push_while_killing(n);
            strikes -= 1;
        } else {
            chaos.push(n);
        }
        for _ in 0..strikes {
            chaos.kill_at_random();
        }
        if killed {
            down_for = chaos.rng.below(3);
        }
    }

    // A final kill (of a daemon amid the last pushes' updates), restart and settle.
    if chaos.daemon.is_some() {
        chaos.sigkill();
        *chaos.figures.kills.entry(KillAt::Final).or_default() += 1;
    }
    let chaos_done = Instant::now();
    chaos.start();
    wait_until(
        "every mirror to converge after the final restart",
        SETTLE,
        || {
            chaos
                .converged()
                .map_err(|e| format!("{e}\n{}", chaos.context()))
        },
    );
    let settled_in = chaos_done.elapsed();

    // The daemon is healthy after all that: one more push per repository is mirrored.
    for r in 0..REPOS {
        let spec = chaos.commit(r, "main", pushes + r);
        let work = chaos.repos[r].work.clone();
        chaos.push_raw(&work, &[&spec], "commit");
    }
    wait_until("the pushes after the chaos to be mirrored", SOON, || {
        chaos
            .converged()
            .map_err(|e| format!("{e}\n{}", chaos.context()))
    });

    // A graceful stop persists `finished` everywhere; the spool is empty; nothing panicked;
    // every downstream is a sound repository.
    let mut daemon = chaos.daemon.take().expect("daemon");
    daemon.signal(libc::SIGTERM);
    let exit = daemon.wait_for_exit(SOON);
    assert!(exit.success(), "{exit:?}\n{}", chaos.context());
    let recorded = chaos.statuses().expect("status from the state files");
    assert!(
        recorded.values().all(|s| s == "finished"),
        "{recorded:?}\n{}",
        chaos.context()
    );
    let spool: Vec<_> = fs::read_dir(chaos.env.path("state/spool"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(spool.is_empty(), "left in the spool: {spool:?}");
    for log in &chaos.logs {
        let text = fs::read_to_string(log).unwrap_or_default();
        assert!(
            !text.contains("panicked"),
            "{}:\n{text}\n{}",
            log.display(),
            chaos.context()
        );
    }
    for repo in &chaos.repos {
        for (_, down) in &repo.mirrors {
            chaos
                .env
                .git(down, &["fsck", "--full", "--strict", "--no-progress"]);
        }
    }

    let f = &chaos.figures;
    let total_kills: usize = f.kills.values().sum();
    eprintln!(
        "chaos: seed {seed}: {} pushes ({} spooled by a hook that found no daemon) {:?}; \
         {total_kills} kills {:?} ({} mid-update kills found no git child, {} during-hook kills \
         no hook); {} daemon starts; \
         settled {settled_in:?} after the final restart; {:?} in all; nothing lost",
        f.pushes,
        f.spooled,
        f.by_action,
        f.kills,
        f.mid_update_missed,
        f.hook_missed,
        f.starts,
        started.elapsed(),
    );
}
