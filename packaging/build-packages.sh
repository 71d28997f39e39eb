#!/bin/sh
# Build the .deb (cargo-deb) and the .rpm (cargo-generate-rpm) from a release
# build, after generating the man pages and completions.
#   packaging/build-packages.sh [OUTDIR]     (default target/packages)
set -eu
cd "$(dirname "$0")/.."
out=${1:-target/packages}
cargo build --release --locked
packaging/build-assets.sh target/release/irsa-agent target/assets
mkdir -p "$out"
cargo deb --no-build --locked --output "$out"
cargo generate-rpm --output "$out"
ls "$out"
