// The TypeScript client's speed (docs/performance.md "TypeScript client"): cold vs warm request
// latency and encrypted round trips per second through a real relay, TS → TS in one Node process
// and TS → the C++ SDK's MeshAgent (tests/interop/sdk_peer) — the same shape as bench/sdk (sdk-bench),
// whose C++ → C++ figures scripts/bench-web prints beside these as the baseline of the same run.
//
//   node web/bench/client_bench.mjs --relay-url ws://127.0.0.1:PORT/relay/ws [--sdk-peer PATH]
//        [--iterations 100] [--duration 3] [--concurrency 16]
// Needs client/dist (`npm run build:client` in web/). Prints one line per figure, `key value`.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';

import { Identity, MeshAgent, MeshClient } from '../client/dist/index.js';
import { encodeBase64url } from '../client/dist/base64url.js';

const { values: args } = parseArgs({
  options: {
    'relay-url': { type: 'string' },
    'sdk-peer': { type: 'string' },
    iterations: { type: 'string', default: '100' },
    duration: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '16' },
  },
});
if (!args['relay-url']) {
  console.error('usage: client_bench.mjs --relay-url ws://127.0.0.1:PORT/relay/ws [--sdk-peer PATH]');
  process.exit(2);
}
const relayUrl = args['relay-url'];
const iterations = Number(args.iterations);
const seconds = Number(args.duration);
const concurrency = Number(args.concurrency);
const options = { relayUrl, WebSocket, defaultTimeoutMs: 10_000 };

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p99 = (xs) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))];

async function echoAgent() {
  const identity = Identity.generate();
  const agent = new MeshAgent(identity, { ...options, isAllowed: () => true });
  agent.handle('echo', async (call) => call.body);
  await agent.waitOnline(5_000);
  return { agent, id: identity.agentId };
}

async function coldVsWarm(target) {
  const cold = [];
  const warm = [];
  const body = { message: 'x'.repeat(200) };
  for (let i = 0; i < iterations; i++) {
    const alice = new MeshClient(Identity.generate(), options);
    await alice.waitOnline(5_000);
    const t0 = performance.now();
    await alice.request(target, 'echo', body);
    const t1 = performance.now();
    await alice.request(target, 'echo', body);
    const t2 = performance.now();
    cold.push((t1 - t0) * 1000);
    warm.push((t2 - t1) * 1000);
    await alice.close();
  }
  return { cold, warm };
}

// Round trips per second with `concurrency` requests in flight for `seconds`.
async function throughput(target, bytes) {
  const alice = new MeshClient(Identity.generate(), options);
  await alice.waitOnline(5_000);
  const body = 'x'.repeat(bytes);
  await alice.request(target, 'echo', body); // warm the session
  let done = 0;
  let stop = false;
  const start = performance.now();
  const lane = async () => {
    while (!stop) {
      await alice.request(target, 'echo', body);
      done++;
    }
  };
  const lanes = Array.from({ length: concurrency }, lane);
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000)); // the measurement window
  stop = true;
  const elapsed = (performance.now() - start) / 1000;
  await Promise.all(lanes);
  await alice.close();
  return done / elapsed;
}

// The C++ SDK's MeshAgent as the responder: sdk_peer serve, allowing the one client identity.
async function sdkPeerAgent(path, clientId) {
  const dir = mkdtempSync(join(tmpdir(), 'client-bench-'));
  const key = Identity.generate();
  const keyFile = join(dir, 'bob.key');
  writeFileSync(keyFile, encodeBase64url(key.seed) + '\n', { mode: 0o600 });
  const child = spawn(path, ['serve', '--relay', relayUrl, '--key-file', keyFile, '--allow', clientId], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    if (JSON.parse(line).event === 'ready') break;
  }
  return {
    id: key.agentId,
    close: () => {
      child.stdin.end();
      child.kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function throughputToSdkPeer(path, bytes) {
  const alice = Identity.generate();
  const peer = await sdkPeerAgent(path, alice.agentId);
  const client = new MeshClient(alice, options);
  await client.waitOnline(5_000);
  const body = 'x'.repeat(bytes);
  await client.request(peer.id, 'echo', body);
  let done = 0;
  let stop = false;
  const start = performance.now();
  const lane = async () => {
    while (!stop) {
      await client.request(peer.id, 'echo', body);
      done++;
    }
  };
  const lanes = Array.from({ length: concurrency }, lane);
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  stop = true;
  const elapsed = (performance.now() - start) / 1000;
  await Promise.all(lanes);
  await client.close();
  peer.close();
  return done / elapsed;
}

const bob = await echoAgent();
const { cold, warm } = await coldVsWarm(bob.id);
console.log(`ts_cold_p50_us ${median(cold).toFixed(0)}`);
console.log(`ts_cold_p99_us ${p99(cold).toFixed(0)}`);
console.log(`ts_warm_p50_us ${median(warm).toFixed(0)}`);
console.log(`ts_warm_p99_us ${p99(warm).toFixed(0)}`);
for (const bytes of [256, 4096]) {
  console.log(`ts_to_ts_rt_per_s_${bytes} ${(await throughput(bob.id, bytes)).toFixed(0)}`);
  if (args['sdk-peer']) console.log(`ts_to_cpp_rt_per_s_${bytes} ${(await throughputToSdkPeer(args['sdk-peer'], bytes)).toFixed(0)}`);
}
await bob.agent.close();
process.exit(0);
