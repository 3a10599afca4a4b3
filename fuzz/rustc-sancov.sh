#!/usr/bin/env bash
# RUSTC_WRAPPER for fuzz/run.sh: adds libFuzzer's coverage instrumentation
# (LLVM SanitizerCoverage, which stable rustc accepts as codegen flags) to the
# crates named in PERMDRIFT_FUZZ_INSTRUMENT, and to nothing else. The other
# dependencies then build exactly as `cargo build` builds them, so the fuzz
# build reuses them from the repository's target/ instead of compiling the
# cloud and HTTP clients again.
crate=
prev=
for arg in "$@"; do
  [ "$prev" = --crate-name ] && crate=$arg
  prev=$arg
done
case " ${PERMDRIFT_FUZZ_INSTRUMENT:-} " in
  *" $crate "*)
    exec "$@" --cfg fuzzing -Cpasses=sancov-module \
      -Cllvm-args=-sanitizer-coverage-level=4 \
      -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
      -Cllvm-args=-sanitizer-coverage-pc-table \
      -Cllvm-args=-sanitizer-coverage-trace-compares \
      -Cforce-frame-pointers=yes ;;
  *) exec "$@" ;;
esac
