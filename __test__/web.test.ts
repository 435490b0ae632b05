/**
 * `-web.config.file` on the wire: a real Prometheus scrapes `/probe` over TLS with basic auth
 * (and a job with a wrong password is refused); plain HTTP is not served; client certificates,
 * the rate limit, response headers, a file changed while running, and bad files refused at start.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { request } from 'node:https';
import { join } from 'node:path';
import test from 'ava';
import bcrypt from 'bcryptjs';
import { makeCerts, type Certs } from './helpers/certs.js';
import { CLI, Lab, SYSTEM_ENV } from './helpers/lab.js';
import { logMessages } from './helpers/log.js';
import { probeJob, query, startPrometheus, targetHealth } from './helpers/prometheus.js';
import { waitFor } from './helpers/wait.js';

const TARGET = '198.18.128.20';

/** A GET over TLS trusting the lab CA, with optional basic auth and client certificate. */
function get(
  url: string,
  certs: Certs,
  opts: { auth?: string; client?: string } = {},
): Promise<{ status: number; body: string; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        ca: certs.caCert,
        ...(opts.auth ? { auth: opts.auth } : {}),
        ...(opts.client ? { cert: certs.read(`${opts.client}.crt`), key: certs.read(`${opts.client}.key`) } : {}),
      },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

