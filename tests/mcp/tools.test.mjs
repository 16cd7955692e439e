// The tools of securerfs-mcp through the official MCP SDK client: values,
// state, every kind of error, plots as images, the workspace tools, path
// escapes, the quota, host tools in the description.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';

import { Mount, connect, text, scaled, writeTool } from './harness.mjs';

// A workspace of 1 MiB, so that the quota is easy to reach.
const mount = new Mount('pool=2,files_max_bytes=1M');
let c; // one server, one session, for the tests that share state
const ABORT =
  "dyn.load(Sys.glob(c('/lib/x86_64-linux-gnu/libc.so.6', '/lib*/libc.so.6', '/usr/lib/*/libc.so.6'))[1]); .C('abort')";

const run = (code, opts) => c.client.callTool({ name: 'execute_r_code', arguments: { code } }, undefined, opts);
const call = (name, args) => c.client.callTool({ name, arguments: args });

before(async () => {
  await mount.ready();
  writeTool(mount, 'add_numbers', {
    description: 'Add two numbers on the host',
    args: { a: 'numeric', b: 'numeric' },
    command: ['/usr/bin/python3', '-c', 'import json,sys; d=json.load(sys.stdin); print(d["a"]+d["b"])'],
  });
  writeTool(mount, 'failing_tool', {
    description: 'Always fails',
    args: { what: 'character' },
    command: ['/bin/sh', '-c', 'echo "the tool broke" >&2; exit 3'],
  });
  c = await connect({ args: ['--mount', mount.mnt] });
});

after(async () => {
  await c?.close();
  await mount.stop();
});

test('tools/list: the five tools, with schemas that compile and validate, and truthful annotations', async () => {
  const { tools } = await c.client.listTools();
  const byName = Object.fromEntries(tools.map((t) => [t.name, t]));
  assert.deepEqual(Object.keys(byName).sort(), ['execute_r_code', 'list_files', 'read_file', 'restart_session', 'write_file']);
  const ajv = new AjvJsonSchemaValidator();
  for (const t of tools) {
    assert.equal(t.inputSchema.type, 'object', t.name);
    ajv.getValidator(t.inputSchema); // compiles, or throws
    if (t.outputSchema) ajv.getValidator(t.outputSchema);
    assert.equal(typeof t.description, 'string');
    assert.equal(typeof t.title, 'string');
  }
  const exec = ajv.getValidator(byName.execute_r_code.inputSchema);
  assert.equal(exec({ code: '1+1' }).valid, true);
  assert.equal(exec({}).valid, false);
  assert.equal(exec({ code: 1 }).valid, false);
  assert.equal(exec({ code: 'x', extra: 1 }).valid, false);
  const write = ajv.getValidator(byName.write_file.inputSchema);
  assert.equal(write({ path: 'a.txt', content: 'x' }).valid, true);
  assert.equal(write({ path: 'a.txt', content: 'x', encoding: 'latin1' }).valid, false);
  assert.ok(byName.execute_r_code.outputSchema, 'execute_r_code declares an outputSchema');
  assert.ok(byName.list_files.outputSchema, 'list_files declares an outputSchema');
  const a = (n) => byName[n].annotations;
  assert.equal(a('list_files').readOnlyHint, true);
  assert.equal(a('read_file').readOnlyHint, true);
  assert.equal(a('list_files').openWorldHint, false);
  for (const n of ['execute_r_code', 'write_file', 'restart_session']) {
    assert.equal(a(n).readOnlyHint, false, n);
    assert.equal(a(n).destructiveHint, true, n);
  }
  assert.equal(a('write_file').idempotentHint, true);
  assert.equal(a('execute_r_code').idempotentHint, false);
  // host tools exist on this mount: R code can reach beyond the sandbox
  assert.equal(a('execute_r_code').openWorldHint, true);
});

