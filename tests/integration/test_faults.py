"""Faults of every helper process (issue 10): kill -9 and SIGSTOP of the
keeper, the zygote, a worker, a server tool and an exec tool during runs,
each followed by new sessions, restarts and runs that must work; a `dead`
session brought back by `ctl restart`; SIGKILL of the daemon under load.

What must hold (docs/architecture.md, "Helpers and their deadlines"): no
FUSE request waits on a helper without a deadline — a mkdir answers (a
session, or EAGAIN with the reason in stats' last_start_error) within a
bounded time, `ls sessions` and `stats` are never held by a helper; a dead
or stopped helper is killed, logged with its cause and restarted; the
workspaces survive the keeper's restart.

Every wait here is bounded (util.bounded, the watchdog), and every process a
test stops is continued by the clean-up whatever happens."""
import errno
import json
import os
import signal
import threading
import time

import pytest

import util

PY = "/usr/bin/python3"

# Lines the daemon logs as errors when a helper fails under a test's hand.
FAULT_EXPECT = [
    r"could not start", r"could not make a workspace", r"did not start within",
    r"pool worker could not start", r"R could not start", r"tool",
]

# How long a FUSE request may wait when a helper stalls: the longest helper
# deadline (the zygote's 5 s per spawn request) plus slack; the session's own
# bound is 10 s.
STALL_BOUND = 12


