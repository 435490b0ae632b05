/**
 * The nftables rules that keep probes out of the connection-tracking table. Raw sockets'
 * packets are tracked like any other: an ICMP echo entry lives 30 s, and a SYN to a silent
 * port leaves a SYN_SENT entry for 120 s per source port (128 of them), so thousands of silent
 * TCP targets can fill `nf_conntrack_max`, after which the host drops new connections of its
 * own. Untracked, the answers are neither `established` nor `invalid`; a firewall that drops
 * what it does not know must accept `ct state untracked`.
 */

/** The ruleset for probes whose TCP source ports are `first`..`last`. */
export function notrackRuleset(first: number, last: number): string {
  return `# Keeps icmp-exporter's probes out of connection tracking (nft -f this file).
# TCP: SYNs from the probe ports ${first}-${last} and their answers. ICMP: every echo request
# and reply of this host (the host's own pings included; they work untracked as well).
table inet icmp_exporter_notrack {
  chain output {
    type filter hook output priority raw; policy accept;
    tcp sport ${first}-${last} notrack
    icmp type echo-request notrack
    icmpv6 type echo-request notrack
  }
  chain prerouting {
    type filter hook prerouting priority raw; policy accept;
    tcp dport ${first}-${last} notrack
    icmp type echo-reply notrack
    icmpv6 type echo-reply notrack
  }
}
# With an input policy of drop, accept the untracked answers before it, e.g.:
#   nft add rule inet filter input ct state untracked accept
`;
}
