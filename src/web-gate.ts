/**
 * What `-web.config.file` asks of every request and connection: TLS options (and the client
 * certificate checks Node has no option for), a token-bucket rate limit, basic auth against
 * bcrypt hashes, extra response headers. The file is read again when it changes, so users,
 * headers, limits and certificates can be rotated without a restart (whether TLS is on cannot:
 * that takes a restart).
 */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ServerOptions as HttpsOptions } from 'node:https';
import type { TLSSocket } from 'node:tls';
import bcrypt from 'bcryptjs';
import type { Logger } from './log.js';
import { loadWebConfig, type TlsSettings, type WebConfig } from './web-config.js';

/** Node's TLS server options for these settings. */
export function tlsOptions(tls: TlsSettings): HttpsOptions {
  const requestCert = tls.clientAuthType !== 'NoClientCert';
  return {
    cert: tls.cert,
    key: tls.key,
    ...(tls.clientCa === undefined ? {} : { ca: tls.clientCa }),
    requestCert,
    // Only RequireAndVerifyClientCert refuses an unverified certificate during the handshake;
    // the other policies are checked once it is done (clientCertRefusal).
    rejectUnauthorized: tls.clientAuthType === 'RequireAndVerifyClientCert',
    minVersion: tls.minVersion,
    maxVersion: tls.maxVersion,
    honorCipherOrder: tls.honorCipherOrder,
    ...(tls.ciphers === undefined ? {} : { ciphers: tls.ciphers }),
    ...(tls.ecdhCurve === undefined ? {} : { ecdhCurve: tls.ecdhCurve }),
  };
}

/** The subject alternative names of a certificate (`DNS:a, IP Address:198.18.0.1, …`) as bare values. */
function sans(subjectaltname: string | undefined): string[] {
  if (!subjectaltname) return [];
  return subjectaltname.split(', ').map((entry) => entry.slice(entry.indexOf(':') + 1));
}

/** Why a connection's client certificate does not pass the policy, or undefined when it does. */
export function clientCertRefusal(socket: TLSSocket, tls: TlsSettings): string | undefined {
  const cert = socket.getPeerCertificate();
  const presented = cert !== null && typeof cert === 'object' && Object.keys(cert).length > 0;
  switch (tls.clientAuthType) {
    case 'RequireAnyClientCert':
      if (!presented) return 'no client certificate';
      break;
    case 'RequireAndVerifyClientCert':
      // The handshake already refused an unverified one; checked again all the same.
      if (!presented) return 'no client certificate';
      if (!socket.authorized) return `client certificate not verified: ${String(socket.authorizationError)}`;
      break;
    case 'VerifyClientCertIfGiven':
      if (presented && !socket.authorized) return `client certificate not verified: ${String(socket.authorizationError)}`;
      break;
    default:
      break;
  }
  if (tls.clientAllowedSans.length > 0) {
    // Compared as names and addresses (an IPv6 SAN in any spelling), not as printed text.
    const x509 = presented ? socket.getPeerX509Certificate() : undefined;
    const exact = { wildcards: false, subject: 'never' } as const;
    const match = (san: string) =>
      x509 !== undefined && (x509.checkHost(san, exact) !== undefined || x509.checkEmail(san, exact) !== undefined || (isIP(san) !== 0 && x509.checkIP(san) !== undefined));
    if (!tls.clientAllowedSans.some(match)) return `client certificate SANs ${JSON.stringify(sans(presented ? cert.subjectaltname : undefined))} match no client_allowed_sans`;
  }
  return undefined;
}

/** A token bucket: `burst` requests at once, one more every `intervalMs`. */
class Bucket {
  private tokens: number;
  private last = performance.now();

  constructor(private readonly limit: { intervalMs: number; burst: number }) {
    this.tokens = limit.burst;
  }

