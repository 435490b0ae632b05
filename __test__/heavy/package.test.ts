/**
 * The user's path without a compiler: pack the x86_64 glibc platform package and the main
 * package as `npm publish` would ship them, install both into a fresh directory with no Rust
 * toolchain and no C compiler on PATH, then run the command and a real probe in the lab from
 * that install, and import the package from ESM and CommonJS. Copying, packing and installing
 * keep the machine busy for seconds: it runs in the heavy profile (ava.heavy.config.js).
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { ExporterProcess, Lab, SYSTEM_ENV } from '../helpers/lab.js';
import { waitForProbes } from '../helpers/probing.js';
import { value } from '../helpers/prom.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PLATFORM = 'linux-x64-gnu';

interface Manifest {
  name: string;
  version: string;
  optionalDependencies?: Record<string, string>;
  napi: { targets: string[] };
}

/** Packs both packages into `dir` the way a release does; returns the tarball paths. */
function pack(dir: string): { platform: string; main: string } {
  const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Manifest;
  // The platform package: its manifest plus the built addon (napi artifacts does this).
  const platformDir = join(dir, 'platform');
  cpSync(join(ROOT, 'npm', PLATFORM), platformDir, { recursive: true });
  copyFileSync(join(ROOT, `icmp-exporter.${PLATFORM}.node`), join(platformDir, `icmp-exporter.${PLATFORM}.node`));
  // The main package lists every platform package as optional (napi pre-publish does this).
  const mainDir = join(dir, 'main');
  cpSync(ROOT, mainDir, {
    recursive: true,
    filter: (src) => !/\/(node_modules|target|\.git|npm)(\/|$)/.test(src.slice(ROOT.length - 1)) && !src.endsWith('.node'),
  });
  const abis = ['linux-x64-gnu', 'linux-x64-musl', 'linux-arm64-gnu', 'linux-arm64-musl'];
  manifest.optionalDependencies = Object.fromEntries(abis.map((abi) => [`${manifest.name}-${abi}`, manifest.version]));
  const staged = { ...JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')), optionalDependencies: manifest.optionalDependencies };
  writeFileSync(join(mainDir, 'package.json'), JSON.stringify(staged, null, 2));
  const npmPack = (cwd: string) => join(cwd, execFileSync('npm', ['pack', '--silent'], { cwd, encoding: 'utf8' }).trim().split('\n').pop() ?? '');
  return { platform: npmPack(platformDir), main: npmPack(mainDir) };
}

/** A PATH with node, npm and a shell only: no cargo, rustc, cc or gcc. */
function bareBin(dir: string): string {
  const bin = join(dir, 'bin');
  execFileSync('mkdir', ['-p', bin]);
  // npm's own entry point, behind whatever link put `npm` on the system PATH.
  const npmCli = realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { env: SYSTEM_ENV, encoding: 'utf8' }).trim());
  symlinkSync(process.execPath, join(bin, 'node'));
  writeFileSync(join(bin, 'npm'), `#!/bin/sh\nexec "${process.execPath}" "${npmCli}" "$@"\n`, { mode: 0o755 });
  writeFileSync(join(bin, 'npx'), `#!/bin/sh\nexec "${process.execPath}" "${dirname(npmCli)}/npx-cli.js" "$@"\n`, { mode: 0o755 });
  for (const tool of ['sh', 'bash', 'env']) symlinkSync(`/bin/${tool}`, join(bin, tool));
  return bin;
}

test.serial('npx icmp-exporter from the packed packages, with no compiler on PATH: help, a real probe, ESM and CommonJS', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'icmp-exporter-pack-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const tarballs = pack(dir);
  const app = join(dir, 'app');
  execFileSync('mkdir', ['-p', app]);
  writeFileSync(join(app, 'package.json'), '{"name":"app","version":"1.0.0","private":true}');
  // This machine's environment (registry, proxy and CA settings included) with a bare PATH;
  // npm's CA file is read from the system's npm config, which a global --prefix would not see.
  const cafile = execFileSync('npm', ['config', 'get', 'cafile'], { env: SYSTEM_ENV, encoding: 'utf8' }).trim();
  // Not the npm_* variables `npm test` sets: npm_config_local_prefix would install into this repo.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
  const env: NodeJS.ProcessEnv = {
    ...inherited,
    PATH: bareBin(dir),
    npm_config_cache: join(dir, 'npm-cache'),
    npm_config_update_notifier: 'false',
    ...(cafile && cafile !== 'null' && cafile !== 'undefined' ? { npm_config_cafile: cafile } : {}),
  };
  for (const tool of ['cargo', 'rustc', 'cc', 'gcc']) {
    t.throws(() => execFileSync('sh', ['-c', `command -v ${tool}`], { env }), undefined, `${tool} is not on the bare PATH`);
  }
  execFileSync('npm', ['install', '--no-audit', '--no-fund', tarballs.platform, tarballs.main], { cwd: app, env, stdio: 'pipe', timeout: 120_000 });
  t.true(existsSync(join(app, 'node_modules', `icmp-exporter-${PLATFORM}`, `icmp-exporter.${PLATFORM}.node`)));
  t.false(existsSync(join(app, 'node_modules', 'icmp-exporter', `icmp-exporter.${PLATFORM}.node`)), 'the addon comes from the platform package');

  const help = execFileSync('npx', ['icmp-exporter', '--help'], { cwd: app, env, encoding: 'utf8' });
  t.regex(help, /--listen/);

  const esm = execFileSync('node', ['--input-type=module', '-e', "import { Prober, startExporter } from 'icmp-exporter'; console.log(typeof Prober.start, typeof startExporter)"], { cwd: app, env, encoding: 'utf8' });
  t.is(esm.trim(), 'function function');
  const cjs = execFileSync('node', ['--no-warnings', '-e', "const { Prober, startExporter } = require('icmp-exporter'); console.log(typeof Prober.start, typeof startExporter)"], { cwd: app, env, encoding: 'utf8' });
  t.is(cjs.trim(), 'function function');

  // A global install gives the command, and its unit runs this very install.
  const prefix = join(dir, 'global');
  execFileSync('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', tarballs.platform, tarballs.main], { env, stdio: 'pipe', timeout: 120_000 });
  const unit = execFileSync(join(prefix, 'bin', 'icmp-exporter'), ['service', 'print'], { env, encoding: 'utf8' });
  t.regex(unit, new RegExp(`^ExecStart=\\S+ ${prefix}/lib/node_modules/icmp-exporter/dist/cli\\.js -listen 127\\.0\\.0\\.1:9116$`, 'm'));
  t.true(existsSync(join(prefix, 'lib', 'node_modules', 'icmp-exporter', 'icmp-exporter.service')), 'the unit template ships');

  // A real probe from that install, in the lab.
  const lab = Lab.create(t);
  const child = lab.spawn(lab.prober, 'env', ['-C', app, `PATH=${env.PATH}`, 'npx', 'icmp-exporter', '-listen', `${lab.httpAddress}:0`, '-i-wont-be-evil', '-interval', '20']);
  const exporter = await ExporterProcess.started(child);
  await exporter.get('/probe?target=198.18.128.99');
  const s = await waitForProbes(exporter, 'target=198.18.128.99', 6);
  const sent = value(s, 'icmp_probe_packets_sent_total', { ip: '198.18.128.99' }) ?? 0;
  t.true(sent > 5, `${sent}`);
  t.is(value(s, 'icmp_probe_packets_recv_total', { ip: '198.18.128.99' }), sent);
});
