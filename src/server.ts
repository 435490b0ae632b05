/**
 * HTTP: the routes (GET /probe and /metrics answered on node:http directly, the rest through
 * h3), and the Node server around them that measures every request.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { H3, HTTPResponse } from 'h3';
import { toNodeHandler } from 'h3/node';
import type { Registry } from 'prom-client';
import type { TargetAllowList } from './allow.js';
import { BadRequestError, ForbiddenError, LimitError, UnavailableError } from './errors.js';
import type { Logger } from './log.js';
import { clientCertRefusal, tlsOptions, type WebGate } from './web-gate.js';
import type { HttpObserver } from './metrics.js';
import type { Engine } from './native.js';
import { isIPv4 } from 'node:net';
import { parseProbeQuery, type ProbeQuery } from './params.js';
import { checkSourceScope, isLocalAddress, sourceIpVersion } from './probe-options.js';
import { renderProbe, renderProbeProtobuf, wantsProtobuf } from './render.js';
import { snapshotFlat, statsAt } from './snapshot.js';
import { checkHostname, literalTarget, type IpVersion, type ResolvedAddress, type Resolver } from './resolve.js';
import type { Targets } from './targets.js';

/** Probes (addresses after DNS, times TCP ports) one /probe request may name. */
export const MAX_PROBES = 256;

export interface AppDeps {
  targets: Targets;
  resolver: Resolver;
  engine: Pick<Engine, 'snapshotFlat' | 'answerSnapshotsTo' | 'snapshotStride' | 'histogramBounds' | 'failure'>;
  metrics: Registry;
  /** `-target-allow`; everything is allowed without it. */
  allow?: TargetAllowList;
  /** Told of every refused request (403, 429): limits being hit are worth a line. */
  log?: Logger;
}

/** What a route answers: plain data, written by the direct path or handed to h3. */
export interface Reply {
  status: number;
  contentType: string;
  body: string | Uint8Array;
  headers?: Record<string, string>;
}

const text = (status: number, body: string, contentType = 'text/plain; charset=utf-8'): Reply => ({ status, contentType, body });

function errorReply(e: unknown): Reply {
  if (e instanceof BadRequestError) return text(400, `${e.message}\n`);
  if (e instanceof ForbiddenError) return text(403, `${e.message}\n`);
  if (e instanceof LimitError) return text(429, `${e.message}\n`);
  if (e instanceof UnavailableError) return text(503, `${e.message}\n`);
  return text(500, `internal error: ${(e as Error).message}\n`);
}

/** h3's own response type, not a Web `Response`: that one sent a string body through a ReadableStream. */
function toH3(r: Reply): HTTPResponse {
  return new HTTPResponse(typeof r.body === 'string' ? r.body : new Uint8Array(r.body), { status: r.status, headers: { 'content-type': r.contentType, ...r.headers } });
}

const INDEX = `<!doctype html>
<html><head><meta charset="utf-8"><title>icmp-exporter</title></head>
<body>
<h1>icmp-exporter</h1>
<p>A Prometheus exporter that keeps pinging its targets in the background (ICMP echo, IPv4 and IPv6)
and measures round trips with kernel timestamps.</p>
<ul>
<li><a href="/probe?target=127.0.0.1">/probe?target=127.0.0.1</a>: starts (or keeps) probing a target and returns its metrics</li>
<li><a href="/metrics">/metrics</a>: metrics of the exporter itself</li>
<li><a href="/-/healthy">/-/healthy</a>: 200 while the exporter serves; <a href="/-/ready">/-/ready</a>: 200 while its probing engine runs, 503 once it has failed</li>
</ul>
</body></html>
`;

/**
 * A `source` must be an address of this host (of its network namespace); its family is the
 * only one the request can probe. Returns the IP version the lookups are narrowed to.
 */
function checkSource(query: ProbeQuery): IpVersion {
  const source = query.options?.source;
  if (source !== undefined && !isLocalAddress(source)) throw new BadRequestError(`source ${source} is not an address of this host`);
  return sourceIpVersion(source, query.ipVersion, `ip_version=${query.ipVersion}`);
}

