/** The TCP lab: a peer with an open, a closed, a filtered and a rejected port on every address it answers for. */
import type { ExecutionContext } from 'ava';
import { Lab, type ExporterProcess } from './lab.js';
import { value, type Sample } from './prom.js';
import { waitFor } from './wait.js';

export const V4 = '198.18.128.80';
export const V6 = '2001:2:0:8000::80';
export const OPEN = 8080;
export const CLOSED = 8081;
export const FILTERED = 8082;
export const REJECTED = 8083;

/** A listener on every address of the peer (AnyIP ranges included) that never accepts. */
const LISTEN = `
import socket, time
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", ${OPEN}))
s.listen(1024)
time.sleep(600)
`;

function peerFirewall(lab: Lab): void {
  lab.nft(
    lab.peer,
    `table inet lab {
      counter resets {}
      chain input {
        type filter hook input priority 0; policy accept;
        tcp dport ${FILTERED} drop
        tcp dport ${REJECTED} meta nfproto ipv4 reject with icmp type admin-prohibited
        tcp dport ${REJECTED} meta nfproto ipv6 reject with icmpv6 type admin-prohibited
        tcp dport ${OPEN} tcp flags rst counter name "resets"
      }
    }`,
  );
  lab.exec(lab.peer, 'sysctl', ['-qw', 'net.ipv4.icmp_ratelimit=0', 'net.ipv6.icmp.ratelimit=0']);
}

/** Waits until a TCP port listens in a namespace of the lab. */
export function waitListening(lab: Lab, ns: string, port: number): Promise<string> {
  return waitFor(() => lab.exec(ns, 'ss', ['-Htln', `sport = :${port}`]), (out) => out.trim() !== '', { what: `a listener on port ${port}` });
}

/** The lab with the peer's ports set up and listening, and an exporter probing every `interval` ms. */
export async function startTcpLab(t: Pick<ExecutionContext, 'teardown'>, interval = '50'): Promise<{ lab: Lab; exporter: ExporterProcess }> {
  const lab = Lab.create(t);
  peerFirewall(lab);
  lab.spawn(lab.peer, 'python3', ['-c', LISTEN]);
  await waitListening(lab, lab.peer, OPEN);
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', interval, '-timeout', '300']);
  return { lab, exporter };
}

export const tcpSeries = (samples: Sample[], name: string, ip: string, port: number) => value(samples, `tcp_probe_${name}`, { ip, tcp_port: String(port) }) ?? 0;
