#!/bin/sh
# Build the .deb (cargo-deb), the .rpm (cargo-generate-rpm) and the release
# tarball (packaging/build-release.sh) from a release build, after generating
# the man pages and completions.
#   packaging/build-packages.sh [OUTDIR]     (default target/packages)
# The binary is taken from cargo's target directory ($CARGO_TARGET_DIR may
# move it); cargo-deb and cargo-generate-rpm read Cargo.toml's
# target/release/irsa-agent from there too.
set -eu
cd "$(dirname "$0")/.."
. packaging/target-dir.sh
out=${1:-target/packages}
target=$(target_dir)
cargo build --release --locked
packaging/build-assets.sh "$target/release/irsa-agent" target/assets
mkdir -p "$out"
cargo deb --no-build --locked --output "$out"
cargo generate-rpm --target-dir "$target" --output "$out"
packaging/build-release.sh "$out" >/dev/null
ls "$out"
