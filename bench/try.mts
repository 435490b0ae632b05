import { scale } from './scale.js';
const teardowns: Array<() => void> = [];
try {
  const rows = await scale((f) => teardowns.push(f), (process.env.STEPS ?? '1000,10000').split(',').map(Number), 6000);
  console.table(rows);
  if (process.env.HOLD) { console.log("holding"); await new Promise((r) => setTimeout(r, Number(process.env.HOLD) * 1000)); }
} finally { teardowns.splice(0).forEach((f) => f()); }
