/** -interface4 / -interface6: probes leave from the named interface, or follow the default route. */
import { spawnSync } from 'node:child_process';
import test from 'ava';
import { CLI, Lab, PEER_V4, PEER_V6, SYSTEM_ENV, type ExporterProcess } from './helpers/lab.js';
import { parseSamples, sleep, value } from './helpers/prom.js';

const TARGETS = ['198.18.128.55', '2001:2:0:8000::55'];
const QUERY = `/probe?${TARGETS.map((t) => `target=${t}`).join('&')}`;

async function probed(exporter: ExporterProcess): Promise<{ sent: number; recv: number }> {
  const s = parseSamples((await exporter.get(QUERY)).body);
  let sent = 0;
  let recv = 0;
  for (const ip of TARGETS) {
    sent += value(s, 'icmp_probe_packets_sent_total', { ip }) ?? 0;
    recv += value(s, 'icmp_probe_packets_recv_total', { ip }) ?? 0;
  }
  return { sent, recv };
}

test('a named interface carries the probes even though the default route points elsewhere', async (t) => {
  const lab = Lab.create(t);
  const second = lab.addSecondLink();
  const exporter = await lab.startExporter(['-interface4', second, '-interface6', second, '-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  const [first0, second0] = [lab.txPackets(lab.prober, lab.proberLink), lab.txPackets(lab.prober, second)];
  await exporter.get(QUERY);
  await sleep(1500);
  const { sent, recv } = await probed(exporter);
  const [first1, second1] = [lab.txPackets(lab.prober, lab.proberLink), lab.txPackets(lab.prober, second)];
  t.true(sent > 40, `${sent}`);
  t.is(recv, sent, 'answered through the named interface');
  t.true(second1 - second0 >= sent, `${second1 - second0} packets left ${second} for ${sent} probes`);
  t.true(first1 - first0 < 5, `${first1 - first0} packets left the default route's interface`);
});

test('auto binds to the default route\'s interface and follows it when it moves', async (t) => {
  const lab = Lab.create(t);
  const second = lab.addSecondLink();
  const exporter = await lab.startExporter(['-interface4', 'auto', '-interface6', 'auto', '-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  await exporter.get(QUERY);
  await sleep(300);
  const [start, tx0] = [await probed(exporter), lab.txPackets(lab.prober, second)];
  await sleep(800);
  const [first, tx1] = [await probed(exporter), lab.txPackets(lab.prober, second)];
  t.true(first.sent - start.sent > 40);
  // (a link that just came up sends a few IPv6 housekeeping packets of its own)
  t.true(tx1 - tx0 < 5, `at first the probes take the lowest-metric default route (${tx1 - tx0} left ${second})`);
  lab.exec(lab.prober, 'ip', ['route', 'del', 'default', 'via', PEER_V4]);
  lab.exec(lab.prober, 'ip', ['-6', 'route', 'del', 'default', 'via', PEER_V6]);
  await sleep(2500); // the engine checks the routes every second
  const mid = await probed(exporter);
  const onSecond = lab.txPackets(lab.prober, second);
  await sleep(800);
  const after = await probed(exporter);
  const moved = lab.txPackets(lab.prober, second) - onSecond;
  // The counters and the probes are read a moment apart: allow a probe or two either way.
  t.true(moved >= after.sent - mid.sent - 2, `the probes moved to the new default route: ${moved} packets for ${after.sent - mid.sent} probes (${after.recv - mid.recv} answered)`);
  t.is(after.recv - mid.recv, after.sent - mid.sent, 'and are answered there');
});

test('a named interface that does not exist is a start-up error', (t) => {
  const lab = Lab.create(t);
  const r = spawnSync('ip', ['netns', 'exec', lab.prober, process.execPath, CLI, '-listen', '127.0.0.1:0', '-interface4', 'nosuch0'], {
    encoding: 'utf8',
    env: SYSTEM_ENV,
    timeout: 20_000,
  });
  t.is(r.status, 1);
  t.regex(r.stderr, /interface "nosuch0" \(-interface4\) does not exist/);
});

test('auto is bound: a blackhole route through another interface does not apply; unbound, it does', async (t) => {
  const lab = Lab.create(t);
  lab.addSecondLink();
  // A more specific route for one target through nowhere: only unbound sockets obey it.
  lab.exec(lab.prober, 'ip', ['route', 'add', 'unreachable', '198.18.128.77/32']);
  const bound = await lab.startExporter(['-interface4', 'auto', '-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  const routed = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  for (const e of [bound, routed]) await e.get('/probe?target=198.18.128.77');
  await sleep(1500);
  const read = async (e: ExporterProcess, name: string) =>
    value(parseSamples((await e.get('/probe?target=198.18.128.77')).body), name, { ip: '198.18.128.77' }) ?? 0;
  t.true((await read(routed, 'icmp_probe_send_errors_total')) > 10, 'routed: the unreachable route refuses every send');
  t.is(await read(routed, 'icmp_probe_packets_recv_total'), 0);
  t.true((await read(bound, 'icmp_probe_packets_recv_total')) > 10, 'bound to the default interface: answered');
});

test('-hard on a veth: a clear start-up error naming the interface and what it lacks', (t) => {
  const lab = Lab.create(t);
  const r = spawnSync('ip', ['netns', 'exec', lab.prober, process.execPath, CLI, '-listen', '127.0.0.1:0', '-hard'], {
    encoding: 'utf8',
    env: SYSTEM_ENV,
    timeout: 20_000,
  });
  t.is(r.status, 1);
  t.regex(
    r.stderr,
    new RegExp(
      `-hard: interface ${lab.proberLink} cannot timestamp in hardware; missing: hardware-transmit \\(SOF_TIMESTAMPING_TX_HARDWARE\\), ` +
        'hardware-receive \\(SOF_TIMESTAMPING_RX_HARDWARE\\), hardware-raw-clock \\(SOF_TIMESTAMPING_RAW_HARDWARE\\), ' +
        `transmit mode on \\(HWTSTAMP_TX_ON\\), receive filter all \\(HWTSTAMP_FILTER_ALL\\) \\(see ethtool -T ${lab.proberLink}\\)`,
    ),
  );
  const named = spawnSync('ip', ['netns', 'exec', lab.prober, process.execPath, CLI, '-listen', '127.0.0.1:0', '-hard', '-interface4', 'lo'], {
    encoding: 'utf8',
    env: SYSTEM_ENV,
    timeout: 20_000,
  });
  t.is(named.status, 1);
  t.regex(named.stderr, /-hard: interface lo cannot timestamp in hardware/);
});