test('execute_r_code: the description lists the host tools with their arguments', async () => {
  const { tools } = await c.client.listTools();
  const d = tools.find((t) => t.name === 'execute_r_code').description;
  assert.match(d, /add_numbers\(a, b\): Add two numbers on the host Arguments: a \(numeric\), b \(numeric\)\./);
  assert.match(d, /failing_tool\(what\): Always fails/);
  const r = await run('add_numbers(40, 2)');
  assert.equal(r.isError, undefined);
  assert.equal(text(r), '42');
});

test('execute_r_code: a value, as text and as structuredContent', async () => {
  const r = await run('1+1');
  assert.equal(r.isError, undefined);
  assert.deepEqual(r.content, [{ type: 'text', text: '2' }]);
  assert.equal(r.structuredContent.status, 'ok');
  assert.equal(r.structuredContent.value, 2);
  assert.equal(r.structuredContent.console, '');
  const df = await run('data.frame(a = 1:2, b = c("x", "y"))');
  assert.equal(text(df), '  a b\n1 1 x\n2 2 y');
  assert.deepEqual(df.structuredContent.value, [{ a: 1, b: 'x' }, { a: 2, b: 'y' }]);
  const printed = await run('cat("hello\\n"); invisible(7)');
  assert.equal(text(printed), '7');
  assert.equal(printed.content[1].text, 'Console output:\nhello\n');
  assert.equal(printed.structuredContent.console, 'hello\n');
});

test('execute_r_code: a value nested past 128 levels is left out of structuredContent, with a note', async () => {
  // 190 lists deep: the worker sends it (its cap is 200), and the reply
  // would nest past the 200 levels that Python MCP clients (pydantic) parse.
  const deep = await run('x <- 1; for (i in 1:190) x <- list(x); x');
  assert.equal(deep.isError, undefined);
  assert.equal(deep.structuredContent.status, 'ok');
  assert.equal(deep.structuredContent.value, null);
  assert.match(deep.structuredContent.value_note, /nests deeper than the 128 levels/);
  const shallow = await run('x <- 1; for (i in 1:100) x <- list(x); x');
  let v = shallow.structuredContent.value, depth = 0;
  while (Array.isArray(v)) { v = v[0]; depth++; }
  assert.equal(depth, 100); // 100 lists around the number (a scalar)
  assert.equal(v, 1);
  assert.equal(shallow.structuredContent.value_note, undefined);
});

test('execute_r_code: state persists across calls', async () => {
  await run('x <- 41; f <- function(v) v + 1');
  const r = await run('f(x)');
  assert.equal(text(r), '42');
});

test('execute_r_code: a syntax error is a tool error, nothing run', async () => {
  await run('kept <- "yes"');
  const r = await run('kept <- "no" +* 1');
  assert.equal(r.isError, true);
  assert.match(text(r), /Syntax error/);
  assert.equal(r.structuredContent.status, 'error');
  assert.equal(text(await run('kept')), 'yes');
});

test('execute_r_code: a runtime error is a tool error, state kept', async () => {
  const r = await run('y <- 5; stop("boom")');
  assert.equal(r.isError, true);
  assert.match(text(r), /boom/);
  assert.equal(text(await run('y')), '5');
});

test('execute_r_code: a resource limit is a tool error naming it', async () => {
  const r = await run('big <- numeric(1e9)');
  assert.equal(r.isError, true);
  assert.equal(r.structuredContent.limit, 'memory');
  assert.match(text(r), /memory limit/);
});

test('execute_r_code: a host tool that fails is a tool error with its message', async () => {
  const r = await run('failing_tool("x")');
  assert.equal(r.isError, true);
  assert.match(text(r), /the tool broke/);
  const bad = await run('add_numbers("a", 1)');
  assert.equal(bad.isError, true);
});

test('execute_r_code: a crash is a tool error saying the state was lost; the session goes on', async () => {
  await run('before_crash <- 1');
  const r = await run(ABORT);
  assert.equal(r.isError, true);
  assert.ok(['crashed', 'killed'].includes(r.structuredContent.status), r.structuredContent.status);
  assert.match(text(r), /lost|fresh|restart/i);
  assert.equal(text(await run('exists("before_crash")')), 'FALSE');
  assert.equal(text(await run('2+2')), '4');
});

