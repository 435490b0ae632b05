/**
 * `-web.config.file`: the Prometheus exporter-toolkit file (TLS, basic auth, response
 * headers, a request rate limit), parsed and checked strictly: an unknown key, a wrong type or
 * an unreadable certificate is an error naming the key. Parsing is pure given the files; the
 * server applies the result (web-server.ts).
 */
import { readFileSync } from 'node:fs';
import { validateHeaderValue } from 'node:http';
import { createSecureContext } from 'node:tls';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { FlagError } from './errors.js';

/** A web config file the exporter refuses: a start-up error like a bad flag (exit status 2). */
export class WebConfigError extends FlagError {
  override readonly name = 'WebConfigError';
}

export type ClientAuthType = 'NoClientCert' | 'RequestClientCert' | 'RequireAnyClientCert' | 'VerifyClientCertIfGiven' | 'RequireAndVerifyClientCert';
const CLIENT_AUTH_TYPES: readonly ClientAuthType[] = ['NoClientCert', 'RequestClientCert', 'RequireAnyClientCert', 'VerifyClientCertIfGiven', 'RequireAndVerifyClientCert'];

type TlsVersion = 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
const TLS_VERSIONS: Record<string, TlsVersion> = { TLS10: 'TLSv1', TLS11: 'TLSv1.1', TLS12: 'TLSv1.2', TLS13: 'TLSv1.3' };

/**
 * Go's names of the TLS 1.2 cipher suites it offers (crypto/tls `CipherSuites()`) and
 * OpenSSL's for the same suites. TLS 1.3 suites are not configurable, in Go as here.
 */
const CIPHER_SUITES: Record<string, string> = {
  TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: 'ECDHE-ECDSA-AES128-GCM-SHA256',
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: 'ECDHE-RSA-AES128-GCM-SHA256',
  TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: 'ECDHE-ECDSA-AES256-GCM-SHA384',
  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: 'ECDHE-RSA-AES256-GCM-SHA384',
  TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: 'ECDHE-ECDSA-CHACHA20-POLY1305',
  TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: 'ECDHE-RSA-CHACHA20-POLY1305',
  TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA: 'ECDHE-ECDSA-AES128-SHA',
  TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA: 'ECDHE-RSA-AES128-SHA',
  TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA: 'ECDHE-ECDSA-AES256-SHA',
  TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA: 'ECDHE-RSA-AES256-SHA',
};

/** Go's curve names and OpenSSL's. */
const CURVES: Record<string, string> = { CurveP256: 'P-256', CurveP384: 'P-384', CurveP521: 'P-521', X25519: 'X25519' };

/** The response headers exporter-toolkit lets a file set, and the values it accepts (undefined: any). */
const HEADERS: Record<string, readonly string[] | undefined> = {
  'Content-Security-Policy': undefined,
  'X-Frame-Options': ['deny', 'sameorigin'],
  'X-Content-Type-Options': ['nosniff'],
  'X-XSS-Protection': undefined,
  'Strict-Transport-Security': undefined,
};

export interface TlsSettings {
  /** Where each PEM came from, for messages and for the systemd unit (inline: undefined). */
  files: { cert?: string; key?: string; clientCa?: string };
  cert: string;
  key: string;
  /** CA certificates client certificates are verified against. */
  clientCa?: string;
  clientAuthType: ClientAuthType;
  clientAllowedSans: string[];
  minVersion: TlsVersion;
  maxVersion: TlsVersion;
  /** OpenSSL cipher list; undefined = Node's default. */
  ciphers?: string;
  honorCipherOrder: boolean;
  /** OpenSSL curve list; undefined = Node's default. */
  ecdhCurve?: string;
}

export interface WebConfig {
  tls?: TlsSettings;
  /** Names and bcrypt hashes; empty = no authentication. */
  users: Map<string, string>;
  headers: Record<string, string>;
  /** Requests a second over a burst; undefined = no limit. */
  rateLimit?: { intervalMs: number; burst: number };
}

type Node = Record<string, unknown>;

