#!/usr/bin/env node
// Writes dist/build-info.json: the source revision the build came from, for --version and
// icmp_exporter_build_info. ICMP_EXPORTER_REVISION wins (a release job that builds outside
// git); otherwise `git rev-parse HEAD`, with "-dirty" when the work tree has changes;
// "unknown" without either.
import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdirSync } from 'node:fs';

function git(...args) {
  return execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
}

let revision = process.env.ICMP_EXPORTER_REVISION ?? '';
if (revision === '') {
  try {
    revision = git('rev-parse', 'HEAD');
    if (git('status', '--porcelain', '--untracked-files=no') !== '') revision += '-dirty';
  } catch {
    revision = 'unknown';
  }
}
mkdirSync('dist', { recursive: true });
writeFileSync('dist/build-info.json', `${JSON.stringify({ revision })}\n`);
