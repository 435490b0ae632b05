/** The log's line formats (pure): logfmt and JSON read back to what was logged, levels filter. */
import test from 'ava';
import { createLogger, formatLine, LOG_LEVELS } from '../src/log.js';
import { parseLogfmt } from './helpers/log.js';

const time = new Date('2026-12-02T07:40:00.120Z');

/** Random strings over an alphabet with every character logfmt must quote or escape. */
function* strings(seed: number): Generator<string> {
  const alphabet = ['a', 'Z', '0', '.', '-', '_', ' ', '=', '"', '\\', '\n', '\t', '\u0000', '\u007f', 'é', '→', '\u00a0', '/', ':'];
  let x = seed;
  for (;;) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const n = x % 12;
    let s = '';
    for (let i = 0; i < n; i++) {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      s += alphabet[x % alphabet.length];
    }
    yield s;
  }
}

test('logfmt: any message and values read back exactly, one line each', (t) => {
  const random = strings(42);
  for (let i = 0; i < 2000; i++) {
    const msg = random.next().value;
    const value = random.next().value;
    const line = formatLine('logfmt', time, 'warn', msg, { reason: value, status: 429, skipped: undefined });
    t.true(line.endsWith('\n'));
    t.false(line.slice(0, -1).includes('\n'), JSON.stringify(line));
    t.deepEqual(parseLogfmt(line.slice(0, -1)), { time: time.toISOString(), level: 'warn', msg, reason: value, status: '429' });
  }
});

test('logfmt: bare where it can be', (t) => {
  t.is(
    formatLine('logfmt', time, 'info', 'Listening', { url: 'http://0.0.0.0:9116', engine: 'netprobe 0.1.0', empty: '' }),
    'time=2026-12-02T07:40:00.120Z level=info msg=Listening url=http://0.0.0.0:9116 engine="netprobe 0.1.0" empty=""\n',
  );
});

test('json: one object a line with the same fields; numbers stay numbers', (t) => {
  const line = formatLine('json', time, 'error', 'the probing engine failed: "x"\nnext', { status: 3, ok: false, none: undefined });
  t.is(line.split('\n').length, 2);
  t.deepEqual(JSON.parse(line), { time: time.toISOString(), level: 'error', msg: 'the probing engine failed: "x"\nnext', status: 3, ok: false });
});

test('each level lets through itself and what is more severe', (t) => {
  for (const level of LOG_LEVELS) {
    const lines: string[] = [];
    const log = createLogger({ level, format: 'logfmt', write: (l) => lines.push(l), now: () => time });
    for (const at of LOG_LEVELS) log[at](at);
    t.deepEqual(
      lines.map((l) => parseLogfmt(l).msg),
      LOG_LEVELS.slice(LOG_LEVELS.indexOf(level)),
    );
  }
});
