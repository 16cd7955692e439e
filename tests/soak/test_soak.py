"""The soak (issue 10, item 6): a few thousand mixed runs from several
clients at once — ok, error, console, timeout, interrupt, server and exec
tool calls, files both ways, restarts, new and closed sessions — with faults
injected between rounds (kill -9 of the keeper, the zygote, an idle worker,
a worker during a run; the keeper and the zygote during runs), every result
checked; then the daemon's RSS and descriptor count must be flat (after a
warm-up against the end, at the same quiescent state), stats must add up,
and the daemon must exit cleanly with nothing in its stderr (under the
sanitizer build: no ASan, UBSan or LeakSanitizer report).

scripts/test runs it against the ASan+UBSan daemon *and* worker (the worker
reports the address space ASan reserves in its "ready" frame, so the
default memory limit holds).  SECURERFS_SOAK_RUNS sets the number of runs
(default 3000)."""
import json
import os
import random
import signal
import threading
import time

import pytest

import util

PY = "/usr/bin/python3"
RUNS = int(os.environ.get("SECURERFS_SOAK_RUNS", "3000"))
CLIENTS = 4
ROUNDS = 14
WARMUP_ROUNDS = 2
FAULTS = ["keeper", "zygote", "idle-worker", "busy-worker", "keeper-busy", "zygote-busy"]
# Bounds of "flat": generous, since the allocator keeps what it had; a leak
# per run would pass them within the first few hundred runs.
RSS_GROWTH_MAX_KIB = 16 * 1024
FD_GROWTH_MAX = 2

ECHO_SERVER = r'''
import json, sys
for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.write(json.dumps({"id": req["id"], "value": req["args"]}) + "\n")
    sys.stdout.flush()
'''
TWICE_EXEC = r'''
import json, sys
a = json.load(sys.stdin)
json.dump(a["x"] * 2, sys.stdout)
'''


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.runs = 0
        self.timeouts = 0
        self.crashes = 0

    def add(self, runs=0, timeouts=0, crashes=0):
        with self.lock:
            self.runs += runs
            self.timeouts += timeouts
            self.crashes += crashes


def result(s, code, counts):
    counts.add(runs=1)
    return util.bounded(lambda: s.result(code), util.scaled(30), s.daemon.kill)


def expect_ok(r, value, what):
    assert r["status"] == "ok" and r["value"] == value, (what, r)


