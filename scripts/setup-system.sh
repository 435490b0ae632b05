#!/usr/bin/env bash
# Installs the system tools the build and the test lab need (Debian 12), as root.
# Does nothing when they are all present. Rust (cargo) and Node.js (npm) are expected on PATH.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v promtool >/dev/null || need+=(prometheus)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v sysctl >/dev/null || need+=(procps)
command -v cc >/dev/null || need+=(gcc)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-system: missing ${need[*]}; run this script as root to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for tool in cargo node npm; do
  command -v "$tool" >/dev/null || { echo "setup-system: $tool is not on PATH" >&2; exit 1; }
done
