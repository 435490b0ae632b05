#!/usr/bin/env bash
# Installs the system tools the build and the test lab need (Debian 12), as root.
# Does nothing when they are all present. Rust (cargo) and Node.js (npm) are expected on PATH.
set -euo pipefail
need=()
# Look where the tests look: the system directories, not node_modules/.bin or version shims.
has() { PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v "$1" >/dev/null; }
has ip || need+=(iproute2)
has nft || need+=(nftables)
has promtool || need+=(prometheus)
has dnsmasq || need+=(dnsmasq-base)
has sysctl || need+=(procps)
has python3 || need+=(python3-minimal)
has setpriv || need+=(util-linux)
has cc || need+=(gcc)
has systemd-analyze || need+=(systemd)
has ss || need+=(iproute2)
has openssl || need+=(openssl)
has objdump || need+=(binutils)
has xz || need+=(xz-utils)
has unshare || need+=(util-linux)
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