class Client(threading.Thread):
    """One client: its own session (replaced now and then), a loop of mixed
    operations, each checked; between rounds it waits at the barrier while
    the main thread injects a fault."""

    OPS = [("ok", 40), ("error", 10), ("console", 5), ("server", 10), ("exec", 4), ("files", 6),
           ("restart", 5), ("new", 5), ("interrupt", 5), ("timeout", 2)]

    def __init__(self, d, idx, barrier, counts, runs_per_round):
        super().__init__(daemon=True)
        self.d = d
        self.idx = idx
        self.barrier = barrier
        self.counts = counts
        self.runs_per_round = runs_per_round
        self.rng = random.Random(1000 + idx)
        self.s = d.clone()
        self.error = None
        self.done_runs = 0
        self.names = [n for n, _ in self.OPS]
        self.weights = [w for _, w in self.OPS]

    def run(self):
        try:
            for rnd in range(ROUNDS):
                start = self.counts_runs()
                # The first operation of all: a server tool call, so that the
                # (global) tool server exists before the first measurement.
                if rnd == 0:
                    self.op("server")
                while self.counts_runs() - start < self.runs_per_round:
                    self.op(self.rng.choices(self.names, self.weights)[0])
                self.barrier.wait()  # the main thread injects a fault ...
                self.barrier.wait()  # ... and lets us go on
        except BaseException as e:  # noqa: B902 - reported by the main thread
            self.error = e
            self.barrier.abort()

    def counts_runs(self):
        return self.done_runs

    def res(self, code):
        self.done_runs += 1
        return result(self.s, code, self.counts)

    def op(self, name):
        k = self.rng.randrange(1, 10 ** 6)
        s = self.s
        if name == "ok":
            expect_ok(self.res("x <- %d; x + 1" % k), k + 1, name)
        elif name == "error":
            r = self.res("stop('boom %d')" % k)
            assert r["status"] == "error" and "boom %d" % k in r["error"], r
        elif name == "console":
            r = self.res("cat('line %d\\n'); %d" % (k, k))
            assert r["status"] == "ok" and r["value"] == k and "line %d" % k in r["console"], r
        elif name == "server":
            expect_ok(self.res("echo(x = %d)$x + 1" % k), k + 1, name)
        elif name == "exec":
            expect_ok(self.res("twice(x = %d)" % k), 2 * k, name)
        elif name == "files":
            host = s.p("files") / ("h%d.txt" % k)
            util.bounded(lambda: host.write_text("from host %d\n" % k), util.scaled(10), self.d.kill)
            expect_ok(self.res("v <- readLines('h%d.txt'); writeLines(toupper(v), 'r%d.txt'); v" % (k, k)),
                      "from host %d" % k, name)
            back = s.p("files") / ("r%d.txt" % k)
            assert util.bounded(back.read_text, util.scaled(10), self.d.kill) == "FROM HOST %d\n" % k
            os.unlink(str(host))
            os.unlink(str(back))
        elif name == "restart":
            expect_ok(self.res("x <- %d; x" % k), k, name)
            s.write("ctl", "restart")
            expect_ok(self.res("exists('x')"), False, name)
        elif name == "new":
            s.close()
            self.s = util.bounded(self.d.clone, util.scaled(20), self.d.kill)
            expect_ok(self.res("exists('x')"), False, name)
        elif name == "interrupt":
            expect_ok(self.res("keep <- %d" % k), k, name)
            s.submit("Sys.sleep(10)")
            self.counts.add(runs=1)
            self.done_runs += 1
            time.sleep(0.02)
            s.write("ctl", "interrupt")
            r = json.loads(util.bounded(lambda: s.read("result.json"), util.scaled(10), self.d.kill))
            assert r["status"] == "error" and "Interrupted" in r["error"], r
            expect_ok(self.res("keep"), k, name)
        elif name == "timeout":
            expect_ok(self.res("keep <- %d" % k), k, name)
            s.write("timeout", "0.3")
            r = self.res("Sys.sleep(10)")
            assert r["status"] == "timeout", r
            self.counts.add(timeouts=1)
            s.write("timeout", "30")
            expect_ok(self.res("keep"), k, name)


def busy_workers(d):
    """Session workers in a run of Sys.sleep (R polls with a timeout), as
    opposed to idle ones (blocked reading their socket)."""
    out = []
    for pid in util.session_worker_pids(d.pid):
        try:
            with open("/proc/%d/wchan" % pid) as f:
                wchan = f.read()
        except OSError:
            continue
        if "poll" in wchan or "select" in wchan:
            out.append(pid)
    return out


def stats(d):
    return util.bounded(lambda: d.json("stats"), util.scaled(10), d.kill)


def quiescent(d, pool):
    """No run under way and the pool full: the state both measurements are
    taken in (the same sessions are open at both)."""
    util.wait_for(lambda: (lambda s: s["running"] == 0 and s["pool_idle"] == pool)(stats(d)), 30, "quiescent")
    time.sleep(0.2)


def measure(d):
    with open("/proc/%d/status" % d.pid) as f:
        rss = int([line for line in f if line.startswith("VmRSS:")][0].split()[1])
    fds = len(os.listdir("/proc/%d/fd" % d.pid))
    return rss, fds


