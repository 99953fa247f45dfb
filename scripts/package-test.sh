#!/usr/bin/env bash
# End-to-end test of the Debian package, as root on a Debian machine without systemd: builds
# the package (scripts/build-deb.sh), installs it with `dpkg -i`, runs the daemon as the
# service user `git` (setpriv, no systemd; a python3 stand-in for systemd's notify socket
# checks READY=1 and WATCHDOG=1), lets another user of the group `git` push to a
# repository whose hook the package's binary installed, waits until the daemon has mirrored
# the push, then purges the package and checks that nothing of it is left.
# Exits non-zero, saying which step failed, on any failure. Leaves the machine as it found it
# (the test's pusher and repositories removed; the user `git` removed only if it made it).
set -euo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
step() { echo "--- package-test: $*"; }
fail() {
    echo "package-test: FAILED: $*" >&2
    if [[ -s ${log:-} ]]; then
        echo "--- daemon log" >&2
        cat "$log" >&2
    fi
    exit 1
}

[[ $(id -u) -eq 0 ]] || fail "must run as root (dpkg -i, users, setpriv)"
command -v cargo-deb >/dev/null || fail "cargo-deb missing: cargo install cargo-deb --locked"

pusher=pmtest-pusher
base=/srv/git/pushmirror-package-test
scratch=$(mktemp -d /tmp/pushmirror-package-test.XXXXXX)
log=$scratch/daemon.log
daemon_pid=
notify_pid=
git_user_existed=$(getent passwd git >/dev/null && echo yes || echo no)
srv_git_existed=$([[ -e /srv/git ]] && echo yes || echo no)

cleanup() {
    if [[ -n $daemon_pid ]]; then kill "$daemon_pid" 2>/dev/null || true; fi
    if [[ -n $notify_pid ]]; then kill "$notify_pid" 2>/dev/null || true; fi
    if dpkg-query -W -f='${Status}' pushmirror 2>/dev/null | grep -q installed; then
        dpkg --purge pushmirror >/dev/null 2>&1 || true
    fi
    if getent passwd "$pusher" >/dev/null; then userdel --remove "$pusher" 2>/dev/null || true; fi
    rm -rf "$base" "$scratch"
    if [[ $git_user_existed == no ]] && getent passwd git >/dev/null; then
        userdel git 2>/dev/null || true
        groupdel git 2>/dev/null || true
    fi
    if [[ $srv_git_existed == no ]]; then rm -rf /srv/git; fi
}
trap cleanup EXIT

if dpkg-query -W -f='${Status}' pushmirror 2>/dev/null | grep -q installed; then
    fail "pushmirror is already installed here; the test installs and purges it"
fi

step "build the package"
deb=$(scripts/build-deb.sh)
[[ -f $deb ]] || fail "scripts/build-deb.sh printed no package path (got: $deb)"
echo "$deb"
dpkg-deb --contents "$deb" | awk '{print $1, $2, $6}'

step "dpkg -i"
dpkg -i "$deb" || fail "dpkg -i"

step "check what the package installed"
expect_mode() { # PATH OWNER:GROUP MODE
    local got
    got=$(stat -c '%U:%G %a' "$1") || fail "missing: $1"
    [[ $got == "$2 $3" ]] || fail "$1 is $got, expected $2 $3"
    echo "ok $1 $got"
}
expect_mode /usr/bin/pushmirror root:root 755
expect_mode /etc/pushmirror root:git 750
expect_mode /etc/pushmirror/pushmirror.toml root:git 640
expect_mode /var/lib/pushmirror git:git 750
expect_mode /run/pushmirror git:git 750
for f in /usr/lib/systemd/system/pushmirror.service /usr/share/man/man1/pushmirror.1.gz \
    /usr/share/bash-completion/completions/pushmirror \
    /usr/share/zsh/vendor-completions/_pushmirror \
    /usr/share/fish/vendor_completions.d/pushmirror.fish; do
    [[ -f $f ]] || fail "missing: $f"
    echo "ok $f"
done
dpkg-query -W -f='${Conffiles}\n' pushmirror | grep -q /etc/pushmirror/pushmirror.toml ||
    fail "/etc/pushmirror/pushmirror.toml is not a conffile"
grep -q '^ExecStart=/usr/bin/pushmirror ' /usr/lib/systemd/system/pushmirror.service ||
    fail "the unit does not run /usr/bin/pushmirror"
grep -q '^Type=notify' /usr/lib/systemd/system/pushmirror.service || fail "the unit is not Type=notify"
man -l /usr/share/man/man1/pushmirror.1.gz >/dev/null 2>&1 || zcat /usr/share/man/man1/pushmirror.1.gz |
    grep -q '^\.TH pushmirror 1' || fail "pushmirror(1) is not a man page"
/usr/bin/pushmirror completions bash | grep -q _pushmirror || fail "pushmirror completions bash"

step "repositories and a pusher in the group git"
useradd --create-home --groups git --shell /bin/sh "$pusher"
install -d -o git -g git -m 2775 "$base"
as_git() { setpriv --reuid=git --regid=git --init-groups -- env -i PATH=/usr/bin:/bin HOME="$scratch" GIT_CONFIG_GLOBAL=/dev/null "$@"; }
chmod 0777 "$scratch" # the daemon's HOME and log directory, for this test only
as_git git init -q --bare --shared=group -b main "$base/source.git"
as_git git init -q --bare -b main "$base/mirror.git"

