// The protocol of securerfs-mcp through the official MCP SDK client:
// version negotiation, ping during a run, progress, cancellation, the
// queue, malformed input, batches.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InitializeResultSchema, JSONRPCErrorSchema, LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js';

import { Mount, RawTransport, connect, text, scaled, sleep } from './harness.mjs';

const mount = new Mount('pool=2');
const VERSIONS = ['2024-11-05', '2025-03-26', '2025-06-18', '2025-11-25'];

before(async () => {
  await mount.ready();
});

after(async () => {
  await mount.stop();
});

// A new server on the mount behind a RawTransport (t: write any bytes, read
// its raw answers), with an SDK client connected through it.
async function rawClient() {
  const t = new RawTransport(['--mount', mount.mnt]);
  const client = new Client({ name: 'raw', version: '1' });
  await client.connect(t);
  return { t, client };
}

const exec = (client, code, opts) => client.callTool({ name: 'execute_r_code', arguments: { code } }, undefined, opts);

for (const version of VERSIONS) {
  test(`negotiation: a client asking for ${version} gets ${version}, and the shapes of that revision`, async () => {
    const c = await connect({ args: ['--mount', mount.mnt], version });
    try {
      assert.equal(c.transport.negotiated, version);
      assert.equal(c.client.getServerVersion().name, 'securerfs-mcp');
      assert.deepEqual(c.client.getServerCapabilities().tools, { listChanged: false });
      const { tools } = await c.client.listTools();
      const e = tools.find((t) => t.name === 'execute_r_code');
      const structured = version >= '2025-06-18';
      assert.equal('outputSchema' in e, structured);
      assert.equal('title' in e, structured);
      assert.equal('annotations' in e, version >= '2025-03-26');
      const r = await exec(c.client, '6*7');
      assert.equal(text(r), '42');
      assert.equal('structuredContent' in r, structured);
      // bad arguments: a tool error from 2025-11-25 on, invalid params before
      if (version >= '2025-11-25') {
        const bad = await c.client.callTool({ name: 'execute_r_code', arguments: { code: 1 } });
        assert.equal(bad.isError, true);
      } else {
        await assert.rejects(
          c.client.callTool({ name: 'execute_r_code', arguments: { code: 1 } }),
          (err) => err.code === -32602,
        );
      }
    } finally {
      await c.close();
    }
  });
}

test('negotiation: an unknown version is answered with the latest', async () => {
  const c = await connect({ args: ['--mount', mount.mnt], version: '1999-01-01' });
  try {
    assert.equal(c.transport.negotiated, '2025-11-25');
    assert.equal(LATEST_PROTOCOL_VERSION, '2025-11-25', 'the SDK pinned speaks the same latest revision');
  } finally {
    await c.close();
  }
});

test('ping is answered at once while a run is under way; requests queue in order', async () => {
  const c = await connect({ args: ['--mount', mount.mnt] });
  try {
    const t0 = Date.now();
    const slow = exec(c.client, 'Sys.sleep(2); z <- 1; "slow"').then((r) => ({ r, at: Date.now() - t0 }));
    await sleep(300);
    const pingStart = Date.now();
    await c.client.ping();
    const pingMs = Date.now() - pingStart;
    // queued behind the run: they see its effect, and come back in order
    const next = exec(c.client, 'z + 1').then((r) => ({ r, at: Date.now() - t0 }));
    const list = c.client.listTools().then((r) => ({ r, at: Date.now() - t0 }));
    const [a, b, l] = await Promise.all([slow, next, list]);
    assert.ok(pingMs < scaled(1) * 1000, `ping took ${pingMs} ms`);
    assert.ok(Date.now() - pingStart > 1000, 'the run went on after the ping');
    assert.equal(text(a.r), 'slow');
    assert.equal(text(b.r), '2');
    assert.ok(a.at <= b.at && b.at <= l.at, `answered in order: ${a.at} ${b.at} ${l.at}`);
    assert.equal(l.r.tools.length, 5);
  } finally {
    await c.close();
  }
});

