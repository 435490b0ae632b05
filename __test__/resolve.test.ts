/** Address canonicalisation and the resolver's cache and timeout (lookups replaced by functions). */
import test from 'ava';
import { BadRequestError } from '../src/errors.js';
import { canonicalIp, Resolver, type ResolvedAddress } from '../src/resolve.js';

test('literals are canonical', (t) => {
  t.deepEqual(canonicalIp('2001:2:0:8000:0:0:0:1'), { address: '2001:2:0:8000::1', family: 6 });
  t.deepEqual(canonicalIp('2001:0002::A'), { address: '2001:2::a', family: 6 });
  t.deepEqual(canonicalIp('198.18.0.1'), { address: '198.18.0.1', family: 4 });
  t.is(canonicalIp('lab.test'), undefined);
});

function resolverWith(answers: Record<string, ResolvedAddress[]>, calls: string[] = [], delayMs = 0) {
  return new Resolver({
    timeoutMs: 100,
    cacheTtlMs: 60_000,
    maxEntries: 2,
    lookupAll: async (name) => {
      calls.push(name);
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      const a = answers[name];
      if (!a) throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
      return a;
    },
  });
}

const both: ResolvedAddress[] = [
  { address: '198.18.129.5', family: 4 },
  { address: '2001:2:0:8000:0::5', family: 6 },
];

test('ip_version filters names and literals', async (t) => {
  const r = resolverWith({ 'lab.test': both });
  t.deepEqual(await r.resolve('lab.test', 'all'), [both[0], { address: '2001:2:0:8000::5', family: 6 }]);
  t.deepEqual(await r.resolve('lab.test', '4'), [both[0]]);
  t.deepEqual(await r.resolve('[2001:2::1]', '6'), [{ address: '2001:2::1', family: 6 }]);
  await t.throwsAsync(r.resolve('2001:2::1', '4'), { instanceOf: BadRequestError, message: /IPv6 address but ip_version=4/ });
  const v4only = resolverWith({ 'v4.lab.test': [both[0] as ResolvedAddress] });
  await t.throwsAsync(v4only.resolve('v4.lab.test', '6'), { instanceOf: BadRequestError, message: /"v4.lab.test": no IPv6 address/ });
});

test('bad names are refused before any lookup, failures name the target', async (t) => {
  const calls: string[] = [];
  const r = resolverWith({}, calls);
  await t.throwsAsync(r.resolve('bad..name', 'all'), { instanceOf: BadRequestError, message: /neither an IP address nor a valid hostname/ });
  await t.throwsAsync(r.resolve('a b', 'all'), { instanceOf: BadRequestError });
  t.deepEqual(calls, []);
  await t.throwsAsync(r.resolve('missing.lab.test', 'all'), {
    instanceOf: BadRequestError,
    message: /unable to resolve target="missing.lab.test": ENOTFOUND/,
  });
});

test('answers are cached, the cache is bounded, failures are not cached', async (t) => {
  const calls: string[] = [];
  const r = resolverWith({ 'a.test': both, 'b.test': both, 'c.test': both }, calls);
  await r.resolve('a.test', 'all');
  await r.resolve('A.TEST', '4');
  t.deepEqual(calls, ['a.test']);
  await r.resolve('b.test', 'all');
  await r.resolve('c.test', 'all'); // evicts a.test (max 2 entries)
  await r.resolve('a.test', 'all');
  t.deepEqual(calls, ['a.test', 'b.test', 'c.test', 'a.test']);
  await t.throwsAsync(r.resolve('gone.test', 'all'));
  await t.throwsAsync(r.resolve('gone.test', 'all'));
  t.is(calls.filter((c) => c === 'gone.test').length, 2);
});

test('a slow resolver times out with a 400 naming the target', async (t) => {
  const r = resolverWith({ 'slow.test': both }, [], 1000);
  await t.throwsAsync(r.resolve('slow.test', 'all'), { instanceOf: BadRequestError, message: /"slow.test": timed out after 100 ms/ });
});