async function probe(deps: AppDeps, params: URLSearchParams, accept: string | undefined): Promise<Reply> {
  const started = process.hrtime.bigint();
  const parsed = parseProbeQuery(params);
  const query = { ...parsed, ipVersion: checkSource(parsed) };
  const failure = deps.engine.failure();
  if (failure) throw new UnavailableError(`the probing engine failed: ${failure}`);
  // Without tcp_port, one ICMP probe per address; with it, one SYN probe per address and port.
  const ports = query.tcpPorts.length > 0 ? query.tcpPorts : [0];
  // Counted before any lookup: a name has at least one address.
  if (query.targets.length * ports.length > MAX_PROBES) {
    const what = query.tcpPorts.length > 0 ? `${query.targets.length} targets × ${ports.length} ports` : `${query.targets.length} targets`;
    throw new BadRequestError(`too many targets: ${what}, at most ${MAX_PROBES} probes per request`);
  }
  // Everything that can refuse the request without a lookup, before any: names that are no
  // hostnames or that the globs refuse, literals outside the ranges, literals alone past
  // -max-targets.
  const allow = deps.allow;
  const literals: ResolvedAddress[] = [];
  for (const target of query.targets) {
    const literal = literalTarget(target);
    if (literal) {
      const source = query.options?.source;
      if (source !== undefined && isIPv4(source) !== (literal.family === 4)) {
        throw new BadRequestError(`source ${source} is IPv${isIPv4(source) ? 4 : 6}, target ${target} is not`);
      }
      // No lookup for a literal: this refuses one of the other family than ip_version.
      await deps.resolver.resolve(target, query.ipVersion);
      const why = allow?.refuseAddress(literal.address, literal.family, target);
      if (why) throw new ForbiddenError(why);
      literals.push(literal);
    } else {
      checkHostname(target);
      const why = allow?.refuseName(target);
      if (why) throw new ForbiddenError(why);
    }
  }
  deps.targets.checkLimit(literals.flatMap(({ address }) => ports.map((port) => ({ address, port, options: query.options }))));
  const resolved: ResolvedAddress[][] = await Promise.all(query.targets.map((t) => deps.resolver.resolve(t, query.ipVersion)));
  if (allow) {
    query.targets.forEach((target, i) => {
      if (literalTarget(target)) return;
      for (const { address, family } of resolved[i] ?? []) {
        const why = allow.refuseAddress(address, family, target);
        if (why) throw new ForbiddenError(why);
      }
    });
  }
  const addresses = [...new Set(resolved.flat().map((a) => a.address))];
  checkSourceScope(query.options?.source, addresses);
  const options = query.options;
  const wanted = addresses.flatMap((address) => ports.map((port) => ({ address, port, options })));
  if (wanted.length > MAX_PROBES) {
    const what = query.tcpPorts.length > 0 ? `${addresses.length} addresses × ${ports.length} ports` : `${addresses.length} addresses`;
    throw new BadRequestError(`too many targets: ${what}, at most ${MAX_PROBES} probes per request`);
  }
  const targets = deps.targets.acquire(wanted);
  let snapshot;
  try {
    snapshot = await snapshotFlat(deps.engine, targets.map((t) => t.id));
  } catch (e) {
    throw new UnavailableError(`the probing engine did not answer: ${(e as Error).message}`);
  }
  const results = targets.map((t, i) => {
    const s = statsAt(snapshot, i);
    if (!s) throw new UnavailableError(`the probe of ${t.address} vanished`);
    return { address: t.address, port: t.port, stats: s };
  });
  const protocol = query.tcpPorts.length > 0 ? 'tcp' : 'icmp';
  const { body, contentType } = wantsProtobuf(accept)
    ? renderProbeProtobuf(protocol, results, snapshot.bounds)
    : renderProbe(protocol, results, snapshot.bounds);
  // Time spent in the exporter (resolving, the engine's snapshot, writing), for the bench and curious operators.
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  return {
    status: 200,
    contentType,
    body,
    // The format follows Accept: caches must not hand one scraper's answer to another.
    headers: { 'x-target-count': String(addresses.length), 'server-timing': `probe;dur=${ms.toFixed(3)}`, vary: 'Accept' },
  };
}

/**
 * The answer to GET /probe with these query parameters, in the exposition format `accept`
 * prefers; errors are answers too.
 */
export function probeReply(deps: AppDeps, params: URLSearchParams, accept?: string): Promise<Reply> {
  return probe(deps, params, accept).catch((e: unknown) => {
    if (e instanceof ForbiddenError || e instanceof LimitError) {
      deps.log?.info('probe request refused', { status: e instanceof ForbiddenError ? 403 : 429, reason: e.message });
    }
    return errorReply(e);
  });
}

/** The answer to GET /metrics. */
export function metricsReply(deps: AppDeps): Promise<Reply> {
  return deps.metrics.metrics().then((body) => text(200, body, deps.metrics.contentType), errorReply);
}

export function createApp(deps: AppDeps): H3 {
  const app = new H3();
  app.get('/', () => toH3(text(200, INDEX, 'text/html; charset=utf-8')));
  app.get('/probe', async (event) => toH3(await probeReply(deps, event.url.searchParams, event.req.headers.get('accept') ?? undefined)));
  app.get('/metrics', async () => toH3(await metricsReply(deps)));
  // As Prometheus and its exporters answer them, for load balancers and supervisors.
  app.get('/-/healthy', () => toH3(text(200, 'Healthy.\n')));
  app.get('/-/ready', () => {
    const failure = deps.engine.failure();
    return toH3(failure ? text(503, `Not ready: the probing engine failed: ${failure}\n`) : text(200, 'Ready.\n'));
  });
  app.all('/**', () => toH3(text(404, 'not found: see / for what this exporter serves\n')));
  return app;
}

