// Shared pieces of the securerfs-mcp tests: where the programs are, a
// securerfs mount of the tests' own, and ways to connect the official MCP
// SDK client to securerfs-mcp over stdio.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { JSONRPCMessageSchema } from '@modelcontextprotocol/sdk/types.js';
import { serializeMessage } from '@modelcontextprotocol/sdk/shared/stdio.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '../..');
export const BUILD = process.env.SECURERFS_BUILD || path.join(REPO, 'build');
// SECURERFS_MCP_BIN: another build of the server (scripts/test's ASan one).
export const MCP_BIN = process.env.SECURERFS_MCP_BIN || path.join(BUILD, 'securerfs-mcp');
export const DAEMON = path.join(BUILD, 'securerfs');
export const TIME_SCALE = Number(process.env.SECURERFS_TIME_SCALE || 1);

/** Seconds, scaled for a loaded machine. */
export const scaled = (s) => s * TIME_SCALE;
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The environment securerfs-mcp runs with: the SDK passes only a few
 * variables by default, and the tests need TMPDIR and HOME to be theirs. */
export function mcpEnv(extra = {}) {
  const env = {
    PATH: process.env.PATH || '/usr/bin:/bin',
    HOME: process.env.HOME || '/tmp',
    TMPDIR: process.env.TMPDIR || tmpdir(),
    SECURERFS_BIN: DAEMON,
    ASAN_OPTIONS: process.env.ASAN_OPTIONS,
    UBSAN_OPTIONS: process.env.UBSAN_OPTIONS,
    LSAN_OPTIONS: process.env.LSAN_OPTIONS,
    ...extra,
  };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  return env;
}

export function workDir(name) {
  return mkdtempSync(path.join(process.env.TMPDIR || tmpdir(), `mcp-${name}-`));
}

/** A securerfs mount of the tests' own, started in the foreground. */
export class Mount {
  constructor(opts = 'pool=2') {
    this.dir = workDir('mount');
    this.mnt = path.join(this.dir, 'mnt');
    spawnSync('mkdir', [this.mnt]);
    this.log = [];
    this.proc = spawn(DAEMON, ['-f', '-o', opts, this.mnt], { stdio: ['ignore', 'pipe', 'pipe'] });
    for (const s of [this.proc.stdout, this.proc.stderr]) s.on('data', (d) => this.log.push(d.toString()));
    this.exited = new Promise((r) => this.proc.on('exit', (code, sig) => r({ code, sig })));
  }

  async ready() {
    const until = Date.now() + scaled(20) * 1000;
    while (Date.now() < until) {
      if (existsSync(path.join(this.mnt, 'README'))) return this;
      if (this.proc.exitCode !== null) break;
      await sleep(20);
    }
    throw new Error(`securerfs did not mount: ${this.log.join('')}`);
  }

  sessions() {
    return readdirSync(path.join(this.mnt, 'sessions'));
  }