# The test's mirror replaces the example ones; the file keeps the package's owner and mode.
cat >/etc/pushmirror/pushmirror.toml <<TOML
[daemon]
state_dir = "/var/lib/pushmirror"
socket = "/run/pushmirror/control.sock"
socket_group = "git"

[defaults]
delay = "1s"

[[mirror]]
name = "package-test"
repo = "$base/source.git"
url = "$base/mirror.git"
TOML
expect_mode /etc/pushmirror/pushmirror.toml root:git 640
as_git /usr/bin/pushmirror check-config || fail "check-config as git"

step "install the hook (as git)"
as_git /usr/bin/pushmirror install-hook "$base/source.git" || fail "install-hook"
cat "$base/source.git/hooks/post-receive"

step "start the daemon as git (setpriv, no systemd; a stand-in for systemd's notify socket)"
# What systemd would receive from a Type=notify unit with WatchdogSec=2s: READY=1, WATCHDOG=1.
python3 - "$scratch/notify.sock" "$scratch/notify.out" <<'PY' &
import os, socket, sys
receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
receiver.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
with open(sys.argv[2], "ab", buffering=0) as out:
    while True:
        out.write(receiver.recv(4096) + b"\n")
PY
notify_pid=$!
for _ in $(seq 1 50); do [[ -S $scratch/notify.sock ]] && break; sleep 0.1; done
setpriv --reuid=git --regid=git --init-groups -- env -i PATH=/usr/bin:/bin HOME="$scratch" \
    RUST_LOG=info NOTIFY_SOCKET="$scratch/notify.sock" WATCHDOG_USEC=1000000 \
    /usr/bin/pushmirror daemon >"$log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 100); do
    grep -q 'daemon ready' "$log" && break
    kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon exited"
    sleep 0.2
done
grep -q 'daemon ready' "$log" || fail "the daemon did not get ready within 20 s"
expect_mode /run/pushmirror/control.sock git:git 660
for _ in $(seq 1 50); do
    grep -qx 'WATCHDOG=1' "$scratch/notify.out" 2>/dev/null && break
    sleep 0.1
done
grep -qx 'READY=1' "$scratch/notify.out" || fail "systemd's notify socket got no READY=1"
grep -qx 'WATCHDOG=1' "$scratch/notify.out" || fail "systemd's notify socket got no WATCHDOG=1"
echo "ok notify socket: $(sort -u "$scratch/notify.out" | tr '\n' ' ')"

step "push as $pusher (group git) through the installed hook"
# The repository is git's, the pusher another user: git wants it declared safe, which a real
# server does in /etc/gitconfig; here, in the pusher's own global file.
git config --file "$scratch/pusher.gitconfig" safe.directory "$base/source.git"
chmod 0644 "$scratch/pusher.gitconfig"
as_pusher() {
    runuser -u "$pusher" -- env -i PATH=/usr/bin:/bin HOME="/home/$pusher" \
        GIT_CONFIG_GLOBAL="$scratch/pusher.gitconfig" "$@"
}
as_pusher sh -c "cd && git init -q -b main work && cd work &&
    git -c user.name=Pusher -c user.email=pusher@example.com commit -q --allow-empty -m one &&
    git push '$base/source.git' main" 2>&1 | tee "$scratch/push.out" || fail "the push"
want=$(git --git-dir="$base/source.git" rev-parse refs/heads/main)

step "wait for the mirror"
got=
for _ in $(seq 1 150); do
    got=$(git --git-dir="$base/mirror.git" rev-parse -q --verify refs/heads/main 2>/dev/null || true)
    [[ $got == "$want" ]] && break
    sleep 0.2
done
[[ $got == "$want" ]] || fail "mirror.git has main=${got:-nothing}, source.git has $want after 30 s"
echo "mirrored main=$want"
grep -qi spool "$scratch/push.out" && fail "the hook spooled the push instead of reaching the daemon"
as_pusher /usr/bin/pushmirror status || fail "pushmirror status as $pusher"

step "stop the daemon (SIGTERM)"
kill -TERM "$daemon_pid"
wait "$daemon_pid" || fail "the daemon exited with status $? on SIGTERM"
daemon_pid=
echo "--- daemon log"
cat "$log"

step "dpkg --purge"
rm -f "$base/source.git/hooks/post-receive" # the hook calls /usr/bin/pushmirror
dpkg --purge pushmirror || fail "dpkg --purge"
left=()
for p in /usr/bin/pushmirror /etc/pushmirror /var/lib/pushmirror /run/pushmirror \
    /usr/lib/systemd/system/pushmirror.service /usr/share/doc/pushmirror \
    /usr/share/man/man1/pushmirror.1.gz /usr/share/bash-completion/completions/pushmirror \
    /usr/share/zsh/vendor-completions/_pushmirror /usr/share/fish/vendor_completions.d/pushmirror.fish; do
    [[ -e $p ]] && left+=("$p")
done
((${#left[@]} == 0)) || fail "left after purge: ${left[*]}"
getent passwd git >/dev/null || fail "purge removed the user git"
echo "nothing left; the user and group git stay (they may own repositories)"

echo "package-test: ok in $((SECONDS - start)) s"
