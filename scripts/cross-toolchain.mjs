#!/usr/bin/env node
// Prints the directory of the C toolchain the engine is linked with for a Linux glibc
// target, fetching it the first time: napi-rs's crosstool-NG toolchain (GCC 4.8.5 with a
// glibc 2.17 sysroot), at a pinned version checked against its sha512, so the engine runs on
// glibc 2.17 and later whatever glibc the build machine has, and two builds are byte for
// byte the same. `--use-napi-cross` would do this, but the @napi-rs/cli pinned here asks for
// toolchain versions the registry does not have for x86_64 (1.0.5; it has 1.0.0).
// Usage: node scripts/cross-toolchain.mjs <rust target triple>
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** For an x86_64 build host. */
const TOOLCHAINS = {
  'x86_64-unknown-linux-gnu': {
    pkg: '@napi-rs/cross-toolchain-x64-target-x86_64',
    version: '1.0.0',
    integrity: 'sha512-lecoghCfoTAX9MLFcIx9/nL9M8xdkZ9n8Pki8qjKUNzjiq1zbECdEbzIZAMMHRtrXxifK9dAyYuh8gSxNbr2og==',
  },
  'aarch64-unknown-linux-gnu': {
    pkg: '@napi-rs/cross-toolchain-x64-target-aarch64',
    version: '1.0.3',
    integrity: 'sha512-EMFcy/ahFsmCY3BI1tMC3wRUYZ+cDuILg7nP1micaKXW1tO1+RvUB1CC6QYe+cv2W4Tuz9wr3qcFExWyjgWf2w==',
  },
};

const target = process.argv[2] ?? '';
const toolchain = TOOLCHAINS[target];
if (!toolchain || process.arch !== 'x64' || process.platform !== 'linux') {
  console.error(`cross-toolchain: no pinned toolchain for ${target || '(no target)'} on ${process.platform}-${process.arch}; have: ${Object.keys(TOOLCHAINS).join(', ')} on linux-x64`);
  process.exit(1);
}
const cache = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'icmp-exporter');
const dir = join(cache, `${target}-${toolchain.version}`);
if (!existsSync(join(dir, 'bin', `${target}-gcc`))) {
  mkdirSync(cache, { recursive: true });
  // Next to its final place, so that the last step is a rename on one filesystem.
  const work = mkdtempSync(join(cache, 'fetching-'));
  try {
    execFileSync('npm', ['pack', '--silent', `${toolchain.pkg}@${toolchain.version}`], { cwd: work, stdio: ['ignore', 'ignore', 'inherit'] });
    const [tgz] = readdirSync(work).filter((f) => f.endsWith('.tgz'));
    if (!tgz) throw new Error('npm pack wrote no tarball');
    const digest = `sha512-${createHash('sha512').update(readFileSync(join(work, tgz))).digest('base64')}`;
    if (digest !== toolchain.integrity) throw new Error(`${toolchain.pkg}@${toolchain.version}: sha512 ${digest}, expected ${toolchain.integrity}`);
    execFileSync('tar', ['xzf', tgz, 'package/'], { cwd: work });
    const unpacked = join(work, 'toolchain');
    mkdirSync(unpacked);
    execFileSync('tar', ['xJf', join(work, 'package', `${target}.tar.xz`), '-C', unpacked]);
    rmSync(dir, { recursive: true, force: true });
    renameSync(unpacked, dir);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
process.stdout.write(`${dir}\n`);
