/** The web config file (pure): what each key becomes, and every refusal naming its key. */
import test from 'ava';
import { basicCredentials } from '../src/web-gate.js';
import { parseDuration, parseWebConfig, WebConfigError } from '../src/web-config.js';
import { makeCerts } from './helpers/certs.js';

const HASH = '$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG';
/** A CA and a server certificate (and a client one, whose key is not the server's). */
const certs = makeCerts('127.0.0.1', { other: 'DNS:other.lab' }, (f) => process.once('exit', f));

test('a full file: TLS settings in Node terms, users, headers, rate limit', (t) => {
  const c = parseWebConfig(
    [
      'tls_server_config:',
      `  cert_file: server.crt`,
      `  key_file: ${certs.file('server.key')}`,
      `  client_ca: ${JSON.stringify(certs.caCert)}`,
      '  client_auth_type: RequireAndVerifyClientCert',
      '  client_allowed_sans: [prometheus.lab]',
      '  min_version: TLS13',
      '  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]',
      '  prefer_server_cipher_suites: false',
      '  curve_preferences: [X25519, CurveP256]',
      'http_server_config:',
      '  http2: true',
      '  headers:',
      '    Strict-Transport-Security: max-age=31536000',
      '    X-Frame-Options: sameorigin',
      '    X-XSS-Protection: ""',
      'basic_auth_users:',
      `  alice: ${HASH}`,
      'rate_limit:',
      '  interval: 100ms',
      '  burst: 20',
    ].join('\n'),
    certs.dir,
  );
  t.like(c.tls, {
    clientAuthType: 'RequireAndVerifyClientCert',
    clientAllowedSans: ['prometheus.lab'],
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ciphers: 'ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305',
    honorCipherOrder: false,
    ecdhCurve: 'X25519:P-256',
  });
  t.is(c.tls?.cert, certs.read('server.crt'));
  t.is(c.tls?.clientCa, certs.caCert);
  t.deepEqual(c.tls?.files, { cert: certs.file('server.crt'), key: certs.file('server.key') }, 'relative names from the file\'s directory');
  t.deepEqual([...c.users], [['alice', HASH]]);
  t.deepEqual(c.headers, { 'Strict-Transport-Security': 'max-age=31536000', 'X-Frame-Options': 'sameorigin' });
  t.deepEqual(c.rateLimit, { intervalMs: 100, burst: 20 });
});

test('an empty file changes nothing', (t) => {
  t.deepEqual(parseWebConfig('', '/'), { users: new Map(), headers: {} });
  t.deepEqual(parseWebConfig('rate_limit:\n  interval: 0\n', '/'), { users: new Map(), headers: {} });
});

test('Go durations', (t) => {
  t.is(parseDuration('100ms'), 100);
  t.is(parseDuration('1m30s'), 90_000);
  t.is(parseDuration('1.5s'), 1500);
  t.is(parseDuration('0'), 0);
  t.is(parseDuration('10'), undefined);
  t.is(parseDuration('1x'), undefined);
});

const tls = (extra = '') => `tls_server_config:\n  cert_file: ${certs.file('server.crt')}\n  key_file: ${certs.file('server.key')}\n${extra}`;

const refusals: Array<[string, RegExp]> = [
  [`tls_server_config:\n  cert_file: ${certs.file('server.crt')}\n  key_file: ${certs.file('other.key')}\n`, /tls_server_config\.key_file .*key values mismatch/],
  [`tls_server_config:\n  cert: "not a certificate"\n  key_file: ${certs.file('server.key')}\n`, /tls_server_config\.cert_file .*(no start line|PEM)/],
  ['http_server_config:\n  headers:\n    Content-Security-Policy: |\n      default-src \'self\'\n', /headers\.Content-Security-Policy: .* is not a valid header value/],
  ['http_server_config:\n  headers:\n    Content-Security-Policy: "default-src \u2019self\u2019"\n', /is not a valid header value/],
  [`basic_auth_users:\n  alice: ${HASH.replace('$10$', '$35$')}\n`, /bcrypt cost 35 is not between 4 and 31/],
  ['tls: {}', /unknown key tls \(expected one of tls_server_config, http_server_config, basic_auth_users, rate_limit\)/],
  ['tls_server_config:\n  key_file: /k\n', /tls_server_config\.cert_file \(or tls_server_config\.cert\) is required/],
  [`tls_server_config:\n  cert: x\n  cert_file: /c\n  key: y\n`, /tls_server_config\.cert and tls_server_config\.cert_file are both given/],
  [tls('  client_auth_type: Sometimes\n'), /client_auth_type "Sometimes" is not one of NoClientCert/],
  [tls('  client_auth_type: RequireAndVerifyClientCert\n'), /client_ca_file is required with client_auth_type RequireAndVerifyClientCert/],
  [tls('  client_allowed_sans: [a]\n'), /client_allowed_sans needs client_auth_type RequireAnyClientCert or RequireAndVerifyClientCert/],
  [tls('  min_version: SSL3\n'), /min_version "SSL3" is not one of TLS10, TLS11, TLS12, TLS13/],
  [tls('  min_version: TLS13\n  max_version: TLS12\n'), /min_version is above max_version/],
  [tls('  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n'), /cipher_suites: "TLS_RSA_WITH_RC4_128_SHA" is not one of/],
  [tls('  curve_preferences: [P999]\n'), /curve_preferences: "P999" is not one of/],
  ['http_server_config:\n  headers:\n    X-Frame-Options: allow\n', /http_server_config\.headers\.X-Frame-Options "allow" is not one of deny, sameorigin/],
  ['http_server_config:\n  http2: maybe\n', /http_server_config\.http2 must be true or false/],
  ['basic_auth_users: [alice]\n', /basic_auth_users must be a mapping/],
  [`basic_auth_users:\n  "a:b": ${HASH}\n`, /a user name cannot contain ":"/],
  ['rate_limit:\n  interval: soon\n', /rate_limit\.interval must be a duration/],
  ['rate_limit:\n  interval: 1s\n  burst: -1\n', /rate_limit\.burst must be a whole number/],
  ['- a\n- b\n', /the file must be a YAML mapping/],
];

for (const [text, message] of refusals) {
  test(`refused: ${message.source}`, (t) => {
    t.throws(() => parseWebConfig(text, '/'), { instanceOf: WebConfigError, message });
  });
}

test('basic credentials: a password may hold colons; anything malformed is none', (t) => {
  const header = (s: string) => `Basic ${Buffer.from(s).toString('base64')}`;
  t.deepEqual(basicCredentials(header('alice:a:b c')), { user: 'alice', password: 'a:b c' });
  t.deepEqual(basicCredentials(header(':')), { user: '', password: '' });
  t.is(basicCredentials(header('nocolon')), undefined);
  t.is(basicCredentials('Bearer abc'), undefined);
  t.is(basicCredentials(undefined), undefined);
  t.is(basicCredentials('Basic !!!'), undefined);
});
