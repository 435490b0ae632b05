/** What the DNS lookup reads (pure): resolv.conf's search list and ndots, hosts files, the names tried. */
import test from 'ava';
import { parseHosts, parseResolvConf, searchNames } from '../src/dns-lookup.js';
import { LimitError } from '../src/errors.js';
import { Resolver, type ResolvedAddress } from '../src/resolve.js';

test('resolv.conf: the last search or domain line wins, ndots from options, comments ignored', (t) => {
  t.deepEqual(parseResolvConf(''), { search: [], ndots: 1 });
  t.deepEqual(parseResolvConf('nameserver 198.18.0.1\nsearch a.test B.test.\noptions timeout:1 ndots:3 attempts:2\n'), { search: ['a.test', 'b.test'], ndots: 3 });
  t.deepEqual(parseResolvConf('search a.test\ndomain c.test # set by dhcp\n; search d.test\n'), { search: ['c.test'], ndots: 1 });
  t.deepEqual(parseResolvConf('options ndots:99'), { search: [], ndots: 15 });
});

test('hosts: names and aliases to addresses, both families, comments and junk skipped', (t) => {
  const hosts = parseHosts('127.0.0.1 localhost\n198.18.0.5  Web web.lab  # the web\n2001:2::5 web\nnot-an-ip foo\n# 198.18.0.6 gone\n198.18.0.5 web\n');
  t.deepEqual(hosts.get('web'), [
    { address: '198.18.0.5', family: 4 },
    { address: '2001:2::5', family: 6 },
  ]);
  t.deepEqual(hosts.get('web.lab'), [{ address: '198.18.0.5', family: 4 }]);
  t.is(hosts.get('foo'), undefined);
  t.is(hosts.get('gone'), undefined);
});

test('the names tried, in glibc order', (t) => {
  const conf = { search: ['a.test', 'b.test'], ndots: 1 };
  t.deepEqual(searchNames('host', conf), ['host.a.test', 'host.b.test', 'host']);
  t.deepEqual(searchNames('host.sub', conf), ['host.sub', 'host.sub.a.test', 'host.sub.b.test']);
  t.deepEqual(searchNames('host.sub.', conf), ['host.sub']);
  t.deepEqual(searchNames('host.sub', { ...conf, ndots: 2 }), ['host.sub.a.test', 'host.sub.b.test', 'host.sub']);
  t.deepEqual(searchNames('host', { search: [], ndots: 1 }), ['host']);
});

const answer: ResolvedAddress[] = [{ address: '198.18.0.9', family: 4 }];

/** A resolver whose lookups all wait until `release()`, then answer `answer`; `calls()` counts them. */
function gatedResolver(maxLookups?: number) {
  let calls = 0;
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => (release = r));
  const resolver = new Resolver({
    timeoutMs: 10_000,
    cacheTtlMs: 60_000,
    maxEntries: 10,
    ...(maxLookups === undefined ? {} : { maxLookups }),
    lookupAll: async () => {
      calls += 1;
      await gate;
      return answer;
    },
  });
  return { resolver, release: () => release(), calls: () => calls };
}

test('requests for a name being looked up wait for that one lookup', async (t) => {
  const { resolver, release, calls } = gatedResolver();
  const waiting = Array.from({ length: 10 }, () => resolver.resolve('shared.test', 'all'));
  release();
  t.deepEqual(await Promise.all(waiting), Array.from({ length: 10 }, () => answer));
  t.is(calls(), 1);
});

test('the deadline cancels the lookup itself (its signal), and the next request looks up afresh', async (t) => {
  const signals: AbortSignal[] = [];
  const resolver = new Resolver({
    timeoutMs: 50,
    cacheTtlMs: 60_000,
    maxEntries: 10,
    lookupAll: (_name, signal) => {
      signals.push(signal);
      return new Promise((_, reject) => signal.addEventListener('abort', () => reject(Object.assign(new Error('cancelled'), { code: 'ECANCELLED' }))));
    },
  });
  await t.throwsAsync(resolver.resolve('hang.test', 'all'), { message: 'unable to resolve target="hang.test": timed out after 50 ms' });
  t.true(signals[0]?.aborted);
  await t.throwsAsync(resolver.resolve('hang.test', 'all'));
  t.is(signals.length, 2, 'a failure is not shared with later requests');
});

test('addresses with a zone are no target: 400, and hosts lines with one are skipped', async (t) => {
  const resolver = new Resolver({ timeoutMs: 100, cacheTtlMs: 1000, maxEntries: 10, lookupAll: async () => answer });
  await t.throwsAsync(resolver.resolve('fe80::1%eth0', 'all'), { message: /neither an IP address nor a valid hostname/ });
  t.is(parseHosts('fe80::1%eth0 router\n198.18.0.1 router\n').get('router')?.length, 1);
});

test('lookups under way are capped: past the cap a new name is refused at once (429), names already being looked up still wait', async (t) => {
  const { resolver, release } = gatedResolver(2);
  const a = resolver.resolve('a.test', 'all');
  const b = resolver.resolve('b.test', 'all');
  await t.throwsAsync(resolver.resolve('c.test', 'all'), { instanceOf: LimitError, message: /2 DNS lookups are under way/ });
  const again = resolver.resolve('a.test', 'all');
  release();
  t.deepEqual(await Promise.all([a, b, again]), [answer, answer, answer]);
  t.deepEqual(await resolver.resolve('c.test', 'all'), answer, 'room again once they ended');
});
