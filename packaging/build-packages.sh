#!/bin/sh
# Build the .deb (cargo-deb), the .rpm (cargo-generate-rpm) and the release
# tarball (packaging/build-release.sh) from a release build, after generating
# the man pages and completions.
#   packaging/build-packages.sh [OUTDIR]     (default target/packages)
set -eu
cd "$(dirname "$0")/.."
out=${1:-target/packages}
cargo build --release --locked
packaging/build-assets.sh target/release/irsa-agent target/assets
mkdir -p "$out"
cargo deb --no-build --locked --output "$out"
cargo generate-rpm --output "$out"
packaging/build-release.sh "$out" >/dev/null
ls "$out"