  take(): boolean {
    const now = performance.now();
    this.tokens = Math.min(this.limit.burst, this.tokens + (now - this.last) / this.limit.intervalMs);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** Verdicts of bcrypt checks, by a hash of user, password and stored hash: bcrypt costs ~70 ms a check. */
const VERDICTS_KEPT = 1024;
/**
 * bcrypt checks under way at once: each is tens of milliseconds of the event loop's time, so
 * guesses past this are refused (429) rather than let them starve scrapes. A password checked
 * once is not checked again (its verdict is kept), so Prometheus' own requests never queue.
 */
const CHECKS_AT_ONCE = 4;
/**
 * Compared against for an unknown user, so that a wrong name takes as long as a wrong
 * password (cost 10, as htpasswd -B writes them; the hash of nothing anyone can send).
 */
const DUMMY_HASH = '$2b$10$UAFCSc3xzaz2BpVCOrdYcOibl.1nLnhhRKuFF33r.OCfFwfAxrsV6';

export class WebGate {
  private config: WebConfig;
  private bucket: Bucket | undefined;
  private readonly verdicts = new Map<string, boolean>();
  private readonly checking = new Map<string, Promise<boolean>>();
  private stamp: string;
  private checked = Date.now();

  constructor(
    private readonly path: string,
    config: WebConfig,
    private readonly log?: Logger,
    /** Called with new TLS settings when the file's certificates change. */
    private readonly onTls?: (tls: TlsSettings) => void,
  ) {
    this.config = config;
    this.bucket = config.rateLimit ? new Bucket(config.rateLimit) : undefined;
    this.stamp = this.fileStamp();
  }

  get tls(): TlsSettings | undefined {
    return this.config.tls;
  }

  private fileStamp(): string {
    try {
      const s = statSync(this.path);
      return `${s.mtimeMs} ${s.size} ${s.ino}`;
    } catch {
      return 'missing';
    }
  }

  /** Reads the file again if it changed (looked at most once a second); a bad new file keeps the old settings. */
  private refresh(): void {
    const now = Date.now();
    if (now - this.checked < 1000) return;
    this.checked = now;
    const stamp = this.fileStamp();
    if (stamp === this.stamp) return;
    this.stamp = stamp;
    let next: WebConfig;
    try {
      next = loadWebConfig(this.path);
    } catch (e) {
      this.log?.error(`${(e as Error).message}; keeping the settings read before`);
      return;
    }
    if (Boolean(next.tls) !== Boolean(this.config.tls)) {
      this.log?.error(`-web.config.file ${this.path}: turning TLS ${next.tls ? 'on' : 'off'} takes a restart; keeping the settings read before`);
      return;
    }
    // Whether and how client certificates are asked for is fixed when the server starts.
    if (next.tls && this.config.tls && next.tls.clientAuthType !== this.config.tls.clientAuthType) {
      this.log?.error(`-web.config.file ${this.path}: changing client_auth_type takes a restart; keeping the settings read before`);
      return;
    }
    if (next.tls && JSON.stringify(next.tls) !== JSON.stringify(this.config.tls)) {
      try {
        this.onTls?.(next.tls);
      } catch (e) {
        this.log?.error(`-web.config.file ${this.path}: the new certificates were refused (${(e as Error).message}); keeping the settings read before`);
        return;
      }
    }
    this.config = next;
    this.bucket = next.rateLimit ? new Bucket(next.rateLimit) : undefined;
    this.verdicts.clear();
    this.log?.info('web config file read again', { file: this.path });
  }

  /**
   * Lets a request through (resolves true), or answers it (429 over the rate limit, 401
   * without valid credentials) and resolves false. Sets the configured headers either way.
   */
  admit(req: IncomingMessage, res: ServerResponse): boolean | Promise<boolean> {
    this.refresh();
    for (const [name, value] of Object.entries(this.config.headers)) res.setHeader(name, value);
    if (this.bucket && !this.bucket.take()) {
      refuse(res, 429, 'Too Many Requests\n');
      return false;
    }
    if (this.config.users.size === 0) return true;
    const credentials = basicCredentials(req.headers.authorization);
    if (!credentials) return this.unauthorized(res);
    const stored = this.config.users.get(credentials.user);
    const hash = stored ?? DUMMY_HASH;
    const key = createHash('sha256').update(`${credentials.user}\0${credentials.password}\0${hash}`).digest('base64');
    const known = this.verdicts.get(key);
    if (known !== undefined) return (known && stored !== undefined) || this.unauthorized(res);
    let check = this.checking.get(key);
    if (!check) {
      if (this.checking.size >= CHECKS_AT_ONCE) {
        refuse(res, 429, 'Too Many Requests: password checks under way\n');
        return false;
      }
      check = bcrypt.compare(credentials.password, hash).then(
        (ok) => {
          this.verdicts.set(key, ok);
          if (this.verdicts.size > VERDICTS_KEPT) this.verdicts.delete(this.verdicts.keys().next().value ?? '');
          return ok;
        },
        () => false,
      );
      const done = check.finally(() => this.checking.delete(key));
      void done.catch(() => undefined);
      this.checking.set(key, check);
    }
    return check.then((ok) => (ok && stored !== undefined) || this.unauthorized(res));
  }

  private unauthorized(res: ServerResponse): false {
    res.setHeader('www-authenticate', 'Basic');
    refuse(res, 401, 'Unauthorized\n');
    return false;
  }
}

function refuse(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** User and password of an `Authorization: Basic …` header, or undefined. */
export function basicCredentials(header: string | undefined): { user: string; password: string } | undefined {
  const m = header === undefined ? null : /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m?.[1]) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
