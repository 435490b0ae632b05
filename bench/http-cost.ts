/**
 * HTTP cost: the server's CPU per request, for the exporter's `/probe` of one target and its
 * `/metrics`, against a bare `node:http` server answering a text body of the same size, all
 * in one run and over the same link. Requests go one after the other on one keep-alive
 * connection; what counts is the server process's CPU (all its threads), not the client's.
 */
import http from 'node:http';
import { Lab, type ExporterProcess } from '../__test__/helpers/lab.js';
import { sleep } from '../__test__/helpers/prom.js';
import { peerAddress } from './deployment.js';
import { readdirSync, readFileSync } from 'node:fs';

const REQUESTS = 5000;
const WARMUP = 500;
/** Each measurement this many times, the lowest kept: other work on a shared machine only adds. */
const ROUNDS = 3;

/**
 * The bare server: answers every request with `BODY_BYTES` bytes of text, and says where it
 * listens. Run with `node -e`; argv: host, body bytes.
 */
const BARE_SERVER = `
const http = require('node:http');
const body = 'x'.repeat(Number(process.argv[2]) - 1) + '\\n';
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(body);
});
server.keepAliveTimeout = 65000;
server.listen({ host: process.argv[1], port: 0 }, () => console.log('bare listening on ' + server.address().port));
`;

/**
 * Sends `n` GETs of `url` one after the other on one keep-alive connection, `gapMs` apart;
 * returns the body of the last.
 */
async function serialGets(url: string, n: number, gapMs = 0): Promise<string> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  let last = '';
  try {
    for (let i = 0; i < n; i++) {
      last = await new Promise<string>((resolve, reject) => {
        http
          .get(url, { agent }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              if (res.statusCode !== 200) reject(new Error(`${url}: HTTP ${res.statusCode}`));
              else resolve(Buffer.concat(chunks).toString());
            });
            res.on('error', reject);
          })
          .on('error', reject);
      });
      if (gapMs > 0) await sleep(gapMs);
    }
  } finally {
    agent.destroy();
  }
  return last;
}

/**
 * CPU seconds a process has run, summed over its threads from the scheduler's nanosecond
 * count (schedstat): /proc's utime and stime come in 10 ms ticks, a tenth of what a bare
 * server spends on 5,000 requests.
 */
function runSeconds(pid: number): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return ns / 1e9;
}

/** Microseconds of the server's CPU per request over `REQUESTS` serial requests, after a warm-up. */
async function cpuPerRequest(pid: number, url: string): Promise<number> {
  await serialGets(url, WARMUP);
  const before = runSeconds(pid);
  await serialGets(url, REQUESTS);
  return ((runSeconds(pid) - before) / REQUESTS) * 1e6;
}

/**
 * Microseconds of CPU per request of two servers, each getting requests ~2 x `PACED_GAP_MS`
 * apart, as a deployment's scrapes come: each one finds the server's threads asleep and its
 * caches cold, and what the server does meanwhile on its own (timers, the event-loop monitor)
 * is counted in. Alternated, so that both meet the same machine; this varies from run to run
 * far more than the serial figure does.
 */
const PACED_REQUESTS = 500;
const PACED_GAP_MS = 10;
async function pacedCpuPerRequest(a: [number, string], b: [number, string]): Promise<[number, number]> {
  const before = [runSeconds(a[0]), runSeconds(b[0])];
  for (let i = 0; i < PACED_REQUESTS; i++) {
    await serialGets(a[1], 1, PACED_GAP_MS);
    await serialGets(b[1], 1, PACED_GAP_MS);
  }
  return [((runSeconds(a[0]) - (before[0] as number)) / PACED_REQUESTS) * 1e6, ((runSeconds(b[0]) - (before[1] as number)) / PACED_REQUESTS) * 1e6];
}

async function startBare(lab: Lab, bodyBytes: number): Promise<{ pid: number; url: string }> {
  const child = lab.spawn(lab.prober, process.execPath, ['-e', BARE_SERVER, lab.httpAddress, String(bodyBytes)]);
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('the bare server did not start')), 10_000);
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /bare listening on (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the bare server exited with ${code}`));
    });
  });
  return { pid: child.pid ?? 0, url: `http://${lab.httpAddress}:${port}/` };
}

export async function httpCost(teardown: (f: () => void) => void): Promise<Array<Record<string, string | number>>> {
  const lab = Lab.create({ teardown });
  const exporter: ExporterProcess = await lab.startExporter(['-i-wont-be-evil', '-interval', '1000']);
  const exporterPid = exporter.child.pid ?? 0;
  const probeUrl = `${exporter.url}/probe?target=${peerAddress(1)}`;
  const metricsUrl = `${exporter.url}/metrics`;
  // The bare server answers as many bytes as one /probe does once its window gauges are there.
  let probeBody = await serialGets(probeUrl, 1);
  for (let i = 0; i < 100 && !probeBody.includes('icmp_probe_latency_seconds{'); i++) {
    await sleep(100);
    probeBody = await serialGets(probeUrl, 1);
  }
  const probeBytes = Buffer.byteLength(probeBody);
  const bare = await startBare(lab, probeBytes);
  const metricsBytes = Buffer.byteLength(await serialGets(metricsUrl, 1));
  const best: Record<string, number> = { bare: Infinity, probe: Infinity, metrics: Infinity };
  const urls: Record<string, [number, string]> = { bare: [bare.pid, bare.url], probe: [exporterPid, probeUrl], metrics: [exporterPid, metricsUrl] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const [what, [pid, url]] of Object.entries(urls)) best[what] = Math.min(best[what] as number, await cpuPerRequest(pid, url));
  }
  const [pacedBare, pacedProbe] = await pacedCpuPerRequest(urls['bare'] as [number, string], urls['probe'] as [number, string]);
  const paced: Record<string, number> = { bare: pacedBare, probe: pacedProbe, metrics: NaN };
  const row = (what: string, key: string, bytes: number, goal: number | '') => ({
    server: what,
    body_bytes: bytes,
    cpu_us_per_request: Math.round(best[key] as number),
    x_bare: Number(((best[key] as number) / (best['bare'] as number)).toFixed(2)),
    goal_x_bare: goal,
    paced_cpu_us_per_request: Number.isNaN(paced[key]) ? '' : Math.round(paced[key] as number),
    paced_x_bare: Number.isNaN(paced[key]) ? '' : Number(((paced[key] as number) / (paced['bare'] as number)).toFixed(2)),
  });
  return [
    row('bare node:http', 'bare', probeBytes, ''),
    row('/probe (1 target)', 'probe', probeBytes, 2),
    row('/metrics', 'metrics', metricsBytes, 4),
  ];
}
