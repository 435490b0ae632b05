/** A throwaway CA, a server certificate for an IP address, and client certificates (openssl). */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Certs {
  dir: string;
  caCert: string;
  /** Files in `dir`: ca.crt, server.crt, server.key, and per client `<name>.crt`, `<name>.key`. */
  file(name: string): string;
  read(name: string): string;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function issue(dir: string, name: string, subject: string, san: string): void {
  openssl(dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject]);
  writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`]);
}

/**
 * A CA, a server certificate for `serverIp`, and a client certificate per entry of
 * `clients` (name -> SAN, e.g. `DNS:prometheus.lab`); removed at teardown.
 */
export function makeCerts(serverIp: string, clients: Record<string, string>, onTeardown: (f: () => void) => void): Certs {
  const dir = mkdtempSync(join(tmpdir(), 'lab-certs-'));
  onTeardown(() => rmSync(dir, { recursive: true, force: true }));
  openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=lab CA']);
  issue(dir, 'server', '/CN=icmp-exporter', `IP:${serverIp}`);
  for (const [name, san] of Object.entries(clients)) issue(dir, name, `/CN=${name}`, san);
  const file = (name: string) => join(dir, name);
  return { dir, caCert: readFileSync(file('ca.crt'), 'utf8'), file, read: (name) => readFileSync(file(name), 'utf8') };
}
