// scripts/bench's MCP figures, through the official SDK client:
//   node tests/mcp/bench.mjs ROUND_TRIPS SPAWNS
// prints "key value" lines:
//   mcp_rt_us_p50/p90/p99   execute_r_code("1+1"), client call to result
//   mcp_ping_us_p50         ping, the protocol's floor (no mount involved)
//   mcp_spawn_ms_p50/p90    spawning securerfs-mcp (private mount) to the
//                           first tool result, connect and initialize included
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

import { MCP_BIN, mcpEnv } from './harness.mjs';

const rounds = Number(process.argv[2] || 2000);
const spawns = Number(process.argv[3] || 10);

const pct = (v, p) => {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const ns = () => process.hrtime.bigint();

async function start(args = []) {
  const transport = new StdioClientTransport({ command: MCP_BIN, args, env: mcpEnv(), stderr: 'ignore' });
  const client = new Client({ name: 'securerfs-bench', version: '1' });
  await client.connect(transport);
  return client;
}

const call = (client) => client.callTool({ name: 'execute_r_code', arguments: { code: '1+1' } });

// The spawn figure first, while nothing else of ours runs.
const spawnMs = [];
for (let i = 0; i < spawns; i++) {
  const t0 = ns();
  const client = await start();
  const r = await call(client);
  spawnMs.push(Number(ns() - t0) / 1e6);
  if (r.content[0].text !== '2') throw new Error(`unexpected result ${JSON.stringify(r)}`);
  await client.close();
}

const client = await start();
for (let i = 0; i < 200; i++) await call(client); // warm up (JIT, pool, caches)
const rt = [];
for (let i = 0; i < rounds; i++) {
  const t0 = ns();
  const r = await call(client);
  rt.push(Number(ns() - t0) / 1e3);
  if (r.content[0].text !== '2') throw new Error(`unexpected result ${JSON.stringify(r)}`);
}
const ping = [];
for (let i = 0; i < rounds; i++) {
  const t0 = ns();
  await client.ping();
  ping.push(Number(ns() - t0) / 1e3);
}
await client.close();

const f = (x) => x.toFixed(1);
console.log(`mcp_rt_us_p50 ${f(pct(rt, 50))}`);
console.log(`mcp_rt_us_p90 ${f(pct(rt, 90))}`);
console.log(`mcp_rt_us_p99 ${f(pct(rt, 99))}`);
console.log(`mcp_ping_us_p50 ${f(pct(ping, 50))}`);
console.log(`mcp_spawn_ms_p50 ${f(pct(spawnMs, 50))}`);
console.log(`mcp_spawn_ms_p90 ${f(pct(spawnMs, 90))}`);
