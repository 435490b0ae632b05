#!/usr/bin/env node
/** The `icmp-exporter` command. */
import { setFlagsFromString } from 'node:v8';
import { defineCommand, runMain } from 'citty';
import { FlagError } from './errors.js';
import { startExporter } from './exporter.js';
import { FLAGS, normalizeArgv, parseFlags } from './flags.js';
import { dropPrivileges } from './privileges.js';
import { installUnit, unitFile, UNIT_NAME } from './service.js';

// The command is a long-running daemon whose JavaScript is not its hot path: V8 sizes its heap
// for memory rather than speed. Without this, adding 100,000 targets left ~300 bytes a target of
// heap V8 had grown and kept (bench: scale, RSS per target). Only the command sets it; a
// program importing the library keeps its own V8 settings.
setFlagsFromString('--optimize-for-size');

/** Exporter flags given after `--`, for the unit's ExecStart. */
function flagsAfterDashes(rawArgs: readonly string[]): string[] | undefined {
  const i = rawArgs.indexOf('--');
  return i < 0 ? undefined : rawArgs.slice(i + 1);
}

function fail(e: unknown): never {
  process.stderr.write(`icmp-exporter: ${(e as Error).message}\n`);
  process.exit(e instanceof FlagError ? 2 : 1);
}

const service = defineCommand({
  meta: { name: 'service', description: 'The systemd unit: print it, or install it (as root)' },
  subCommands: {
    print: defineCommand({
      meta: { name: 'print', description: `Print ${UNIT_NAME} for this install; exporter flags may follow --` },
      run({ rawArgs }) {
        try {
          process.stdout.write(unitFile(flagsAfterDashes(rawArgs)));
        } catch (e) {
          fail(e);
        }
      },
    }),
    install: defineCommand({
      meta: { name: 'install', description: `Write ${UNIT_NAME} for this install; exporter flags may follow --` },
      args: {
        'unit-dir': { type: 'string', default: '/etc/systemd/system', description: 'Where to write the unit' },
      },
      run({ args, rawArgs }) {
        try {
          const path = installUnit(args['unit-dir'], flagsAfterDashes(rawArgs));
          process.stdout.write(`wrote ${path}\nthen: systemctl daemon-reload && systemctl enable --now ${UNIT_NAME}\n`);
        } catch (e) {
          fail(e);
        }
      },
    }),
  },
});

const command = defineCommand({
  meta: {
    name: 'icmp-exporter',
    description: 'Prometheus exporter that pings targets in the background with kernel timestamps',
  },
  args: FLAGS,
  async run({ rawArgs }) {
    let options;
    let exporter;
    try {
      options = parseFlags(rawArgs);
      exporter = await startExporter(options);
      if (options.drop) {
        // Everything that needs a capability is opened first: raw TCP sockets too.
        try {
          exporter.prober.engine.prepareTcp();
        } catch (e) {
          process.stderr.write(`icmp-exporter: warning: ${(e as Error).message}\n`);
        }
        const report = dropPrivileges();
        process.stderr.write(
          report.dropped
            ? `icmp-exporter: -drop: now uid ${report.uid}, gid ${report.gid}; none of the ${report.threads} threads holds a capability\n`
            : `icmp-exporter: -drop NOT done: ${report.reason}\n`,
        );
      }
    } catch (e) {
      fail(e);
    }
    for (const warning of exporter.warnings) process.stderr.write(`icmp-exporter: warning: ${warning}\n`);
    if (exporter.icmpMode === 'datagram') {
      process.stderr.write(
        'icmp-exporter: no CAP_NET_RAW: ICMP probes use unprivileged datagram sockets (kernel timestamps still); TCP SYN probing is unavailable\n',
      );
    }
    process.stdout.write(
      `icmp-exporter listening on ${exporter.url} (interval ${options.intervalMs} ms, timeout ${options.timeoutMs} ms, ` +
        `maxpps ${options.maxPps}, identifier ${exporter.identifier}, ICMP sockets ${exporter.icmpMode}, ` +
        `transmit stamps matched by ${exporter.stampMatching === 'opt_id' ? 'SCM_TS_OPT_ID' : 'packet copy'})\n`,
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

const argv = process.argv.slice(2);
// `service` is dispatched by hand: citty would take the value of `-listen :9116` for a command name.
if (argv[0] === 'service') {
  void runMain(service, { rawArgs: argv.slice(1) });
} else {
  void runMain(command, { rawArgs: normalizeArgv(argv) });
}
