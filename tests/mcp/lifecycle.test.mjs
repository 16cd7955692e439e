// The life of a securerfs-mcp process: its private mount, its session, and
// what is left when stdin closes or a signal comes (nothing).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';

import {
  Mount,
  connect,
  descendants,
  mounted,
  procStat,
  scaled,
  stillRunning,
  text,
  waitExit,
  waitFor,
} from './harness.mjs';

const mount = new Mount('pool=2');

before(async () => {
  await mount.ready();
});

after(async () => {
  await mount.stop();
});

const exec = (client, code) => client.callTool({ name: 'execute_r_code', arguments: { code } });

/** The private mount point securerfs-mcp said it mounts on. */
function privateMount(stderr) {
  const m = /mounting on (\S+)/.exec(stderr);
  assert.ok(m, `no private mount in the log:\n${stderr}`);
  return m[1];
}

test('no --mount: a private securerfs, gone with everything it started when stdin closes', async () => {
  const c = await connect({ env: { SECURERFS_MOUNT: undefined } });
  assert.equal(text(await exec(c.client, 'x <- 1; x + 1')), '2');
  const mnt = privateMount(c.stderr());
  const dir = path.dirname(mnt);
  assert.ok(mounted(mnt), `${mnt} is mounted`);
  assert.equal((readFileSync('/proc/self/mountinfo', 'utf8').match(new RegExp(` ${mnt} `, 'g')) || []).length, 1);
  const st = procStat(c.pid);
  const tree = descendants(c.pid);
  // the daemon, its zygote, the keeper, the workers
  assert.ok(tree.length >= 3, `processes below securerfs-mcp: ${tree.length}`);
  const pid = c.pid;
  // The SDK's close() is MCP's stdio shutdown: it closes our stdin, waits
  // 2 s, and only then sends SIGTERM; the log says which ended us.
  await c.close();
  await waitExit(pid, 20);
  assert.ok(st);
  await waitFor(() => stillRunning(tree).length === 0, 10, 'every process it started to end');
  assert.equal(mounted(mnt), false);
  assert.equal(existsSync(dir), false, `${dir} was removed`);
  assert.match(c.stderr(), /stdin closed: ending/);
  assert.doesNotMatch(c.stderr(), /signal 15: ending/);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  test(`${sig}: the same clean end`, async () => {
    const c = await connect({ env: { SECURERFS_MOUNT: undefined } });
    assert.equal(text(await exec(c.client, '1')), '1');
    const mnt = privateMount(c.stderr());
    const tree = descendants(c.pid);
    const pid = c.pid;
    // a run under way does not hold the end up
    const pending = exec(c.client, 'Sys.sleep(60)').catch((e) => e);
    await new Promise((r) => setTimeout(r, 300));
    process.kill(pid, sig);
    await waitExit(pid, 20);
    assert.match(c.stderr(), new RegExp(`signal ${sig === 'SIGTERM' ? 15 : 2}: ending`));
    await waitFor(() => stillRunning(tree).length === 0, 10, 'every process it started to end');
    assert.equal(mounted(mnt), false);
    assert.equal(existsSync(path.dirname(mnt)), false);
    await pending;
    await c.close();
  });
}

test('SIGKILL of securerfs-mcp: its private daemon still ends, with everything it started', async () => {
  const c = await connect({ env: { SECURERFS_MOUNT: undefined } });
  assert.equal(text(await exec(c.client, '1')), '1');
  const mnt = privateMount(c.stderr());
  const tree = descendants(c.pid);
  process.kill(c.pid, 'SIGKILL');
  await waitExit(c.pid, 20);
  // PR_SET_PDEATHSIG: the kernel sends the daemon SIGTERM, on which it unmounts
  await waitFor(() => stillRunning(tree).length === 0, 20, 'every process it started to end');
  await waitFor(() => !mounted(mnt), 10, 'the mount to go');
  // only the empty directories remain (nothing was left to remove them)
  rmSync(path.dirname(mnt), { recursive: true });
  await c.close().catch(() => {});
});

test('--mount: the session is made for this server and closed when stdin closes', async () => {
  const before = new Set(mount.sessions());
  const c = await connect({ args: ['--mount', mount.mnt] });
  await exec(c.client, 'y <- 2');
  const mine = mount.sessions().filter((s) => !before.has(s));
  assert.equal(mine.length, 1, `new sessions: ${mine}`);
  const tree = descendants(c.pid);
  assert.deepEqual(tree, [], 'nothing of its own runs: the mount is shared');
  // a run under way when stdin closes ends with the session
  const pending = exec(c.client, 'Sys.sleep(60)').catch((e) => e);
  await new Promise((r) => setTimeout(r, 300));
  const pid = c.pid;
  await c.close();
  await waitExit(pid, 20);
  await pending;
  assert.equal(existsSync(path.join(mount.mnt, 'sessions', mine[0])), false, 'its session is closed');
  const stats = JSON.parse(readFileSync(path.join(mount.mnt, 'stats'), 'utf8'));
  assert.equal(stats.running, 0);
});

test('SECURERFS_MOUNT is used like --mount', async () => {
  const before = new Set(mount.sessions());
  const c = await connect({ env: { SECURERFS_MOUNT: mount.mnt } });
  try {
    await exec(c.client, '1');
    assert.equal(mount.sessions().filter((s) => !before.has(s)).length, 1);
    assert.doesNotMatch(c.stderr(), /mounting on/);
  } finally {
    await c.close();
  }
});

test('--session NAME: attached or made, and it outlives the connection', async () => {
  const name = `mcp-named-${process.pid}`;
  const a = await connect({ args: ['--mount', mount.mnt, '--session', name] });
  await exec(a.client, 'remembered <- "from the first connection"');
  await a.close();
  await waitExit(a.pid, 20);
  assert.ok(existsSync(path.join(mount.mnt, 'sessions', name)), 'the named session is still there');
  const b = await connect({ args: ['--mount', mount.mnt, '--session', name] });
  try {
    assert.equal(text(await exec(b.client, 'remembered')), 'from the first connection');
  } finally {
    await b.close();
  }
  assert.ok(existsSync(path.join(mount.mnt, 'sessions', name)));
});

test('a mount that is not there: every tool call says why, the server keeps serving', async () => {
  const c = await connect({ args: ['--mount', '/nonexistent-securerfs'] });
  try {
    const r = await exec(c.client, '1+1');
    assert.equal(r.isError, true);
    assert.match(text(r), /no securerfs mount at \/nonexistent-securerfs/);
    const { tools } = await c.client.listTools();
    assert.equal(tools.length, 5);
    await c.client.ping();
  } finally {
    await c.close();
  }
});

test('bad options are refused before anything starts', async () => {
  const { spawnSync } = await import('node:child_process');
  const { MCP_BIN } = await import('./harness.mjs');
  for (const args of [['--timeout', 'soon'], ['--session', '../x'], ['--session', '.hidden'], ['extra']]) {
    const r = spawnSync(MCP_BIN, args, { input: '', timeout: scaled(10) * 1000 });
    assert.equal(r.status, 2, `${args}: ${r.stderr}`);
    assert.equal(r.stdout.length, 0, 'nothing on stdout but the protocol');
  }
});
