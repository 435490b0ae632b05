/** The target registry's bookkeeping (pure: the engine is two recording functions here). */
import test from 'ava';
import { BadRequestError, LimitError } from '../src/errors.js';
import { MAX_VARIANTS, OptionVariants, normalizeOptions, sourceScopeRefusal } from '../src/probe-options.js';
import { Targets } from '../src/targets.js';

function registry(refuse = new Set<string>()) {
  const tracked = new Map<number, string>();
  let next = 1;
  let now = 0;
  const engine = {
    track(address: string, protocol: 'icmp' | 'tcp', port?: number | null, options?: { ttl?: number } | null) {
      if (refuse.has(address)) throw Object.assign(new Error(`${address} cannot be probed`), { code: 'InvalidArg' });
      tracked.set(next, `${address}|${protocol}|${port ?? 0}${options?.ttl ? `|ttl${options.ttl}` : ''}`);
      return next++;
    },
    untrack(id: number) {
      tracked.delete(id);
    },
  };
  const targets = new Targets(engine, 1000, () => now);
  return { targets, tracked, tick: (ms: number) => (now += ms) };
}

test('counts per protocol follow additions, rollbacks, releases and expiry', (t) => {
  const { targets, tracked, tick } = registry(new Set(['224.0.0.1']));
  targets.acquire([{ address: '198.18.0.1', port: 0 }, { address: '198.18.0.1', port: 80 }, { address: '198.18.0.2', port: 443 }]);
  t.is(targets.count(false), 1);
  t.is(targets.count(true), 2);
  t.throws(() => targets.acquire([{ address: '198.18.0.3', port: 22 }, { address: '224.0.0.1', port: 22 }]), { instanceOf: BadRequestError });
  t.is(targets.count(true), 2, 'the refused request started nothing');
  t.is(tracked.size, 3);
  targets.release([{ address: '198.18.0.2', port: 443 }, { address: '198.18.9.9', port: 0 }]);
  t.is(targets.count(true), 1);
  tick(600);
  targets.acquire([{ address: '198.18.0.1', port: 80 }]);
  tick(600);
  t.is(targets.sweep(), 1, 'the ICMP target nobody asked for expired');
  t.deepEqual([targets.count(false), targets.count(true)], [0, 1]);
  t.deepEqual([...tracked.values()], ['198.18.0.1|tcp|80']);
});

test('thousands of targets: slots grow, are reused, and keep their ids and access times', (t) => {
  const { targets, tracked, tick } = registry();
  const probes = Array.from({ length: 3000 }, (_, n) => ({ address: `198.18.${n >> 8}.${n & 0xff}`, port: n % 3 === 0 ? 443 : 0 }));
  const first = targets.acquire(probes);
  t.is(new Set(first.map((x) => x.id)).size, 3000);
  t.deepEqual(targets.acquire(probes).map((x) => x.id), first.map((x) => x.id), 'the same ids on a second request');
  targets.release(probes.slice(0, 1000));
  t.deepEqual([targets.count(false), targets.count(true)], [1334, 666]);
  tick(600);
  const again = targets.acquire(probes.slice(0, 1500)); // 1000 new ones take the freed slots
  t.deepEqual(again.slice(1000).map((x) => x.id), first.slice(1000, 1500).map((x) => x.id));
  tick(600);
  t.is(targets.sweep(), 1500, 'only the targets not asked for in the second request expired');
  t.deepEqual(
    targets.all().map((x) => `${x.address}|${x.port}`).sort(),
    probes.slice(0, 1500).map((p) => `${p.address}|${p.port}`).sort(),
  );
  t.is(tracked.size, 1500);
});

test('the timer passes over the targets only once one can have expired; targets added after an empty pass still expire', (t) => {
  const { targets, tick } = registry();
  t.is(targets.sweepDue(), 0, 'nothing to expire');
  targets.acquire([{ address: '198.18.0.1', port: 0 }]);
  tick(999);
  t.is(targets.sweepDue(), 0);
  tick(1);
  t.is(targets.sweepDue(), 1, 'expired at its time, though the last pass found no target');
  targets.acquire([{ address: '198.18.0.2', port: 0 }]);
  tick(500);
  targets.acquire([{ address: '198.18.0.3', port: 0 }]);
  tick(500);
  t.is(targets.sweepDue(), 1, 'the older one');
  tick(499);
  t.is(targets.sweepDue(), 0);
  targets.acquire([{ address: '198.18.0.3', port: 0 }]); // asked for again: later
  tick(1);
  t.is(targets.sweepDue(), 0, 'refreshed, not due');
  tick(1000);
  t.is(targets.sweepDue(), 1);
  t.is(targets.count(false), 0);
});

test('an expired burst gives its arrays back; kept targets keep their slots and ids; new ones take the lowest free slot', (t) => {
  const { targets, tracked, tick } = registry();
  const address = (i: number) => `198.18.${128 + (i >> 8)}.${i & 0xff}`;
  const kept = Array.from({ length: 10 }, (_, i) => ({ address: address(i), port: 0 }));
  const keptIds = targets.acquire(kept).map((x) => x.id);
  targets.acquire(Array.from({ length: 50_000 }, (_, i) => ({ address: `2001:2::${(i + 1).toString(16)}`, port: 0 })));
  const grown = targets.tableSizes();
  t.true(grown.arrays >= 50_010 && grown.index.table >= 100_020, JSON.stringify(grown));
  tick(600);
  targets.acquire(kept);
  tick(600);
  t.is(targets.sweep(), 50_000);
  const shrunk = targets.tableSizes();
  t.deepEqual(shrunk, { slots: 10, arrays: 1024, index: { slots: 1024, table: 2048 } });
  t.deepEqual(
    targets.find(kept).map((x) => x.id),
    keptIds,
  );
  t.is(tracked.size, 10);
  // A new target takes slot 10, the lowest free one.
  targets.acquire([{ address: '198.18.200.1', port: 0 }]);
  t.is(targets.tableSizes().slots, 11);
  t.deepEqual(targets.all().map((x) => x.address).slice(-1), ['198.18.200.1']);
});

