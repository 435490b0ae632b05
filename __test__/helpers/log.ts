/** Reading the exporter's log (logfmt, its default) in tests. */

/** The fields of one logfmt line: bare values, and quoted ones with their escapes undone. */
export function parseLogfmt(line: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const m of line.matchAll(/([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)/g)) {
    const [, key = '', raw = ''] = m;
    fields[key] = raw.startsWith('"') ? (JSON.parse(raw) as string) : raw;
  }
  return fields;
}

/** The messages of a stderr text, one a line: `msg` of each log line, other lines as they are. */
export function logMessages(text: string): string {
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => parseLogfmt(line).msg ?? line)
    .join('\n');
}
