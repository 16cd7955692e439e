"""A session's memory and CPU limits hold for the session as a whole, not
per process, in root and unprivileged mode alike (docs/security.md,
"Session-wide limits"), and the CPU limit is the same for every run however
often it was hit (the prlimit() EPERM bug).

Sizes are moderate (the machine is shared): a 320 MiB limit against
children trying to hold 150 MiB each.  From the outside: the Pss summed over
the worker and its descendants, sampled while the run goes on; the CPU of
the worker and everything it reaped; the host's available memory."""
import json
import os
import re
import threading
import time

import pytest

import util
from jailtools import has_cgroup, only_worker

MIB = 1 << 20
MEMORY_LIMIT = 320 * MIB
# Without a cgroup the daemon polls: docs/security.md gives the window
# (what the processes can allocate between two looks, copy-on-write copies
# that its cheap estimate misses until the exact count).  Measured 435-463
# MiB for six children of 150 MiB against 320 MiB on this machine; the
# unchecked total would be about 950 MiB.
POLLED_WINDOW = 0.75
SPIN = "t <- proc.time(); while (sum((proc.time() - t)[1:2]) < %g) {}; 'done'"



def tree(pid):
    return [pid] + [p for p, _ in util.descendants(pid)]


def tree_pss_mib(pid):
    total = 0
    for p in tree(pid):
        try:
            total += util.pss_kib(p)
        except OSError:
            pass
    return total / 1024


def worker_cpu(pid):
    """utime + stime + cutime + cstime of the worker: its own CPU and that of
    every process it reaped (it reaps what the run started)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def mem_available_mib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0



def limited_session(daemons, limits):
    """A daemon with pool=0 and one session of it whose limits file holds
    limits (a dict, written as JSON): (daemon, session)."""
    d = daemons.start("pool=0")
    s = d.clone()
    s.write("limits", json.dumps(limits))
    return d, s


@pytest.mark.timeout_s(90)
def test_memory_limit_holds_for_the_session(daemons):
    d, s = limited_session(daemons, {"memory": MEMORY_LIMIT})
    assert s.value("kept <- 'yes'") == "yes"
    worker = only_worker(d)
    available = mem_available_mib()
    peak = [0.0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_pss_mib(worker))
            time.sleep(0.01)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.monotonic()
    # Each child alone is within the limit (RLIMIT_AS binds each process);
    # six of them hold three times the limit.
    r = s.result("jobs <- lapply(1:6, function(i) parallel::mcparallel({ y <- numeric(150 * 2^17); "
                 "Sys.sleep(30); length(y) })); Sys.sleep(30); 'not stopped'")
    elapsed = time.monotonic() - t0
    done.set()
    th.join(5)
    assert r["limit"] == "memory", r
    assert re.search(r"Memory limit of 320 MiB reached by the session's (\d+ )?processes together", r["error"]), r
    assert elapsed < util.scaled(15), elapsed
    if has_cgroup(d):
        # The kernel holds the whole cgroup at the limit; the OOM killer
        # chose a child (or the worker: then the run was killed).
        assert r["status"] in ("error", "killed"), r
        # Pss also gives the worker its share of the pages it still shares
        # with the zygote (libR, R's heap at the clone), which the kernel
        # charges to the zygote's cgroup: allow for that.
        assert peak[0] <= MEMORY_LIMIT / MIB + 64, peak[0]
    else:
        assert r["status"] == "error", r
        assert peak[0] <= MEMORY_LIMIT / MIB * (1 + POLLED_WINDOW), peak[0]
    # The host is fine (other work shares this machine: no exact delta).
    assert mem_available_mib() > min(2048, available / 2), (available, mem_available_mib())
    if r["status"] == "error":
        # Stopped like a timeout: the children are gone, R kept its state.
        assert s.value("kept") == "yes"
        assert util.descendants(worker) == []


@pytest.mark.timeout_s(90)
def test_cpu_limit_holds_for_the_session(daemons):
    d, s = limited_session(daemons, {"cpu": 2})
    assert s.value("kept <- 'yes'") == "yes"
    worker = only_worker(d)
    before = worker_cpu(worker)
    t0 = time.monotonic()
    r = s.result("for (i in 1:4) parallel::mcparallel(repeat {}); Sys.sleep(60)")
    elapsed = time.monotonic() - t0
    used = worker_cpu(worker) - before
    assert r["status"] == "error" and r["limit"] == "cpu", r
    assert "CPU time limit of 2 s reached by the session's" in r["error"], r
    # About 2 s of CPU for the session, not 2 s for each of its 5 processes.
    assert 1.9 <= used < 3.5, used
    assert elapsed < util.scaled(10), elapsed
    assert s.value("kept") == "yes"
    assert util.descendants(worker) == []


@pytest.mark.timeout_s(120)
def test_cpu_limit_is_the_same_for_every_run(daemons):
    # Before: after a hit, the next runs were stopped after about 1 s (the
    # kernel raises the soft limit by 1 s at each SIGXCPU and a prlimit()
    # that raised the hard limit failed with EPERM), then the worker was
    # killed once the session's CPU reached the first run's hard limit.
    d, s = limited_session(daemons, {"cpu": 2})
    worker = only_worker(d)
    for _ in range(3):
        t0 = time.monotonic()
        before = worker_cpu(worker)
        r = s.result("repeat {}")
        assert r["status"] == "error" and r["limit"] == "cpu", r
        assert 1.9 <= worker_cpu(worker) - before < 3.2, worker_cpu(worker) - before
        assert time.monotonic() - t0 > 1.8
    for _ in range(3):
        r = s.result(SPIN % 1.2)
        assert r["status"] == "ok", r
    assert only_worker(d) == worker


@pytest.mark.timeout_s(120)
def test_long_session_passes_the_first_runs_hard_limit(daemons):
    d, s = limited_session(daemons, {"cpu": 2})
    worker = only_worker(d)
    # 8 runs of 1 s: the session's CPU passes what was the first run's hard
    # limit (2 s + grace + 1) and every run is still allowed its 2 s.
    for _ in range(8):
        r = s.result(SPIN % 1.0)
        assert r["status"] == "ok", r
    assert worker_cpu(worker) > 7.5
    assert only_worker(d) == worker


@pytest.mark.timeout_s(60)
def test_timeouts_count_a_timeout_that_ended_in_a_kill(daemons):
    d = daemons.start("pool=0", "grace=1")
    s = d.clone()
    s.write("timeout", "1")
    before = d.json("stats")
    r = s.result("repeat tryCatch(Sys.sleep(60), interrupt = function(e) NULL)")
    assert r["status"] == "killed" and "Timed out" in r["error"], r
    after = d.json("stats")
    assert after["timeouts"] == before["timeouts"] + 1, (before, after)
    assert after["killed"] == before["killed"] + 1, (before, after)
    r = s.result("Sys.sleep(5)")
    assert r["status"] == "timeout", r
    assert d.json("stats")["timeouts"] == before["timeouts"] + 2
