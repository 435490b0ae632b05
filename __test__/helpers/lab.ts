/**
 * The test lab: a prober namespace (where the exporter runs) and a peer namespace joined
 * by a veth pair, using only 198.18.0.0/15 and 2001:2::/48. The peer answers for whole
 * ranges through `local` routes. A second veth joins the host to the prober for HTTP only.
 * Everything is removed in the test's teardown, also when the test fails.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';

export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
export const NETSIM = fileURLToPath(new URL('../../target/release/netsim', import.meta.url));
/** What netsim's TUN device carries: the exporter's probes to these go to simulated hosts. */
export const SIMULATED_V4 = '198.18.192.0/18';
export const SIMULATED_V6 = '2001:2:0:c000::/50';

/** Addresses the peer answers for (AnyIP ranges on its loopback). */
export const ANSWERED_V4 = '198.18.128.0/17';
export const ANSWERED_V6 = '2001:2:0:8000::/49';
/** Addresses routed to the peer that nobody answers (the peer does not forward). */
export const SILENT_V4 = '198.18.64.1';
export const SILENT_V6 = '2001:2:0:4000::1';
export const PEER_V4 = '198.18.0.2';
/** setpriv arguments that make the rest of a command line run as nobody, without capabilities. */
export const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all'];
export const PEER_V6 = '2001:2::2';

/** The environment that makes the exporter tie transmit stamps to probes as on Linux < 6.13. */
export const STAMPS_AS_BEFORE_6_13 = { ICMP_EXPORTER_NO_TS_OPT_ID: '1' };
/** Both ways of matching transmit stamps, for tests that must hold on every kernel. */
export const STAMP_PATHS: ReadonlyArray<[string, Record<string, string>]> = [
  ['SCM_TS_OPT_ID', {}],
  ['packet copy, as before Linux 6.13', STAMPS_AS_BEFORE_6_13],
];

/**
 * System tools only: under npm, node_modules/.bin comes first on PATH and shadows some of
 * them (@vercel/nft installs an `nft`).
 */
/** A DNS server address in the peer's AnyIP range whose queries are dropped: it never answers. */
const SILENT_DNS = '198.18.128.53';