test('execute_r_code: a timeout is a tool error with the state kept (--timeout)', async () => {
  const t = await connect({ args: ['--mount', mount.mnt, '--timeout', '1'] });
  try {
    await t.client.callTool({ name: 'execute_r_code', arguments: { code: 'kept <- 3' } });
    const start = Date.now();
    const r = await t.client.callTool({ name: 'execute_r_code', arguments: { code: 'Sys.sleep(30)' } });
    assert.ok(Date.now() - start < scaled(10) * 1000, 'ended at the timeout');
    assert.equal(r.isError, true);
    assert.equal(r.structuredContent.status, 'timeout');
    assert.match(text(r), /Timed out/);
    const k = await t.client.callTool({ name: 'execute_r_code', arguments: { code: 'kept' } });
    assert.equal(text(k), '3');
  } finally {
    await t.close();
  }
});

test('execute_r_code: a plot comes back as image content that decodes as a PNG', async () => {
  const r = await run('png("plot.png", width = 320, height = 240); plot(1:10); dev.off(); "done"');
  assert.equal(r.isError, undefined);
  const images = r.content.filter((b) => b.type === 'image');
  assert.equal(images.length, 1);
  assert.equal(images[0].mimeType, 'image/png');
  const png = Buffer.from(images[0].data, 'base64');
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.equal(png.subarray(12, 16).toString(), 'IHDR');
  assert.equal(png.readUInt32BE(16), 320);
  assert.equal(png.readUInt32BE(20), 240);
  assert.deepEqual(r.structuredContent.files, ['plot.png']);
  assert.ok(r.content.some((b) => b.type === 'text' && /plot\.png/.test(b.text)));
  // a JPEG too; an unchanged plot is not sent again
  const j = await run('jpeg("p.jpg"); plot(1); dev.off(); 1');
  const ji = j.content.filter((b) => b.type === 'image');
  assert.equal(ji.length, 1);
  assert.equal(ji[0].mimeType, 'image/jpeg');
  assert.deepEqual([...Buffer.from(ji[0].data, 'base64').subarray(0, 3)], [0xff, 0xd8, 0xff]);
});

test('write_file then read.csv in R; read_file and list_files see it', async () => {
  const w = await call('write_file', { path: 'data/sales.csv', content: 'a,b\n1,2\n3,4\n' });
  assert.equal(w.isError, undefined, text(w));
  const r = await run('d <- read.csv("data/sales.csv"); sum(d$b)');
  assert.equal(text(r), '6');
  const back = await call('read_file', { path: 'data/sales.csv' });
  assert.equal(text(back), 'a,b\n1,2\n3,4\n');
  const l = await call('list_files', { recursive: true });
  const paths = l.structuredContent.entries.map((e) => e.path);
  assert.ok(paths.includes('data'), paths);
  assert.ok(paths.includes('data/sales.csv'), paths);
  assert.equal(l.structuredContent.entries.find((e) => e.path === 'data/sales.csv').size, 12);
  const sub = await call('list_files', { path: 'data' });
  assert.deepEqual(sub.structuredContent.entries.map((e) => e.path), ['data/sales.csv']);
  // binary, through base64, byte for byte
  const bytes = Buffer.from([0, 1, 2, 255, 254, 10, 13]);
  await call('write_file', { path: 'bin.dat', content: bytes.toString('base64'), encoding: 'base64' });
  const rb = await run('paste(as.integer(readBin("bin.dat", "raw", 100)), collapse = ",")');
  assert.equal(text(rb), '0,1,2,255,254,10,13');
  const rf = await call('read_file', { path: 'bin.dat' });
  assert.equal(rf.isError, true);
  assert.match(text(rf), /binary/);
  // an image read back is image content
  const img = await call('read_file', { path: 'plot.png' });
  assert.equal(img.content[0].type, 'image');
  assert.equal(img.content[0].mimeType, 'image/png');
});

