#!/usr/bin/env bash
# Builds one fuzz target with libFuzzer on the stable toolchain and runs it.
#
#   fuzz/run.sh TARGET [SECONDS] [more libFuzzer flags...]
#   fuzz/run.sh --list            # the targets
#   fuzz/run.sh --build-only      # build every target, run none
#
# Stable rustc has no -Zsanitizer, so the coverage instrumentation libFuzzer
# needs is asked for directly through LLVM's SanitizerCoverage pass (the
# flags cargo-fuzz passes, less AddressSanitizer: safe Rust needs it far less
# than C), per crate by rustc-sancov.sh. Needs a C++ compiler for libFuzzer
# itself (libfuzzer-sys builds it from its bundled source).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^permdrift-fuzz$')
case "${1:-}" in
  "" | -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  --list) echo "$targets"; exit 0 ;;
esac

if ! command -v c++ >/dev/null; then
  echo "run.sh: no C++ compiler; installing g++" >&2
  apt-get install -y g++ >&2
fi

# Only the code under test is instrumented (see rustc-sancov.sh); serde_json
# is not, as rebuilding it would rebuild every crate that uses it.
export RUSTC_WRAPPER="$here/rustc-sancov.sh"
export PERMDRIFT_FUZZ_INSTRUMENT="permdrift permdrift_fuzz serde_yaml unsafe_libyaml quick_xml \
  $(tr '\n' ' ' <<<"$targets")"
# The repository's target/, whose dependencies a plain `cargo build` already built.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/../target}"
bin="$CARGO_TARGET_DIR/debug"

if [ "$1" = --build-only ]; then
  cargo build --locked --bins
  exit 0
fi

target=$1
seconds=${2:-600}
shift $(( $# >= 2 ? 2 : 1 ))
if ! grep -qx "$target" <<<"$targets"; then
  echo "run.sh: unknown target $target; one of:" $targets >&2
  exit 2
fi
cargo build --locked --bin "$target"

# corpus/TARGET grows as the fuzzer finds new paths (not committed);
# seeds/TARGET are the committed starting points, read only.
mkdir -p "corpus/$target" "artifacts/$target"
dict=()
[ -f "dict/$target.dict" ] && dict=(-dict="dict/$target.dict")
exec "$bin/$target" \
  -max_total_time="$seconds" \
  -max_len=65536 \
  -timeout=10 \
  -rss_limit_mb=2048 \
  -print_final_stats=1 \
  -artifact_prefix="artifacts/$target/" \
  "${dict[@]}" \
  "$@" \
  "corpus/$target" "seeds/$target"
