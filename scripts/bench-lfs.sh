#!/bin/sh
# Git LFS benchmark (issue 9): pushmirror against `git lfs push --all` to the same LFS server.
# Usage: scripts/bench-lfs.sh [--runs N] [--objects N] [--size BYTES] [--markdown FILE] [--keep]
# Set PUSHMIRROR_BIN to skip the release build, PUSHMIRROR_TEST_VENV for giftless's virtual
# environment (default target/ci-venv, as .ci/run makes it). See scripts/bench-lfs.py.
set -eu
exec python3 "$(dirname "$0")/bench-lfs.py" "$@"