export const SYSTEM_ENV = { ...process.env, PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' };

export function sh(cmd: string, args: readonly string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'], env: SYSTEM_ENV });
}

/**
 * Each lab notes here which process built it. A run killed before its teardowns (ava's
 * timeout, a signal) leaves its namespaces and exporters behind; the next lab removes every
 * lab whose builder is gone.
 */
const BUILDERS = join(tmpdir(), 'icmp-exporter-labs');

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes what a lab left: its processes (all run inside its namespaces), namespaces, links and files. */
function removeLab(suffix: string): void {
  for (const ns of [`ixp-${suffix}`, `ixq-${suffix}`]) {
    try {
      for (const pid of sh('ip', ['netns', 'pids', ns]).split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
      sh('ip', ['netns', 'del', ns]);
    } catch {
      // already gone
    }
  }
  try {
    sh('ip', ['link', 'del', `ixh${suffix}`]);
  } catch {
    // removed with the prober namespace
  }
  rmSync(`/etc/netns/ixp-${suffix}`, { recursive: true, force: true });
  rmSync(join(BUILDERS, suffix), { force: true });
}

function removeOrphanLabs(): void {
  if (!existsSync(BUILDERS)) return;
  for (const suffix of readdirSync(BUILDERS)) {
    let pid: number;
    try {
      pid = Number(readFileSync(join(BUILDERS, suffix), 'utf8'));
    } catch {
      continue; // its lab was just torn down by its own (parallel) test
    }
    // An empty note is one being written this instant.
    if (pid > 0 && !alive(pid)) removeLab(suffix);
  }
}

export class Lab {
  readonly prober: string;
  readonly peer: string;
  /** The veth ends of the prober-peer link. */
  readonly proberLink: string;
  readonly peerLink: string;
  /** Host side of the HTTP link; the exporter listens on `httpAddress`. */
  readonly httpAddress: string;
  private readonly hostAddress: string;
  private readonly suffix: string;
  private readonly processes: ChildProcess[] = [];
  private readonly netnsDirs: string[] = [];

  private constructor() {
    this.suffix = randomBytes(3).toString('hex');
    this.prober = `ixp-${this.suffix}`;
    this.peer = `ixq-${this.suffix}`;
    this.proberLink = `ixa${this.suffix}`;
    this.peerLink = `ixb${this.suffix}`;
    // A random /30 in 198.19.0.0/16 for the HTTP link, so parallel labs do not collide.
    const n = randomInt(0, 16384) * 4;
    this.hostAddress = `198.19.${n >> 8}.${(n & 0xff) + 1}`;
    this.httpAddress = `198.19.${n >> 8}.${(n & 0xff) + 2}`;
  }

  /** `t` is an ava test (or anything with `teardown`, such as the benchmark's registry). */
  static create(t: Pick<ExecutionContext, 'teardown'>): Lab {
    removeOrphanLabs();
    const lab = new Lab();
    t.teardown(() => lab.destroy());
    mkdirSync(BUILDERS, { recursive: true });
    writeFileSync(join(BUILDERS, lab.suffix), String(process.pid));
    lab.build();
    return lab;
  }

  /** Runs a command inside a namespace of the lab. */
  exec(ns: string, cmd: string, args: readonly string[], input?: string): string {
    return sh('ip', ['netns', 'exec', ns, cmd, ...args], input);
  }

  ip(ns: string, ...args: string[]): void {
    sh('ip', ['-n', ns, ...args]);
  }

  private build(): void {
    const s = this.suffix;
    sh('ip', ['netns', 'add', this.prober]);
    sh('ip', ['netns', 'add', this.peer]);
    for (const ns of [this.prober, this.peer]) {
      // No duplicate address detection: addresses (link-local ones too) are usable at once.
      this.exec(ns, 'sysctl', ['-qw', 'net.ipv6.conf.default.accept_dad=0', 'net.ipv6.conf.all.accept_dad=0']);
      this.ip(ns, 'link', 'set', 'lo', 'up');
    }
    // A new namespace takes its IPv4 settings from the host's. Tests freeze sends with
    // `unreachable` routes and then wait for the answers already on their way: a host with
    // reverse-path filtering would drop those answers (their source is now unreachable).
    // Links made after this (veths, netsim's TUN) take the default.
    this.exec(this.prober, 'sysctl', ['-qw', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0']);
    this.link(`ixa${s}`, `ixb${s}`, ['198.18.0.1/24', '2001:2::1/64'], [`${PEER_V4}/24`, `${PEER_V6}/64`]);
    this.ip(this.prober, 'route', 'add', 'default', 'via', PEER_V4);
    this.ip(this.prober, '-6', 'route', 'add', 'default', 'via', PEER_V6);
    this.ip(this.peer, 'route', 'add', 'local', ANSWERED_V4, 'dev', 'lo');
    this.ip(this.peer, '-6', 'route', 'add', 'local', ANSWERED_V6, 'dev', 'lo');
    // The HTTP link between the host and the prober (no probe ever takes it).
    sh('ip', ['link', 'add', `ixh${s}`, 'type', 'veth', 'peer', 'name', `ixg${s}`, 'netns', this.prober]);
    sh('ip', ['addr', 'add', `${this.hostAddress}/30`, 'dev', `ixh${s}`]);
    this.ip(this.prober, 'addr', 'add', `${this.httpAddress}/30`, 'dev', `ixg${s}`);
    sh('ip', ['link', 'set', `ixh${s}`, 'up']);
    this.ip(this.prober, 'link', 'set', `ixg${s}`, 'up');
  }

  /**
   * A veth pair from the prober (`a`) to the peer (`b`) with an IPv4 and an IPv6 address on
   * each end, up, and static neighbours both ways: no ARP or neighbour discovery delay, so the
   * first probe already counts.
   */
  private link(a: string, b: string, proberAddrs: readonly string[], peerAddrs: readonly string[]): void {
    sh('ip', ['link', 'add', a, 'netns', this.prober, 'type', 'veth', 'peer', 'name', b, 'netns', this.peer]);
    const prober = { ns: this.prober, dev: a, addrs: proberAddrs };
    const peer = { ns: this.peer, dev: b, addrs: peerAddrs };
    for (const { ns, dev, addrs } of [prober, peer]) {
      for (const addr of addrs) this.ip(ns, 'addr', 'add', addr, 'dev', dev, ...(addr.includes(':') ? ['nodad'] : []));
      this.ip(ns, 'link', 'set', dev, 'up');
    }
    const mac = (ns: string, dev: string) =>
      (JSON.parse(sh('ip', ['-n', ns, '-j', 'link', 'show', 'dev', dev])) as Array<{ address: string }>)[0]?.address ?? '';
    const directions: Array<[typeof prober, typeof peer]> = [
      [prober, peer],
      [peer, prober],
    ];
    for (const [here, there] of directions) {
      const lladdr = mac(there.ns, there.dev);
      for (const addr of there.addrs) {
        this.ip(here.ns, 'neigh', 'replace', addr.split('/')[0] ?? addr, 'lladdr', lladdr, 'dev', here.dev, 'nud', 'permanent');
      }
    }
  }

  /**
   * A second prober-peer link (prober 198.18.2.1, 2001:2:2::1) with a default route through it
   * of higher metric than the first one. Returns the prober's end.
   */
  addSecondLink(): string {
    const s = this.suffix;
    const [a, b] = [`ixc${s}`, `ixd${s}`];
    this.link(a, b, ['198.18.2.1/24', '2001:2:2::1/64'], ['198.18.2.2/24', '2001:2:2::2/64']);
    this.ip(this.prober, 'route', 'add', 'default', 'via', '198.18.2.2', 'metric', '2000');
    this.ip(this.prober, '-6', 'route', 'add', 'default', 'via', '2001:2:2::2', 'metric', '2000');
    return a;
  }

  /** Packets an interface of a namespace has sent. */
  txPackets(ns: string, dev: string): number {
    const stats = JSON.parse(sh('ip', ['-n', ns, '-j', '-s', 'link', 'show', 'dev', dev])) as Array<{
      stats64: { tx: { packets: number } };
    }>;
    return stats[0]?.stats64.tx.packets ?? 0;
  }

  /**
   * Starts netsim in the prober namespace with `config` (see crates/netsim), its TUN device
   * carrying the simulated ranges. Resolves once it answers.
   */
  async startNetsim(config: object): Promise<Netsim> {
    const dir = mkdtempSync(join(tmpdir(), `netsim-${this.suffix}-`));
    this.netnsDirs.push(dir);
    const tun = `ixs${this.suffix}`;
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    const child = this.spawn(this.prober, NETSIM, ['--tun', tun, '--config', join(dir, 'config.json'), '--truth', join(dir, 'truth.json')]);
    await startupLine(child, /netsim ready/, 'netsim', 10_000);
    // The "network" must not slow down with the host: SCHED_FIFO, so that a busy machine (the
    // exporter sending a turn's probes at once, or every core taken by stress-ng) delays
    // neither its reading of requests, which its truth cannot see, nor its answers.
    this.exec(this.prober, 'chrt', ['-a', '-f', '-p', '50', String(child.pid ?? 0)]);
    this.ip(this.prober, 'link', 'set', tun, 'up');
    this.ip(this.prober, 'route', 'add', SIMULATED_V4, 'dev', tun);
    this.ip(this.prober, '-6', 'route', 'add', SIMULATED_V6, 'dev', tun);
    return new Netsim(child, join(dir, 'truth.json'));
  }

  /** Loads an nftables ruleset into a namespace. */
  nft(ns: string, ruleset: string): void {
    this.exec(ns, 'nft', ['-f', '-'], ruleset);
  }

  /** Counter values (packets) of the named counters of table `inet lab` in a namespace. */
  nftCounters(ns: string): Record<string, number> {
    const json = JSON.parse(this.exec(ns, 'nft', ['-j', 'list', 'counters', 'table', 'inet', 'lab'])) as {
      nftables: Array<{ counter?: { name: string; packets: number } }>;
    };
    const out: Record<string, number> = {};
    for (const item of json.nftables) if (item.counter) out[item.counter.name] = item.counter.packets;
    return out;
  }

  /**
   * Starts a DNS server in the peer serving `records` (name -> addresses) and points the
   * prober at it. `queried()` lists the names asked so far (dnsmasq's query log). Options:
   * `search` domains for the prober's resolv.conf; `hosts` lines (address -> names) for its
   * /etc/hosts; `silentZone`, a zone dnsmasq forwards to a server that never answers (its
   * queries are dropped as they arrive: dropped as they leave, dnsmasq's send fails and it
   * answers REFUSED at once).
   */
  startDns(
    records: Record<string, string[]>,
    opts: { search?: string[]; hosts?: Record<string, string>; silentZone?: string } = {},
  ): { queried(): string[] } {
    const args = ['--no-daemon', '--no-resolv', '--no-hosts', '--bind-interfaces', `--listen-address=${PEER_V4}`, '--user=root'];
    // Authoritative for .test: a name it does not know is NXDOMAIN, not REFUSED (no upstream).
    args.push('--log-queries', '--log-facility=-', '--local=/test/');
    for (const [name, addrs] of Object.entries(records)) args.push(`--host-record=${[name, ...addrs].join(',')}`);
    if (opts.silentZone) {
      args.push(`--server=/${opts.silentZone}/${SILENT_DNS}`);
      this.nft(
        this.peer,
        `table inet lab_silent_dns {
          chain in {
            type filter hook input priority 0; policy accept;
            ip daddr ${SILENT_DNS} meta l4proto { udp, tcp } th dport 53 drop
          }
        }`,
      );
    }
    const dnsmasq = this.spawn(this.peer, 'dnsmasq', args);
    let log = '';
    dnsmasq.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    dnsmasq.stdout?.on('data', (d: Buffer) => (log += d.toString()));
    const dir = `/etc/netns/${this.prober}`;
    mkdirSync(dir, { recursive: true });
    this.netnsDirs.push(dir);
    const search = opts.search ? `search ${opts.search.join(' ')}\n` : '';
    writeFileSync(`${dir}/resolv.conf`, `${search}nameserver ${PEER_V4}\noptions timeout:1 attempts:1\n`);
    if (opts.hosts) {
      const lines = Object.entries(opts.hosts).map(([address, names]) => `${address} ${names}`);
      writeFileSync(`${dir}/hosts`, `127.0.0.1 localhost\n${lines.join('\n')}\n`);
    }
    return { queried: () => [...log.matchAll(/query\[\w+\] (\S+) from/g)].map((m) => m[1] ?? '') };
  }

  /** Starts a process in a namespace, in a process group of its own so teardown ends its children too. */
  spawn(ns: string, cmd: string, args: readonly string[], env: Record<string, string> = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...SYSTEM_ENV, ...env },
      detached: true,
    });
    this.processes.push(child);
    return child;
  }

  /**
   * Starts the exporter in the prober namespace; resolves with its base URL once it listens.
   * `unprivileged` runs it as nobody with no capability at all; `env` adds environment
   * variables (`STAMPS_AS_BEFORE_6_13` makes it match transmit stamps as on Linux < 6.13).
   */
  async startExporter(
    args: readonly string[] = [],
    opts: { unprivileged?: boolean; env?: Record<string, string> } = {},
  ): Promise<ExporterProcess> {
    const exporter = [process.execPath, CLI, '-listen', `${this.httpAddress}:0`, ...args];
    const child = opts.unprivileged
      ? this.spawn(this.prober, 'setpriv', [...NOBODY, ...exporter], opts.env)
      : this.spawn(this.prober, exporter[0] as string, exporter.slice(1), opts.env);
    const started = await ExporterProcess.started(child);
    // Under ICMP_EXPORTER_NO_TS_OPT_ID=1 (the suite's pass for kernels before 6.13) every
    // exporter must really take that path, or the pass would prove nothing.
    const packetPath = (opts.env?.ICMP_EXPORTER_NO_TS_OPT_ID ?? process.env.ICMP_EXPORTER_NO_TS_OPT_ID) === '1';
    if (packetPath && !started.startLine.includes('stamp_matching=packet')) {
      throw new Error(`ICMP_EXPORTER_NO_TS_OPT_ID=1 but the exporter says: ${started.startLine}`);
    }
    return started;
  }

  destroy(): void {
    for (const p of this.processes) {
      if (p.pid === undefined) continue;
      try {
        process.kill(-p.pid, 'SIGKILL');
      } catch {
        // the group is gone already
      }
    }
    removeLab(this.suffix);
    for (const dir of this.netnsDirs) rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Waits for a child's `stream` (stdout by default) to show `line`; rejects with its stderr if
 * it exits or times out first.
 */
function startupLine(
  child: ChildProcess,
  line: RegExp,
  what: string,
  ms: number,
  stream: 'stdout' | 'stderr' = 'stdout',
): Promise<{ match: RegExpExecArray; stderr: string }> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${err}`)), ms);
    const look = () => {
      const match = line.exec(stream === 'stdout' ? out : err);
      if (match) {
        clearTimeout(timer);
        resolve({ match, stderr: err });
      }
    };
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
      if (stream === 'stderr') look();
    });
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (stream === 'stdout') look();
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}: ${err}`));
    });
  });
}

