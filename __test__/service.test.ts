/** The systemd unit: what `icmp-exporter service` writes passes systemd-analyze and runs without root. */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import test from 'ava';
import { unitFile } from '../src/service.js';
import { CLI, Lab, SYSTEM_ENV } from './helpers/lab.js';
import { waitFor } from './helpers/wait.js';

const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000 });

test('service install writes a unit that passes systemd-analyze verify, without root', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'icmp-exporter-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = cli(['service', 'install', '--unit-dir', dir, '--', '-listen', '127.0.0.1:9200', '-timeout', '1000']);
  t.is(r.status, 0, r.stderr);
  const path = join(dir, 'icmp-exporter.service');
  t.regex(r.stdout, new RegExp(`wrote ${path}`));
  const unit = readFileSync(path, 'utf8');
  t.regex(unit, new RegExp(`^ExecStart=${process.execPath} ${CLI} -listen 127.0.0.1:9200 -timeout 1000$`, 'm'));
  for (const line of [
    'DynamicUser=yes',
    'AmbientCapabilities=CAP_NET_RAW',
    'CapabilityBoundingSet=CAP_NET_RAW',
    'Restart=on-failure',
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'PrivateTmp=yes',
  ]) {
    t.true(unit.split('\n').includes(line), line);
  }
  t.notRegex(unit, /^User=root/m);
  const verify = spawnSync('systemd-analyze', ['verify', path], { encoding: 'utf8', env: SYSTEM_ENV });
  t.is(verify.status, 0, verify.stderr);
  t.is(verify.stderr.trim(), '', 'no warning either');
});

test('service print takes the same flags as the exporter and refuses bad ones', (t) => {
  const ok = cli(['service', 'print']);
  t.is(ok.status, 0);
  t.regex(ok.stdout, /^ExecStart=.* -listen 127\.0\.0\.1:9116$/m, 'loopback by default');
  const bad = cli(['service', 'print', '--', '-interval', '50']);
  t.is(bad.status, 2);
  t.regex(bad.stderr, /-interval must be unlocked/);
});

test('a platform without a prebuilt engine gets an error naming the supported ones', (t) => {
  const preload = 'data:text/javascript,Object.defineProperty(process, "platform", { value: "darwin" });';
  const r = spawnSync(process.execPath, ['--import', preload, '--input-type=module', '-e', `await import(${JSON.stringify(join(CLI, '..', 'index.js'))})`], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  t.not(r.status, 0);
  t.regex(r.stderr, /icmp-exporter runs on linux-x64-gnu, linux-x64-musl, linux-arm64-gnu, linux-arm64-musl; this is darwin-\w+, for which there is no prebuilt engine/);
});

test('the unit grants CAP_NET_ADMIN only with -hard, and scores at most 2.0 in systemd-analyze security', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'icmp-exporter-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const [flags, caps] of [
    [['-listen', '127.0.0.1:9116'], 'CAP_NET_RAW'],
    [['-listen', '127.0.0.1:9116', '-hard'], 'CAP_NET_RAW CAP_NET_ADMIN'],
  ] as const) {
    const path = join(dir, 'icmp-exporter.service');
    writeFileSync(path, unitFile(flags));
    const unit = readFileSync(path, 'utf8');
    t.true(unit.split('\n').includes(`AmbientCapabilities=${caps}`), flags.join(' '));
    t.true(unit.split('\n').includes(`CapabilityBoundingSet=${caps}`));
    t.true(unit.split('\n').includes('RestartPreventExitStatus=2'));
    const security = spawnSync('systemd-analyze', ['security', '--offline=yes', path], { encoding: 'utf8', env: SYSTEM_ENV });
    const score = Number(/Overall exposure level for icmp-exporter\.service: ([\d.]+)/.exec(security.stdout)?.[1]);
    t.true(score <= 2.0, `${flags.join(' ')}: exposure ${score}\n${security.stdout}`);
    const verify = spawnSync('systemd-analyze', ['verify', path], { encoding: 'utf8', env: SYSTEM_ENV });
    t.is(verify.status, 0, verify.stderr);
  }
});

