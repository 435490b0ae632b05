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

for (const [query, message] of [
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
