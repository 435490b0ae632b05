/** The Rust engine, loaded through the napi-rs generated loader at the package root. */
export { Engine } from '../native.js';
export type { EngineCounters, EngineOptions, TargetStats } from '../native.js';