test('progress: a run that prints for 2 s sends its console lines as they come', async () => {
  const c = await connect({ args: ['--mount', mount.mnt] });
  try {
    const notes = [];
    const t0 = Date.now();
    const r = await exec(c.client, 'for (i in 1:4) { cat("tick", i, "\\n"); Sys.sleep(0.5) }; "end"', {
      onprogress: (p) => notes.push({ ...p, at: Date.now() - t0 }),
      resetTimeoutOnProgress: true,
    });
    const done = Date.now() - t0;
    assert.equal(text(r), 'end');
    assert.ok(notes.length >= 2, `${notes.length} progress notifications`);
    const lines = notes.flatMap((n) => n.message.split('\n').filter(Boolean));
    assert.deepEqual(lines, ['tick 1 ', 'tick 2 ', 'tick 3 ', 'tick 4 '].slice(0, lines.length));
    assert.ok(lines.length >= 3, lines.join('|'));
    assert.ok(notes[0].at < done - 500, `first progress at ${notes[0].at} ms, result at ${done} ms`);
    for (let i = 1; i < notes.length; i++) assert.ok(notes[i].progress > notes[i - 1].progress);
    // without a progress token, none
    const quiet = [];
    c.client.fallbackNotificationHandler = async (n) => quiet.push(n);
    await exec(c.client, 'cat("x\\n"); Sys.sleep(0.3); 1');
    assert.equal(quiet.filter((n) => n.method === 'notifications/progress').length, 0);
  } finally {
    await c.close();
  }
});

test('cancellation ends a while (TRUE) {} run through ctl interrupt, with the state kept', async () => {
  const c = await connect({ args: ['--mount', mount.mnt] });
  try {
    await exec(c.client, 'kept <- "still here"');
    const ac = new AbortController();
    const t0 = Date.now();
    const spin = exec(c.client, 'while (TRUE) {}', { signal: ac.signal });
    await sleep(1000);
    ac.abort('the user gave up');
    await assert.rejects(spin);
    // the session's timeout is 30 s: an answer well before means the run was interrupted
    const r = await exec(c.client, 'kept');
    assert.equal(text(r), 'still here');
    assert.ok(Date.now() - t0 < scaled(10) * 1000, `the next call came after ${Date.now() - t0} ms`);
    // a queued request can be cancelled too, before it runs
    const ac2 = new AbortController();
    const first = exec(c.client, 'Sys.sleep(1); w <- 1');
    const second = exec(c.client, 'w <- 2', { signal: ac2.signal });
    ac2.abort();
    await assert.rejects(second);
    await first;
    assert.equal(text(await exec(c.client, 'w')), '1');
  } finally {
    await c.close();
  }
});

test('malformed input is answered with errors, and the server keeps serving', async () => {
  const { t, client } = await rawClient();
  try {
    const lines = [
      'this is not JSON',
      '{"jsonrpc":"2.0","id":"raw-1","method":5}',
      '{"jsonrpc":"1.0","id":"raw-2","method":"ping"}',
      '{"jsonrpc":"2.0","id":"raw-3","method":"tools/call","params":{"name":5}}',
      '{"jsonrpc":"2.0","id":"raw-4","method":"tools/call","params":{"name":"execute_r_code","arguments":"1+1"}}',
      '{"jsonrpc":"2.0","id":"raw-5","method":"no/such/method"}',
      '{"jsonrpc":"2.0","id":"raw-6","method":"tools/list","params":[1]}',
      '{"jsonrpc":"2.0","id":null,"method":"ping"}',
      '[{"jsonrpc":"2.0","id":"raw-7","method":"ping"}]',
      '42',
      '{"jsonrpc":"2.0","id":"raw-8","method":"tools/call","params":{"name":"execute_r_code","_meta":{"progressToken":[1]}}}',
      '{"jsonrpc":"2.0","id":"raw-9","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}',
      '{"jsonrpc":"2.0","id":"raw-10","id":"raw-11","method":"ping"}',
    ];
    for (const l of lines) await t.writeRaw(l + '\n');
    // invalid UTF-8 inside a string
    await t.writeRaw(Buffer.concat([Buffer.from('{"jsonrpc":"2.0","id":"raw-12","method":"ping","params":{"x":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}}\n')]));
    // a notification that is not ours, and a response to nothing: no answer
    await t.writeRaw('{"jsonrpc":"2.0","method":"notifications/whatever"}\n{"jsonrpc":"2.0","id":"raw-x","result":{}}\n');
    const got = await t.rawAnswers(14);
    for (const m of got) assert.ok(JSONRPCErrorSchema.safeParse(m).success || m.id === null, JSON.stringify(m));
    const code = (id) => got.find((m) => m.id === id)?.error?.code;
    const nullIdCodes = got.filter((m) => m.id === null).map((m) => m.error.code);
    assert.equal(code('raw-1'), -32600);
    assert.equal(code('raw-2'), -32600);
    assert.equal(code('raw-3'), -32602);
    assert.equal(code('raw-4'), -32602);
    assert.equal(code('raw-5'), -32601);
    assert.equal(code('raw-6'), -32602);
    assert.equal(code('raw-8'), -32602);
    assert.equal(code('raw-9'), -32600, 'a second initialize');
    // not JSON, id null, a batch (not in 2025-11-25), 42, duplicate keys, invalid UTF-8
    assert.deepEqual(nullIdCodes.sort(), [-32700, -32700, -32700, -32600, -32600, -32600].sort());
    // still serving, through the SDK client
    const r = await client.callTool({ name: 'execute_r_code', arguments: { code: '1+1' } });
    assert.equal(text(r), '2');
  } finally {
    await client.close();
  }
});

