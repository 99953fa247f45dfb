#!/usr/bin/env bash
# Builds the Debian package: the release binary, then, from that binary, the man pages and shell completions into target/assets/, and the
# unit with the package's /usr/bin paths; then `cargo deb`. Prints the .deb's path last.
# Needs cargo-deb (`cargo install cargo-deb --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bin pushmirror >&2
rm -rf target/assets
target/release/pushmirror completions --assets target/assets
sed 's|/usr/local/bin/pushmirror|/usr/bin/pushmirror|g' config/pushmirror.service \
    >target/assets/pushmirror.service
cargo deb --no-build --locked --output target/debian/ \
    | tail -n 1