const ROUTES = new Set(['/', '/probe', '/metrics', '/-/healthy', '/-/ready']);
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']);

/**
 * GET /probe and GET /metrics, the requests Prometheus makes, answered on node:http directly:
 * through h3 (a Web-style request, event, router and response for each) a one-target /probe
 * took several times the CPU of a bare node:http server. Anything else (other paths and
 * methods, HEAD, an absolute-form URL) goes to h3 as before. Undefined when not one of these.
 */
function direct(deps: AppDeps, req: IncomingMessage): { path: string; reply: Promise<Reply> } | undefined {
  if (req.method !== 'GET') return undefined;
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const pathname = q < 0 ? url : url.slice(0, q);
  if (pathname === '/probe') return { path: pathname, reply: probeReply(deps, new URLSearchParams(q < 0 ? '' : url.slice(q + 1)), req.headers.accept) };
  if (pathname === '/metrics') return { path: pathname, reply: metricsReply(deps) };
  return undefined;
}

/**
 * Serves `deps` (the two scraped routes directly, the rest through h3) and records every
 * request in the HTTP metrics. With `gate` (`-web.config.file`): over TLS if it says so (and
 * then only), each request through its rate limit and basic auth first.
 */
export function listen(deps: AppDeps, host: string | undefined, port: number, http: HttpObserver, gate?: WebGate): Promise<Server> {
  const handler = toNodeHandler(createApp(deps));
  const serve = (req: IncomingMessage, res: ServerResponse) => {
    const started = process.hrtime.bigint();
    http.begin();
    const fast = direct(deps, req);
    if (fast) {
      const send = (r: Reply) => {
        const bytes = Buffer.byteLength(r.body);
        res.writeHead(r.status, { 'content-type': r.contentType, ...r.headers, 'content-length': bytes });
        res.end(r.body);
        http.end(fast.path, 'GET', r.status, Number(process.hrtime.bigint() - started) / 1e9, bytes);
      };
      // The replies carry their errors; this is for writing them failing (a bug), which must
      // not become an unhandled rejection that ends the process.
      void fast.reply.then(send).catch((e: unknown) => {
        try {
          if (res.headersSent) res.destroy();
          else send(errorReply(e));
        } catch {
          res.destroy();
        }
      });
      return;
    }
    let bytes = 0;
    const write = res.write.bind(res) as (...args: unknown[]) => boolean;
    const end = res.end.bind(res) as (...args: unknown[]) => typeof res;
    const count = (chunk: unknown) => {
      if (typeof chunk === 'string') bytes += Buffer.byteLength(chunk);
      else if (chunk instanceof Uint8Array) bytes += chunk.byteLength;
    };
    res.write = ((chunk: unknown, ...rest: unknown[]) => {
      count(chunk);
      return write(chunk, ...rest);
    }) as typeof res.write;
    res.end = ((chunk?: unknown, ...rest: unknown[]) => {
      if (typeof chunk !== 'function') count(chunk);
      return end(chunk, ...rest);
    }) as typeof res.end;
    res.once('close', () => {
      const pathname = new URL(req.url ?? '/', 'http://x').pathname;
      const path = res.statusCode === 404 || !ROUTES.has(pathname) ? '' : pathname;
      const method = METHODS.has(req.method ?? '') ? (req.method as string) : 'unknown';
      http.end(path, method, res.statusCode, Number(process.hrtime.bigint() - started) / 1e9, bytes);
    });
    void handler(req, res);
  };
  // A request the gate answers (401, 429) is counted in the HTTP metrics too: password
  // guessing shows there.
  const refused = (req: IncomingMessage, res: ServerResponse, started: bigint) => {
    const pathname = (req.url ?? '/').split('?')[0] ?? '/';
    const method = METHODS.has(req.method ?? '') ? (req.method as string) : 'unknown';
    http.begin();
    http.end(ROUTES.has(pathname) ? pathname : '', method, res.statusCode, Number(process.hrtime.bigint() - started) / 1e9, Number(res.getHeader('content-length') ?? 0));
  };
  const admitted = gate
    ? (req: IncomingMessage, res: ServerResponse) => {
        const started = process.hrtime.bigint();
        const verdict = gate.admit(req, res);
        if (verdict === true) serve(req, res);
        else if (verdict === false) refused(req, res, started);
        else void verdict.then((ok) => (ok ? serve(req, res) : refused(req, res, started)));
      }
    : serve;
  const tls = gate?.tls;
  const server = tls ? createTlsServer(tlsOptions(tls), admitted) : createServer(admitted);
  if (tls && gate) {
    server.on('secureConnection', (socket: import('node:tls').TLSSocket) => {
      const settings = gate.tls;
      const why = settings ? clientCertRefusal(socket, settings) : undefined;
      if (why) {
        deps.log?.info('TLS connection refused', { remote: socket.remoteAddress, reason: why });
        socket.destroy();
      }
    });
  }
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 70_000;
  server.requestTimeout = 60_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
