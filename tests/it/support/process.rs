//! Child processes for tests: bounded foreground runs and background servers.
//!
//! Every child runs in its own process group (so a timeout or `Drop` kills whatever it
//! started too) and gets `PR_SET_PDEATHSIG = SIGKILL`, so nothing outlives a test process
//! that is killed from outside (Ctrl-C, nextest timeouts). The death signal fires when the
//! *thread* that spawned the child exits: spawn fixtures from the test's own thread (the body
//! of a `#[test]` or `#[tokio::test]`), not from `spawn_blocking` or a short-lived thread.
//! Output goes to anonymous files, never pipes, so a grandchild that keeps a descriptor open
//! cannot make a test hang.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound on any foreground command run by the support code.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished foreground command printed, for assertions and failure messages.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages (program and arguments, no environment).
    pub command: String,
    /// How it ended.
    pub status: ExitStatus,
    /// Everything written to stdout (lossy UTF-8).
    pub stdout: String,
    /// Everything written to stderr (lossy UTF-8).
    pub stderr: String,
}

impl Output {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code, `None` when it was killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics, printing everything, unless the command exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "command failed\n{self}");
        self
    }

    /// Panics, printing everything, unless the command exited non-zero.
    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        assert!(!self.success(), "command unexpectedly succeeded\n{self}");
        self
    }

    /// Panics, printing everything, unless the command exited with exactly `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "unexpected exit status\n{self}");
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.command)?;
        writeln!(f, "status:  {}", self.status)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// The command line of `cmd` as one string, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
            s.push_str(&format!("{arg:?}"));
        } else {
            s.push_str(&arg);
        }
    }
    s
}

/// Puts the child in its own process group and kills it if the spawning thread dies.
fn isolate(cmd: &mut Command) {
    cmd.process_group(0);
    // SAFETY: `prctl` is async-signal-safe and the closure touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends `signal` to the whole process group led by `pid` (errors such as ESRCH ignored).
fn kill_group(pid: u32, signal: i32) {
    // SAFETY: plain syscall; a negative pid addresses the process group we created.
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

/// Pids of the processes in process group `pgid` that are not zombies (a zombie has
/// already released its sockets and files), from `/proc/<pid>/stat`.
pub fn live_group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the parenthesised command name: state ppid pgrp ...
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2].parse::<u32>() == Ok(pgid)
        })
        .collect()
}

fn read_all(mut file: File) -> String {
    let mut bytes = Vec::new();
    file.rewind().expect("rewind output file");
    file.read_to_end(&mut bytes).expect("read output file");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Polls `child` until it exits or `timeout` passes; backs off from 1 ms to 20 ms.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Runs `cmd` to completion with `stdin` as its input (empty when `None`), killing its whole
/// process group and panicking with everything it printed if it runs longer than `timeout`.
/// `scratch` is a directory for the anonymous output files.
pub fn run_bounded(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
    scratch: &Path,
) -> Output {
    let out = tempfile::tempfile_in(scratch).expect("stdout file");
    let err = tempfile::tempfile_in(scratch).expect("stderr file");
    cmd.stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    isolate(cmd);
    let command = describe(cmd);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
    let writer = stdin.map(|input| {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        // A child that exits without reading its input is not an error here.
        thread::spawn(move || drop(pipe.write_all(&input)))
    });
    let status = wait_with_timeout(&mut child, timeout);
    let timed_out = status.is_none();
    let status = status.unwrap_or_else(|| {
        kill_group(child.id(), libc::SIGKILL);
        child.wait().expect("wait after kill")
    });
    if let Some(writer) = writer {
        writer.join().unwrap();
    }
    let output = Output {
        command,
        status,
        stdout: read_all(out),
        stderr: read_all(err),
    };
    assert!(
        !timed_out,
        "command did not finish within {timeout:?} and was killed\n{output}"
    );
    output
}

/// A long-running child (a server, or `pushmirror daemon`) with stdout and stderr appended to
/// a log file. `Drop` kills its process group with SIGKILL and reaps it.
pub struct Background {
    name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Background {
    /// Starts `cmd` (stdin null, stdout and stderr appended to `log`). Panics if it cannot start.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Background {
        if let Some(dir) = log.parent() {
            fs::create_dir_all(dir).unwrap();
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open log {}: {e}", log.display()));
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        isolate(cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} (`{}`): {e}", describe(cmd)));
        Background {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            status: None,
        }
    }

    /// The process id (also the id of its process group).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path of the log file holding its stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything it has printed so far.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Its exit status if it has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the process itself, not its group.
    pub fn signal(&self, signal: i32) {
        assert!(self.status.is_none(), "{} has already exited", self.name);
        // SAFETY: plain syscall on our own, not yet reaped, child.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(
            rc,
            0,
            "kill({signal}) {}: {}",
            self.name,
            io::Error::last_os_error()
        );
    }

    /// Waits up to `timeout` for it to exit by itself; panics with its log if it does not.
    #[track_caller]
    pub fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        match wait_with_timeout(&mut self.child, timeout) {
            Some(status) => {
                self.status = Some(status);
                status
            }
            None => panic!(
                "{} (pid {}) did not exit within {timeout:?}\n--- log {} ---\n{}",
                self.name,
                self.pid(),
                self.log.display(),
                self.log()
            ),
        }
    }

    /// Kills the whole process group with SIGKILL, reaps the leader and waits (up to 10 s)
    /// until no member of the group is alive, so its ports and files are released when this
    /// returns; idempotent.
    pub fn kill(&mut self) -> ExitStatus {
        let pgid = self.child.id();
        kill_group(pgid, libc::SIGKILL);
        if self.status.is_none() {
            self.status = Some(self.child.wait().expect("wait after kill"));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let alive = live_group_members(pgid);
            if alive.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "{}: processes {alive:?} of group {pgid} survived SIGKILL",
                    self.name
                );
                break;
            }
            kill_group(pgid, libc::SIGKILL);
            thread::sleep(Duration::from_millis(5));
        }
        self.status.unwrap()
    }

    /// A one-line description for messages, e.g. `git daemon (pid 42): exit status: 128`.
    pub fn describe(&mut self) -> String {
        match self.try_wait() {
            Some(status) if status.signal().is_some() => {
                format!("{} (pid {}): killed by {status}", self.name, self.pid())
            }
            Some(status) => format!("{} (pid {}): {status}", self.name, self.pid()),
            None => format!("{} (pid {}): running", self.name, self.pid()),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}
