#!/bin/sh
# What `npm run bench` needs beyond the test lab: the peers it is compared with
# (smokeping_prober, fping) and stress-ng for the busy-host runs. Debian packages; installed
# only when missing. The smokeping_prober service the package ships is kept from starting:
# the bench runs its own copies inside lab namespaces.
set -eu
need=""
[ -x /usr/bin/prometheus-smokeping-prober ] || need="$need prometheus-smokeping-prober"
command -v fping >/dev/null 2>&1 || need="$need fping"
command -v stress-ng >/dev/null 2>&1 || need="$need stress-ng"
command -v chrt >/dev/null 2>&1 || need="$need util-linux"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "setup-bench: missing$need; run as root (the bench needs root for its lab anyway)" >&2
  exit 1
fi
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now prometheus-smokeping-prober >/dev/null 2>&1 || true
fi
