#!/bin/sh
# Large-repository benchmark (issue 13): pushmirror against git push with pattern refspecs.
# Usage: scripts/bench-large.sh [--runs N] [--runs-100k N] [--markdown FILE] [--only "TEXT|TEXT"] [--keep]
# Set PUSHMIRROR_BIN to skip the release build. See scripts/bench-large.py and BENCHMARKS.md.
set -eu
exec python3 "$(dirname "$0")/bench-large.py" "$@"
