/**
 * Per-request probe options on the wire: the peer counts, with nftables, the packets that
 * carry each option (TTL / hop limit, TOS / traffic class, DF, size, source address), on both
 * ways of matching transmit stamps; each set of options is a probe of its own.
 */
import test from 'ava';
import { Lab, STAMP_PATHS } from './helpers/lab.js';
import { scrape } from './helpers/probing.js';
import { parseSamples, value, type Sample } from './helpers/prom.js';
import { waitFor } from './helpers/wait.js';

const T = (n: number) => `198.18.128.${n}`;
const T6 = (n: number) => `2001:2:0:8000::${n}`;

/** Every probe's counters and its RTT clock, after `sent` final probes. */
interface Seen {
  sent: number;
  recv: number;
  sendErrors: number;
}

const RULES = `
table inet lab {
  counter ttl7 {}
  counter ttl64 {}
  counter tos_b8 {}
  counter df_set {}
  counter df_clear {}
  counter df_default_set {}
  counter size1000 {}
  counter size1000_other {}
  counter source77 {}
  counter too_big {}
  counter hop7 {}
  counter tclass_b8 {}
  counter source6 {}
  counter syn_ttl9_tos4 {}
  counter syn_source77 {}
  counter fragments {}
  counter too_big6 {}
  counter fragments6 {}
  chain pre {
    type filter hook prerouting priority -500;
    ip daddr ${T(11)} icmp type echo-request ip ttl 7 counter name ttl7
    ip daddr ${T(11)} icmp type echo-request ip ttl 64 counter name ttl64
    ip daddr ${T(12)} icmp type echo-request @nh,8,8 0xb8 counter name tos_b8
    ip daddr ${T(13)} icmp type echo-request ip frag-off & 0x4000 != 0 counter name df_set
    ip daddr ${T(14)} icmp type echo-request ip frag-off & 0x4000 == 0 counter name df_clear
    ip daddr ${T(15)} icmp type echo-request ip frag-off & 0x4000 != 0 counter name df_default_set
    ip daddr ${T(16)} icmp type echo-request ip length 1028 counter name size1000
    ip daddr ${T(16)} icmp type echo-request ip length != 1028 counter name size1000_other
    ip saddr 198.18.0.77 ip daddr ${T(17)} icmp type echo-request counter name source77
    ip daddr ${T(18)} counter name too_big
    ip6 daddr ${T6(11)} icmpv6 type echo-request ip6 hoplimit 7 counter name hop7
    ip6 daddr ${T6(12)} icmpv6 type echo-request @nh,4,8 0xb8 counter name tclass_b8
    ip6 saddr 2001:2::77 ip6 daddr ${T6(13)} icmpv6 type echo-request counter name source6
    ip daddr ${T(19)} tcp flags syn ip ttl 9 @nh,8,8 4 counter name syn_ttl9_tos4
    ip saddr 198.18.0.77 ip daddr ${T(22)} tcp flags syn counter name syn_source77
    ip daddr ${T(21)} ip frag-off & 0x3fff != 0 counter name fragments
    ip6 daddr ${T6(14)} counter name too_big6
    ip6 daddr ${T6(15)} exthdr frag exists counter name fragments6
  }
}
`;

const counters = (m: Sample[], labels: Record<string, string>, proto = 'icmp'): Seen => ({
  sent: value(m, `${proto}_probe_packets_sent_total`, labels) ?? 0,
  recv: value(m, `${proto}_probe_packets_recv_total`, labels) ?? 0,
  sendErrors: value(m, `${proto}_probe_send_errors_total`, labels) ?? 0,
});

