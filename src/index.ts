/**
 * icmp-exporter for programs: start the HTTP exporter with the same options as the command
 * line, or use the prober without HTTP.
 */
export { startExporter, type Exporter } from './exporter.js';
export { Prober, chooseIdentifier, type ProberOptions, type ProbeStats, type ProbeTarget } from './prober.js';
export { DEFAULTS, parseFlags, type ExporterOptions } from './flags.js';
export { BadRequestError, FlagError, UnavailableError } from './errors.js';
export { SUPPORTED_PLATFORMS, type EngineCounters, type TargetStats } from './native.js';
export type { IpVersion } from './resolve.js';
export type { ProbeOptions } from './probe-options.js';
