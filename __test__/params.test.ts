/** /probe query validation (pure). */
import test from 'ava';
import { BadRequestError } from '../src/errors.js';
import { parseProbeQuery } from '../src/params.js';

const q = (s: string) => parseProbeQuery(new URLSearchParams(s));

test('targets, repeated and deduplicated, default ip_version all', (t) => {
  t.deepEqual(q('target=a.example&target=198.18.0.9&target=a.example'), {
    targets: ['a.example', '198.18.0.9'],
    ipVersion: 'all',
    tcpPorts: [],
  });
  t.is(q('target=x&ip_version=6').ipVersion, '6');
});

test('tcp_port: repeated, deduplicated, 1..65535', (t) => {
  t.deepEqual(q('target=a&tcp_port=443&tcp_port=80&tcp_port=443&tcp_port=1&tcp_port=65535').tcpPorts, [443, 80, 1, 65535]);
});

test('probe options: size, ttl, tos (decimal or 0x), df, source (canonical); none when absent', (t) => {
  t.deepEqual(q('target=a&size=1000&ttl=7&tos=0xB8&df=0&source=2001:0002::0077').options, { size: 1000, ttl: 7, tos: 184, df: false, source: '2001:2::77' });
  t.deepEqual(q('target=a&df=1&tcp_port=80&ttl=255&tos=0').options, { df: true, ttl: 255, tos: 0 });
  t.false('options' in q('target=a'));
});

for (const [query, message] of [
  ['target=a&size=8973', /invalid size="8973" \(expected an integer between 12 and 8972\)/],
  ['target=a&size=1e3', /invalid size="1e3"/],
  ['target=a&size=100&tcp_port=80', /size applies to ICMP probes only/],
  ['target=a&ttl=-1', /invalid ttl="-1"/],
  ['target=a&tos=256', /invalid tos="256"/],
  ['target=a&df=true', /invalid df="true" \(expected 0 or 1\)/],
  ['target=a&source=host.example', /invalid source="host.example"/],
  ['target=a&source=fe80::1%25eth0', /invalid source="fe80::1%eth0"/],
  ['target=a&size=100&size=200', /size may be given once/],
  ['', /missing parameter target/],
  ['ip_version=4', /missing parameter target/],
  ['target=', /empty target/],
  ['target=a&ip_version=5', /invalid ip_version="5"/],
  ['target=a&ip_version=', /invalid ip_version=""/],
  ['target=a&ip_version=4&ip_version=6', /ip_version may be given once/],
  ['target=a&module=icmp', /unknown parameter "module"/],
  ['target=a&tcp_port=0', /invalid tcp_port="0"/],
  ['target=a&tcp_port=65536', /invalid tcp_port="65536"/],
  ['target=a&tcp_port=http', /invalid tcp_port="http"/],
  ['target=a&tcp_port=', /invalid tcp_port=""/],
  ['target=a&tcp_port=-1', /invalid tcp_port="-1"/],
  ['target=a&tcp_port=8.5', /invalid tcp_port="8.5"/],
  ['target=a&tcp_port=80&tcp_port=1e3', /invalid tcp_port="1e3"/],
] as const) {
  test(`400 for ?${query}`, (t) => {
    t.throws(() => q(query), { instanceOf: BadRequestError, message });
  });
}
