/** -interface4 / -interface6: probes leave from the named interface, or follow the default route. */
import { spawnSync } from 'node:child_process';
import test from 'ava';
import { logMessages } from './helpers/log.js';
import { CLI, Lab, PEER_V4, PEER_V6, SYSTEM_ENV, type ExporterProcess } from './helpers/lab.js';
import { scrape, targets, waitForProbes, waitForScrape } from './helpers/probing.js';
import { value, type Sample } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

const TARGETS = ['198.18.128.55', '2001:2:0:8000::55'];
const QUERY = targets(TARGETS);

function sums(s: Sample[]): { sent: number; recv: number } {
  let sent = 0;
  let recv = 0;
  for (const ip of TARGETS) {
    sent += value(s, 'icmp_probe_packets_sent_total', { ip }) ?? 0;
    recv += value(s, 'icmp_probe_packets_recv_total', { ip }) ?? 0;
  }
  return { sent, recv };
}

const probed = async (exporter: ExporterProcess) => sums(await scrape(exporter, QUERY));

/**
 * Counts the echo requests leaving the prober per link and family (nftables, output hook):
 * exactly the probes, none of the housekeeping packets a link sends of its own.
 */
function countProbes(lab: Lab, second: string): () => { first: number; second: number; v4second: number; v6second: number } {
  const rules = [
    ['v4_first', lab.proberLink, 'icmp'],
    ['v6_first', lab.proberLink, 'icmpv6'],
    ['v4_second', second, 'icmp'],
    ['v6_second', second, 'icmpv6'],
  ];
  lab.nft(
    lab.prober,
    `table inet lab {
      ${rules.map(([name]) => `counter ${name} {}`).join('\n')}
      chain output {
        type filter hook output priority 0; policy accept;
        ${rules.map(([name, dev, proto]) => `oifname "${dev}" ${proto} type echo-request counter name "${name}"`).join('\n')}
      }
    }`,
  );
  return () => {
    const c = lab.nftCounters(lab.prober);
    const [v4f, v6f, v4s, v6s] = ['v4_first', 'v6_first', 'v4_second', 'v6_second'].map((n) => c[n] ?? 0) as [number, number, number, number];
    return { first: v4f + v6f, second: v4s + v6s, v4second: v4s, v6second: v6s };
  };
}

test('a named interface carries the probes even though the default route points elsewhere', async (t) => {
  const lab = Lab.create(t);
  const second = lab.addSecondLink();
  const requests = countProbes(lab, second);
  const exporter = await lab.startExporter(['-interface4', second, '-interface6', second, '-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  await scrape(exporter, QUERY);
  const { sent, recv } = sums(await waitForProbes(exporter, QUERY, 21));
  const on = requests();
  t.true(sent > 40, `${sent}`);
  t.is(recv, sent, 'answered through the named interface');
  t.true(on.second >= sent, `${on.second} echo requests left ${second} for ${sent} probes`);
  t.is(on.first, 0, "no echo request left the default route's interface");
});

test("auto binds to the default route's interface and follows it when it moves", async (t) => {
  const lab = Lab.create(t);
  const second = lab.addSecondLink();
  const requests = countProbes(lab, second);
  const exporter = await lab.startExporter(['-interface4', 'auto', '-interface6', 'auto', '-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  await scrape(exporter, QUERY);
  const start = sums(await waitForProbes(exporter, QUERY, 21));
  const at = requests();
  t.true(start.sent > 40);
  t.is(at.second, 0, `at first the probes take the lowest-metric default route (${at.first} echo requests)`);
  lab.exec(lab.prober, 'ip', ['route', 'del', 'default', 'via', PEER_V4]);
  lab.exec(lab.prober, 'ip', ['-6', 'route', 'del', 'default', 'via', PEER_V6]);
  // The engine checks the routes every second and rebinds: wait until probes of both
  // families leave through the second link.
  await waitFor(requests, (c) => c.v4second >= 5 && c.v6second >= 5, { what: `IPv4 and IPv6 probes leaving ${second}`, show: (c) => JSON.stringify(c) });
  const onMid = requests(); // before the scrape: see below
  const mid = await probed(exporter);
  const after = sums(await waitForScrape(exporter, QUERY, (s) => sums(s).sent - mid.sent >= 40, { what: '40 more probes after the move' }));
  const onAfter = requests();
  t.is(onAfter.first - onMid.first, 0, 'none left through the interface of the deleted route');
  // Probes that ended between the scrapes left after the first count was read, but for one
  // per target that may have been in flight across it (answers take microseconds here).
  const moved = onAfter.second - onMid.second;
  t.true(moved >= after.sent - mid.sent - TARGETS.length, `the probes moved to the new default route: ${moved} echo requests for ${after.sent - mid.sent} probes (${after.recv - mid.recv} answered)`);
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
  t.regex(logMessages(r.stderr), /interface "nosuch0" \(-interface4\) does not exist/);
});

test('auto is bound: a blackhole route through another interface does not apply; unbound, it does', async (t) => {
  const lab = Lab.create(t);
  lab.addSecondLink();
  // A more specific route for one target through nowhere: only unbound sockets obey it.
  lab.exec(lab.prober, 'ip', ['route', 'add', 'unreachable', '198.18.128.77/32']);
  const bound = await lab.startExporter(['-interface4', 'auto', '-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  const routed = await lab.startExporter(['-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  const query = 'target=198.18.128.77';
  for (const e of [bound, routed]) await scrape(e, query);
  const get = (s: Sample[], name: string) => value(s, name, { ip: '198.18.128.77' }) ?? 0;
  const r = await waitForProbes(routed, query, 11);
  const b = await waitForProbes(bound, query, 11);
  t.true(get(r, 'icmp_probe_send_errors_total') > 10);
  t.is(get(r, 'icmp_probe_send_errors_total'), get(r, 'icmp_probe_packets_sent_total'), 'routed: the unreachable route refuses every send');
  t.is(get(r, 'icmp_probe_packets_recv_total'), 0);
  t.true(get(b, 'icmp_probe_packets_recv_total') > 10);
  t.is(get(b, 'icmp_probe_packets_recv_total'), get(b, 'icmp_probe_packets_sent_total'), 'bound to the default interface: answered');
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
    logMessages(r.stderr),
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
  t.regex(logMessages(named.stderr), /-hard: interface lo cannot timestamp in hardware/);
});

test('TCP over a named interface: the SYN checksum covers the source address of that interface, not of the default route', async (t) => {
  const lab = Lab.create(t);
  const second = lab.addSecondLink();
  // SYNs leaving the second link: what the peer answers (a closed port: RST) must come back.
  lab.nft(
    lab.prober,
    `table inet lab {
      counter syn_second {}
      chain output {
        type filter hook output priority 0; policy accept;
        oifname "${second}" tcp flags syn counter name "syn_second"
      }
    }`,
  );
  const exporter = await lab.startExporter(['-interface4', second, '-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  const ip = TARGETS[0] as string;
  const query = `target=${ip}&tcp_port=9`;
  await scrape(exporter, query);
  const s = await waitForProbes(exporter, query, 21, { proto: 'tcp' });
  const sent = value(s, 'tcp_probe_packets_sent_total', { ip, tcp_port: '9' }) ?? 0;
  const recv = value(s, 'tcp_probe_packets_recv_total', { ip, tcp_port: '9' }) ?? 0;
  t.true(sent > 20, `${sent} SYNs`);
  t.is(recv, sent, 'every SYN answered: its checksum was right for the address it left from');
  t.true((lab.nftCounters(lab.prober).syn_second ?? 0) >= sent, `the SYNs left ${second}`);
});