def inject(d, fault, clients, counts):
    """Main thread, every client waiting at the barrier."""
    if fault == "keeper":
        os.kill(util.helper_pid(d.pid, util.KEEPER_COMM), signal.SIGKILL)
    elif fault == "zygote":
        os.kill(util.helper_pid(d.pid, util.ZYGOTE_COMM), signal.SIGKILL)
    elif fault == "idle-worker":
        pids = util.session_worker_pids(d.pid)
        victim = random.Random(len(pids)).choice(pids)
        os.kill(victim, signal.SIGKILL)
        # Once reaped, the daemon has replaced it; a run sent before that
        # would go to the dead worker and end crashed, rightly.
        util.wait_for(lambda: not os.path.exists("/proc/%d" % victim), 10, "the killed worker reaped")
    elif fault == "busy-worker":
        # Every client's session sleeps; one worker is killed: exactly that
        # run ends crashed, the others are interrupted.
        for c in clients:
            c.s.submit("Sys.sleep(10)")
        counts.add(runs=len(clients))
        util.wait_for(lambda: stats(d)["running"] == len(clients), 20, "every client running")
        victim = util.wait_for(lambda: busy_workers(d), 10, "a worker in Sys.sleep")[0]
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.3)
        for c in clients:
            c.s.write("ctl", "interrupt")
        statuses = sorted(json.loads(util.bounded(lambda: c.s.read("result.json"), util.scaled(15),
                                                  d.kill))["status"] for c in clients)
        assert statuses == ["crashed"] + ["error"] * (len(clients) - 1), statuses
        counts.add(crashes=1)
    elif fault in ("keeper-busy", "zygote-busy"):
        for c in clients:
            c.s.submit("Sys.sleep(0.5); 7")
        counts.add(runs=len(clients))
        comm = util.KEEPER_COMM if fault == "keeper-busy" else util.ZYGOTE_COMM
        os.kill(util.helper_pid(d.pid, comm), signal.SIGKILL)
        for c in clients:
            r = json.loads(util.bounded(lambda: c.s.read("result.json"), util.scaled(15), d.kill))
            assert r["status"] == "ok" and r["value"] == 7, (fault, r)


@pytest.mark.timeout_s(600)
def test_soak(tmp_path):
    echo = tmp_path / "echo.py"
    echo.write_text(ECHO_SERVER)
    twice = tmp_path / "twice.py"
    twice.write_text(TWICE_EXEC)
    os.chmod(str(tmp_path), 0o755)
    asan = os.environ.get("ASAN_OPTIONS", "")
    # A small quarantine, so that freed memory held by ASan does not pass
    # for growth.
    env = {"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=8"}
    pool = 2
    d = util.Daemon(tmp_path, ["pool=%d" % pool], env=env, expect=[r"pool worker could not start"])
    d.start()
    try:
        for name, spec in (("echo", {"description": "", "args": {"x": "numeric"}, "command": [PY, str(echo)],
                                     "mode": "server"}),
                           ("twice", {"description": "", "args": {"x": "numeric"}, "command": [PY, str(twice)],
                                      "mode": "exec"})):
            util.write_bytes(d.path("tools", name + ".json"), json.dumps(spec),
                             os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        counts = Counts()
        barrier = threading.Barrier(CLIENTS + 1, timeout=util.scaled(300))
        runs_per_round = max(1, -(-RUNS // (CLIENTS * ROUNDS)))
        clients = [Client(d, i, barrier, counts, runs_per_round) for i in range(CLIENTS)]
        for c in clients:
            c.start()
        base = None
        t0 = time.monotonic()
        for rnd in range(ROUNDS):
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                break
            if rnd == WARMUP_ROUNDS - 1:
                quiescent(d, pool)
                base = measure(d)
            try:
                if rnd < ROUNDS - 1:
                    inject(d, FAULTS[rnd % len(FAULTS)], clients, counts)
                else:
                    quiescent(d, pool)
                    end = measure(d)
            except BaseException:
                barrier.abort()
                raise
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                break
        for c in clients:
            c.join(util.scaled(60))
        errors = [c.error for c in clients if c.error]
        errors.sort(key=lambda e: isinstance(e, threading.BrokenBarrierError))
        if errors:
            raise errors[0]
        elapsed = time.monotonic() - t0
        st = stats(d)
        print("soak: %d runs in %.1f s; rss %d -> %d KiB, fds %d -> %d; stats %s"
              % (counts.runs, elapsed, base[0], end[0], base[1], end[1], json.dumps(st)))
        assert counts.runs >= RUNS
        # The counters add up: every run submitted ended once.
        assert st["executions"] == counts.runs, (st, counts.runs)
        assert st["timeouts"] == counts.timeouts, st
        assert st["crashes"] >= counts.crashes, st
        assert st["keeper_restarts"] >= 4 and st["zygote_restarts"] >= 4, st
        assert st["sessions"] == CLIENTS, st
        # Flat: no growth per run, per session or per fault.
        assert end[1] - base[1] <= FD_GROWTH_MAX, ("descriptors", base, end)
        assert end[0] - base[0] <= RSS_GROWTH_MAX_KIB, ("RSS KiB", base, end)
        for c in clients:
            c.s.close()
    finally:
        problems = d.stop()
    # Exited cleanly, nothing left, no sanitizer report (LeakSanitizer runs
    # at exit) and no unexpected error line.
    assert not problems, problems