for (const [path, env] of STAMP_PATHS) {
  test(`size, ttl, tos, df and source reach the wire, IPv4, IPv6 and TCP (${path})`, async (t) => {
    const lab = Lab.create(t);
    lab.ip(lab.prober, 'addr', 'add', '198.18.0.77/24', 'dev', lab.proberLink);
    lab.ip(lab.prober, 'addr', 'add', '2001:2::77/64', 'dev', lab.proberLink, 'nodad');
    lab.nft(lab.peer, RULES);
    const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '50'], { env });
    const queries: Array<[string, string, Record<string, string>, string?]> = [
      ['ttl 7', `target=${T(11)}&ttl=7`, { ip: T(11) }],
      ['default beside it', `target=${T(11)}`, { ip: T(11) }],
      ['tos 0xb8', `target=${T(12)}&tos=0xb8`, { ip: T(12) }],
      ['df 1', `target=${T(13)}&df=1`, { ip: T(13) }],
      ['df 0', `target=${T(14)}&df=0`, { ip: T(14) }],
      ['no df', `target=${T(15)}`, { ip: T(15) }],
      ['size 1000', `target=${T(16)}&size=1000`, { ip: T(16) }],
      ['source', `target=${T(17)}&source=198.18.0.77`, { ip: T(17) }],
      ['too big to leave with DF', `target=${T(18)}&size=2000&df=1`, { ip: T(18) }],
      ['hop limit 7', `target=${T6(11)}&ttl=7`, { ip: T6(11) }],
      ['traffic class 0xb8', `target=${T6(12)}&tos=184`, { ip: T6(12) }],
      ['IPv6 source', `target=${T6(13)}&source=2001:2::77`, { ip: T6(13) }],
      ['SYN ttl 9 tos 4', `target=${T(19)}&tcp_port=9&ttl=9&tos=4`, { ip: T(19), tcp_port: '9' }, 'tcp'],
      ['IPv6 too big to leave with DF', `target=${T6(14)}&size=2000&df=1`, { ip: T6(14) }],
      // The peer answers a SYN (with a RST) only when its checksum, over the source, is right.
      ['SYN from a chosen source', `target=${T(22)}&tcp_port=9&source=198.18.0.77`, { ip: T(22), tcp_port: '9' }, 'tcp'],
    ];
    const seen = await waitFor(
      async () => Promise.all(queries.map(async ([, q, labels, proto]) => counters(await scrape(exporter, q), labels, proto))),
      (all) => all.every((s) => s.sent >= 10),
      { what: 'ten final probes of every option set', timeoutMs: 30_000, everyMs: 100, show: (all) => JSON.stringify(all) },
    );
    const by = Object.fromEntries(queries.map(([name], i) => [name, seen[i] as Seen]));
    // Every probe that left, counted by its option on the peer (probes in flight since the
    // scrape only add to the peer's count).
    const nft = lab.nftCounters(lab.peer);
    const carried = (counter: string, name: string) => {
      const s = by[name] as Seen;
      t.true((nft[counter] ?? 0) >= s.sent - s.sendErrors && s.sent > 0, `${name}: peer ${nft[counter]} of ${s.sent} sent`);
      t.is(s.recv, s.sent - s.sendErrors, `${name}: answered`);
    };
    carried('ttl7', 'ttl 7');
    carried('ttl64', 'default beside it');
    carried('tos_b8', 'tos 0xb8');
    // The kernel sets DF on small probes by default too: what proves df=1 is the probe too big
    // for the link (below); df=0 proves the switch.
    carried('df_set', 'df 1');
    carried('df_clear', 'df 0');
    carried('df_default_set', 'no df');
    carried('size1000', 'size 1000');
    carried('source77', 'source');
    carried('hop7', 'hop limit 7');
    carried('tclass_b8', 'traffic class 0xb8');
    carried('source6', 'IPv6 source');
    carried('syn_ttl9_tos4', 'SYN ttl 9 tos 4');
    carried('syn_source77', 'SYN from a chosen source');
    t.is(nft.size1000_other, 0, 'every probe of the sized target is 1000 bytes of payload');
    // Two option sets of one target are two probes: the default one never had TTL 7.
    t.true((by['ttl 7'] as Seen).sent >= 10 && (by['default beside it'] as Seen).sent >= 10);
    // Larger than the link's MTU with DF: refused by this host, never on the wire.
    const big = by['too big to leave with DF'] as Seen;
    t.is(big.sendErrors, big.sent, 'each one a send error');
    t.is(nft.too_big, 0);
    const big6 = by['IPv6 too big to leave with DF'] as Seen;
    t.is(big6.sendErrors, big6.sent, 'IPv6: each one a send error');
    t.is(nft.too_big6, 0);

    // Every answer's RTT from kernel stamps, the sized probes' included (their transmit
    // stamps matched at their own length on the packet-copy path).
    const metrics = (await exporter.get('/metrics')).body;
    t.regex(metrics, /icmp_timestamp_fallback_total\{reason="tx_missing"\} 0\n/);
    t.regex(metrics, /icmp_tx_timestamps_unmatched_total 0\n/);
  });
}

