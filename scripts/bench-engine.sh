#!/bin/sh
# Engine benchmark (issue point 7): pushmirror against the git CLI at 10,000 branches.
# Usage: scripts/bench-engine.sh [--keep] [--markdown FILE] [--first-runs N] [--noop-runs N]
# Set PUSHMIRROR_BIN to skip the release build. See scripts/bench-engine.py and BENCHMARKS.md.
set -eu
exec python3 "$(dirname "$0")/bench-engine.py" "$@"