test('a huge line is refused without being kept, and the server keeps serving', async () => {
  const { t, client } = await rawClient();
  try {
    const chunk = Buffer.alloc(1 << 20, 0x61);
    await t.writeRaw('{"jsonrpc":"2.0","id":"raw-1","method":"ping","params":{"x":"');
    // 160 MiB: a server that kept the line would peak above that
    for (let i = 0; i < 160; i++) await t.writeRaw(chunk);
    await t.writeRaw('"}}\n');
    const [m] = await t.rawAnswers(1, 60);
    assert.equal(m.error.code, -32600);
    assert.equal(m.error.data.limit, 16 << 20);
    assert.ok(m.error.data.bytes > 160 << 20);
    const status = readFileSync(`/proc/${t.pid}/status`, 'utf8');
    const hwm = Number(/VmHWM:\s+(\d+)/.exec(status)[1]) * 1024;
    // bounded by the 16 MiB limit (plus the allocator's and, in the ASan
    // build, the sanitizer's own share), far below the line's size
    assert.ok(hwm < 100 << 20, `peak memory ${hwm} bytes`);
    assert.equal(text(await client.callTool({ name: 'execute_r_code', arguments: { code: '3' } })), '3');
  } finally {
    await client.close();
  }
});

test('batches: answered as one array under 2025-03-26, refused under 2025-11-25', async () => {
  for (const [version, batch] of [['2025-03-26', true], ['2025-11-25', false]]) {
    const t = new RawTransport(['--mount', mount.mnt]);
    await t.start();
    try {
      await t.writeRaw(
        JSON.stringify({ jsonrpc: '2.0', id: 'raw-init', method: 'initialize', params: { protocolVersion: version, capabilities: {}, clientInfo: { name: 'b', version: '1' } } }) + '\n',
      );
      const [init] = await t.rawAnswers(1);
      assert.equal(InitializeResultSchema.parse(init.result).protocolVersion, version);
      await t.writeRaw('{"jsonrpc":"2.0","method":"notifications/initialized"}\n');
      t.raw.length = 0;
      await t.writeRaw(
        JSON.stringify([
          { jsonrpc: '2.0', id: 'raw-a', method: 'ping' },
          { jsonrpc: '2.0', method: 'notifications/initialized' },
          { jsonrpc: '2.0', id: 'raw-b', method: 'tools/call', params: { name: 'execute_r_code', arguments: { code: '2+3' } } },
          { jsonrpc: '2.0', id: 'raw-c', method: 'nope' },
        ]) + '\n',
      );
      await t.writeRaw('{"jsonrpc":"2.0","id":"raw-z","method":"ping"}\n');
      const lines = await t.rawAnswers(2);
      if (batch) {
        const arr = lines.find((l) => Array.isArray(l));
        assert.ok(arr, lines.map((l) => JSON.stringify(l)).join('\n'));
        assert.deepEqual(arr.map((m) => m.id).sort(), ['raw-a', 'raw-b', 'raw-c']);
        assert.equal(arr.find((m) => m.id === 'raw-b').result.content[0].text, '5');
        assert.equal(arr.find((m) => m.id === 'raw-c').error.code, -32601);
      } else {
        const e = lines.find((l) => l.id === null);
        assert.equal(e.error.code, -32600);
      }
    } finally {
      await t.close();
    }
  }
});

test('requests before initialize are refused; ping is answered', async () => {
  const t = new RawTransport(['--mount', mount.mnt]);
  await t.start();
  try {
    await t.writeRaw('{"jsonrpc":"2.0","id":"raw-1","method":"tools/list"}\n{"jsonrpc":"2.0","id":"raw-2","method":"ping"}\n');
    await t.writeRaw('{"jsonrpc":"2.0","id":"raw-3","method":"initialize","params":{"protocolVersion":"2025-11-25"}}\n');
    const got = await t.rawAnswers(3);
    const byId = Object.fromEntries(got.map((m) => [m.id, m]));
    assert.equal(byId['raw-1'].error.code, -32600);
    assert.deepEqual(byId['raw-2'].result, {});
    assert.equal(byId['raw-3'].error.code, -32602, 'initialize without capabilities and clientInfo');
  } finally {
    await t.close();
  }
});