function webConfig(dir: string, certs: Certs, extra: string, users: Record<string, string>): string {
  const path = join(dir, 'web.yml');
  const lines = [
    'tls_server_config:',
    `  cert_file: ${certs.file('server.crt')}`,
    `  key_file: ${certs.file('server.key')}`,
    extra,
    'basic_auth_users:',
    ...Object.entries(users).map(([user, password]) => `  ${user}: ${bcrypt.hashSync(password, 10)}`),
  ];
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

test('Prometheus scrapes /probe over TLS with basic auth; a wrong password is a 401; plain HTTP is not served', async (t) => {
  const lab = Lab.create(t);
  const onTeardown = (f: () => void) => t.teardown(f);
  const certs = makeCerts(lab.httpAddress, {}, onTeardown);
  const path = webConfig(certs.dir, certs, 'http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n    X-Frame-Options: deny', { prometheus: 'right horse battery' });
  const exporter = await lab.startExporter(['-i-wont-be-evil', '-interval', '100', '-timeout', '300', '-web.config.file', path]);
  t.true(exporter.url.startsWith('https://'), exporter.url);
  const host = new URL(exporter.url).host;
  const job = (name: string, password: string) =>
    probeJob(name, [TARGET], [host], [
      '    scrape_interval: 1s',
      '    scheme: https',
      `    tls_config: { ca_file: ${certs.file('ca.crt')} }`,
      `    basic_auth: { username: prometheus, password: '${password}' }`,
    ]);
  const prom = await startPrometheus(lab, () => ['scrape_configs:', job('icmp', 'right horse battery'), job('wrong', 'wrong horse'), ''].join('\n'), onTeardown);
  const sent = await waitFor(
    () => query(prom.url, `icmp_probe_packets_sent_total{job="icmp",instance="${TARGET}"}`),
    (v) => v > 0,
    { what: 'Prometheus to have scraped probe counters over TLS', timeoutMs: 60_000, everyMs: 500 },
  );
  t.true(sent > 0);
  const wrong = await waitFor(
    () => targetHealth(prom.url),
    (all) => all.some((x) => x.job === 'wrong' && x.health === 'down'),
    { what: 'the wrong-password job to be down', timeoutMs: 60_000, everyMs: 500 },
  );
  t.regex(wrong.find((x) => x.job === 'wrong')?.lastError ?? '', /401/);

  const anonymous = await get(`${exporter.url}/metrics`, certs);
  t.is(anonymous.status, 401);
  t.is(anonymous.headers['www-authenticate'], 'Basic');
  const ok = await get(`${exporter.url}/-/healthy`, certs, { auth: 'prometheus:right horse battery' });
  t.is(ok.status, 200);
  t.is(ok.headers['x-content-type-options'], 'nosniff');
  t.is(ok.headers['x-frame-options'], 'deny');
  // The same port without TLS: no HTTP answer at all.
  const plain = await fetch(exporter.url.replace('https://', 'http://') + '/metrics').then(
    (r) => `HTTP ${r.status}`,
    () => 'no answer',
  );
  t.is(plain, 'no answer');
});

test('client certificates: RequireAndVerifyClientCert with client_allowed_sans', async (t) => {
  const lab = Lab.create(t);
  const certs = makeCerts(lab.httpAddress, { prometheus: 'DNS:prometheus.lab', intruder: 'DNS:intruder.lab' }, (f) => t.teardown(f));
  const extra = [`  client_auth_type: RequireAndVerifyClientCert`, `  client_ca_file: ${certs.file('ca.crt')}`, '  client_allowed_sans: [prometheus.lab]'].join('\n');
  const path = webConfig(certs.dir, certs, extra, {});
  const exporter = await lab.startExporter(['-web.config.file', path]);
  t.is((await get(`${exporter.url}/-/ready`, certs, { client: 'prometheus' })).status, 200);
  const cut = { message: /certificate|socket hang up|ECONNRESET/ };
  await t.throwsAsync(get(`${exporter.url}/-/ready`, certs), cut, 'no client certificate: no connection');
  await t.throwsAsync(get(`${exporter.url}/-/ready`, certs, { client: 'intruder' }), cut, 'a SAN not allowed: no connection');
  // A self-signed client certificate (another CA) is refused too.
  const stranger = makeCerts(lab.httpAddress, { prometheus: 'DNS:prometheus.lab' }, (f) => t.teardown(f));
  const own = { ...certs, read: (name: string) => (name.startsWith('prometheus.') ? stranger.read(name) : certs.read(name)) };
  await t.throwsAsync(get(`${exporter.url}/-/ready`, own, { client: 'prometheus' }), cut, 'a certificate of another CA: no connection');
  // Changing client_auth_type needs a restart: a file that does is logged and not taken.
  webConfig(certs.dir, certs, `  client_auth_type: RequireAnyClientCert`, {});
  // The file is looked at on requests (at most once a second).
  await waitFor(
    async () => {
      await get(`${exporter.url}/-/ready`, certs, { client: 'prometheus' });
      return logMessages(exporter.stderr);
    },
    (m) => m.includes('changing client_auth_type takes a restart'),
    { what: 'the refused reload logged', everyMs: 250 },
  );
  await t.throwsAsync(get(`${exporter.url}/-/ready`, own, { client: 'prometheus' }), cut, 'still verified against the CA');
});

test('VerifyClientCertIfGiven: no certificate is fine, an unverified one is refused', async (t) => {
  const lab = Lab.create(t);
  const certs = makeCerts(lab.httpAddress, { prometheus: 'DNS:prometheus.lab' }, (f) => t.teardown(f));
  const path = webConfig(certs.dir, certs, `  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ${certs.file('ca.crt')}`, {});
  const exporter = await lab.startExporter(['-web.config.file', path]);
  t.is((await get(`${exporter.url}/-/ready`, certs)).status, 200);
  t.is((await get(`${exporter.url}/-/ready`, certs, { client: 'prometheus' })).status, 200);
  const stranger = makeCerts(lab.httpAddress, { prometheus: 'DNS:prometheus.lab' }, (f) => t.teardown(f));
  const own = { ...certs, read: (name: string) => (name.startsWith('prometheus.') ? stranger.read(name) : certs.read(name)) };
  await t.throwsAsync(get(`${exporter.url}/-/ready`, own, { client: 'prometheus' }), { message: /socket hang up|ECONNRESET|certificate/ });
});

test('password guessing: a few bcrypt checks at a time, the rest 429; an unknown user is checked like a known one; refusals counted in /metrics', async (t) => {
  const lab = Lab.create(t);
  const certs = makeCerts(lab.httpAddress, {}, (f) => t.teardown(f));
  const path = webConfig(certs.dir, certs, '', { prometheus: 'right' });
  const exporter = await lab.startExporter(['-web.config.file', path]);
  const guesses = await Promise.all(
    Array.from({ length: 12 }, (_, i) => get(`${exporter.url}/-/healthy`, certs, { auth: `${i % 2 === 0 ? 'prometheus' : 'nobody'}:guess-${i}` })),
  );
  const statuses = guesses.map((g) => g.status);
  t.true(statuses.every((s) => s === 401 || s === 429), statuses.join(' '));
  t.true(statuses.includes(429), `more than four checks at once are refused: ${statuses.join(' ')}`);
  // The right password still gets in (and, checked once, is never checked again).
  const ok = await waitFor(() => get(`${exporter.url}/metrics`, certs, { auth: 'prometheus:right' }), (r) => r.status === 200, { what: 'the right password taken' });
  t.regex(ok.body, /^http_request_duration_seconds_count\{path="\/-\/healthy",method="GET",status="401"\} [1-9]/m);
});

test('rate_limit answers 429 past the burst; a changed file applies without a restart', async (t) => {
  const lab = Lab.create(t);
  const certs = makeCerts(lab.httpAddress, {}, (f) => t.teardown(f));
  const path = webConfig(certs.dir, certs, 'rate_limit:\n  interval: 1m\n  burst: 3', { alice: 'first' });
  const exporter = await lab.startExporter(['-web.config.file', path]);
  const statuses = [];
  for (let i = 0; i < 5; i++) statuses.push((await get(`${exporter.url}/-/healthy`, certs, { auth: 'alice:first' })).status);
  t.deepEqual(statuses, [200, 200, 200, 429, 429]);
  // New users and no limit, read again while running.
  webConfig(certs.dir, certs, '', { alice: 'second' });
  const after = await waitFor(
    () => get(`${exporter.url}/-/healthy`, certs, { auth: 'alice:second' }),
    (r) => r.status === 200,
    { what: 'the new password to be taken', show: (r) => `${r.status}` },
  );
  t.is(after.status, 200);
  t.is((await get(`${exporter.url}/-/healthy`, certs, { auth: 'alice:first' })).status, 401);
  t.regex(logMessages(exporter.stderr), /web config file read again/);
});

const badFiles: Array<[string, string, RegExp]> = [
  ['an unknown key', 'tls_server_config:\n  cert_flie: x\n', /unknown key tls_server_config\.cert_flie/],
  ['a certificate that cannot be read', 'tls_server_config:\n  cert_file: /nonexistent/server.crt\n  key_file: /nonexistent/server.key\n', /tls_server_config\.cert_file: cannot read \/nonexistent\/server\.crt: ENOENT/],
  ['a password that is no bcrypt hash', 'basic_auth_users:\n  alice: secret\n', /basic_auth_users\.alice must be a bcrypt hash/],
  ['a header it may not set', 'http_server_config:\n  headers:\n    Server: mine\n', /unknown key http_server_config\.headers\.Server/],
  ['not YAML', 'tls_server_config: [unclosed\n', /not valid YAML/],
  ['a certificate that is no PEM', 'tls_server_config:\n  cert: "junk"\n  key: "junk"\n', /tls_server_config\.(cert|key)_file/],
  ['a header value with a line break', 'http_server_config:\n  headers:\n    Content-Security-Policy: |\n      default-src none\n', /is not a valid header value/],
];

for (const [what, contents, message] of badFiles) {
  test(`a web config file with ${what} stops the start with status 2, naming it, before any socket opens`, (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'web-config-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'bad.yml');
    writeFileSync(path, contents);
    const r = spawnSync(process.execPath, [CLI, '-listen', '127.0.0.1:0', '-web.config.file', path], {
      encoding: 'utf8',
      env: SYSTEM_ENV,
      timeout: 20_000,
    });
    t.is(r.status, 2, r.stderr);
    t.regex(logMessages(r.stderr), message);
    t.regex(logMessages(r.stderr), new RegExp(`-web.config.file ${path.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
  });
}