for (const [path, env] of STAMP_PATHS) {
  test(`probes larger than the MTU without DF leave in fragments and are answered (${path})`, async (t) => {
    const lab = Lab.create(t);
    lab.nft(lab.peer, RULES);
    const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '50'], { env });
    const queries: Array<[string, string, string]> = [
      ['IPv4, df=0', `target=${T(21)}&size=2000&df=0`, T(21)],
      ['IPv6', `target=${T6(15)}&size=2000`, T6(15)],
    ];
    const seen = await waitFor(
      async () => Promise.all(queries.map(async ([, q, ip]) => counters(await scrape(exporter, q), { ip }))),
      (all) => all.every((s) => s.sent >= 10),
      { what: 'ten final probes of each', timeoutMs: 30_000, everyMs: 100, show: (all) => JSON.stringify(all) },
    );
    const nft = lab.nftCounters(lab.peer);
    queries.forEach(([name], i) => {
      const s = seen[i] as Seen;
      const counter = i === 0 ? 'fragments' : 'fragments6';
      t.true((nft[counter] ?? 0) >= 2 * s.sent, `${name}: ${nft[counter]} fragments for ${s.sent} probes`);
      t.is(s.recv, s.sent, `${name}: every probe answered (the reply reassembled)`);
    });
    // With SCM_TS_OPT_ID each probe's transmit stamp names it; before Linux 6.13 the stamp
    // comes with a copy of a fragment, which cannot name its probe: those RTTs come from the
    // monotonic clock, as the README says, and are counted.
    const m = parseSamples((await exporter.get('/metrics')).body);
    const fallback = value(m, 'icmp_timestamp_fallback_total', { reason: 'tx_missing' }) ?? -1;
    if (env.ICMP_EXPORTER_NO_TS_OPT_ID === '1') t.true(fallback > 0, `${fallback} RTTs from the monotonic clock`);
    else t.is(fallback, 0);
  });
}

test('options are checked at the door: 400 with the reason, nothing started', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter();
  const refused: Array<[string, RegExp]> = [
    [`target=${T(20)}&source=198.18.0.99`, /source 198.18.0.99 is not an address of this host/],
    [`target=${T(20)}&source=127.0.0.1`, /source 127.0.0.1 is a loopback address: it can only probe this host/],
    [`target=${T6(20)}&source=198.18.0.1`, /source 198.18.0.1 is IPv4, target 2001:2:0:8000::20 is not/],
    [`target=${T(20)}&source=198.18.0.1&ip_version=6`, /source 198.18.0.1 is IPv4, ip_version=6/],
    [`target=${T(20)}&tcp_port=80&size=100`, /size applies to ICMP probes only/],
    [`target=${T(20)}&size=11`, /invalid size="11" \(expected an integer between 12 and 8972\)/],
    [`target=${T(20)}&ttl=0`, /invalid ttl="0"/],
    [`target=${T(20)}&ttl=256`, /invalid ttl="256"/],
    [`target=${T(20)}&tos=0x100`, /invalid tos="0x100"/],
    [`target=${T(20)}&df=yes`, /invalid df="yes" \(expected 0 or 1\)/],
    [`target=${T(20)}&ttl=3&ttl=4`, /ttl may be given once/],
  ];
  for (const [q, message] of refused) {
    const r = await exporter.get(`/probe?${q}`);
    t.is(r.status, 400, q);
    t.regex(r.body, message, q);
  }
  const m = await exporter.get('/metrics');
  t.regex(m.body, /icmp_active_probes 0\n/, 'nothing started');
});
