//! Real git servers on 127.0.0.1 for integration tests: `git daemon` (git://), lighttpd in
//! front of `git http-backend` with HTTP Basic auth, `dulwich daemon` (a second receive-pack,
//! not git's), a TCP server that never answers, and a closed port. Recipes:
//! `/work/shared/reference/git-transport-lfs-and-test-servers.md` §4 and
//! `/work/shared/reference/test-servers.md` §4 (dulwich).

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::TestEnv;
use super::process::{self, Background};

/// How long a server may take to start listening (generous: 2 cores, tests in parallel).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many fresh ports to try when another process takes ours between pick and bind.
const START_ATTEMPTS: usize = 5;

const LIGHTTPD_MISSING: &str =
    "lighttpd is not installed: run .ci/run or apt-get install lighttpd apache2-utils";

/// The dulwich release the tests expect: its words are asserted exactly.
pub const DULWICH_VERSION: &str = "1.2.21";
/// Names the `dulwich` executable to use; `.ci/run` sets it.
const DULWICH_VAR: &str = "PUSHMIRROR_TEST_DULWICH";
/// Where `.ci/run` installs dulwich when the variable is not set (relative to the crate).
const DULWICH_VENV: &str = "target/ci-venv";

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A port on 127.0.0.1 where nothing listens, so connections are refused at once.
pub fn closed_port() -> u16 {
    free_port()
}

/// Tries a TCP connection to 127.0.0.1:`port` with a 1 s connect timeout.
pub fn connect(port: u16) -> io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1))
}

/// Socket inodes listening on TCP `port` (any address), from `/proc/net/tcp{,6}`.
fn listening_inodes(port: u16) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != "0A" {
                continue; // 0A = TCP_LISTEN
            }
            let local_port = fields[1].rsplit(':').next().unwrap_or("");
            if u16::from_str_radix(local_port, 16) == Ok(port) {
                inodes.push(fields[9].to_owned());
            }
        }
    }
    inodes
}

/// True when a process of the group led by `pid` holds a socket listening on `port` (the
/// `git` wrapper runs `git-daemon` as a child, so the leader itself need not). Checking
/// ownership, not just that the port answers, means a server that lost a port race to
/// another process is never mistaken for one that started.
fn group_owns_listener(pid: u32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    let sockets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    process::live_group_members(pid).into_iter().any(|member| {
        let Ok(fds) = fs::read_dir(format!("/proc/{member}/fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .is_ok_and(|target| sockets.iter().any(|s| target.as_os_str() == s.as_str()))
        })
    })
}

