#!/usr/bin/env node
/** The `icmp-exporter` command. */
import { setFlagsFromString } from 'node:v8';
import { defineCommand, runMain } from 'citty';
import { buildInfo, versionText } from './build-info.js';
import { FlagError } from './errors.js';
import { startExporter, type Exporter } from './exporter.js';
import { FLAGS, normalizeArgv, parseFlags } from './flags.js';
import { dropPrivileges } from './privileges.js';
import { createLogger } from './log.js';
import { notrackRuleset } from './notrack.js';
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

const notrack = defineCommand({
  meta: { name: 'notrack', description: 'Print the nftables rules that keep probes out of connection tracking, for this host' },
  async run() {
    try {
      const { tcpProbePorts } = await import('./native.js');
      const [first = 0, last = 0] = tcpProbePorts();
      process.stdout.write(notrackRuleset(first, last));
    } catch (e) {
      fail(e);
    }
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
    try {
      options = parseFlags(rawArgs);
    } catch (e) {
      fail(e);
    }
    const log = createLogger({ level: options.logLevel, format: options.logFormat });
    // Signals are taken from the start: one that comes while the exporter starts (after its
    // engine may have changed NIC settings) stops it once it has started, not the default
    // way, which would leave them changed.
    let exporter: Exporter | undefined;
    let closing = false;
    let pending: NodeJS.Signals | undefined;
    /** Stops serving (requests being answered finish), stops the engine (NIC settings restored), exits. */
    const stop = (running: Exporter, status: number) => {
      closing = true;
      const deadline = setTimeout(() => {
        log.error(`not stopped within ${SHUTDOWN_DEADLINE_MS / 1000} s; exiting anyway`);
        process.exit(status === 0 ? 1 : status);
      }, SHUTDOWN_DEADLINE_MS);
      deadline.unref();
      running.close().then(
        () => {
          log.info('Stopped');
          process.exit(status);
        },
        (e: unknown) => {
          log.error(`stopping failed: ${(e as Error).message}`);
          process.exit(1);
        },
      );
    };
    const onSignal = (signal: NodeJS.Signals) => {
      if (closing || pending) {
        log.warn(`${signal} again: exiting at once`);
        process.exit(1);
      }
      log.info('Shutting down', { signal });
      if (exporter) stop(exporter, 0);
      else pending = signal;
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const info = await buildInfo();
    log.info('Starting icmp-exporter', { version: info.version, revision: info.revision, nodejs: info.nodejs, engine: info.engine });
    try {
      exporter = await startExporter({ ...options, log });
      if (options.drop) {
        // Everything that needs a capability is opened first: raw TCP sockets too.
        try {
          exporter.prober.engine.prepareTcp();
        } catch (e) {
          log.warn((e as Error).message);
        }
        const report = dropPrivileges();
        if (report.dropped) {
          log.info(`-drop: now uid ${report.uid}, gid ${report.gid}; none of the ${report.threads} threads holds a capability`);
        } else {
          log.warn(`-drop NOT done: ${report.reason}`);
        }
      }
    } catch (e) {
      log.error((e as Error).message);
      process.exit(e instanceof FlagError ? 2 : 1);
    }
    const running = exporter;
    for (const warning of running.warnings) log.warn(warning);
    if (running.icmpMode === 'datagram') {
      log.warn('no CAP_NET_RAW: ICMP probes use unprivileged datagram sockets (kernel timestamps still); TCP SYN probing is unavailable');
    }
    log.info('Listening', {
      url: running.url,
      interval_ms: options.intervalMs,
      timeout_ms: options.timeoutMs,
      maxpps: options.maxPps,
      identifier: running.identifier,
      icmp_sockets: running.icmpMode,
      stamp_matching: running.stampMatching,
    });
    if (pending) {
      stop(running, 0);
      return;
    }
    // A failed engine (a bug) would leave a process answering 503 for ever: exit non-zero
    // instead, so that systemd (Restart=on-failure) or the container runtime starts it again.
    running.onEngineFailure((reason) => {
      if (closing) return;
      log.error(`the probing engine failed: ${reason}; exiting`);
      stop(running, ENGINE_FAILED);
    });
  },
});

/** How long a shutdown may take before the process exits regardless (a hung engine thread). */
const SHUTDOWN_DEADLINE_MS = 10_000;

/** Exit status when the engine thread failed (2 is kept for bad flags, which a restart cannot mend). */
const ENGINE_FAILED = 3;

const argv = process.argv.slice(2);
const normalized = normalizeArgv(argv);
// `service` is dispatched by hand: citty would take the value of `-listen :9116` for a command name.
if (argv[0] === 'service') {
  void runMain(service, { rawArgs: argv.slice(1) });
} else if (argv[0] === 'notrack') {
  void runMain(notrack, { rawArgs: argv.slice(1) });
} else if (normalized.includes('--version')) {
  // Like Go's kingpin: anywhere on the line, and nothing else is started.
  void buildInfo().then((info) => process.stdout.write(versionText(info)));
} else {
  void runMain(command, { rawArgs: normalized });
}
