/**
 * The engine as built loads on the oldest glibc the README promises: the highest glibc
 * symbol version it needs (objdump) is at most that distribution's.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import test from 'ava';
import { SYSTEM_ENV } from './helpers/lab.js';

/** The README's promise: "glibc 2.17 and later (RHEL 7, …)". */
const OLDEST = '2.17';
const ENGINE = new URL('../icmp-exporter.linux-x64-gnu.node', import.meta.url).pathname;

const version = (v: string) => v.split('.').map(Number) as [number, number];
const atMost = (a: string, b: string) => {
  const [a1, a2] = version(a);
  const [b1, b2] = version(b);
  return a1 < b1 || (a1 === b1 && a2 <= b2);
};

test(`the built engine needs at most glibc ${OLDEST}, as the README says`, (t) => {
  const symbols = execFileSync('objdump', ['-T', ENGINE], { encoding: 'utf8', env: SYSTEM_ENV });
  const needed = [...new Set([...symbols.matchAll(/\bGLIBC_(\d+\.\d+)/g)].map((m) => m[1] ?? '0.0'))].sort((a, b) => (atMost(a, b) ? -1 : 1));
  const highest = needed.at(-1) ?? '0.0';
  t.log(`highest glibc symbol version: ${highest}`);
  t.true(needed.length > 0, 'objdump listed glibc symbols');
  t.true(atMost(highest, OLDEST), `needs GLIBC_${highest}: ${symbols.split('\n').filter((l) => l.includes(`GLIBC_${highest}`)).join('\n')}`);
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  t.regex(readme, new RegExp(`glibc ${OLDEST.replace('.', '\\.')} and later`));
});
