//! Real Git LFS servers on 127.0.0.1, and LFS repositories made with the real git-lfs client.
//! Recipes: `/work/shared/reference/test-servers.md` §3a (giftless) and §3c (dulwich).
//!
//! - [`Giftless`] 0.6.2: the batch API at `/<org>/<repo>.git/info/lfs`, JWT auth (Basic
//!   `_jwt:<token>`) or anonymous, per-action `Authorization` headers, a `verify` action.
//! - [`DulwichLfs`]: dulwich 1.2.21's LFS server, no auth, routes at the root, checks the
//!   SHA-256 of each upload (400), answers without `transfer`.
//!
//! Both run from the Python virtual environment `.ci/run` makes (`target/ci-venv`, or
//! `$PUSHMIRROR_TEST_VENV`).

use std::fs;
use std::path::{Path, PathBuf};

use super::TestEnv;
use super::process::Background;
use super::servers::start_on_free_port;

/// Names the virtual environment to use; `.ci/run` sets it.
const VENV_VAR: &str = "PUSHMIRROR_TEST_VENV";
const VENV: &str = "target/ci-venv";

/// The HS256 secret of the JWT giftless (at least 32 bytes, or PyJWT warns).
const JWT_SECRET: &str = "0123456789abcdef0123456789abcdef";

/// Returns the virtual environment's `bin/`, panicking with how to install it if giftless
/// is missing.
fn venv_bin() -> PathBuf {
    let venv = match std::env::var_os(VENV_VAR) {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(VENV),
    };
    let bin = venv.join("bin");
    assert!(
        bin.join("flask").is_file() && bin.join("python").is_file(),
        "giftless is not installed in {}: run .ci/run (it installs dulwich and giftless there, \
         pinned), or set {VENV_VAR} to a virtual environment that has them",
        venv.display()
    );
    bin
}

/// Panics with how to install git-lfs when it is missing.
pub fn require_git_lfs(env: &TestEnv) {
    let out = env.run(env.command("git").args(["lfs", "version"]));
    assert!(
        out.success(),
        "git-lfs is not installed: run .ci/run or apt-get install git-lfs\n{out}"
    );
}

/// How giftless authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiftlessAuth {
    /// `giftless.auth.jwt`: a JWT as Bearer, or as the password of Basic user `_jwt`.
    Jwt,
    /// `allow_anon:read_write`: anyone may read and write.
    Anonymous,
}

/// giftless on a free port with local storage; `Drop` kills it.
pub struct Giftless {
    process: Background,
    port: u16,
    storage: PathBuf,
    token: Option<String>,
}

impl Giftless {
    pub fn start(env: &TestEnv, auth: GiftlessAuth) -> Giftless {
        let bin = venv_bin();
        let dir = env.unique_path("giftless", "d");
        let storage = dir.join("storage");
        fs::create_dir_all(&storage).unwrap();
        let auth_provider = match auth {
            GiftlessAuth::Jwt => format!(
                "  - factory: giftless.auth.jwt:factory\n    options: {{algorithm: HS256, \
                 private_key: {JWT_SECRET}}}\n"
            ),
            GiftlessAuth::Anonymous => "  - giftless.auth.allow_anon:read_write\n".to_owned(),
        };
        let config = dir.join("giftless.yaml");
        fs::write(
            &config,
            format!(
                "AUTH_PROVIDERS:\n{auth_provider}TRANSFER_ADAPTERS:\n  basic:\n    factory: \
                 giftless.transfer.basic_streaming:factory\n    options:\n      storage_class: \
                 giftless.storage.local_storage:LocalStorage\n      storage_options: {{path: \
                 {}}}\nLEGACY_ENDPOINTS: false\n",
                storage.display()
            ),
        )
        .unwrap();
        let log = dir.join("giftless.log");
        let (process, port) = start_on_free_port("giftless", &log, |port| {
            let mut cmd = env.command(bin.join("flask"));
            cmd.env("GIFTLESS_CONFIG_FILE", &config)
                .args([
                    "--app",
                    "giftless.wsgi_entrypoint",
                    "run",
                    "--host",
                    "127.0.0.1",
                ])
                .args(["--port", &port.to_string(), "--with-threads"]);
            cmd
        });
        let token = (auth == GiftlessAuth::Jwt).then(|| {
            let script = format!(
                "import jwt,time;print(jwt.encode({{'sub':'mirror','exp':int(time.time())+3600,\
                 'scopes':['obj:org/*']}},'{JWT_SECRET}',algorithm='HS256'))"
            );
            let out = env.run(env.command(bin.join("python")).args(["-c", &script]));
            out.assert_success();
            out.stdout.trim().to_owned()
        });
        Giftless {
            process,
            port,
            storage,
            token,
        }
    }

