//! Real SSH servers on loopback for the SSH tests (recipes of
//! ../shared/reference/test-servers.md, sections 1 and 2): OpenSSH's sshd on a free port of
//! 127.0.0.1 with its own host key, key-only, for a user whose login shell is `git-shell`
//! ([`SshServer`]), and gitolite3 behind its own sshd ([`Gitolite`]).
//!
//! They need root (a system user `git`, `gitolite` and `pmdecoy`, created once, idempotently)
//! and the Debian packages openssh-server and gitolite3, which `.ci/run` installs. Everything
//! else lives in the test's directory, which is made traversable (0755) because sshd reads
//! `authorized_keys` as the user and git-shell walks to the repositories. sshd runs in the
//! foreground as a child; `Drop` kills and reaps it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::TestEnv;
use super::process::Background;
use super::servers::start_on_free_port;

const SSHD: &str = "/usr/sbin/sshd";

/// Runs `program args`, panicking with its output unless it succeeds; returns its stdout.
#[track_caller]
pub fn run_checked(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Makes the system user `name` (login shell `shell`, not locked) unless it exists.
pub fn ensure_user(name: &str, shell: &str, home: &str) {
    let exists = Command::new("id")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        // -p '*': an account whose password field starts with '!' is locked, and sshd with
        // `UsePAM no` refuses it.
        let created = Command::new("useradd")
            .args(["--system", "-d", home, "-s", shell, "-p", "*", name])
            .output()
            .expect("useradd runs (the SSH tests need root)");
        // Two tests may race to create the user: the loser's useradd fails, the user exists.
        let now_exists = Command::new("id")
            .arg(name)
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            now_exists,
            "cannot create user {name}: {}",
            String::from_utf8_lossy(&created.stderr)
        );
    }
}

/// Returns the path of `git-shell`, the login shell that lets only git's commands in.
fn git_shell() -> String {
    ["/usr/local/bin/git-shell", "/usr/bin/git-shell"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("git-shell is installed with git")
        .to_owned()
}

/// Panics with how to install OpenSSH's server unless it is there.
fn require_sshd() {
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} is missing: apt-get install openssh-server (.ci/run does)"
    );
}

/// Makes an ed25519 key pair at `path` (no passphrase) with `comment`.
pub fn keygen(path: &Path, comment: &str) {
    run_checked(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            comment,
            "-f",
            &path.to_string_lossy(),
        ],
    );
}

/// Returns `ssh-keygen -lf <path>`'s fingerprint (`SHA256:...`) of the first key in `path`.
pub fn fingerprint(path: &Path) -> String {
    let printed = run_checked("ssh-keygen", &["-lf", &path.to_string_lossy()]);
    printed
        .split_whitespace()
        .nth(1)
        .expect("ssh-keygen -lf prints bits, fingerprint, comment, type")
        .to_owned()
}

/// Returns the `sshd_config` of a key-only server on `port` for `user`.
fn sshd_config(port: u16, dir: &Path, user: &str, authorized_keys: &str) -> String {
    format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_ed25519\n\
         PidFile {dir}/sshd.pid\nAuthorizedKeysFile {authorized_keys}\n\
         AuthenticationMethods publickey\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPermitRootLogin no\nAllowUsers {user}\nUsePAM no\n\
         StrictModes no\nPrintMotd no\nLogLevel VERBOSE\n",
        dir = dir.display()
    )
}

/// Starts sshd with the configuration `config(port)` in `dir`; returns it and its port.
fn start_sshd(env: &TestEnv, dir: &Path, config: impl Fn(u16) -> String) -> (Background, u16) {
    fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
    let log = env.unique_path("logs/sshd", "log");
    start_on_free_port("sshd", &log, |port| {
        let config_path = dir.join("sshd_config");
        fs::write(&config_path, config(port)).expect("write sshd_config");
        let mut cmd = Command::new(SSHD);
        cmd.env_clear().args(["-D", "-e", "-f"]).arg(&config_path);
        cmd
    })
}

/// Makes `env`'s root traversable by the server's users, and lets the test's own git read
/// the repositories they own (git refuses a repository of another user otherwise).
fn open_root(env: &TestEnv) {
    fs::set_permissions(env.root(), fs::Permissions::from_mode(0o755)).expect("chmod root");
    let global = env.path("gitconfig-global");
    let mut text = fs::read_to_string(&global).unwrap_or_default();
    if !text.contains("[safe]") {
        text.push_str("[safe]\n\tdirectory = *\n");
        fs::write(&global, text).expect("write the test's global git config");
    }
}

/// OpenSSH's sshd on 127.0.0.1:<free port>, key-only, user `git` with `git-shell`.
pub struct SshServer {
    process: Background,
    port: u16,
    dir: PathBuf,
}