function isMap(v: unknown): v is Node {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Refuses keys of `node` (at `path`) other than `allowed`. */
function onlyKeys(node: Node, allowed: readonly string[], path: string): void {
  for (const key of Object.keys(node)) {
    if (!allowed.includes(key)) throw new WebConfigError(`unknown key ${path}${key} (expected one of ${allowed.join(', ')})`);
  }
}

function str(node: Node, key: string, path: string): string | undefined {
  const v = node[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new WebConfigError(`${path}${key} must be a string`);
  return v;
}

function bool(node: Node, key: string, path: string): boolean | undefined {
  const v = node[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new WebConfigError(`${path}${key} must be true or false`);
  return v;
}

function strings(node: Node, key: string, path: string): string[] {
  const v = node[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) throw new WebConfigError(`${path}${key} must be a list of strings`);
  return v as string[];
}

/** A Go duration of whole units (`1s`, `100ms`, `1m30s`), in milliseconds. */
export function parseDuration(text: string): number | undefined {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  if (text === '0') return 0;
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== text) return undefined;
  return parts.reduce((sum, [, n, unit]) => sum + Number(n) * (units[unit ?? ''] ?? 0), 0);
}

/** The absolute name of a file the config names (relative to the config file's directory). */
function fileName(node: Node, key: string, path: string, base: string): string | undefined {
  const name = str(node, key, path);
  return name === undefined ? undefined : isAbsolute(name) ? name : resolve(base, name);
}

/** The contents of a PEM given inline or as a file (relative to the config file's directory). */
function pem(node: Node, inline: string, file: string, path: string, base: string, required: boolean): string | undefined {
  const text = str(node, inline, path);
  const name = str(node, file, path);
  if (text !== undefined && name !== undefined) throw new WebConfigError(`${path}${inline} and ${path}${file} are both given: one or the other`);
  if (text !== undefined) return text;
  if (name === undefined) {
    if (required) throw new WebConfigError(`${path}${file} (or ${path}${inline}) is required`);
    return undefined;
  }
  const full = isAbsolute(name) ? name : resolve(base, name);
  try {
    return readFileSync(full, 'utf8');
  } catch (e) {
    throw new WebConfigError(`${path}${file}: cannot read ${full}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function parseTls(node: Node, base: string): TlsSettings {
  const path = 'tls_server_config.';
  onlyKeys(
    node,
    ['cert', 'key', 'client_ca', 'cert_file', 'key_file', 'client_auth_type', 'client_ca_file', 'client_allowed_sans', 'min_version', 'max_version', 'cipher_suites', 'prefer_server_cipher_suites', 'curve_preferences'],
    path,
  );
  const cert = pem(node, 'cert', 'cert_file', path, base, true) ?? '';
  const key = pem(node, 'key', 'key_file', path, base, true) ?? '';
  const clientCa = pem(node, 'client_ca', 'client_ca_file', path, base, false);
  const authType = str(node, 'client_auth_type', path) ?? 'NoClientCert';
  if (!(CLIENT_AUTH_TYPES as readonly string[]).includes(authType)) {
    throw new WebConfigError(`${path}client_auth_type ${JSON.stringify(authType)} is not one of ${CLIENT_AUTH_TYPES.join(', ')}`);
  }
  const clientAuthType = authType as ClientAuthType;
  // What Node would refuse only when the server starts (or, reloaded, in the middle of a
  // request): a PEM that does not parse, a key that is not the certificate's.
  try {
    createSecureContext({ cert, key, ...(clientCa === undefined ? {} : { ca: clientCa }) });
  } catch (e) {
    const which = /key/i.test((e as Error).message) ? 'key_file' : 'cert_file';
    throw new WebConfigError(`${path}${which} (with ${path}${which === 'key_file' ? 'cert_file' : 'key_file'}): ${(e as Error).message}`);
  }
  if (clientAuthType === 'RequireAndVerifyClientCert' && clientCa === undefined) {
    throw new WebConfigError(`${path}client_ca_file is required with client_auth_type RequireAndVerifyClientCert`);
  }
  const clientAllowedSans = strings(node, 'client_allowed_sans', path);
  if (clientAllowedSans.length > 0 && clientAuthType !== 'RequireAnyClientCert' && clientAuthType !== 'RequireAndVerifyClientCert') {
    throw new WebConfigError(`${path}client_allowed_sans needs client_auth_type RequireAnyClientCert or RequireAndVerifyClientCert`);
  }
  const version = (key: string, fallback: string): TlsVersion => {
    const name = str(node, key, path) ?? fallback;
    const v = TLS_VERSIONS[name];
    if (!v) throw new WebConfigError(`${path}${key} ${JSON.stringify(name)} is not one of ${Object.keys(TLS_VERSIONS).join(', ')}`);
    return v;
  };
  const minVersion = version('min_version', 'TLS12');
  const maxVersion = version('max_version', 'TLS13');
  if (Object.values(TLS_VERSIONS).indexOf(minVersion) > Object.values(TLS_VERSIONS).indexOf(maxVersion)) {
    throw new WebConfigError(`${path}min_version is above max_version`);
  }
  const suites = strings(node, 'cipher_suites', path).map((name) => {
    const openssl = CIPHER_SUITES[name];
    if (!openssl) throw new WebConfigError(`${path}cipher_suites: ${JSON.stringify(name)} is not one of ${Object.keys(CIPHER_SUITES).join(', ')}`);
    return openssl;
  });
  const curves = strings(node, 'curve_preferences', path).map((name) => {
    const openssl = CURVES[name];
    if (!openssl) throw new WebConfigError(`${path}curve_preferences: ${JSON.stringify(name)} is not one of ${Object.keys(CURVES).join(', ')}`);
    return openssl;
  });
  const files = {
    ...(fileName(node, 'cert_file', path, base) === undefined ? {} : { cert: fileName(node, 'cert_file', path, base) }),
    ...(fileName(node, 'key_file', path, base) === undefined ? {} : { key: fileName(node, 'key_file', path, base) }),
    ...(fileName(node, 'client_ca_file', path, base) === undefined ? {} : { clientCa: fileName(node, 'client_ca_file', path, base) }),
  } as TlsSettings['files'];
  return {
    files,
    cert,
    key,
    ...(clientCa === undefined ? {} : { clientCa }),
    clientAuthType,
    clientAllowedSans,
    minVersion,
    maxVersion,
    ...(suites.length > 0 ? { ciphers: suites.join(':') } : {}),
    honorCipherOrder: bool(node, 'prefer_server_cipher_suites', path) ?? true,
    ...(curves.length > 0 ? { ecdhCurve: curves.join(':') } : {}),
  };
}

/** A bcrypt hash as htpasswd and Go's bcrypt write it. */
const BCRYPT = /^\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}$/;

/** Parses the text of a web config file; `base` is the directory its relative file names start from. */
export function parseWebConfig(text: string, base: string): WebConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new WebConfigError(`not valid YAML: ${(e as Error).message.split('\n')[0] ?? ''}`);
  }
  if (doc === null || doc === undefined) doc = {};
  if (!isMap(doc)) throw new WebConfigError('the file must be a YAML mapping');
  onlyKeys(doc, ['tls_server_config', 'http_server_config', 'basic_auth_users', 'rate_limit'], '');
  const config: WebConfig = { users: new Map(), headers: {} };
  const tls = doc.tls_server_config;
  if (tls !== undefined && tls !== null) {
    if (!isMap(tls)) throw new WebConfigError('tls_server_config must be a mapping');
    config.tls = parseTls(tls, base);
  }
  const http = doc.http_server_config;
  if (http !== undefined && http !== null) {
    if (!isMap(http)) throw new WebConfigError('http_server_config must be a mapping');
    onlyKeys(http, ['http2', 'headers'], 'http_server_config.');
    bool(http, 'http2', 'http_server_config.');
    const headers = http.headers;
    if (headers !== undefined && headers !== null) {
      if (!isMap(headers)) throw new WebConfigError('http_server_config.headers must be a mapping');
      onlyKeys(headers, Object.keys(HEADERS), 'http_server_config.headers.');
      for (const [name, value] of Object.entries(headers)) {
        if (typeof value !== 'string') throw new WebConfigError(`http_server_config.headers.${name} must be a string`);
        const accepted = HEADERS[name];
        if (value === '') continue;
        try {
          validateHeaderValue(name, value);
        } catch {
          throw new WebConfigError(`http_server_config.headers.${name}: ${JSON.stringify(value)} is not a valid header value (line breaks and characters past U+00FF are not)`);
        }
        if (accepted && !accepted.includes(value.toLowerCase())) {
          throw new WebConfigError(`http_server_config.headers.${name} ${JSON.stringify(value)} is not one of ${accepted.join(', ')}`);
        }
        config.headers[name] = value;
      }
    }
  }
  const users = doc.basic_auth_users;
  if (users !== undefined && users !== null) {
    if (!isMap(users)) throw new WebConfigError('basic_auth_users must be a mapping of user names to bcrypt hashes');
    for (const [user, hash] of Object.entries(users)) {
      if (typeof hash !== 'string' || !BCRYPT.test(hash)) throw new WebConfigError(`basic_auth_users.${user} must be a bcrypt hash ($2y$10$…, as htpasswd -nBC 10 writes)`);
      const cost = Number(hash.split('$')[2]);
      if (cost < 4 || cost > 31) throw new WebConfigError(`basic_auth_users.${user}: bcrypt cost ${cost} is not between 4 and 31`);
      if (user.includes(':')) throw new WebConfigError(`basic_auth_users: a user name cannot contain ":" (${JSON.stringify(user)})`);
      config.users.set(user, hash);
    }
  }
  const limit = doc.rate_limit;
  if (limit !== undefined && limit !== null) {
    if (!isMap(limit)) throw new WebConfigError('rate_limit must be a mapping');
    onlyKeys(limit, ['interval', 'burst'], 'rate_limit.');
    const interval = limit.interval;
    const intervalMs = typeof interval === 'string' ? parseDuration(interval) : typeof interval === 'number' && interval === 0 ? 0 : undefined;
    if (intervalMs === undefined) throw new WebConfigError('rate_limit.interval must be a duration (100ms, 1s, 1m)');
    const burst = limit.burst ?? 0;
    if (typeof burst !== 'number' || !Number.isInteger(burst) || burst < 0) throw new WebConfigError('rate_limit.burst must be a whole number');
    if (intervalMs > 0) config.rateLimit = { intervalMs, burst: Math.max(1, burst) };
  }
  return config;
}

/** Reads and parses the file at `path`; errors name the file. */
export function loadWebConfig(path: string): WebConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new WebConfigError(`-web.config.file ${path}: cannot read it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return parseWebConfig(text, dirname(resolve(path)));
  } catch (e) {
    throw new WebConfigError(`-web.config.file ${path}: ${(e as Error).message}`);
  }
}
