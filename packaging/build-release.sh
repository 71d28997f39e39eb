#!/bin/sh
# Build the release tarball: the release binary and every other source
# packaging/files.txt names, with install.sh, so that
#   tar xzf irsa-agent-VERSION-ARCH-linux.tar.gz
#   cd irsa-agent-VERSION && sudo ./install.sh
# installs the same files as the .deb and the .rpm, with no Rust toolchain.
#   packaging/build-release.sh [OUTDIR]     (default target/packages)
# Expects the release build in cargo's target directory, which $CARGO_TARGET_DIR
# may move (packaging/build-packages.sh builds it); in the tarball it is
# target/release/irsa-agent, where install.sh looks.
set -eu
cd "$(dirname "$0")/.."
. packaging/target-dir.sh
out=${1:-target/packages}
bin=$(target_dir)/release/irsa-agent
[ -x "$bin" ] || { echo "build-release.sh: no $bin (run cargo build --release first)" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
name=irsa-agent-$version
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
mkdir -p "$work/$name"
# install.sh, the list and what install.sh runs, then every listed source
# except the generated man pages and completions (install.sh generates them
# with the binary it installs).
for src in install.sh packaging/files.txt packaging/build-assets.sh packaging/target-dir.sh \
  $(awk '$1 !~ /^#/ && NF >= 3 && $1 !~ /^target\/assets\// { print $1 }' packaging/files.txt); do
  mkdir -p "$work/$name/$(dirname "$src")"
  from=$src
  [ "$src" = target/release/irsa-agent ] && from=$bin
  cp -p "$from" "$work/$name/$src"
done
mkdir -p "$out"
tarball=$out/$name-$(uname -m)-linux.tar.gz
# Reproducible: sorted names, no owners, the commit's time when there is one.
mtime=$(git log -1 --format=%ct 2>/dev/null || date +%s)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
  -C "$work" -cf - "$name" | gzip -9n >"$tarball"
echo "$tarball"