impl SshServer {
    /// Starts the server, with a fresh host key and no authorized key yet.
    pub fn start(env: &TestEnv) -> SshServer {
        require_sshd();
        open_root(env);
        ensure_user("git", &git_shell(), "/tmp");
        let dir = unique_dir(env, "sshd");
        fs::create_dir_all(dir.join("srv")).expect("mkdir srv");
        keygen(&dir.join("host_ed25519"), "host");
        let authorized = dir.join("authorized_keys");
        fs::write(&authorized, "").expect("write authorized_keys");
        fs::set_permissions(&authorized, fs::Permissions::from_mode(0o644)).expect("chmod");
        let (process, port) = start_sshd(env, &dir, |port| {
            sshd_config(port, &dir, "git", &authorized.to_string_lossy())
        });
        SshServer { process, port, dir }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's public host key file.
    pub fn host_public_key(&self) -> PathBuf {
        self.dir.join("host_ed25519.pub")
    }

    /// The pinned line for this server: `[127.0.0.1]:<port> ssh-ed25519 <key>`, built from
    /// the host key file, not from a scan.
    pub fn known_hosts_line(&self) -> String {
        let public = fs::read_to_string(self.host_public_key()).expect("read host key");
        let key: Vec<&str> = public.split_whitespace().take(2).collect();
        format!("[127.0.0.1]:{} {}", self.port, key.join(" "))
    }

    /// Makes a bare repository `name` under the served directory, owned by `git`.
    pub fn bare_repo(&self, env: &TestEnv, name: &str) -> PathBuf {
        let repo = env.bare_repo(self.dir.join("srv").join(name));
        run_checked(
            "chown",
            &["-R", "git:", &self.dir.join("srv").to_string_lossy()],
        );
        repo
    }

    /// `ssh://git@127.0.0.1:<port><absolute path of repo>`.
    pub fn url(&self, repo: &Path) -> String {
        format!("ssh://git@127.0.0.1:{}{}", self.port, repo.display())
    }

    /// Makes `public_key_line` the only key the server accepts.
    pub fn authorize_only(&self, public_key_line: &str) {
        fs::write(
            self.dir.join("authorized_keys"),
            format!("{}\n", public_key_line.trim()),
        )
        .expect("write authorized_keys");
    }

    /// Everything sshd logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Returns a new directory `<root>/<prefix>-<n>`.
fn unique_dir(env: &TestEnv, prefix: &str) -> PathBuf {
    let dir = env.unique_path(prefix, "d");
    fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// gitolite3 behind its own sshd: user `gitolite`, whose home is moved into the test's
/// directory, administered on the server (conf and keydir, then `gitolite setup`).
pub struct Gitolite {
    process: Background,
    port: u16,
    dir: PathBuf,
}

impl Gitolite {
    /// Sets gitolite up with `conf` as its gitolite.conf and `keys` (user name, public key
    /// line) in its keydir, then starts its sshd.
    pub fn start(env: &TestEnv, conf: &str, keys: &[(&str, &str)]) -> Gitolite {
        require_sshd();
        assert!(
            Path::new("/usr/bin/gitolite").exists() || Path::new("/usr/share/gitolite3").exists(),
            "gitolite3 is missing: apt-get install gitolite3 (.ci/run does)"
        );
        open_root(env);
        ensure_user("gitolite", "/bin/sh", "/tmp");
        let dir = unique_dir(env, "gitolite");
        let home = dir.join("home");
        fs::create_dir_all(&home).expect("mkdir home");
        run_checked("usermod", &["-d", &home.to_string_lossy(), "gitolite"]);
        keygen(&dir.join("host_ed25519"), "host");
        keygen(&dir.join("admin"), "admin");
        fs::copy(dir.join("admin.pub"), home.join("admin.pub")).expect("copy admin.pub");
        run_checked("chown", &["-R", "gitolite:", &home.to_string_lossy()]);
        let as_gitolite = |script: &str| {
            run_checked("su", &["-s", "/bin/sh", "gitolite", "-c", script]);
        };
        as_gitolite("cd && gitolite setup -pk admin.pub >/dev/null 2>&1");
        let admin = "repo gitolite-admin\n    RW+     =   admin\n\n";
        fs::write(
            home.join(".gitolite/conf/gitolite.conf"),
            format!("{admin}{conf}"),
        )
        .expect("write gitolite.conf");
        for (user, line) in keys {
            fs::write(
                home.join(format!(".gitolite/keydir/{user}.pub")),
                format!("{}\n", line.trim()),
            )
            .expect("write key");
        }
        run_checked("chown", &["-R", "gitolite:", &home.to_string_lossy()]);
        as_gitolite("cd && gitolite setup >/dev/null 2>&1");
        let (process, port) = start_sshd(env, &dir, |port| {
            sshd_config(port, &dir, "gitolite", "%h/.ssh/authorized_keys")
        });
        Gitolite { process, port, dir }
    }

    /// `[127.0.0.1]:<port> ssh-ed25519 <key>`.
    pub fn known_hosts_line(&self) -> String {
        let public = fs::read_to_string(self.dir.join("host_ed25519.pub")).expect("read");
        let key: Vec<&str> = public.split_whitespace().take(2).collect();
        format!("[127.0.0.1]:{} {}", self.port, key.join(" "))
    }

    /// `ssh://gitolite@127.0.0.1:<port>/<name>` (names relative to ~/repositories).
    pub fn url(&self, name: &str) -> String {
        format!("ssh://gitolite@127.0.0.1:{}/{name}", self.port)
    }

    /// The bare repository gitolite keeps for `name` (e.g. `x.git`).
    pub fn repo_path(&self, name: &str) -> PathBuf {
        self.dir.join("home/repositories").join(name)
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}
