/**
 * The exporter's log: one line per event on stderr, as Prometheus and its exporters write
 * theirs (`-log.level`, `-log.format`): logfmt (`time=… level=info msg="…" key=value`) or JSON
 * (`{"time":"…","level":"info","msg":"…","key":"value"}`). Formatting is pure.
 */

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['logfmt', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export type LogFields = Record<string, string | number | boolean | undefined>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

/** A logfmt value: bare when it can be, else quoted with `"`, `\` and control characters escaped. */
function logfmtValue(value: string): string {
  const bare = value !== '' && !/[\s"=\\]/.test(value) && ![...value].some((c) => c < ' ' || c === '\u007f');
  return bare ? value : JSON.stringify(value);
}

/** A logfmt key: anything but letters, digits, `_`, `.` and `-` becomes `_`. */
const logfmtKey = (key: string) => key.replace(/[^A-Za-z0-9_.-]/g, '_') || '_';

/** One line (with its newline) in `format`; undefined fields are left out. */
export function formatLine(format: LogFormat, time: Date, level: LogLevel, msg: string, fields: LogFields = {}): string {
  const entries: Array<[string, string | number | boolean]> = [
    ['time', time.toISOString()],
    ['level', level],
    ['msg', msg],
  ];
  for (const [k, v] of Object.entries(fields)) {
    if (v !== undefined && k !== 'time' && k !== 'level' && k !== 'msg') entries.push([k, v]);
  }
  if (format === 'json') {
    const values = entries.map(([k, v]) => [k, typeof v === 'number' && !Number.isFinite(v) ? String(v) : v]);
    return `${JSON.stringify(Object.fromEntries(values))}\n`;
  }
  return `${entries.map(([k, v]) => `${logfmtKey(k)}=${logfmtValue(String(v))}`).join(' ')}\n`;
}

export interface LoggerOptions {
  level: LogLevel;
  format: LogFormat;
  /** Where lines go (stderr by default). */
  write?: (line: string) => void;
  now?: () => Date;
}

export function createLogger(options: LoggerOptions): Logger {
  const write = options.write ?? ((line: string) => void process.stderr.write(line));
  const now = options.now ?? (() => new Date());
  const threshold = LOG_LEVELS.indexOf(options.level);
  const at = (level: LogLevel) => (msg: string, fields?: LogFields) => {
    if (LOG_LEVELS.indexOf(level) >= threshold) write(formatLine(options.format, now(), level, msg, fields));
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