test('Node under a home directory: the unit binds it read-only into an empty /home, where the exporter starts as an unprivileged user', async (t) => {
  const lab = Lab.create(t);
  // A Node installed as nvm does, under a home directory.
  const home = mkdtempSync('/home/icmp-exporter-test-');
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  const node = join(home, '.nvm', 'versions', 'node', process.version, 'bin', 'node');
  mkdirSync(dirname(node), { recursive: true });
  copyFileSync(process.execPath, node);
  chmodSync(node, 0o755);
  for (let d = dirname(node); d !== '/home'; d = dirname(d)) chmodSync(d, 0o755);
  const unit = unitFile(['-listen', `${lab.httpAddress}:9116`], node, CLI);
  const binds = /^BindReadOnlyPaths=(.*)$/m.exec(unit)?.[1]?.split(' ') ?? [];
  t.deepEqual(binds, [join(home, '.nvm', 'versions', 'node', process.version)]);
  t.true(unit.split('\n').includes('ProtectHome=tmpfs'));
  const execStart = (/^ExecStart=(.*)$/m.exec(unit)?.[1] ?? '').split(' ');
  // What systemd does for these lines: the bound directories set aside, empty tmpfs over the
  // homes, the directories bound back read-only; then ExecStart as a user other than root with
  // the unit's one capability.
  const script = [
    'set -e',
    'stage=$(mktemp -d)',
    ...binds.map((p) => `mkdir -p "$stage${p}" && mount --bind "${p}" "$stage${p}"`),
    'for h in /home /root; do mount -t tmpfs -o mode=755 tmpfs "$h"; done',
    ...binds.map((p) => `mkdir -p "${p}" && mount --bind "$stage${p}" "${p}" && mount -o remount,bind,ro "${p}"`),
    `exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=+net_raw --ambient-caps=+net_raw ${execStart.join(' ')}`,
  ].join('\n');
  const child = lab.spawn(lab.prober, 'unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script]);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const status = await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`exited ${child.exitCode}: ${stderr}`);
      return (await fetch(`http://${lab.httpAddress}:9116/-/ready`)).status;
    },
    (s) => s === 200,
    { what: 'the exporter run as the unit would run it', show: (s) => `${s} ${stderr}` },
  );
  t.is(status, 200);
});

test('unit lines: % and $ passed on as they are, no control character, -web.config.file made absolute, a project node_modules bound whole', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'icmp-exporter-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'web.yml'), 'basic_auth_users: {}\n');
  const cwd = process.cwd();
  process.chdir(dir);
  let unit: string;
  try {
    unit = unitFile(['-listen', ':9116', '--web.config.file=web.yml'], '/home/ann/50%$HOME/node/bin/node', '/home/ann/proj/node_modules/icmp-exporter/dist/cli.js');
  } finally {
    process.chdir(cwd);
  }
  const execStart = /^ExecStart=(.*)$/m.exec(unit)?.[1] ?? '';
  t.is(execStart, `/home/ann/50%%$$HOME/node/bin/node /home/ann/proj/node_modules/icmp-exporter/dist/cli.js -listen :9116 --web.config.file=${join(dir, 'web.yml')}`);
  t.is(/^BindReadOnlyPaths=(.*)$/m.exec(unit)?.[1], '/home/ann/50%%$HOME/node /home/ann/proj/node_modules');
  t.throws(() => unitFile(['-listen', ':9116', '-web.config.file', '/etc/x\nExecStartPre=+/bin/sh']), { message: /control character|cannot read/ });
  t.throws(() => unitFile(['-listen', ':9116'], '/usr/bin/node\nExecStartPre=+/bin/sh'), { message: /a control character cannot go into the unit/ });
});
