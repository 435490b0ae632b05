// The heavy tests (__test__/heavy/): thousands of targets and a flooded receive buffer,
// a TCP flow that saturates the lab's link, packing and installing the package. They load
// the machine for seconds at a time, which would disturb the tests that judge timing
// (pacing on the wire, the window gauges, latency against netsim) if they ran beside them.
// `npm run test:ava` runs them after the main run (package.json "ava"), in a separate ava,
// one file at a time; their tests are serial. ava runs any one config at a time, so this
// keeps them apart whatever the main run's concurrency.
export default {
  extensions: { ts: 'module' },
  nodeArguments: ['--import=tsx'],
  files: ['__test__/heavy/**/*.test.ts'],
  workerThreads: false,
  concurrency: 1,
  timeout: '3m',
};
