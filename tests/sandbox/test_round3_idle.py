"""Round 3, the worker between runs (docs/security.md, "Round 3: the
daemon's loop and the worker between runs", finding 3): after each run the
daemon watches the idle worker (sessions/monitor.c, idle_watch).  A thread
the run left behind that spins, or processes it forks later, are found within
a second or two; the worker is replaced, and the reason is in the session's
log and in the next result's "notice".  Threads that only sleep (an OpenMP or
BLAS pool) are no offence: the session keeps its worker and its state.  Native code: tests/sandbox/round3.c (compiled here
as tests/sandbox/test_round3.py does)."""
import time
from pathlib import Path

import pytest

import harness
import util

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def idle_dir(tmp_path_factory):
    return harness.build_r_lib(tmp_path_factory.mktemp("round3_idle"), HERE / "round3.c", ["-pthread"])


def wait_gone(pid, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = util.proc_stat(pid)
        if not st or st[0] == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize("attack", ["spin_thread", "fork_later"])
def test_idle_worker_with_a_thread_left_is_replaced(daemons, idle_dir, attack):
    """Inside: the next run finds a fresh worker (the old state is gone) and
    its result says why.  Outside: the old worker is gone within a few
    seconds (so it burned no more than that), nothing it forked is left, the session's log names the reason, a witness keeps its state."""
    d = daemons.start("pool=0", "r_libs=%s" % idle_dir)
    so = str(idle_dir / "round3.so")
    w = d.clone()
    assert w.value("witness_var <- 41") == "41"
    witness = set(util.session_worker_pids(d.pid))
    s = d.clone()
    assert s.value("kept <- 7") == "7"
    old = list(set(util.session_worker_pids(d.pid)) - witness)
    assert len(old) == 1, old
    old = old[0]
    call = (".C('spin_thread', ret = 0L)$ret" if attack == "spin_thread"
            else ".C('fork_later', 3L, 32L, 1L, ret = 0L)$ret")
    r = s.result("dyn.load('%s'); %s" % (so, call))
    assert r["status"] == "ok" and r["value"] == 0, r
    t0 = time.monotonic()
    assert wait_gone(old, util.scaled(10)), "the idle worker with a thread left is still there"
    gone_after = time.monotonic() - t0
    # The children fork_later would start (1 s after the run) never came,
    # or were killed with the worker's pid namespace.
    assert not [p for p, _ in util.descendants(old)]
    r = s.result("exists('kept')")
    assert r["status"] == "ok" and r["value"] is False, r
    assert "notice" in r and "threads" in r["notice"] and "replaced" in r["notice"], r
    log = s.read("log")
    assert "worker_replaced" in log and "threads" in log, log
    assert w.value("witness_var") == "41"
    assert witness <= set(util.session_worker_pids(d.pid)), "the witness's worker was replaced too"
    assert gone_after < util.scaled(5), gone_after
    # Later results carry no notice: it was for that run only.
    assert "notice" not in s.result("1")


@pytest.mark.timeout_s(60)
def test_idle_worker_without_threads_is_kept(daemons, idle_dir):
    """The watch is not a false alarm: a session that idles after ordinary
    runs (a child process of its own that the run's end killed included)
    keeps its worker and its state, and its results carry no notice."""
    d = daemons.start("pool=0")
    s = d.clone()
    assert s.value("kept <- 7; system('sleep 30 &'); 1") == "1"
    pid = s.worker_pids()
    time.sleep(2)
    r = s.result("kept")
    assert r["status"] == "ok" and r["value"] == 7 and "notice" not in r, r
    assert s.worker_pids() == pid
    assert "worker_replaced" not in s.read("log")


@pytest.mark.timeout_s(60)
def test_idle_worker_with_a_sleeping_thread_pool_is_kept(daemons, idle_dir):
    """Threads that sleep between runs, as an OpenMP or BLAS pool's do
    (data.table, a threaded BLAS), cost nothing: inside, the session keeps
    its state and its results carry no notice; outside, the same worker
    still runs, with its threads."""
    d = daemons.start("pool=0", "r_libs=%s" % idle_dir)
    s = d.clone()
    so = str(idle_dir / "round3.so")
    r = s.result("kept <- 7; dyn.load('%s'); .C('sleeping_pool', 4L, ret = 1L)$ret" % so)
    assert r["status"] == "ok" and r["value"] == 0, r
    pid = s.worker_pids()
    time.sleep(util.scaled(3))
    r = s.result("kept")
    assert r["status"] == "ok" and r["value"] == 7 and "notice" not in r, r
    assert s.worker_pids() == pid
    assert "worker_replaced" not in s.read("log")
