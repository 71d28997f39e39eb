# Sourced by packaging/build-*.sh and tests/run (run from the checkout's top):
# target_dir prints cargo's target directory as cargo itself reports it
# ($CARGO_TARGET_DIR, build.target-dir in a cargo config, or ./target), so
# the scripts find the binaries wherever cargo put them. Without cargo (an
# unpacked release has no Cargo.toml), or when cargo cannot say, it prints
# $CARGO_TARGET_DIR, or target. Always an absolute path.
target_dir() {
  _td=
  if [ -f Cargo.toml ] && command -v cargo >/dev/null 2>&1; then
    _td=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
      sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p' | sed 's/\\\\/\\/g')
  fi
  _td=${_td:-${CARGO_TARGET_DIR:-target}}
  case $_td in
    /*) printf '%s\n' "$_td" ;;
    *) printf '%s/%s\n' "$(pwd)" "$_td" ;;
  esac
}