    /// The LFS endpoint of repository `repo` of organisation `org`, without credentials.
    pub fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/org/{repo}.git/info/lfs", self.port)
    }

    /// The same with `_jwt:<token>` in it, for the git-lfs client of a test.
    pub fn url_with_token(&self, repo: &str) -> String {
        match &self.token {
            Some(token) => format!(
                "http://_jwt:{token}@127.0.0.1:{}/org/{repo}.git/info/lfs",
                self.port
            ),
            None => self.url(repo),
        }
    }

    /// The JWT that grants write access to every repository of `org`.
    pub fn token(&self) -> &str {
        self.token.as_deref().expect("a JWT giftless")
    }

    /// Where it stores objects.
    pub fn storage(&self) -> &Path {
        &self.storage
    }

    /// The oids stored, sorted.
    pub fn stored(&self) -> Vec<String> {
        stored_files(&self.storage)
    }

    /// What it logged (one line per request).
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// dulwich's LFS server on a free port; `Drop` kills it.
pub struct DulwichLfs {
    process: Background,
    port: u16,
    store: PathBuf,
}

impl DulwichLfs {
    pub fn start(env: &TestEnv) -> DulwichLfs {
        let bin = venv_bin();
        let store = env.unique_path("dulwich-lfs", "d");
        fs::create_dir_all(&store).unwrap();
        let log = env.unique_path("logs/dulwich-lfs", "log");
        let (process, port) = start_on_free_port("dulwich LFS server", &log, |port| {
            let mut cmd = env.command(bin.join("python"));
            cmd.args([
                "-c",
                "import sys\nfrom dulwich.lfs_server import run_lfs_server\n\
                 srv, url = run_lfs_server(sys.argv[1], int(sys.argv[2]), sys.argv[3])\n\
                 srv.serve_forever()",
                "127.0.0.1",
                &port.to_string(),
            ])
            .arg(&store);
            cmd
        });
        DulwichLfs {
            process,
            port,
            store,
        }
    }

