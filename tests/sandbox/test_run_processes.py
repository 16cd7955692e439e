"""The processes a run starts end with the run (docs/security.md, "The
processes of a run").

Plain R starts them as an attacker would (parallel::mcparallel, a child
that forks a grandchild and exits so that the grandchild is an orphan), and
every way a run can end is tried: a result, an error, the timeout, ctl
interrupt, a kill after the grace period.  Hostile native code
(tests/sandbox/hostile.c) checks that the daemon does not rely on the
worker: a worker that ends its run itself (a faked result frame) without
its clean-up, and one deaf to interrupts at its deadline.  From the
outside: every process seen below the worker during the run is gone after
it, and the worker (when it is meant to live) is still there."""
import threading
import time
from pathlib import Path

import pytest

import harness
import util
from jailtools import only_worker

HERE = Path(__file__).resolve().parent
SPAWN = ("for (i in 1:2) parallel::mcparallel(repeat {}); "
         "parallel::mcparallel({ parallel::mcparallel(repeat {}); Sys.sleep(0.2); 1 }); ")


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory):
    return harness.build_r_lib(tmp_path_factory.mktemp("hostile"), HERE / "hostile.c")


def alive(pid, start):
    st = util.proc_stat(pid)
    return st is not None and st[2] == start and st[0] != "Z"


def present(pid, start):
    """Alive or a zombie: still a process of the session."""
    st = util.proc_stat(pid)
    return st is not None and st[2] == start


class Sampler:
    """Every process seen below the worker while the run goes on."""

    def __init__(self, worker):
        self.worker = worker
        self.seen = set()
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            self.seen = self.seen | set(util.descendants(self.worker))
            time.sleep(0.005)

    def wait_for(self, n, timeout):
        deadline = time.monotonic() + util.scaled(timeout)
        while len(self.live()) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return len(self.live())

    def live(self):
        return [p for p in list(self.seen) if alive(*p)]

    def finish(self):
        self.stop = True
        self.thread.join(5)
        return self.seen



def assert_all_gone(seen, timeout=0.0, zombies_ok=False):
    """Nothing seen is left; with zombies_ok, dead processes whose parent (a
    hostile worker that never waits) has not reaped them do not count: they
    hold no CPU or memory, only a pid of the session's own."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in seen if (alive(*p) if zombies_ok else present(*p))]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    assert not left, "processes of the session still there: %s" % [
        (p, util.proc_stat(p[0]), util.proc_cmdline(p[0])) for p in left]


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize("ending", ["result", "error", "timeout", "interrupt", "killed"])
def test_processes_end_with_the_run(daemons, ending):
    d = daemons.start("pool=0")
    s = d.clone()
    assert s.value("kept <- 1") == "1"
    worker = only_worker(d)
    code = {
        "result": SPAWN + "Sys.sleep(0.6); 'done'",
        "error": SPAWN + "Sys.sleep(0.6); stop('boom')",
        "timeout": SPAWN + "Sys.sleep(60)",
        "interrupt": SPAWN + "Sys.sleep(60)",
        "killed": SPAWN + "repeat tryCatch(Sys.sleep(60), interrupt = function(e) NULL)",
    }[ending]
    if ending in ("timeout", "killed"):
        s.write("timeout", "2")
    sampler = Sampler(worker)
    s.submit(code)
    # The run started its processes: two children spinning, and a
    # grandchild whose parent exits (an orphan, adopted by the worker).
    assert sampler.wait_for(4, 10) >= 3, sampler.seen
    if ending == "interrupt":
        s.write("ctl", "interrupt")
    r = s.result()
    seen = sampler.finish()
    assert len(seen) >= 4, seen
    status = {"result": "ok", "error": "error", "timeout": "timeout", "interrupt": "error", "killed": "killed"}
    assert r["status"] == status[ending], r
    # Nothing the run started is left, not even a zombie.
    assert_all_gone(seen)
    if ending == "killed":
        assert not util.proc_stat(worker) or util.proc_stat(worker)[0] == "Z"
        worker = only_worker(d)
    else:
        assert alive(worker, util.proc_stat(worker)[2])
        assert s.value("kept") == "1"
    assert util.descendants(worker) == []
    # The session's next run can start processes again.
    assert s.value("j <- parallel::mcparallel(21 * 2); parallel::mccollect(j)[[1]]") == "42"
    assert util.descendants(worker) == []


@pytest.mark.timeout_s(60)
def test_deadline_reaches_processes_of_a_worker_deaf_to_interrupts(daemons, hostile_dir):
    # grace=30: the worker outlives its deadline by far; its children must not.
    d = daemons.start("pool=0", "grace=30", "r_libs=%s" % hostile_dir)
    s = d.clone()
    assert s.value("1") == "1"
    worker = only_worker(d)
    s.write("timeout", "2")
    sampler = Sampler(worker)
    t0 = time.monotonic()
    s.submit("dyn.load('%s'); .C('fork_and_hang', pid = 0L)" % (hostile_dir / "hostile.so"))
    assert sampler.wait_for(1, 10) == 1, sampler.seen
    # Killed at the deadline (2 s), long before the worker is (32 s).
    assert_all_gone(sampler.seen, timeout=2 + util.scaled(3), zombies_ok=True)
    assert time.monotonic() - t0 < 2 + util.scaled(3) + 1
    assert alive(worker, util.proc_stat(worker)[2]), "the worker went before its grace period ended"
    assert s.status() == "running"
    sampler.finish()
    s.close()


@pytest.mark.timeout_s(60)
def test_daemon_kills_what_a_faked_run_end_left(daemons, hostile_dir):
    # Native code forks a child and then ends the run itself with a result
    # frame of its own: the worker's clean-up never runs, the daemon's does.
    d = daemons.start("pool=0", "r_libs=%s" % hostile_dir)
    s = d.clone()
    assert s.value("1") == "1"
    seq = s.result()["seq"] + 1
    worker = only_worker(d)
    worker_start = util.proc_stat(worker)[2]
    sampler = Sampler(worker)
    s.submit("dyn.load('%s'); .C('fork_and_fake_result', %dL, pid = 0L); .C('block_forever')"
             % (hostile_dir / "hostile.so", seq))
    r = s.result()
    assert r["status"] == "ok" and r["value"] == "faked", r
    seen = sampler.finish()
    assert seen, "the child was never seen"
    assert_all_gone(seen, timeout=1.0, zombies_ok=True)
    # A process that runs once its run has ended can only come from hostile
    # native code in the worker (the worker kills its run's processes before
    # a result it sends itself): the idle watch replaces such a worker, its
    # main thread blocked for ever here (sessions/monitor.c, idle_watch), and
    # the session goes on with a fresh one that says so.
    util.wait_for(lambda: not alive(worker, worker_start), 10, "the hostile worker replaced")
    r = s.result("1")
    assert r["status"] == "ok" and "processes ran between runs" in r.get("notice", ""), r
    assert "worker_replaced" in s.read("log")
    s.close()