/// Starts the server built by `make(port)` on a free port and waits until it listens there;
/// retries with another port if it exits first (e.g. the port was taken meanwhile).
pub(super) fn start_on_free_port(
    name: &str,
    log: &Path,
    mut make: impl FnMut(u16) -> Command,
) -> (Background, u16) {
    let mut failures = String::new();
    for _ in 0..START_ATTEMPTS {
        let port = free_port();
        let mut server = Background::spawn(name, &mut make(port), log);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if server.try_wait().is_some() {
                failures.push_str(&format!("port {port}: {}\n", server.describe()));
                break;
            }
            if group_owns_listener(server.pid(), port) {
                return (server, port);
            }
            if Instant::now() >= deadline {
                let what = server.describe();
                panic!(
                    "{what} did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}\n\
                     --- log {} ---\n{}",
                    log.display(),
                    server.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    panic!(
        "{name} could not start after {START_ATTEMPTS} attempts:\n{failures}--- log {} ---\n{}",
        log.display(),
        fs::read_to_string(log).unwrap_or_default()
    );
}

/// `git daemon` serving every repository under a base path over `git://`, push enabled.
/// Runs in the foreground as a child; `Drop` kills and reaps it.
pub struct GitDaemon {
    process: Background,
    port: u16,
    base_path: PathBuf,
}

impl GitDaemon {
    /// Starts `git daemon --export-all --enable=receive-pack` on a free port of 127.0.0.1,
    /// with `env`'s hermetic git environment, serving `base_path` (created if missing).
    /// Returns once the daemon holds the listening socket.
    pub fn start(env: &TestEnv, base_path: impl AsRef<Path>) -> GitDaemon {
        GitDaemon::start_with_args(env, base_path, &[])
    }

    /// Like [`GitDaemon::start`], with extra `git daemon` options (e.g. `--access-hook=...`).
    pub fn start_with_args(
        env: &TestEnv,
        base_path: impl AsRef<Path>,
        extra: &[&str],
    ) -> GitDaemon {
        let base_path = env.path(base_path);
        fs::create_dir_all(&base_path).unwrap();
        let log = env.unique_path("logs/git-daemon", "log");
        let (process, port) = start_on_free_port("git daemon", &log, |port| {
            let mut cmd = env.command("git");
            cmd.arg("daemon")
                .args(["--export-all", "--enable=receive-pack", "--reuseaddr"])
                .args(["--verbose", "--informative-errors"])
                .arg(format!("--base-path={}", base_path.display()))
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .args(extra)
                .arg(&base_path);
            cmd
        });
        GitDaemon {
            process,
            port,
            base_path,
        }
    }

    /// `git://127.0.0.1:<port>/<name>`, `name` relative to the base path (e.g. `remote.git`).
    pub fn url(&self, name: &str) -> String {
        format!(
            "git://127.0.0.1:{}/{}",
            self.port,
            name.trim_start_matches('/')
        )
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory it serves.
    pub fn base_path(&self) -> &Path {
        &self.base_path
    }

    /// Makes a bare repository `name` under the base path (see [`TestEnv::bare_repo`]).
    pub fn bare_repo(&self, env: &TestEnv, name: &str) -> PathBuf {
        env.bare_repo(self.base_path.join(name))
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// What the daemon has logged (`--verbose`: one line per connection), for messages.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Returns the `dulwich` executable: `$PUSHMIRROR_TEST_DULWICH`, else the one in the virtual
/// environment that `.ci/run` makes. Panics with how to install it when it is missing: a test
/// that needs a second git server never passes without one.
fn dulwich_program() -> PathBuf {
    let program = match std::env::var_os(DULWICH_VAR) {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(DULWICH_VENV)
            .join("bin/dulwich"),
    };
    assert!(
        program.is_file(),
        "dulwich {DULWICH_VERSION} is not installed at {}: run .ci/run, or install it by hand \
         with `python3 -m venv {DULWICH_VENV} && {DULWICH_VENV}/bin/pip install \
         dulwich=={DULWICH_VERSION}` in the crate's directory, or set {DULWICH_VAR} to a \
         dulwich {DULWICH_VERSION} executable",
        program.display()
    );
    program
}

/// `dulwich daemon` (PyPI dulwich, pure Python) serving bare repositories over `git://`, push
/// enabled, no auth: an independent receive-pack, which runs the repository's `update` hook
/// and puts the hook's stderr in the ref's porcelain reason. Runs as a child; `Drop` kills it.
pub struct DulwichDaemon {
    process: Background,
    port: u16,
    base_path: PathBuf,
}

impl DulwichDaemon {
    /// Starts `dulwich daemon` on a free port of 127.0.0.1 for the repositories under
    /// `base_path` (created if missing). Returns once it holds the listening socket.
    pub fn start(env: &TestEnv, base_path: impl AsRef<Path>) -> DulwichDaemon {
        let program = dulwich_program();
        let base_path = env.path(base_path);
        fs::create_dir_all(&base_path).unwrap();
        let log = env.unique_path("logs/dulwich-daemon", "log");
        let (process, port) = start_on_free_port("dulwich daemon", &log, |port| {
            // dulwich 1.2.21 joins the URL's path (which starts with /) onto the root it
            // serves and refuses any other root than `/` ("Path '/x.git' not inside root"):
            // serve `/`, and put the absolute path in the URL.
            let mut cmd = env.command(&program);
            cmd.args(["daemon", "-l", "127.0.0.1", "-p", &port.to_string(), "/"]);
            cmd
        });
        DulwichDaemon {
            process,
            port,
            base_path,
        }
    }

    /// `git://127.0.0.1:<port><absolute path of name>`, `name` relative to the base path.
    pub fn url(&self, name: &str) -> String {
        format!(
            "git://127.0.0.1:{}{}",
            self.port,
            self.base_path.join(name).display()
        )
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Makes a bare repository `name` under the base path with git (dulwich serves git's
    /// repositories as they are).
    pub fn bare_repo(&self, env: &TestEnv, name: &str) -> PathBuf {
        env.bare_repo(self.base_path.join(name))
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// What the daemon has logged (its tracebacks, if any), for messages.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Finds `program` on `PATH` or in the sbin directories (not on a plain user's `PATH`).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// lighttpd serving `git http-backend` under `/git/` with HTTP Basic auth for one user.
/// Runs in the foreground (`lighttpd -D`) as a child; `Drop` kills it.
pub struct HttpServer {
    process: Background,
    port: u16,
    repos_root: PathBuf,
    error_log: PathBuf,
    access_log: PathBuf,
}

impl HttpServer {
    /// Starts lighttpd on a free port of 127.0.0.1 serving the bare repositories under
    /// `repos_root` (created if missing) at `http://127.0.0.1:<port>/git/<name>`, for user
    /// `user` with `password` only. Panics if lighttpd or htpasswd is not installed.
    pub fn start(
        env: &TestEnv,
        repos_root: impl AsRef<Path>,
        user: &str,
        password: &str,
    ) -> HttpServer {
        let lighttpd = find_program("lighttpd").expect(LIGHTTPD_MISSING);
        let htpasswd = find_program("htpasswd").expect(LIGHTTPD_MISSING);
        let repos_root = env.path(repos_root);
        fs::create_dir_all(&repos_root).unwrap();
        let dir = env.unique_path("lighttpd", "d");
        fs::create_dir_all(&dir).unwrap();

        let users = dir.join("htpasswd");
        let mut cmd = env.command(&htpasswd);
        cmd.arg("-i").arg("-c").arg(&users).arg(user);
        env.run_with_stdin(&mut cmd, password.as_bytes())
            .assert_success();

        let backend = PathBuf::from(env.git(env.root(), &["--exec-path"])).join("git-http-backend");
        assert!(backend.is_file(), "no {}", backend.display());
        let error_log = dir.join("error.log");
        let access_log = dir.join("access.log");
        let home = env.path("home");
        let git_env = env.git_env();
        let var = |name: &str| {
            let value = git_env.iter().find(|(k, _)| *k == name).unwrap().1.clone();
            quote(&value.to_string_lossy())
        };
        let (path, global, system) = (
            var("PATH"),
            var("GIT_CONFIG_GLOBAL"),
            var("GIT_CONFIG_SYSTEM"),
        );

        let (process, port) = start_on_free_port("lighttpd", &dir.join("stderr.log"), |port| {
            // mod_auth must come before mod_cgi (lighttpd warns otherwise).
            let conf = format!(
                r#"server.document-root = {root}
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = {error_log}
accesslog.filename = {access_log}
server.modules = ("mod_alias", "mod_setenv", "mod_auth", "mod_authn_file", "mod_cgi", "mod_accesslog")
alias.url = ( "/git/" => {backend} )
$HTTP["url"] =~ "^/git/" {{
  cgi.assign = ("" => "")
  setenv.add-environment = (
    "GIT_PROJECT_ROOT" => {root},
    "GIT_HTTP_EXPORT_ALL" => "",
    "PATH" => {path},
    "HOME" => {home},
    "GIT_CONFIG_GLOBAL" => {global},
    "GIT_CONFIG_SYSTEM" => {system},
    "GIT_CONFIG_NOSYSTEM" => "1",
  )
  auth.backend = "htpasswd"
  auth.backend.htpasswd.userfile = {users}
  auth.require = ("" => ("method" => "basic", "realm" => "git", "require" => "valid-user"))
}}
"#,
                root = quote_path(&repos_root),
                error_log = quote_path(&error_log),
                access_log = quote_path(&access_log),
                backend = quote(&format!("{}/", backend.display())),
                home = quote_path(&home),
                users = quote_path(&users),
            );
            let conf_path = dir.join("lighttpd.conf");
            fs::write(&conf_path, conf).unwrap();
            let mut cmd = env.command(&lighttpd);
            cmd.arg("-D").arg("-f").arg(&conf_path);
            cmd
        });
        HttpServer {
            process,
            port,
            repos_root,
            error_log,
            access_log,
        }
    }

    /// `http://127.0.0.1:<port>/git/<name>`, without credentials.
    pub fn url(&self, name: &str) -> String {
        format!(
            "http://127.0.0.1:{}/git/{}",
            self.port,
            name.trim_start_matches('/')
        )
    }

    /// `http://<user>:<password>@127.0.0.1:<port>/git/<name>` (no percent-encoding: keep
    /// test credentials to letters and digits).
    pub fn url_with_credentials(&self, name: &str, user: &str, password: &str) -> String {
        format!(
            "http://{user}:{password}@127.0.0.1:{}/git/{}",
            self.port,
            name.trim_start_matches('/')
        )
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory whose bare repositories it serves.
    pub fn repos_root(&self) -> &Path {
        &self.repos_root
    }

    /// Makes a bare repository `name` under the served root with `http.receivepack=true`.
    pub fn bare_repo(&self, env: &TestEnv, name: &str) -> PathBuf {
        let repo = env.bare_repo(self.repos_root.join(name));
        enable_http_push(env, &repo);
        repo
    }

    /// lighttpd's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Path of lighttpd's error log (CGI stderr, i.e. `git http-backend` errors, lands here).
    pub fn error_log_path(&self) -> &Path {
        &self.error_log
    }

    /// Path of the access log: one line per request with status and user.
    pub fn access_log_path(&self) -> &Path {
        &self.access_log
    }

    /// The error log, lighttpd's own stderr and the access log, for failure messages.
    pub fn logs(&self) -> String {
        let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- lighttpd error log {} ---\n{}--- lighttpd stderr ---\n{}--- access log ---\n{}",
            self.error_log.display(),
            read(&self.error_log),
            self.process.log(),
            read(&self.access_log)
        )
    }
}

/// Sets `http.receivepack=true` in `repo` so `git http-backend` accepts pushes to it.
/// (With Basic auth `REMOTE_USER` is set and http-backend enables pushes anyway; this makes
/// it explicit and independent of the auth set-up.)
pub fn enable_http_push(env: &TestEnv, repo: &Path) {
    env.git(repo, &["config", "http.receivepack", "true"]);
}

fn quote(s: &str) -> String {
    assert!(
        !s.contains(['"', '\\', '\n']),
        "cannot put {s:?} in lighttpd.conf"
    );
    format!("\"{s}\"")
}

fn quote_path(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

/// A TCP server on 127.0.0.1 that accepts connections and holds them open without ever
/// sending a byte, to exercise timeouts. `Drop` stops the thread, closing everything.
pub struct HangingServer {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HangingServer {
    /// Binds 127.0.0.1:0 and starts accepting in a background thread.
    pub fn start() -> HangingServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::spawn({
            let (accepted, stop) = (accepted.clone(), stop.clone());
            move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            held.push(stream);
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => panic!("HangingServer accept: {e}"),
                    }
                }
                // `held` and `listener` drop here: connections reset, port closed.
            }
        });
        HangingServer {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>/<name>`: an HTTP URL that never answers.
    pub fn http_url(&self, name: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            name.trim_start_matches('/')
        )
    }

    /// `git://127.0.0.1:<port>/<name>`: a git URL that never answers.
    pub fn git_url(&self, name: &str) -> String {
        format!(
            "git://127.0.0.1:{}/{}",
            self.port,
            name.trim_start_matches('/')
        )
    }

    /// How many connections it has accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for HangingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // Do not panic while panicking: the accept thread's own panic is reported anyway.
            let _ = thread.join();
        }
    }
}
