#!/usr/bin/env bash
# A short, bounded fuzzing pass for CI: every cargo-fuzz target runs its
# committed seeds (seeds/<target>/) and the inputs that once found a bug
# (regressions/<target>/), then FUZZ_RUNS new inputs from a fixed seed, so a
# CI failure is reproducible. New corpus entries go to a temp dir and are
# thrown away. Long runs: see docs/testing.md.
#
# cargo-fuzz passes nightly-only `-Z` flags to rustc (sanitizer and coverage
# instrumentation); RUSTC_BOOTSTRAP=1 makes the stable toolchain accept them,
# since no nightly toolchain is installed here. `--sanitizer none` keeps the
# build small (the crates are safe Rust; panics and failed assertions are what
# the targets look for) and `--debug-assertions` keeps overflow checks on.
set -euo pipefail
cd "$(dirname "$0")"

export RUSTC_BOOTSTRAP=1
runs=${FUZZ_RUNS:-20000}
seed=${FUZZ_SEED:-1}

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
if ! command -v c++ >/dev/null; then
  # libfuzzer-sys compiles libFuzzer (C++).
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
  else
    echo "fuzz/run-ci.sh: a C++ compiler (g++) is needed to build libFuzzer" >&2
    exit 1
  fi
fi

flags=(--sanitizer none --debug-assertions --release)
cargo fuzz build "${flags[@]}"
for target in $(cargo fuzz list); do
  work=$(mktemp -d)
  dirs=("$work" "seeds/$target")
  [ -d "regressions/$target" ] && dirs+=("regressions/$target")
  echo "fuzz: $target ($runs runs, seed $seed)"
  status=0
  cargo fuzz run "${flags[@]}" "$target" "${dirs[@]}" -- \
    -runs="$runs" -seed="$seed" -max_len=8192 -timeout=10 -print_final_stats=1 \
    >"$work.log" 2>&1 || status=$?
  grep -E '^(Done|stat::number_of_executed_units)' "$work.log" || true
  if [ "$status" != 0 ]; then
    grep -A30 -E 'panicked|ERROR: libFuzzer' "$work.log" | head -60 >&2 || true
    echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/; reproduce with:" >&2
    echo "  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $target artifacts/$target/<file>)" >&2
  fi
  rm -rf "$work" "$work.log"
  [ "$status" = 0 ] || exit 1
done
