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

/** Sends `n` GETs of `url` one after the other on one keep-alive connection; returns the body of the last. */
async function serialGets(url: string, n: number): Promise<string> {
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
  for (let round = 0; round < ROUNDS; round++) {
    best['bare'] = Math.min(best['bare'] as number, await cpuPerRequest(bare.pid, bare.url));
    best['probe'] = Math.min(best['probe'] as number, await cpuPerRequest(exporterPid, probeUrl));
    best['metrics'] = Math.min(best['metrics'] as number, await cpuPerRequest(exporterPid, metricsUrl));
  }
  const bareUs = best['bare'] as number;
  const row = (what: string, bytes: number, us: number, goal: number | '') => ({
    server: what,
    body_bytes: bytes,
    cpu_us_per_request: Math.round(us),
    x_bare: Number((us / bareUs).toFixed(2)),
    goal_x_bare: goal,
  });
  return [
    row('bare node:http', probeBytes, bareUs, ''),
    row('/probe (1 target)', probeBytes, best['probe'] as number, 2),
    row('/metrics', metricsBytes, best['metrics'] as number, 4),
  ];
}
