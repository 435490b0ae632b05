#!/usr/bin/env bash
# The release build of the x86_64 glibc engine, twice, each from nothing (its own empty
# target directory), and the check that both are byte for byte the same. Prints the engine's
# sha256; writes it to ./icmp-exporter.linux-x64-gnu.node.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for n in 1 2; do
  CARGO_TARGET_DIR="$work/target-$n" BUILD_TARGET=x86_64-unknown-linux-gnu scripts/build-native.sh -o "$work/out-$n" >"$work/build-$n.log" 2>&1 ||
    { cat "$work/build-$n.log" >&2; exit 1; }
done
a=$(sha256sum "$work/out-1/icmp-exporter.linux-x64-gnu.node" | cut -d' ' -f1)
b=$(sha256sum "$work/out-2/icmp-exporter.linux-x64-gnu.node" | cut -d' ' -f1)
if [ "$a" != "$b" ]; then
  echo "release-build: two builds differ: $a and $b" >&2
  exit 1
fi
cp "$work/out-1/icmp-exporter.linux-x64-gnu.node" .
echo "icmp-exporter.linux-x64-gnu.node sha256 $a (two clean builds, identical)"
