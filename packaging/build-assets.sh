#!/bin/sh
# Generate the man pages and shell completions from the built binary's clap
# definitions into target/assets/ (the sources packaging/files.txt names).
# The .deb, the .rpm and install.sh all run this first.
#   packaging/build-assets.sh [BINARY] [OUTDIR]
# BINARY defaults to the release build in cargo's target directory (which
# $CARGO_TARGET_DIR may move); OUTDIR to target/assets in the checkout, where
# Cargo.toml's package asset lists and packaging/files.txt name the files.
set -eu
cd "$(dirname "$0")/.."
. packaging/target-dir.sh
bin=${1:-$(target_dir)/release/irsa-agent}
out=${2:-target/assets}
if [ ! -x "$bin" ]; then
  echo "build-assets.sh: no binary at $bin (run cargo build --release first)" >&2
  exit 1
fi
rm -rf "$out"
"$bin" --quiet generate "$out" >/dev/null