    /// Its LFS endpoint (routes only at the root).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The oids stored, sorted.
    pub fn stored(&self) -> Vec<String> {
        stored_files(&self.store)
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Returns the names of the files under `dir` that look like LFS oids, sorted.
pub fn stored_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                    found.push(name);
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// A bare source repository whose LFS objects are in its own `lfs/objects` (as git-lfs puts
/// them when pushing to a local path, and as the LFS transfer of plain SSH servers keeps
/// them), with a work clone that commits through the real git-lfs client.
pub struct LfsSource {
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl LfsSource {
    /// Makes `<name>.git` and its work clone, `*.bin` tracked by LFS, nothing committed.
    pub fn new(env: &TestEnv, name: &str) -> LfsSource {
        require_git_lfs(env);
        // filter.lfs.* into the environment's (empty, hermetic) global configuration.
        env.git(env.root(), &["lfs", "install", "--skip-repo"]);
        let bare = env.bare_repo(format!("{name}.git"));
        let work = env.path(format!("{name}-work"));
        env.git(
            env.root(),
            &["init", "-q", "-b", "main", work.to_str().unwrap()],
        );
        env.git(&work, &["lfs", "install", "--local"]);
        env.git(&work, &["lfs", "track", "*.bin"]);
        env.git(&work, &["add", ".gitattributes"]);
        env.git(&work, &["commit", "-q", "-m", "track *.bin with LFS"]);
        LfsSource { bare, work }
    }

    /// Writes `files` (name, bytes) in the work tree, commits them on the current branch.
    pub fn commit(&self, env: &TestEnv, message: &str, files: &[(&str, Vec<u8>)]) {
        for (name, bytes) in files {
            let path = self.work.join(name);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).unwrap();
            }
            fs::write(path, bytes).unwrap();
            env.git(&self.work, &["add", name]);
        }
        env.git(&self.work, &["commit", "-q", "-m", message]);
    }

    /// Switches the work clone to `branch`, made from the current commit if new.
    pub fn checkout(&self, env: &TestEnv, branch: &str) {
        let exists = env
            .run(&mut env.git_command(&self.work, &["rev-parse", "--verify", "-q", branch]))
            .success();
        if exists {
            env.git(&self.work, &["checkout", "-q", branch]);
        } else {
            env.git(&self.work, &["checkout", "-q", "-b", branch]);
        }
    }

    /// Pushes `refspecs` to the bare repository by its file:// URL: git-lfs's pre-push hook
    /// copies the objects into `<bare>/lfs/objects`.
    pub fn push(&self, env: &TestEnv, refspecs: &[&str]) {
        let url = format!("file://{}", self.bare.display());
        let mut args = vec!["push", "-q", url.as_str()];
        args.extend_from_slice(refspecs);
        env.git(&self.work, &args);
    }

    /// The bare repository's LFS object store.
    pub fn store(&self) -> PathBuf {
        self.bare.join("lfs/objects")
    }
}

/// Returns `len` bytes that differ for every `seed` (a cheap generator: objects must be
/// distinct, not random).
pub fn object_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Returns the SHA-256 oid of `bytes` as git-lfs names it.
pub fn oid_of(env: &TestEnv, bytes: &[u8]) -> String {
    let out = env.run_with_stdin(&mut env.command("sha256sum"), bytes);
    out.assert_success();
    out.stdout.split_whitespace().next().unwrap().to_owned()
}

/// An HTTP front for an LFS server that answers the first `throttled` batch requests with
/// `429 Too Many Requests` and `Retry-After: 1`, and forwards everything else to the server
/// as it is: the real server's answers, behind a rate limit. Python's standard library only;
/// each request is logged as `<unix time> <method> <path> <status>`. `Drop` kills it.
pub struct ThrottlingFront {
    process: Background,
    port: u16,
    log: PathBuf,
}

const THROTTLING_FRONT: &str = r#"
import http.server, sys, time, urllib.request, urllib.error
port, target, throttled, log = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
seen = {"batch": 0}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def note(self, status):
        with open(log, "a") as f:
            f.write(f"{time.time():.3f} {self.command} {self.path} {status}\n")
    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.path.endswith("/objects/batch") and seen["batch"] < throttled:
            seen["batch"] += 1
            data = b'{"message": "slow down"}'
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "application/vnd.git-lfs+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.note(429)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "content-length")}
        request = urllib.request.Request(target + self.path, data=body, headers=headers, method=self.command)
        try:
            response = urllib.request.urlopen(request)
        except urllib.error.HTTPError as e:
            response = e
        data = response.read()
        self.send_response(response.status)
        for k, v in response.headers.items():
            if k.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.note(response.status)
    do_GET = do_POST = do_PUT = handle_any
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

impl ThrottlingFront {
    /// Starts the front for the server at `target` (`http://127.0.0.1:PORT`).
    pub fn start(env: &TestEnv, target: &str, throttled: usize) -> ThrottlingFront {
        let dir = env.unique_path("throttling-front", "d");
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("requests.log");
        fs::write(&log, "").unwrap();
        let (process, port) =
            start_on_free_port("throttling LFS front", &dir.join("stderr.log"), |port| {
                let mut cmd = env.command("python3");
                cmd.args([
                    "-c",
                    THROTTLING_FRONT,
                    &port.to_string(),
                    target,
                    &throttled.to_string(),
                ])
                .arg(&log);
                cmd
            });
        ThrottlingFront { process, port, log }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The requests it saw: (unix time, method, path, status).
    pub fn requests(&self) -> Vec<(f64, String, String, u16)> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut f = line.split(' ');
                Some((
                    f.next()?.parse().ok()?,
                    f.next()?.to_owned(),
                    f.next()?.to_owned(),
                    f.next()?.parse().ok()?,
                ))
            })
            .collect()
    }

    pub fn log(&self) -> String {
        format!(
            "{}\n{}",
            fs::read_to_string(&self.log).unwrap_or_default(),
            self.process.log()
        )
    }
}
