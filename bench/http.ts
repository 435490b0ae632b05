/** HTTP from the bench: adding targets through /probe, and timing sequential GETs. */

/** Starts (or refreshes) probes of `ips` on the exporter at `base`, 256 per request. */
export async function addTargets(base: string, ips: readonly string[]): Promise<void> {
  for (let i = 0; i < ips.length; i += 256) {
    const res = await fetch(`${base}/probe?${ips.slice(i, i + 256).map((ip) => `target=${ip}`).join('&')}`);
    const body = await res.text();
    if (res.status !== 200) throw new Error(`adding targets: HTTP ${res.status} ${body}`);
  }
}

/**
 * Milliseconds each of up to `n` sequential GETs of `url` took, seen by the client, and the
 * server's own figure where it sends `Server-Timing`. Stops after `budgetMs` (at least 5
 * requests): a slow peer takes seconds a scrape.
 */
export async function timedGets(url: string, n: number, budgetMs = 15_000): Promise<{ client: number[]; server: number[] }> {
  const client: number[] = [];
  const server: number[] = [];
  const until = Date.now() + budgetMs;
  for (let i = 0; i < n && (i < 5 || Date.now() < until); i++) {
    const t0 = process.hrtime.bigint();
    const res = await fetch(url);
    await res.text();
    client.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (res.status !== 200) throw new Error(`${url}: HTTP ${res.status}`);
    const dur = /dur=([\d.]+)/.exec(res.headers.get('server-timing') ?? '');
    if (dur?.[1]) server.push(Number(dur[1]));
  }
  return { client, server };
}
