#!/bin/sh
# Daemon and hook benchmark (issue point 10): hook overhead, push-to-mirror latency, a burst
# of notifications, an idle daemon with 10,000 mirrors.
# Usage: scripts/bench-daemon.sh [--keep] [--markdown FILE] [--only hook|burst|idle|template] ...
# Builds the release binary (cargo build --release --quiet) unless PUSHMIRROR_BIN names one.
# See scripts/bench-daemon.py and BENCHMARKS.md ("Daemon and hook").
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${PUSHMIRROR_BIN:-}" ]; then
    (cd "$here/.." && cargo build --release --quiet)
    PUSHMIRROR_BIN="$here/../target/release/pushmirror"
    export PUSHMIRROR_BIN
fi
exec python3 "$here/bench-daemon.py" "$@"
