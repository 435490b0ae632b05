/** What this build is: `--version` and `icmp_exporter_build_info`, from the package, git and the engine. */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import test from 'ava';
import { CLI, Lab } from './helpers/lab.js';
import { parseSamples, value } from './helpers/prom.js';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
const cargo = readFileSync(new URL('../Cargo.toml', import.meta.url), 'utf8');
const engineVersion = `netprobe ${/^\[workspace\.package\][^[]*?^version = "([^"]+)"/ms.exec(cargo)?.[1] ?? '?'}`;
/** The commit this checkout is at: the build that the tests run was made from it. */
const head = execFileSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8' }).trim();

for (const args of [['--version'], ['-version'], ['-listen', ':0', '--version']]) {
  test(`${args.join(' ')}: prints the version, revision, Node and engine, and starts nothing`, (t) => {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000 });
    t.is(r.status, 0, r.stderr);
    const lines = r.stdout.split('\n');
    t.regex(lines[0] ?? '', new RegExp(`^icmp-exporter, version ${pkg.version} \\(revision: ${head}(-dirty)?\\)$`));
    t.true(lines.includes(`  node version:     ${process.version}`), r.stdout);
    t.true(lines.includes(`  engine:           ${engineVersion}`), r.stdout);
    t.notRegex(r.stdout, /listening/);
  });
}

test('icmp_exporter_build_info: 1, labelled with the same version, revision, Node and engine', async (t) => {
  const lab = Lab.create(t);
  const exporter = await lab.startExporter();
  const samples = parseSamples((await exporter.get('/metrics')).body).filter((s) => s.name === 'icmp_exporter_build_info');
  t.is(samples.length, 1);
  const [info] = samples;
  t.is(info?.value, 1);
  t.is(info?.labels.version, pkg.version);
  t.regex(info?.labels.revision ?? '', new RegExp(`^${head}(-dirty)?$`));
  t.is(info?.labels.nodejs, process.version);
  t.is(info?.labels.engine, engineVersion);
  t.is(value(samples, 'icmp_exporter_build_info', { version: pkg.version }), 1);
});
