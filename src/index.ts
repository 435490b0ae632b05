/** Programmatic use: start an exporter with the same options as the command line. */
export { startExporter, chooseIdentifier, type Exporter } from './exporter.js';
export { DEFAULTS, parseFlags, type ExporterOptions } from './flags.js';
export { BadRequestError, FlagError, UnavailableError } from './errors.js';
export { Engine, type EngineCounters, type EngineOptions, type TargetStats } from './native.js';