test('each set of probe options is a target of its own; a set is forgotten with its last target', (t) => {
  const { targets, tracked, tick } = registry();
  const [plain, ttl7, again, tcp7] = [
    targets.acquire([{ address: '198.18.0.1', port: 0 }]),
    targets.acquire([{ address: '198.18.0.1', port: 0, options: { ttl: 7 } }]),
    targets.acquire([{ address: '198.18.0.1', port: 0, options: { ttl: 7 } }]),
    targets.acquire([{ address: '198.18.0.1', port: 80, options: { ttl: 7 } }]),
  ].map((r) => r[0]?.id);
  t.is(new Set([plain, ttl7, tcp7]).size, 3, 'three probes');
  t.is(again, ttl7, 'the same options: the same probe');
  t.deepEqual([...tracked.values()].sort(), ['198.18.0.1|icmp|0', '198.18.0.1|icmp|0|ttl7', '198.18.0.1|tcp|80|ttl7']);
  t.deepEqual(targets.find([{ address: '198.18.0.1', port: 0, options: { ttl: 7 } }]).map((x) => x.id), [ttl7]);
  t.deepEqual(targets.find([{ address: '198.18.0.1', port: 0, options: { ttl: 8 } }]), []);
  t.deepEqual(targets.all().map((x) => x.options?.ttl ?? 0).sort(), [0, 7, 7]);
  tick(2000);
  t.is(targets.sweep(), 3);
  t.is(targets.optionSets, 0, 'the set was forgotten with its last target');
  targets.acquire([{ address: '198.18.0.1', port: 0, options: { ttl: 7 } }]);
  t.is(targets.optionSets, 1);
  t.is(tracked.size, 1);
});

test('a request that fails halfway leaves no option set behind', (t) => {
  const { targets } = registry(new Set(['198.18.0.9']));
  t.throws(() =>
    targets.acquire([
      { address: '198.18.0.1', port: 0, options: { ttl: 3 } },
      { address: '198.18.0.2', port: 0, options: { tos: 4 } },
      { address: '198.18.0.9', port: 0, options: { size: 100 } },
    ]),
  );
  t.is(targets.size, 0);
  t.is(targets.optionSets, 0);
});

test('at most 2,047 option sets at once; one freed makes room', (t) => {
  const variants = new OptionVariants();
  const ids = new Set<number>();
  for (let i = 0; i < MAX_VARIANTS; i++) ids.add(variants.take({ ttl: 1 + (i % 255), tos: Math.floor(i / 255) }));
  t.is(ids.size, MAX_VARIANTS);
  t.false(ids.has(0), '0 is the default probe');
  t.throws(() => variants.take({ size: 100 }), { instanceOf: LimitError });
  t.is(variants.take({ ttl: 1, tos: 0 }), [...ids][0] ?? -1, 'an existing set is found, not added');
  variants.release([...ids][5] as number);
  t.true(variants.take({ size: 100 }) > 0);
  t.is(variants.peek(undefined), 0);
  t.is(variants.peek({}), 0);
});

test('a source reaches only targets in its scope', (t) => {
  t.regex(sourceScopeRefusal('127.0.0.1', '198.18.0.1') ?? '', /loopback/);
  t.regex(sourceScopeRefusal('::1', '2001:2::1') ?? '', /loopback/);
  t.regex(sourceScopeRefusal('fe80::1', '2001:2::1') ?? '', /link-local/);
  t.regex(sourceScopeRefusal('169.254.3.4', '198.18.0.1') ?? '', /link-local/);
  t.is(sourceScopeRefusal('127.0.0.1', '127.0.0.2'), undefined);
  t.is(sourceScopeRefusal('fe80::1', 'fe80::2'), undefined);
  t.is(sourceScopeRefusal('198.18.0.77', '198.18.128.1'), undefined);
});

test('options given in code are checked and made canonical as at the door', (t) => {
  t.deepEqual(normalizeOptions({ ttl: 7, tos: 0, df: false, source: '127.0.0.1' }), { ttl: 7, tos: 0, df: false, source: '127.0.0.1' });
  t.is(normalizeOptions({}), undefined);
  t.throws(() => normalizeOptions({ ttl: 7.5 }), { instanceOf: BadRequestError, message: /ttl must be an integer between 1 and 255, got 7.5/ });
  t.throws(() => normalizeOptions({ size: 100 }, true), { instanceOf: BadRequestError, message: /size applies to ICMP probes only/ });
  t.throws(() => normalizeOptions({ source: '198.18.99.99' }), { instanceOf: BadRequestError, message: /not an address of this host/ });
  t.throws(() => normalizeOptions({ source: 'localhost' }), { instanceOf: BadRequestError, message: /invalid source/ });
});