export interface HostTruth {
  requests: number;
  replies: number;
  dropped: number;
  duplicates: number;
  errors: number;
  /** Answers held back so that later ones overtook them. */
  reordered: number;
  delay_sum_ns: number;
  delay_sq_sum_ns2: number;
}

/** What netsim writes: per host address, and its own figures. */
export interface Truth {
  hosts: Record<string, HostTruth>;
  malformed: number;
  ignored: number;
  /** Answers written (replies, errors and duplicate copies). */
  sent: number;
  late_sum_ns: number;
  late_sq_sum_ns2: number;
  late_max_ns: number;
}

export class Netsim {
  constructor(
    readonly child: ChildProcess,
    private readonly truthPath: string,
  ) {}

  /**
   * netsim's ground truth now, per host address. netsim writes a new file (and renames it
   * into place) on SIGUSR1; this waits for that file, and fails rather than return an older one.
   */
  async truth(): Promise<Truth> {
    const stamp = () => {
      if (!existsSync(this.truthPath)) return '';
      const st = statSync(this.truthPath);
      return `${st.ino}/${st.mtimeMs}`;
    };
    const before = stamp();
    this.child.kill('SIGUSR1');
    const deadline = Date.now() + 20_000;
    while (stamp() === before) {
      if (Date.now() > deadline) throw new Error('netsim wrote no new truth within 20 s of SIGUSR1');
      await new Promise((r) => setTimeout(r, 10));
    }
    return JSON.parse(readFileSync(this.truthPath, 'utf8')) as Truth;
  }
}

export class ExporterProcess {
  stderr = '';
  private constructor(
    readonly child: ChildProcess,
    readonly url: string,
    /** The ICMP identifier it announced at start. */
    readonly identifier: number,
    /** The line it logged when it started listening. */
    readonly startLine: string,
  ) {}

  static async started(child: ChildProcess): Promise<ExporterProcess> {
    // The exporter's log line `msg=Listening url=http://… … identifier=N …` (logfmt, the default).
    const { match, stderr } = await startupLine(child, /msg=Listening url=(https?:\/\/\S+) .*identifier=(\d+).*/, 'exporter', 20_000, 'stderr');
    const p = new ExporterProcess(child, match[1] ?? '', Number(match[2]), match[0]);
    p.stderr = stderr;
    child.stderr?.on('data', (d: Buffer) => (p.stderr += d.toString()));
    return p;
  }

  async get(path: string): Promise<{ status: number; body: string; headers: Headers }> {
    const res = await fetch(`${this.url}${path}`);
    return { status: res.status, body: await res.text(), headers: res.headers };
  }
}
