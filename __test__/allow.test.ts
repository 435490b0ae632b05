/** -target-allow (pure): what parses, and what each kind of entry lets through. */
import test from 'ava';
import { globMatches, TargetAllowList } from '../src/allow.js';
import { FlagError } from '../src/errors.js';

const v4 = (n: number) => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');

test('IPv4 ranges: membership agrees with integer arithmetic for random prefixes and addresses', (t) => {
  let x = 12345;
  const random = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  for (let round = 0; round < 300; round++) {
    const bits = random() % 33;
    const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    const base = (random() & mask) >>> 0;
    const allow = new TargetAllowList([`${v4(base)}/${bits}`]);
    for (let i = 0; i < 20; i++) {
      // Half near the range (same high bits), half anywhere.
      const address = i % 2 === 0 ? ((base | (random() & ~mask)) ^ (random() % 2 === 0 ? 0 : 1 << (random() % 32))) >>> 0 : random();
      const inside = ((address & mask) >>> 0) === base;
      const why = allow.refuseAddress(v4(address), 4, v4(address));
      t.is(why === undefined, inside, `${v4(address)} in ${v4(base)}/${bits}`);
    }
  }
});

test('IPv6 ranges and single addresses', (t) => {
  const allow = new TargetAllowList(['2001:2::/48', '198.18.0.1']);
  t.is(allow.refuseAddress('2001:2:0:ffff::1', 6, '2001:2:0:ffff::1'), undefined);
  t.regex(allow.refuseAddress('2001:2:1::1', 6, '2001:2:1::1') ?? '', /2001:2:1::1 is not allowed: it lies in no -target-allow range \(2001:2::\/48, 198\.18\.0\.1\)/);
  t.is(allow.refuseAddress('198.18.0.1', 4, '198.18.0.1'), undefined);
  t.truthy(allow.refuseAddress('198.18.0.2', 4, '198.18.0.2'));
});

test('hostname globs: * spans any characters, dots included, without case; only names are matched', (t) => {
  const allow = new TargetAllowList(['*.example.net', 'exact.example.org']);
  t.is(allow.refuseName('a.example.net'), undefined);
  t.is(allow.refuseName('a.b.EXAMPLE.net'), undefined);
  t.truthy(allow.refuseName('example.net'), 'the dot before the domain is part of the glob');
  t.truthy(allow.refuseName('a.example.net.evil.com'));
  t.truthy(allow.refuseName('aexample.net'));
  t.is(allow.refuseName('exact.example.org'), undefined);
  t.truthy(allow.refuseName('xexact.example.org'));
  // With globs only, addresses a name resolves to are not restricted; literals are refused.
  t.is(allow.refuseAddress('203.0.113.9', 4, 'a.example.net'), undefined);
  t.regex(allow.refuseAddress('198.18.0.1', 4, '198.18.0.1') ?? '', /names no address range, only hostnames/);
  t.regex(allow.refuseAddress('2001:2::1', 6, '[2001:2::1]') ?? '', /names no address range/);
});

test('ranges only: names are looked up and their addresses checked', (t) => {
  const allow = new TargetAllowList(['198.18.0.0/15']);
  t.is(allow.refuseName('anything.example'), undefined);
  t.is(allow.refuseAddress('198.19.1.1', 4, 'anything.example'), undefined);
  t.regex(allow.refuseAddress('198.20.1.1', 4, 'anything.example') ?? '', /198\.20\.1\.1 \(an address of target="anything\.example"\) is not allowed/);
});

test('no entry: everything allowed', (t) => {
  const allow = new TargetAllowList([]);
  t.false(allow.restricts);
  t.is(allow.refuseName('x.example'), undefined);
  t.is(allow.refuseAddress('8.8.8.8', 4, '8.8.8.8'), undefined);
});

for (const bad of ['198.18.0.0/33', '2001:db8::/129', 'exa mple.net', '*.example.net/24', '', '-x.example', '198.18.0.0/', 'a..b']) {
  test(`refused at start: ${JSON.stringify(bad)}`, (t) => {
    const e = t.throws(() => new TargetAllowList([bad]), { instanceOf: FlagError });
    t.regex(e?.message ?? '', /-target-allow/);
  });
}

test('an IPv6 range never admits IPv4 addresses; an IPv4-mapped address is its IPv4 address', (t) => {
  const allow = new TargetAllowList(['198.51.100.0/24', '::/0']);
  t.truthy(allow.refuseAddress('127.0.0.1', 4, '127.0.0.1'));
  t.truthy(allow.refuseAddress('169.254.169.254', 4, '169.254.169.254'));
  t.is(allow.refuseAddress('2001:db8::1', 6, '2001:db8::1'), undefined);
  t.truthy(allow.refuseAddress('::ffff:127.0.0.1', 6, '::ffff:127.0.0.1'), 'mapped loopback: checked as 127.0.0.1');
  t.truthy(allow.refuseAddress('::ffff:7f00:1', 6, '::ffff:7f00:1'));
  t.is(allow.refuseAddress('::ffff:198.51.100.7', 6, '::ffff:198.51.100.7'), undefined);
  t.is(allow.refuseAddress('::ffff:c633:6407', 6, '::ffff:c633:6407'), undefined);
});

/** The glob semantics as a regular expression, for comparison on small inputs. */
const reference = (glob: string, name: string) =>
  new RegExp(`^${glob.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\-]/g, '\\$&')).join('.*')}$`).test(name);

test('glob matching agrees with the regular expression on random globs and names', (t) => {
  let x = 99;
  const next = (n: number) => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return x % n;
  };
  const alphabet = 'ab.*-';
  for (let i = 0; i < 20_000; i++) {
    const glob = Array.from({ length: next(8) }, () => alphabet[next(alphabet.length)]).join('');
    const name = Array.from({ length: next(10) }, () => 'ab.-'[next(4)]).join('');
    t.is(globMatches(glob, name), reference(glob, name), `${JSON.stringify(glob)} ~ ${JSON.stringify(name)}`);
  }
});

test('glob matching stays linear: many stars against a long name that almost matches', (t) => {
  // A backtracking regular expression takes longer than the test's timeout on this.
  const name = `${'a-'.repeat(50_000)}x`;
  t.false(globMatches('*-*-*-*-*-*-*-*.example.net', name));
  t.true(globMatches('*-*-*-*-*-*-*-*x', name));
});
