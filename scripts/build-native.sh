#!/usr/bin/env bash
# Builds the engine (crates/binding) into ./icmp-exporter.<platform>.node and writes the
# loader (native.cjs, native.d.cts). glibc targets link against a pinned crosstool-NG
# toolchain with a glibc 2.17 sysroot (scripts/cross-toolchain.mjs): the engine the tests
# run is the engine that ships, it loads on glibc 2.17 and later (__test__/glibc.test.ts),
# and the same sources give the same bytes (scripts/release-build.sh).
# BUILD_TARGET: a Rust target triple (default: x86_64-unknown-linux-gnu on an x86_64 Linux
# host, else the host's). Extra arguments go to `napi build` (`-o .`, `-x` for musl, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
args=(build --platform --release --manifest-path crates/binding/Cargo.toml --js native.cjs --dts native.d.cts)
target=${BUILD_TARGET:-}
if [ -z "$target" ] && [ "$(uname -s)-$(uname -m)" = Linux-x86_64 ]; then
  target=x86_64-unknown-linux-gnu
fi
if [ -n "$target" ]; then
  args+=(--target "$target")
  case "$target" in
    x86_64-unknown-linux-gnu | aarch64-unknown-linux-gnu)
      toolchain=$(node scripts/cross-toolchain.mjs "$target")
      linker_var="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_LINKER"
      export "$linker_var=$toolchain/bin/$target-gcc"
      ;;
  esac
fi
exec npx napi "${args[@]}" "$@"
