#!/usr/bin/env node
/** The `icmp-exporter` command. */
import { defineCommand, runMain } from 'citty';
import { FlagError } from './errors.js';
import { startExporter } from './exporter.js';
import { FLAGS, normalizeArgv, parseFlags } from './flags.js';

const command = defineCommand({
  meta: {
    name: 'icmp-exporter',
    description: 'Prometheus exporter that pings targets in the background with kernel timestamps',
  },
  args: FLAGS,
  async run({ rawArgs }) {
    let options;
    try {
      options = parseFlags(rawArgs);
    } catch (e) {
      if (e instanceof FlagError) {
        process.stderr.write(`icmp-exporter: ${e.message}\n`);
        process.exit(2);
      }
      throw e;
    }
    let exporter;
    try {
      exporter = await startExporter(options);
    } catch (e) {
      process.stderr.write(`icmp-exporter: ${(e as Error).message}\n`);
      process.exit(1);
    }
    for (const warning of exporter.warnings) process.stderr.write(`icmp-exporter: warning: ${warning}\n`);
    process.stdout.write(
      `icmp-exporter listening on ${exporter.url} (interval ${options.intervalMs} ms, timeout ${options.timeoutMs} ms, ` +
        `maxpps ${options.maxPps}, identifier ${exporter.identifier})\n`,
    );
    let closing = false;
    const shutdown = (signal: string) => {
      if (closing) return;
      closing = true;
      process.stderr.write(`icmp-exporter: ${signal}, shutting down\n`);
      exporter.close().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.on('SIGINT', () => shutdown('SIGINT'));
    process.on('SIGTERM', () => shutdown('SIGTERM'));
  },
});

void runMain(command, { rawArgs: normalizeArgv(process.argv.slice(2)) });
