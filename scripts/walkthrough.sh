#!/usr/bin/env bash
# Runs the README's "Two commands" walkthrough literally, on a fresh clone of this checkout's
# HEAD: command 1 (the daemon on the shipped demonstration configuration) in the background,
# then each line of the block "With the daemon of command 1 running" as written, and checks
# what the README says they show: `status` prints "scheduled" or "finished", and the commit
# pushed reaches demo/downstream.git (at once, or when the 10-second window ends).
#
# The commands are read from README.md, not copied here, so the README cannot drift from what
# works. Two things differ from a person at a terminal, both outside the commands: the clone
# shares this checkout's target/ (CARGO_TARGET_DIR) so the release build is not made twice,
# and the README's /tmp/work is a fresh temporary directory. HOME and git's configuration are
# isolated; the commit's author comes from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "walkthrough: FAILED: $*" >&2
    if [[ -s ${scratch:-}/daemon.log ]]; then
        echo "--- daemon log (last 40 lines)" >&2
        tail -n 40 "$scratch/daemon.log" >&2
    fi
    exit 1
}

# The lines of the first ```sh block after the line matching $1 (comments and blank lines
# dropped).
block_after() {
    awk -v start="$1" '
        index($0, start) { found = 1; next }
        found && /^```sh$/ { inside = 1; next }
        inside && /^```$/ { exit }
        inside && !/^[[:space:]]*(#|$)/ { print }
    ' README.md
}

daemon_cmd=$(block_after "## Two commands" | grep '^cargo run .* daemon$' || true)
[[ -n $daemon_cmd ]] || fail "README.md: no 'cargo run ... daemon' line under '## Two commands'"
mapfile -t steps < <(block_after "With the daemon of command 1 running")
((${#steps[@]} >= 3)) || fail "README.md: the walkthrough block has ${#steps[@]} lines"

scratch=$(mktemp -d /tmp/pushmirror-walkthrough.XXXXXX)
daemon_pid=
cleanup() {
    if [[ -n $daemon_pid ]]; then
        kill -TERM -- "-$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

export CARGO_TARGET_DIR="$PWD/target"
# rustup and cargo find their toolchain and registry under HOME unless told: keep them.
export RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup} CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
export HOME=$scratch/home GIT_CONFIG_GLOBAL=$scratch/gitconfig GIT_CONFIG_SYSTEM=/dev/null
export GIT_AUTHOR_NAME=walkthrough GIT_AUTHOR_EMAIL=walkthrough@example.invalid
export GIT_COMMITTER_NAME=walkthrough GIT_COMMITTER_EMAIL=walkthrough@example.invalid
mkdir -p "$HOME"
printf '[init]\n\tdefaultBranch = main\n' >"$GIT_CONFIG_GLOBAL"

git clone -q --no-hardlinks "$PWD" "$scratch/checkout"
cd "$scratch/checkout"
work=$scratch/work

echo "--- walkthrough: $daemon_cmd"
setsid bash -c "$daemon_cmd" >"$scratch/daemon.log" 2>&1 &
daemon_pid=$!

# The build comes first (minutes when cold); the daemon is up once status answers.
status_cmd=(cargo run -q --release -- --config config/pushmirror.toml status)
deadline=$((SECONDS + 900))
until "${status_cmd[@]}" >"$scratch/status" 2>&1; do
    kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon exited: $(tail -n 5 "$scratch/daemon.log")"
    ((SECONDS < deadline)) || fail "status never answered; last: $(cat "$scratch/status")"
    sleep 0.5
done
# The first sync runs at start: wait for it, so the push below is a second update.
until grep -q finished "$scratch/status"; do
    ((SECONDS < deadline)) || fail "the first sync did not finish; status: $(cat "$scratch/status")"
    sleep 0.2
    "${status_cmd[@]}" >"$scratch/status" 2>&1 || true
done

for line in "${steps[@]}"; do
    line=${line//\/tmp\/work/$work}
    echo "--- walkthrough: $line"
    # In this shell, not a pipeline's subshell: the README's `cd`s must hold for what follows.
    rc=0
    eval "$line" >"$scratch/out" 2>&1 || rc=$?
    cat "$scratch/out"
    ((rc == 0)) || fail "exit status $rc: $line"
    case $line in
    *" status"*)
        grep -Eq 'scheduled|finished' "$scratch/out" || fail "status shows neither scheduled nor finished"
        ;;
    *"log --oneline -1"*) last_step=$line ;;
    esac
done
[[ -n ${last_step:-} ]] || fail "README.md: the walkthrough no longer ends with a log of demo/downstream.git"

# "is mirrored when the window ends": the downstream's tip becomes the commit pushed.
pushed=$(git --git-dir="$work/.git" rev-parse HEAD)
deadline=$((SECONDS + 60))
until [[ $(git --git-dir=demo/downstream.git rev-parse main 2>/dev/null) == "$pushed" ]]; do
    ((SECONDS < deadline)) || fail "demo/downstream.git main is $(git --git-dir=demo/downstream.git rev-parse main), not the pushed $pushed"
    sleep 0.2
done
echo "walkthrough: ok: $pushed mirrored to demo/downstream.git"
