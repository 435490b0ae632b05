/** -drop: no thread keeps a capability, probing goes on; and an honest refusal where it cannot drop. */
import { readdirSync, readFileSync } from 'node:fs';
import test from 'ava';
import { parseCapabilities } from '../src/privileges.js';
import { ExporterProcess, Lab, CLI } from './helpers/lab.js';
import { scrape, waitForProbes } from './helpers/probing.js';
import { value } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

const STATUS = `Name:\tnode\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t0000000000003000\nCapBnd:\t000001ffffffffff\n`;

test('capability sets are read from /proc status text', (t) => {
  t.deepEqual(parseCapabilities(STATUS), { effective: 0x3000n, permitted: 0x1ffffffffffn });
  t.throws(() => parseCapabilities('Name:\tnode\n'));
});

function threads(pid: number): Array<{ uid: string; capEff: bigint; capPrm: bigint }> {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    const caps = parseCapabilities(status);
    return { uid: /^Uid:\s+(\d+)/m.exec(status)?.[1] ?? '?', capEff: caps.effective, capPrm: caps.permitted };
  });
}

/** Waits for `re` on the exporter's stderr (which may trail its stdout). */
async function waitForStderr(exporter: ExporterProcess, re: RegExp): Promise<void> {
  await waitFor(() => exporter.stderr, (e) => re.test(e), { what: `${re} on stderr` });
}

test('-drop as root: every thread ends as nobody with no capability, and ICMP and TCP probing go on', async (t) => {
  const lab = Lab.create(t);
  lab.spawn(lab.peer, 'python3', ['-c', 'import socket,time\ns=socket.socket(socket.AF_INET6)\ns.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\ns.bind(("::", 8080)); s.listen(64); time.sleep(60)']);
  const exporter = await lab.startExporter(['-drop', '-i-wont-be-evil', '-interval', '20', '-timeout', '300']);
  await waitForStderr(exporter, /-drop: now uid/);
  t.regex(exporter.stderr, /-drop: now uid 65534, gid 65534; none of the \d+ threads holds a capability/);
  const pid = exporter.child.pid ?? 0;
  const all = threads(pid);
  t.true(all.length >= 8, `${all.length} threads checked`);
  for (const th of all) {
    t.is(th.uid, '65534');
    t.is(th.capEff, 0n);
    t.is(th.capPrm, 0n);
  }
  const icmp = 'target=198.18.128.40&target=2001:2:0:8000::40';
  const tcp = 'target=198.18.128.40&target=2001:2:0:8000::40&tcp_port=8080';
  await scrape(exporter, icmp);
  await scrape(exporter, tcp);
  for (const [query, prefix, labels] of [
    [icmp, 'icmp', {}],
    [tcp, 'tcp', { tcp_port: '8080' }],
  ] as const) {
    const s = await waitForProbes(exporter, query, 11, { proto: prefix });
    for (const ip of ['198.18.128.40', '2001:2:0:8000::40']) {
      const sent = value(s, `${prefix}_probe_packets_sent_total`, { ip, ...labels }) ?? 0;
      t.true(sent > 10, `${prefix} ${ip}: ${sent}`);
      t.is(value(s, `${prefix}_probe_packets_recv_total`, { ip, ...labels }), sent, `${prefix} ${ip} after the drop`);
    }
  }
});

test('-drop without root but with capabilities says it cannot drop them, and runs on', async (t) => {
  const lab = Lab.create(t);
  // nobody holding CAP_NET_RAW as an ambient capability, as setcap or systemd would give it.
  const child = lab.spawn(lab.prober, 'setpriv', [
    '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=+net_raw', '--ambient-caps=+net_raw',
    process.execPath, CLI, '-listen', `${lab.httpAddress}:0`, '-drop',
  ]);
  const exporter = await ExporterProcess.started(child);
  await waitForStderr(exporter, /-drop NOT done/);
  t.regex(exporter.stderr, /-drop NOT done: not root \(uid 65534\) but \d+ threads hold capabilities/);
  t.is((await exporter.get('/probe?target=198.18.128.41')).status, 200);
});
