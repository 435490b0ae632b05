/** HTTP: the h3 routes, and the Node server around them that measures every request. */
import { createServer, type Server } from 'node:http';
import { H3 } from 'h3';
import { toNodeHandler } from 'h3/node';
import type { Registry } from 'prom-client';
import { BadRequestError, UnavailableError } from './errors.js';
import type { HttpObserver } from './metrics.js';
import type { Engine } from './native.js';
import { parseProbeQuery } from './params.js';
import { renderProbe } from './render.js';
import type { ResolvedAddress, Resolver } from './resolve.js';
import type { Targets } from './targets.js';

/** Probes (addresses after DNS, times TCP ports) one /probe request may name. */
export const MAX_PROBES = 256;

export interface AppDeps {
  targets: Targets;
  resolver: Resolver;
  engine: Pick<Engine, 'snapshot' | 'failure'>;
  metrics: Registry;
}

function text(status: number, body: string, contentType = 'text/plain; charset=utf-8'): Response {
  return new Response(body, { status, headers: { 'content-type': contentType } });
}

function errorResponse(e: unknown): Response {
  if (e instanceof BadRequestError) return text(400, `${e.message}\n`);
  if (e instanceof UnavailableError) return text(503, `${e.message}\n`);
  return text(500, `internal error: ${(e as Error).message}\n`);
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
</ul>
</body></html>
`;

async function probe(deps: AppDeps, params: URLSearchParams): Promise<Response> {
  const started = process.hrtime.bigint();
  const query = parseProbeQuery(params);
  const failure = deps.engine.failure();
  if (failure) throw new UnavailableError(`the probing engine failed: ${failure}`);
  const resolved: ResolvedAddress[][] = await Promise.all(query.targets.map((t) => deps.resolver.resolve(t, query.ipVersion)));
  const addresses = [...new Set(resolved.flat().map((a) => a.address))];
  // Without tcp_port, one ICMP probe per address; with it, one SYN probe per address and port.
  const ports = query.tcpPorts.length > 0 ? query.tcpPorts : [0];
  const wanted = addresses.flatMap((address) => ports.map((port) => ({ address, port })));
  if (wanted.length > MAX_PROBES) {
    const what = query.tcpPorts.length > 0 ? `${addresses.length} addresses × ${ports.length} ports` : `${addresses.length} addresses`;
    throw new BadRequestError(`too many targets: ${what}, at most ${MAX_PROBES} probes per request`);
  }
  const targets = deps.targets.acquire(wanted);
  let stats;
  try {
    stats = await deps.engine.snapshot(targets.map((t) => t.id));
  } catch (e) {
    throw new UnavailableError(`the probing engine did not answer: ${(e as Error).message}`);
  }
  const results = targets.map((t, i) => {
    const s = stats[i];
    if (!s) throw new UnavailableError(`the probe of ${t.address} vanished`);
    return { address: t.address, port: t.port, stats: s };
  });
  const { body, contentType } = renderProbe(query.tcpPorts.length > 0 ? 'tcp' : 'icmp', results);
  // Time spent in the exporter (resolving, the engine's snapshot, writing), for the bench and curious operators.
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  return new Response(body, {
    headers: { 'content-type': contentType, 'x-target-count': String(addresses.length), 'server-timing': `probe;dur=${ms.toFixed(3)}` },
  });
}

export function createApp(deps: AppDeps): H3 {
  const app = new H3();
  app.get('/', () => text(200, INDEX, 'text/html; charset=utf-8'));
  app.get('/probe', async (event) => {
    try {
      return await probe(deps, event.url.searchParams);
    } catch (e) {
      return errorResponse(e);
    }
  });
  app.get('/metrics', async () => {
    try {
      return text(200, await deps.metrics.metrics(), deps.metrics.contentType);
    } catch (e) {
      return errorResponse(e);
    }
  });
  app.all('/**', () => text(404, 'not found: see / for what this exporter serves\n'));
  return app;
}

const ROUTES = new Set(['/', '/probe', '/metrics']);
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']);

/** Serves `app` and records every request in the HTTP metrics. */
export function listen(app: H3, host: string | undefined, port: number, http: HttpObserver): Promise<Server> {
  const handler = toNodeHandler(app);
  const server = createServer((req, res) => {
    const started = process.hrtime.bigint();
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
    http.begin();
    res.once('close', () => {
      const pathname = new URL(req.url ?? '/', 'http://x').pathname;
      const path = res.statusCode === 404 || !ROUTES.has(pathname) ? '' : pathname;
      const method = METHODS.has(req.method ?? '') ? (req.method as string) : 'unknown';
      http.end(path, method, res.statusCode, Number(process.hrtime.bigint() - started) / 1e9, bytes);
    });
    void handler(req, res);
  });
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
