/** Command-line parsing and validation (pure), and the CLI's exit codes (no probe is sent). */
import { spawnSync } from 'node:child_process';
import test from 'ava';
import { logMessages } from './helpers/log.js';
import { FlagError } from '../src/errors.js';
import { DEFAULTS, normalizeArgv, parseFlags, parseListen } from '../src/flags.js';
import { CLI, SYSTEM_ENV } from './helpers/lab.js';

test('Go-style long flags are rewritten, one-letter options and values left alone', (t) => {
  t.deepEqual(normalizeArgv(['-listen', ':1', '-i-wont-be-evil', '-interval=50', '--timeout', '9', '-h', '-bogus', '-5']), [
    '--listen',
    ':1',
    '--i-wont-be-evil',
    '--interval=50',
    '--timeout',
    '9',
    '-h',
    '--bogus',
    '-5',
  ]);
});

test('defaults', (t) => {
  t.deepEqual(parseFlags([]), DEFAULTS);
  t.is(DEFAULTS.port, 9116);
  t.is(DEFAULTS.intervalMs, 2000);
  t.is(DEFAULTS.timeoutMs, 3000);
  t.is(DEFAULTS.maxPps, 10000);
  t.is(DEFAULTS.expiryMs, 600_000);
});

test('both spellings set the same options', (t) => {
  const go = parseFlags(['-listen', '127.0.0.1:9200', '-i-wont-be-evil', '-interval', '50', '-maxpps', '20', '-identifier', '1']);
  const gnu = parseFlags(['--listen=127.0.0.1:9200', '--i-wont-be-evil', '--interval=50', '--maxpps', '20', '--identifier=1']);
  t.deepEqual(go, gnu);
  t.like(go, { host: '127.0.0.1', port: 9200, intervalMs: 50, maxPps: 20, identifierMode: 1 });
  t.like(parseFlags(['-timeout', '10']), { timeoutMs: 10 });
});

test('interfaces: not bound by default, "auto" or a name', (t) => {
  t.like(parseFlags([]), { interface4: undefined, interface6: undefined });
  t.like(parseFlags(['-interface4', 'auto']), { interface4: 'auto', interface6: undefined });
  t.like(parseFlags(['-interface4', 'eth0', '-interface6=wg0']), { interface4: 'eth0', interface6: 'wg0' });
});

test('-drop is a switch', (t) => {
  t.true(parseFlags(['-drop']).drop);
  t.false(parseFlags([]).drop);
  t.true(parseFlags(['-drop=true']).drop);
  t.false(parseFlags(['-drop=false']).drop);
  t.false(parseFlags(['-drop=0']).drop);
  t.throws(() => parseFlags(['-drop=yes']), { instanceOf: FlagError, message: /-drop takes true or false, got "yes"/ });
});

test('listen addresses', (t) => {
  t.deepEqual(parseListen(':9116'), { host: undefined, port: 9116 });
  t.deepEqual(parseListen('[::1]:80'), { host: '::1', port: 80 });
  t.deepEqual(parseListen('0.0.0.0:0'), { host: '0.0.0.0', port: 0 });
  for (const bad of ['9116', ':', ':70000', 'host:port', '::1:80', '']) {
    t.throws(() => parseListen(bad), { instanceOf: FlagError }, bad);
  }
});

test('the in-flight table bounds -maxpps x -timeout, as the engine does', (t) => {
  t.is(parseFlags(['-i-wont-be-evil', '-maxpps', '100000', '-timeout', '10000']).maxPps, 100000);
  t.is(parseFlags(['-i-wont-be-evil', '-maxpps', '1000000', '-timeout', '1000']).timeoutMs, 1000);
  t.throws(() => parseFlags(['-i-wont-be-evil', '-maxpps', '1000000', '-timeout', '1100']), { instanceOf: FlagError });
  t.throws(() => parseFlags(['-i-wont-be-evil', '-maxpps', '26300', '-timeout', '40000']), { instanceOf: FlagError });
  t.is(parseFlags(['-i-wont-be-evil', '-maxpps', '26000', '-timeout', '40000']).maxPps, 26000);
});

test('-target-allow repeats in either spelling; -max-targets', (t) => {
  t.deepEqual(parseFlags([]).targetAllow, []);
  t.is(parseFlags([]).maxTargets, Number.POSITIVE_INFINITY);
  t.deepEqual(parseFlags(['-target-allow', '198.18.0.0/15']).targetAllow, ['198.18.0.0/15']);
  t.deepEqual(parseFlags(['-target-allow', '198.18.0.0/15', '--target-allow=*.lab.test', '-target-allow', '2001:2::/48']).targetAllow, [
    '198.18.0.0/15',
    '*.lab.test',
    '2001:2::/48',
  ]);
  t.is(parseFlags(['-max-targets', '5000']).maxTargets, 5000);
});

test('-log.level and -log.format', (t) => {
  t.like(parseFlags([]), { logLevel: 'info', logFormat: 'logfmt' });
  t.like(parseFlags(['-log.level', 'debug', '-log.format=json']), { logLevel: 'debug', logFormat: 'json' });
  t.like(parseFlags(['--log.level=error', '--log.format', 'logfmt']), { logLevel: 'error', logFormat: 'logfmt' });
});