test('path escapes are refused, and the host is unchanged', async () => {
  const sessionDirs = mount.sessions();
  const outside = [];
  for (const p of ['../escape.txt', '/tmp/escape.txt', 'a/../../escape.txt', '..', '']) {
    const w = await call('write_file', { path: p, content: 'x' });
    assert.equal(w.isError, true, `write_file ${JSON.stringify(p)}`);
    outside.push(p);
  }
  for (const p of ['/etc/passwd', '../../../../etc/passwd', 'data/../../x']) {
    const r = await call('read_file', { path: p });
    assert.equal(r.isError, true, `read_file ${p}`);
    assert.doesNotMatch(text(r), /root:/);
  }
  // links the code makes are never followed, inside or out
  await run('file.symlink("/etc/passwd", "evil"); file.symlink("data", "dlink"); file.symlink("data/sales.csv", "good")');
  for (const p of ['evil', 'good', 'dlink/sales.csv']) {
    const r = await call('read_file', { path: p });
    assert.equal(r.isError, true, `read_file ${p}`);
    assert.doesNotMatch(text(r), /root:/);
  }
  const w = await call('write_file', { path: 'dlink/new.txt', content: 'x' });
  assert.equal(w.isError, true);
  const evil = await call('write_file', { path: 'evil', content: 'x' });
  // replacing the link itself is allowed (it is a name in the workspace); /etc/passwd is untouched
  assert.equal(evil.isError, undefined, text(evil));
  assert.match(readFileSync('/etc/passwd', 'utf8'), /^root:/);
  const l = await call('list_files', {});
  assert.equal(l.structuredContent.entries.find((e) => e.path === 'dlink').type, 'symlink');
  // nothing appeared next to the workspace, nor in the mount's tree
  assert.deepEqual(mount.sessions(), sessionDirs);
  for (const s of sessionDirs) assert.equal(existsSync(path.join(mount.mnt, 'sessions', s, 'escape.txt')), false);
  assert.equal(existsSync('/tmp/escape.txt'), false);
  assert.equal(existsSync(path.join(mount.dir, 'escape.txt')), false);
});

test('write_file: the quota as the mount enforces it; a refused write leaves the file as it was', async () => {
  await call('write_file', { path: 'q.txt', content: 'old' });
  const big = Buffer.alloc(2 << 20, 0x61).toString('base64');
  const r = await call('write_file', { path: 'q.txt', content: big, encoding: 'base64' });
  assert.equal(r.isError, true);
  assert.match(text(r), /full/);
  assert.equal(text(await call('read_file', { path: 'q.txt' })), 'old');
  const l = await call('list_files', {});
  assert.ok(!l.structuredContent.entries.some((e) => e.path.startsWith('.securerfs-mcp')), 'no temporary file left');
  assert.equal(text(await run('readLines("q.txt")')), 'old');
});

test('bad tool arguments are tool errors (2025-11-25); an unknown tool is a protocol error', async () => {
  const r = await c.client.callTool({ name: 'execute_r_code', arguments: { code: 5 } });
  assert.equal(r.isError, true);
  assert.match(text(r), /"code" must be a string/);
  const e = await c.client.callTool({ name: 'execute_r_code', arguments: {} });
  assert.equal(e.isError, true);
  const x = await c.client.callTool({ name: 'read_file', arguments: { path: 'a', extra: 1 } });
  assert.equal(x.isError, true);
  await assert.rejects(c.client.callTool({ name: 'no_such_tool', arguments: {} }), (err) => err.code === -32602);
  // more code than the mount's max_code_bytes (1 MiB): refused, nothing run
  const big = await run(`too_big <- 1; "${'x'.repeat(1100000)}"`);
  assert.equal(big.isError, true);
  assert.match(text(big), /max_code_bytes/);
  assert.equal(text(await run('exists("too_big")')), 'FALSE');
});

test('restart_session clears the R state and keeps the files', async () => {
  await run('gone <- 1; writeLines("stays", "stay.txt")');
  const r = await call('restart_session', {});
  assert.equal(r.isError, undefined, text(r));
  assert.equal(text(await run('exists("gone")')), 'FALSE');
  assert.equal(text(await run('readLines("stay.txt")')), 'stays');
});
