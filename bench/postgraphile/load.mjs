// The load generator: sends requests at a fixed concurrency for a fixed time and reports latency percentiles and
// throughput. Written for node (one event loop, no thread per client) so that it takes little of the CPU the
// systems under test need. Usage: node load.mjs < spec.json; prints one JSON object.
//   spec: {url, headers, bodies: [string...], concurrency, seconds, warmup_seconds}
// Bodies are sent in turn (request i gets bodies[i % n]); a response that is not 200 or that carries GraphQL
// "errors" counts as an error, and its first text is reported.
import { Pool } from "undici";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const spec = JSON.parse(input);
const target = new URL(spec.url);
const pool = new Pool(target.origin, { connections: spec.concurrency, pipelining: 1, keepAliveTimeout: 60_000 });
const headers = { "content-type": "application/json", ...spec.headers };

let sent = 0;
let succeeded = 0; // in both phases: what a write benchmark compares with the rows it finds afterwards
async function one() {
  const body = spec.bodies[sent++ % spec.bodies.length];
  const started = process.hrtime.bigint();
  const response = await pool.request({ path: target.pathname + target.search, method: "POST", headers, body });
  const text = await response.body.text();
  const elapsed = Number(process.hrtime.bigint() - started) / 1e6;
  const failed = response.statusCode !== 200 || text.startsWith('{"errors"') || text.includes('"errors":[{');
  if (!failed) succeeded++;
  return { elapsed, failed, text };
}

async function phase(seconds, record) {
  const until = performance.now() + seconds * 1000;
  const latencies = [];
  let errors = 0;
  let firstError = null;
  async function worker() {
    while (performance.now() < until) {
      const { elapsed, failed, text } = await one();
      if (!record) continue;
      if (failed) {
        errors++;
        firstError ??= text.slice(0, 300);
      } else latencies.push(elapsed);
    }
  }
  const started = performance.now();
  await Promise.all(Array.from({ length: spec.concurrency }, worker));
  return { latencies, errors, firstError, seconds: (performance.now() - started) / 1000 };
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

await phase(spec.warmup_seconds ?? 1, false);
const { latencies, errors, firstError, seconds } = await phase(spec.seconds, true);
latencies.sort((a, b) => a - b);
const round = (x) => (x == null ? null : Math.round(x * 100) / 100);
console.log(JSON.stringify({
  requests: latencies.length,
  errors,
  first_error: firstError,
  p50_ms: round(percentile(latencies, 50)),
  p95_ms: round(percentile(latencies, 95)),
  p99_ms: round(percentile(latencies, 99)),
  throughput_rps: round(latencies.length / seconds),
  succeeded_in_all: succeeded,
}));
await pool.close();