test('-buckets and -native-histograms', (t) => {
  t.like(parseFlags([]), { buckets: undefined, nativeHistograms: true });
  t.deepEqual(parseFlags(['-buckets', '0.0001, 0.001,1e-2,.5,3']).buckets, [0.0001, 0.001, 0.01, 0.5, 3]);
  t.deepEqual(parseFlags(['-buckets=none']).buckets, []);
  t.false(parseFlags(['-native-histograms=false']).nativeHistograms);
  t.false(parseFlags(['--no-native-histograms']).nativeHistograms);
  t.true(parseFlags(['-native-histograms']).nativeHistograms);
});

const refusals: Array<[string[], RegExp]> = [
  [['-buckets', '0.1,0.1'], /-buckets must increase by at least a nanosecond: 0.1 after 0.1/],
  [['-buckets', '0.2,0.1'], /-buckets must increase/],
  [['-buckets', '1e-10'], /-buckets must increase by at least a nanosecond: 1e-10/],
  [['-buckets', '0.001,abc'], /-buckets must be increasing numbers of seconds separated by commas, or "none"; got "abc"/],
  [['-buckets', '0.001,'], /got ""/],
  [['-buckets', '-1'], /got "-1"/],
  [['-buckets', 'Infinity'], /got "Infinity"/],
  [['-buckets', '0'], /-buckets bound 0 must be above 0 and at most 3600 seconds/],
  [['-buckets', '7200'], /at most 3600 seconds/],
  [['-buckets', Array.from({ length: 65 }, (_, i) => String(i + 1)).join(',')], /at most 64 bounds, got 65/],
  [['-native-histograms=maybe'], /-native-histograms takes true or false/],
  [['-log.level', 'verbose'], /-log.level must be one of debug, info, warn, error, got "verbose"/],
  [['-log.format', 'text'], /-log.format must be one of logfmt, json, got "text"/],
  [['-target-allow', '198.18.0.0/40'], /-target-allow "198.18.0.0\/40": a prefix length of at most 32/],
  [['-target-allow', 'not a glob'], /-target-allow "not a glob" is neither a CIDR/],
  [['-target-allow'], /-target-allow needs a value/],
  [['-max-targets', '0'], /-max-targets must be between 1 and/],
  [['-timeout', '10', '-timeout', '20'], /-timeout may be given once/],
  [['-interval', '50'], /-interval must be unlocked with -i-wont-be-evil/],
  [['-maxpps', '5', '-identifier', '1'], /-maxpps, -identifier must be unlocked/],
  [['-i-wont-be-evil', '-interval', '9'], /-interval must be between 10 and/],
  [['-i-wont-be-evil', '-maxpps', '0'], /-maxpps must be between 1 and/],
  [['-i-wont-be-evil', '-identifier', '2'], /-identifier must be between 0 and 1/],
  [['-timeout', 'abc'], /-timeout must be an integer/],
  [['-timeout', '5'], /-timeout must be between 10 and 40000/],
  [['-timeout'], /-timeout needs a value/],
  [['-interface4', 'a/b'], /-interface4 must be an interface name/],
  [['-interface6', 'much-too-long-a-name'], /-interface6 must be an interface name/],
  [['-bogus'], /unknown flag -bogus/],
  [['stray'], /unexpected argument "stray"/],
  [['-listen', 'nowhere'], /-listen must look like/],
  [['-expiry', '-5'], /-expiry must be between/],
  // 100,000 probes/s for 10.5 s is more than the engine's in-flight table holds.
  [['-i-wont-be-evil', '-maxpps', '100000', '-timeout', '10500'], /-maxpps 100000 with -timeout 10500 can put up to 1052501 probes in flight, more than the 1048576/],
];

for (const [argv, message] of refusals) {
  test(`refuses ${argv.join(' ')}`, (t) => {
    t.throws(() => parseFlags(argv), { instanceOf: FlagError, message });
  });
}

test('the command exits 2 with the message on a bad flag, before opening any socket', (t) => {
  for (const [argv, message] of refusals.slice(0, 4)) {
    const r = spawnSync(process.execPath, [CLI, ...argv], { encoding: 'utf8', timeout: 20_000 });
    t.is(r.status, 2, argv.join(' '));
    t.regex(r.stderr, message);
  }
});

test('--help lists the flags and exits 0', (t) => {
  const r = spawnSync(process.execPath, [CLI, '-help'], { encoding: 'utf8', timeout: 20_000 });
  t.is(r.status, 0);
  t.regex(r.stdout, /--listen/);
  t.regex(r.stdout, /--i-wont-be-evil/);
});

test('without CAP_NET_RAW the start fails with a clear message and exit code 1', (t) => {
  // Whether a user without CAP_NET_RAW may open ICMP datagram sockets is the network
  // namespace's net.ipv4.ping_group_range, which some hosts open for everyone. So the command
  // runs in a namespace of its own (it goes when the command ends) with the range closed.
  const closed = 'ip link set lo up && sysctl -qw net.ipv4.ping_group_range="1 0" && exec "$@"';
  const nobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all'];
  const r = spawnSync('unshare', ['--net', 'sh', '-c', closed, 'sh', ...nobody, process.execPath, CLI, '-listen', '127.0.0.1:0'], {
    encoding: 'utf8',
    env: SYSTEM_ENV,
    timeout: 60_000,
  });
  t.is(r.status, 1, r.stderr);
  t.regex(logMessages(r.stderr), /CAP_NET_RAW/);
  t.regex(logMessages(r.stderr), /net\.ipv4\.ping_group_range is "1 0"/);
});
