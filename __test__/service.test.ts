/** The systemd unit: what `icmp-exporter service` writes passes systemd-analyze and runs without root. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { CLI, SYSTEM_ENV } from './helpers/lab.js';

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
    'AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN',
    'CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN',
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