class Stopper:
    """SIGSTOP processes; every one stopped is continued by cont_all(),
    which the fixture's clean-up calls whatever happens (a SIGCONT to a dead
    pid is harmless)."""

    def __init__(self):
        self.pids = []
        self.lock = threading.Lock()

    def __call__(self, pid):
        with self.lock:
            self.pids.append(pid)
        os.kill(pid, signal.SIGSTOP)

    def cont_all(self):
        with self.lock:
            pids = list(self.pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


@pytest.fixture
def stopped():
    st = Stopper()
    try:
        yield st
    finally:
        st.cont_all()


def start(daemons, *opts):
    return daemons.start(*opts, expect=FAULT_EXPECT)


def helper(d, comm, timeout=10):
    """The pid of the daemon's helper named comm, waiting for it to be there
    (a helper being restarted is absent for a moment)."""
    deadline = time.monotonic() + util.scaled(timeout)
    while time.monotonic() < deadline:
        pid = util.helper_pid(d.pid, comm)
        if pid:
            return pid
        time.sleep(0.02)
    raise AssertionError("no %s child of the daemon within %d s" % (comm, util.scaled(timeout)))


def stats(d):
    return util.bounded(lambda: d.json("stats"), util.scaled(5), d.kill)


def gone(pid):
    st = util.proc_stat(pid)
    return st is None or st[0] == "Z"


def mkdir_bounded(d, name, timeout=STALL_BOUND):
    """mkdir sessions/name: None on success, else the errno; fails the test
    if it takes longer than timeout (scaled)."""
    t0 = time.monotonic()

    def body():
        try:
            os.mkdir(str(d.path("sessions", name)))
            return None
        except OSError as e:
            return e.errno

    r = util.bounded(body, util.scaled(timeout), d.kill)
    return r, time.monotonic() - t0


def run_bounded(s, code, timeout=20):
    return util.bounded(lambda: s.result(code), util.scaled(timeout), s.daemon.kill)


def healthy(d, label):
    """After a fault: a new session from clone and from mkdir, a run in
    each, a restart and a run after it; all must work."""
    s = util.bounded(d.clone, util.scaled(STALL_BOUND), d.kill)
    r = run_bounded(s, "x <- 6 * 7; x")
    assert r["status"] == "ok" and r["value"] == 42, (label, r)
    err, _ = mkdir_bounded(d, "after-" + label)
    assert err is None, (label, errno.errorcode.get(err), stats(d))
    m = d.session("after-" + label)
    assert run_bounded(m, "1+1")["value"] == 2, label
    m.write("ctl", "restart")
    r = run_bounded(m, "exists('x')")
    assert r["status"] == "ok" and r["value"] == False, (label, r)
    s.close()
    m.close()


# ---------------------------------------------------------------- the keeper


@pytest.mark.timeout_s(90)
def test_keeper_kill9_during_runs_workspaces_survive(daemons):
    d = start(daemons, "pool=1")
    a = d.clone()
    assert run_bounded(a, "writeLines('kept', 'note.txt'); y <- 5")["status"] == "ok"
    keeper = helper(d, util.KEEPER_COMM)
    a.submit("Sys.sleep(0.5); y + 1")
    os.kill(keeper, signal.SIGKILL)
    # The run under way does not depend on the keeper.
    r = util.bounded(lambda: json.loads(a.read("result.json")), util.scaled(10), d.kill)
    assert r["status"] == "ok" and r["value"] == 6, r
    st = util.wait_for(lambda: (lambda s: s if s["keeper_restarts"] >= 1 else None)(stats(d)), 10,
                  "a keeper restart counted")
    assert st["keeper_restarts"] == 1, st
    new_keeper = helper(d, util.KEEPER_COMM)
    assert new_keeper != keeper
    log = d.stderr()
    assert "the keeper (pid %d) was killed by signal 9" % keeper in log, log
    # The workspace outlived the keeper: a restarted worker gets it (clone
    # of the mount, from the new keeper in the old namespace) ...
    a.write("ctl", "restart")
    r = run_bounded(a, "readLines('/work/note.txt')")
    assert r["status"] == "ok" and r["value"] == "kept", r
    # ... and the host side still reaches it.
    assert util.read_text(a.p("files") / "note.txt") == "kept\n"
    r = run_bounded(a, "writeLines('again', 'two.txt'); list.files()")
    assert r["value"] == ["note.txt", "two.txt"], r
    healthy(d, "keeper-kill")


def ls_during(d, delay=0.3):
    """ls sessions in a thread after delay: returns a function that waits for
    it and gives how long it took."""
    box = {}

    def body():
        time.sleep(delay)
        t = time.monotonic()
        os.listdir(str(d.path("sessions")))
        box["took"] = time.monotonic() - t

    th = threading.Thread(target=body, daemon=True)
    th.start()

    def result():
        th.join(util.scaled(STALL_BOUND))
        assert not th.is_alive(), "ls sessions did not return"
        return box["took"]

    return result


@pytest.mark.timeout_s(120)
def test_keeper_sigstop_bounded_then_recovers(daemons, stopped):
    d = start(daemons, "pool=1")
    a = d.clone()
    assert run_bounded(a, "writeLines('kept', 'note.txt')")["status"] == "ok"
    keeper = helper(d, util.KEEPER_COMM)
    a.submit("Sys.sleep(0.5); 'ran'")
    stopped(keeper)
    # Runs do not need the keeper.
    r = util.bounded(lambda: json.loads(a.read("result.json")), util.scaled(10), d.kill)
    assert r["status"] == "ok" and r["value"] == "ran", r
    # stats never waits for the keeper.
    t0 = time.monotonic()
    stats(d)
    assert time.monotonic() - t0 < util.scaled(1), "stats took %.2f s" % (time.monotonic() - t0)
    # A mkdir needs the keeper: the stopped one misses the deadline and is
    # killed; the mkdir gets EAGAIN, within the bound, and `ls sessions`
    # (which waits for the directory lock the mkdir holds) with it.
    ls = ls_during(d)
    err, took = mkdir_bounded(d, "during-stop")
    assert err == errno.EAGAIN, (errno.errorcode.get(err), took)
    assert took < util.scaled(STALL_BOUND), took
    assert ls() < util.scaled(STALL_BOUND)
    assert "during-stop" not in os.listdir(str(d.path("sessions")))
    st = stats(d)
    assert "keeper" in st["last_start_error"] and "did not answer" in st["last_start_error"], st
    assert "did not answer \"create" in d.stderr()
    # The stalled keeper was killed (a stopped process dies of SIGKILL) and
    # replaced: the workspaces made before are all there.
    util.wait_for(lambda: gone(keeper), 10, "the stopped keeper killed")
    assert helper(d, util.KEEPER_COMM) != keeper
    a.write("ctl", "restart")
    r = run_bounded(a, "readLines('note.txt')")
    assert r["status"] == "ok" and r["value"] == "kept", r
    healthy(d, "keeper-stop")
    assert stats(d)["keeper_restarts"] >= 1


# ---------------------------------------------------------------- the zygote


@pytest.mark.timeout_s(90)
def test_zygote_kill9_during_runs(daemons):
    d = start(daemons, "pool=0")
    a = d.clone()
    zygote = helper(d, util.ZYGOTE_COMM)
    a.submit("Sys.sleep(0.5); 'still here'")
    os.kill(zygote, signal.SIGKILL)
    r = util.bounded(lambda: json.loads(a.read("result.json")), util.scaled(10), d.kill)
    assert r["status"] == "ok" and r["value"] == "still here", r
    util.wait_for(lambda: stats(d)["zygote_restarts"] >= 1, 10, "a zygote restart counted")
    assert helper(d, util.ZYGOTE_COMM) != zygote
    assert "the zygote (pid %d) was killed by signal 9" % zygote in d.stderr()
    # pool=0: every new worker comes from the new zygote.
    healthy(d, "zygote-kill")
    a.write("ctl", "restart")
    assert run_bounded(a, "1")["value"] == 1


@pytest.mark.timeout_s(120)
def test_zygote_sigstop_bounded_then_recovers(daemons, stopped):
    d = start(daemons, "pool=0")
    assert run_bounded(d.clone(), "1")["value"] == 1  # the zygote is ready
    zygote = helper(d, util.ZYGOTE_COMM)
    b = d.clone()
    b.submit("Sys.sleep(0.5); 'ran'")
    stopped(zygote)
    # Runs do not need the zygote.
    r = util.bounded(lambda: json.loads(b.read("result.json")), util.scaled(10), d.kill)
    assert r["status"] == "ok" and r["value"] == "ran", r
    # The spawn request misses its deadline: the zygote is killed and
    # restarted, the mkdir gets EAGAIN within the bound, never a hang.
    ls = ls_during(d)
    err, took = mkdir_bounded(d, "during-stop")
    assert err == errno.EAGAIN, (errno.errorcode.get(err), took)
    assert took < util.scaled(STALL_BOUND), took
    assert ls() < util.scaled(STALL_BOUND)
    util.wait_for(lambda: gone(zygote), 10, "the stopped zygote killed")
    st = util.wait_for(lambda: (lambda x: x if x["zygote_restarts"] >= 1 else None)(stats(d)), 10,
                  "a zygote restart counted")
    assert "did not answer spawn request" in st["last_start_error"], st
    assert "did not answer spawn request" in d.stderr()
    healthy(d, "zygote-stop")


@pytest.mark.timeout_s(120)
def test_helpers_killed_with_requests_in_flight(daemons, stopped):
    """A helper that dies (rather than stalls) with a request in flight:
    the request goes to its replacement, and the mkdir succeeds.  Stopped
    first so that the request is surely in flight when it dies."""
    d = start(daemons, "pool=0")
    assert run_bounded(d.clone(), "1")["value"] == 1
    for comm in (util.KEEPER_COMM, util.ZYGOTE_COMM):
        pid = helper(d, comm)
        stopped(pid)
        box = {}
        th = threading.Thread(target=lambda: box.update(r=mkdir_bounded(d, "in-flight-" + comm)), daemon=True)
        th.start()
        time.sleep(util.scaled(0.5))  # the request is sent, not answered
        os.kill(pid, signal.SIGKILL)
        th.join(util.scaled(STALL_BOUND))
        assert not th.is_alive()
        err, took = box["r"]
        assert err is None, (comm, errno.errorcode.get(err), stats(d))
        assert run_bounded(d.session("in-flight-" + comm), "5")["value"] == 5
        assert helper(d, comm) != pid
    healthy(d, "in-flight")


# ---------------------------------------------------------------- workers


def only_worker(d):
    """With pool=0 and one session, that session's worker."""
    return util.wait_for(lambda: (lambda p: p[0] if len(p) == 1 else None)(util.session_worker_pids(d.pid)), 10,
                    "exactly one worker")


@pytest.mark.timeout_s(90)
def test_worker_kill9_and_sigstop_during_runs(daemons, stopped):
    d = start(daemons, "pool=0", "grace=1")
    s = d.clone()
    assert run_bounded(s, "v <- 1")["status"] == "ok"
    s.submit("Sys.sleep(20)")
    w = only_worker(d)
    os.kill(w, signal.SIGKILL)
    r = util.bounded(lambda: json.loads(s.read("result.json")), util.scaled(10), d.kill)
    assert r["status"] == "crashed", r
    assert run_bounded(s, "exists('v')")["value"] == False
    # SIGSTOP: the timeout's SIGINT cannot be handled; after the grace
    # period the worker is killed and replaced.
    s.write("timeout", "1")
    s.submit("v <- 2; Sys.sleep(20)")
    w2 = only_worker(d)
    assert w2 != w
    stopped(w2)
    t0 = time.monotonic()
    r = util.bounded(lambda: json.loads(s.read("result.json")), util.scaled(15), d.kill)
    assert r["status"] == "killed", r
    assert time.monotonic() - t0 < util.scaled(8)
    util.wait_for(lambda: gone(w2), 5, "the stopped worker killed")
    assert run_bounded(s, "1+1")["value"] == 2
    s.close()
    healthy(d, "worker")


@pytest.mark.timeout_s(90)
def test_stopped_pool_worker_is_replaced_at_assignment(daemons, stopped):
    d = start(daemons, "pool=1")
    util.wait_for(lambda: stats(d)["pool_idle"] == 1, 10, "the pool full")
    pooled = util.session_worker_pids(d.pid)
    assert len(pooled) == 1, pooled
    stopped(pooled[0])
    # It cannot attach the workspace: killed at its deadline, and a fresh
    # worker takes its place within the session's bound.
    err, took = mkdir_bounded(d, "p")
    assert err is None, (errno.errorcode.get(err), stats(d))
    assert took < util.scaled(STALL_BOUND), took
    assert run_bounded(d.session("p"), "3*3")["value"] == 9
    util.wait_for(lambda: gone(pooled[0]), 5, "the stopped pool worker killed")
    assert "did not attach its workspace" in d.stderr()


# ---------------------------------------------------------------- a dead session


@pytest.mark.timeout_s(120)
def test_dead_session_revived_by_ctl_restart(daemons, tmp_path):
    """A zygote that cannot start (a wrapper refuses while a flag file
    exists) leaves a session whose worker died `dead`; once the zygote is
    back, ctl restart revives it, its workspace intact."""
    flag, wrapper = util.breakable_worker(tmp_path)
    d = daemons.start("pool=0", "worker=%s" % wrapper, expect=FAULT_EXPECT)
    s = d.clone()
    assert run_bounded(s, "writeLines('kept', 'note.txt')")["status"] == "ok"
    flag.write_text("")
    zygote = helper(d, util.ZYGOTE_COMM)
    os.kill(zygote, signal.SIGKILL)
    # Gone (or a zombie) before the workers are listed: one reaped while it
    # is being listed would pass for a worker without a name.
    util.wait_for(lambda: (util.proc_stat(zygote) or ("Z",))[0] == "Z", 10, "the zygote gone")
    # The session's worker dies: no zygote can make another one.
    os.kill(util.session_worker_pids(d.pid)[0], signal.SIGKILL)
    util.wait_for(lambda: s.status() == "dead", 40, "the session dead")
    r = run_bounded(s, "1")
    assert r["status"] == "error" and "restart" in r["error"], r
    flag.unlink()

    def revived():
        s.write("ctl", "restart")
        util.wait_for(lambda: s.status() != "starting", 20, "the restart settled")
        return s.status() == "idle"

    # The zygote comes back (after its back-off) and ctl restart revives the
    # session; tried again while the zygote is still away.
    util.wait_for(revived, 60, "the session revived")
    r = run_bounded(s, "readLines('note.txt')")
    assert r["status"] == "ok" and r["value"] == "kept", r


@pytest.mark.timeout_s(90)
def test_session_dead_after_keeper_stall_revived(daemons, stopped):
    """A restart whose new worker cannot get the workspace because the
    keeper stalls: the session is dead (with the reason), not hung; once the
    keeper is replaced, ctl restart brings it back with its files."""
    d = start(daemons, "pool=1")
    s = d.clone()
    assert run_bounded(s, "writeLines('kept', 'note.txt')")["status"] == "ok"
    keeper = helper(d, util.KEEPER_COMM)
    stopped(keeper)
    s.write("ctl", "restart")
    util.wait_for(lambda: s.status() == "dead", STALL_BOUND, "the session dead")
    r = run_bounded(s, "1")
    assert r["status"] == "error" and "keeper" in r["error"] and "restart" in r["error"], r
    util.wait_for(lambda: gone(keeper), 10, "the stopped keeper killed")
    helper(d, util.KEEPER_COMM)
    s.write("ctl", "restart")
    r = run_bounded(s, "readLines('note.txt')")
    assert r["status"] == "ok" and r["value"] == "kept", r
    assert s.status() == "idle"


# ---------------------------------------------------------------- tools


SERVER = r'''
import json, sys, time
for line in sys.stdin:
    req = json.loads(line)
    time.sleep(req["args"]["s"])
    sys.stdout.write(json.dumps({"id": req["id"], "value": req["args"]["s"]}) + "\n")
    sys.stdout.flush()
'''

EXEC = r'''
import json, sys, time
a = json.load(sys.stdin)
time.sleep(a["s"])
json.dump(a["s"], sys.stdout)
'''


def tool_pids(d, script):
    out = []
    for pid, _ in util.descendants(d.pid):
        if script in util.proc_cmdline(pid) and not gone(pid):
            out.append(pid)
    return out


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("mode", ["server", "exec"])
@pytest.mark.parametrize("fault", ["kill", "stop"])
def test_tool_fault_during_a_call(daemons, tmp_path, stopped, mode, fault):
    script = tmp_path / ("tool_%s.py" % mode)
    script.write_text(SERVER if mode == "server" else EXEC)
    d = start(daemons, "pool=1")
    util.write_bytes(d.path("tools", "nap.json"),
                     json.dumps({"description": "", "args": {"s": "numeric"}, "command": [PY, str(script)],
                                 "mode": mode, "timeout": 2}), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    s = d.clone()
    assert run_bounded(s, "nap(0)")["value"] == 0
    s.submit("r <- tryCatch(nap(30), error = function(e) conditionMessage(e)); r")
    pid = util.wait_for(lambda: tool_pids(d, str(script)), 10, "the tool process")[0]
    t0 = time.monotonic()
    if fault == "kill":
        os.kill(pid, signal.SIGKILL)
    else:
        stopped(pid)
    r = util.bounded(lambda: json.loads(s.read("result.json")), util.scaled(15), d.kill)
    assert r["status"] == "ok" and isinstance(r["value"], str), r  # the R error, caught
    # kill: at once; stop: at the tool's 2 s timeout.
    assert time.monotonic() - t0 < util.scaled(8)
    util.wait_for(lambda: gone(pid), 5, "the tool process gone")
    # The next call works (a new server, a new exec process), in this
    # session and in a new one.
    assert run_bounded(s, "nap(0.1)")["value"] == 0.1
    t = d.clone()
    assert run_bounded(t, "nap(0)")["value"] == 0
    healthy(d, "tool-%s-%s" % (mode, fault))


# ---------------------------------------------------------------- the daemon


@pytest.mark.timeout_s(120)
def test_daemon_sigkill_under_load_leaves_nothing(daemons):
    d = start(daemons, "pool=2")
    sessions = [d.clone() for _ in range(4)]
    for i, s in enumerate(sessions):
        assert run_bounded(s, "writeLines('x', 'f%d.txt')" % i)["status"] == "ok"
        s.submit("Sys.sleep(30)")
    util.wait_for(lambda: stats(d)["running"] == 4, 10, "four runs under way")
    keeper = helper(d, util.KEEPER_COMM)
    zygote = helper(d, util.ZYGOTE_COMM)
    # The two helpers, four session workers and the pool's two, once it
    # has refilled (a clone under ASan takes a while).
    snap = util.wait_for(lambda: (lambda sn: len(sn) >= 2 + 4 + 2 and sn)(d.snapshot()), 10,
                         "the pool refilled beside four runs")
    assert {keeper, zygote} <= {p for p, _ in snap}
    os.kill(d.pid, signal.SIGKILL)
    assert d.wait_exit(5) == -signal.SIGKILL

    def alive():
        util.reap_orphans()
        return [p for p, start_time in snap
                if (lambda st: st and st[2] == start_time and st[0] != "Z")(util.proc_stat(p))]

    deadline = time.monotonic() + util.scaled(3)
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(), ["%d %s" % (p, util.proc_comm(p)) for p in alive()]
    # Every process is gone; the mount point is stale until the next start.
    assert util.is_fuse_mounted(d.mnt)
    d.stopped = True
    d.forget()
    d2 = util.Daemon(d.workdir, ["pool=0"], name=d.mnt.name, expect=FAULT_EXPECT)
    daemons.started.append(d2)
    d2.start()
    s = d2.clone()
    assert run_bounded(s, "1+1")["value"] == 2
    problems = d2.stop()
    assert not problems, problems
    assert not util.is_fuse_mounted(d.mnt)