  async stop() {
    spawnSync('fusermount3', ['-u', this.mnt]);
    const t = setTimeout(() => this.proc.kill('SIGKILL'), scaled(10) * 1000);
    await this.exited;
    clearTimeout(t);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Wrap a transport so that initialize asks for a protocol version of the
 * test's choosing (the SDK client always asks for its latest), and record
 * the version the server answered. */
export class PinnedVersionTransport {
  constructor(inner, version) {
    this.inner = inner;
    this.version = version;
    this.negotiated = undefined;
  }
  async start() {
    this.inner.onmessage = (m) => this.onmessage?.(m);
    this.inner.onerror = (e) => this.onerror?.(e);
    this.inner.onclose = () => this.onclose?.();
    return this.inner.start();
  }
  async send(message, options) {
    if (message.method === 'initialize' && this.version) {
      message = { ...message, params: { ...message.params, protocolVersion: this.version } };
    }
    return this.inner.send(message, options);
  }
  async close() {
    return this.inner.close();
  }
  setProtocolVersion(v) {
    this.negotiated = v;
  }
  get pid() {
    return this.inner.pid;
  }
  get stderr() {
    return this.inner.stderr;
  }
}

/** A sanitizer's report in a server's stderr fails the test that ran it. */
export function assertNoSanitizerReport(stderr) {
  const m = /(ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:)[^\n]*/.exec(stderr);
  if (m) throw new Error(`securerfs-mcp: ${m[0]}\n${stderr}`);
}

/** Start securerfs-mcp with args through the SDK's StdioClientTransport
 * and connect the SDK's Client.  Returns {client, transport, stderr()}. */
export async function connect({ args = [], env = {}, version } = {}) {
  const stdio = new StdioClientTransport({ command: MCP_BIN, args, env: mcpEnv(env), stderr: 'pipe' });
  const transport = new PinnedVersionTransport(stdio, version);
  const err = [];
  transport.stderr.on('data', (d) => err.push(d.toString()));
  const client = new Client({ name: 'securerfs-mcp-tests', version: '1.0.0' });
  await client.connect(transport, { timeout: scaled(30) * 1000 });
  const pid = transport.pid;
  return {
    client,
    transport,
    pid,
    stderr: () => err.join(''),
    close: async () => {
      await client.close();
      await new Promise((r) => setTimeout(r, 50)); // the last of its stderr
      assertNoSanitizerReport(err.join(''));
    },
  };
}

/** A stdio transport of the tests' own over a process they spawn: like the
 * SDK's, plus raw writes of arbitrary bytes.  Messages whose id is null or
 * a string starting with "raw-" are answers to raw writes: they are kept
 * in `raw` and not passed to the SDK client. */
export class RawTransport {
  constructor(args = [], env = {}) {
    this.args = args;
    this.env = env;
    this.raw = [];
    this.waiters = [];
    this.pending = '';
    this.lines = [];
    this.err = [];
  }
  async start() {
    this.proc = spawn(MCP_BIN, this.args, { env: mcpEnv(this.env), stdio: ['pipe', 'pipe', 'pipe'] });
    this.pid = this.proc.pid;
    this.exited = new Promise((r) => this.proc.on('exit', (code, sig) => r({ code, sig })));
    this.proc.stderr.on('data', (d) => this.err.push(d.toString()));
    this.proc.stdin.on('error', () => {});
    this.proc.stdout.setEncoding('utf8');
    this.proc.stdout.on('data', (chunk) => {
      // Our own line splitting: the SDK's refuses what it would not send
      // (an id of null, a batch array), which is what these tests read.
      this.pending += chunk;
      let nl;
      while ((nl = this.pending.indexOf('\n')) >= 0) {
        const line = this.pending.slice(0, nl);
        this.pending = this.pending.slice(nl + 1);
        this.lines.push(line);
        const m = JSON.parse(line);
        if (Array.isArray(m) || m.id === null || (typeof m.id === 'string' && m.id.startsWith('raw-'))) {
          this.raw.push(m);
          this.waiters.splice(0).forEach((w) => w());
        } else {
          this.onmessage?.(JSONRPCMessageSchema.parse(m));
        }
      }
    });
  }
  async send(message) {
    this.proc.stdin.write(serializeMessage(message));
  }
  writeRaw(data) {
    return new Promise((r) => this.proc.stdin.write(data, r));
  }
  /** Wait until n raw answers have come. */
  async rawAnswers(n, seconds = 30) {
    const until = Date.now() + scaled(seconds) * 1000;
    while (this.raw.length < n) {
      if (Date.now() > until) throw new Error(`only ${this.raw.length} of ${n} raw answers came`);
      await new Promise((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
    return this.raw.slice(0, n);
  }
  async close() {
    this.proc.stdin.end();
    const t = setTimeout(() => this.proc.kill('SIGKILL'), scaled(20) * 1000);
    await this.exited;
    clearTimeout(t);
    assertNoSanitizerReport(this.err.join(''));
    this.onclose?.();
  }
}

/** The text of a tool result's first content block. */
export const text = (result) => result.content?.[0]?.text;

/** /proc/PID/stat: [state, ppid, starttime], or null. */
export function procStat(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state: f[0], ppid: Number(f[1]), start: f[19] };
  } catch {
    return null;
  }
}

/** Every process below pid, with its start time (to tell a reused pid). */
export function descendants(pid) {
  const children = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const st = procStat(d);
    if (!st) continue;
    if (!children.has(st.ppid)) children.set(st.ppid, []);
    children.get(st.ppid).push({ pid: Number(d), start: st.start });
  }
  const out = [];
  const walk = (p) => {
    for (const c of children.get(p) || []) {
      out.push(c);
      walk(c.pid);
    }
  };
  walk(pid);
  return out;
}

/** Those of procs still alive (not gone, not a zombie, same start time). */
export function stillRunning(procs) {
  return procs.filter((p) => {
    const st = procStat(p.pid);
    return st && st.start === p.start && st.state !== 'Z' && st.state !== 'X';
  });
}

/** Wait until fn() is true, or the deadline passes. */
export async function waitFor(fn, seconds, what) {
  const until = Date.now() + scaled(seconds) * 1000;
  while (!fn()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Wait for a child process (by pid) to exit. */
export async function waitExit(pid, seconds) {
  await waitFor(() => {
    const st = procStat(pid);
    return !st || st.state === 'Z';
  }, seconds, `process ${pid} to exit`);
}

export function mounted(dir) {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === dir);
}

export function writeTool(mount, name, def) {
  writeFileSync(path.join(mount.mnt, 'tools', `${name}.json`), JSON.stringify(def));
}
