/**
 * A TCP flow that moves data as fast as the lab's link allows, beside SYN probes. It keeps
 * both cores busy, so it runs in the heavy profile (ava.heavy.config.js), alone.
 */
import test from 'ava';
import { PEER_V4 } from '../helpers/lab.js';
import { metrics, waitForScrape } from '../helpers/probing.js';
import { value } from '../helpers/prom.js';
import { OPEN, startTcpLab, tcpSeries as get, V4, V6, waitListening } from '../helpers/tcp-peer.js';

test.serial('a busy TCP flow through the prober does not disturb SYN probes', async (t) => {
  const { lab, exporter } = await startTcpLab(t, '20');
  // A sink in the peer and a sender in the prober moving data as fast as they can, until the
  // lab's teardown ends them.
  lab.spawn(lab.peer, 'python3', [
    '-c',
    'import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 9000)); s.listen(1)\nc,_=s.accept()\nwhile c.recv(1<<20): pass',
  ]);
  await waitListening(lab, lab.peer, 9000);
  lab.spawn(lab.prober, 'python3', ['-c', `import socket\ns=socket.create_connection(("${PEER_V4}", 9000))\nb=b"x"*(1<<16)\nwhile True: s.sendall(b)`]);
  const txBytes = () =>
    (JSON.parse(lab.exec(lab.prober, 'ip', ['-j', '-s', 'link', 'show', 'dev', lab.proberLink])) as Array<{
      stats64: { tx: { bytes: number } };
    }>)[0]?.stats64.tx.bytes ?? 0;
  const before = txBytes();
  const query = `target=${V4}&target=${V6}&tcp_port=${OPEN}`;
  await exporter.get(`/probe?${query}`);
  // 50 probes per target while the flow moves more than 50 MB.
  let moved = 0;
  const s = await waitForScrape(
    exporter,
    query,
    (s) => {
      moved = txBytes() - before;
      return moved > 50e6 && [V4, V6].every((ip) => get(s, 'packets_sent_total', ip, OPEN) >= 50);
    },
    { what: '50 final probes per target while the flow moves 50 MB', proto: 'tcp', timeoutMs: 60_000 },
  );
  t.true(moved > 50e6, `the flow moved ${(moved / 1e6).toFixed(0)} MB meanwhile`);
  for (const ip of [V4, V6]) {
    const sent = get(s, 'packets_sent_total', ip, OPEN);
    t.true(sent >= 50, `${ip}: ${sent}`);
    t.is(get(s, 'packets_recv_total', ip, OPEN), sent, `${ip}: no loss beside the flow`);
  }
  const m = await metrics(exporter);
  t.is(value(m, 'tcp_replies_ignored_total', { reason: 'foreign' }), 0, 'the flow never reached the engine');
  t.is(value(m, 'tcp_packets_malformed_total'), 0);
});
