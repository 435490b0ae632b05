/** The release build of the x86_64 glibc engine is reproducible: two builds from nothing give the same bytes. */
import { spawnSync } from 'node:child_process';
import test from 'ava';

test('scripts/release-build.sh: two clean builds, one sha256', (t) => {
  const r = spawnSync('scripts/release-build.sh', { cwd: new URL('../..', import.meta.url).pathname, encoding: 'utf8', timeout: 600_000 });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /sha256 [0-9a-f]{64} \(two clean builds, identical\)/);
});
