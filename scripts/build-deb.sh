#!/usr/bin/env bash
# Builds the Debian package: the binary (profile $PUSHMIRROR_DEB_PROFILE, default release),
# then, from that binary, the man pages and shell completions into target/assets/, and the
# unit with the package's /usr/bin paths; then `cargo deb`. Prints the .deb's path last.
# Needs cargo-deb (`cargo install cargo-deb --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PUSHMIRROR_DEB_PROFILE:-release}
case $profile in
    dev) dir=debug ;;
    *) dir=$profile ;;
esac

cargo build --profile "$profile" --locked --bin pushmirror >&2
rm -rf target/assets
"target/$dir/pushmirror" completions --assets target/assets
sed 's|/usr/local/bin/pushmirror|/usr/bin/pushmirror|g' config/pushmirror.service \
    >target/assets/pushmirror.service
# xz for the package that ships; gzip (--fast) for the test's dev build.
compression=()
[[ $profile == dev ]] && compression=(--fast)
cargo deb --no-build --profile "$profile" --locked "${compression[@]}" --output target/debian/ \
    | tail -n 1
