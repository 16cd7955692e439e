"""Round 10 (docs/security.md, "Round 10"): what the limits leave a session
at their edges.  Each test asserts what the session's code sees and what the
host sees from outside (the worker's /proc/PID/limits, its cgroup)."""
import json
import os
import pathlib
import subprocess
import time

import pytest

import harness
import util
from jailtools import has_cgroup, memory_cgroup, only_worker

HERE = pathlib.Path(__file__).resolve().parent
MIB = 1 << 20


def soft_address_space(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max address space"):
                return int(line.split()[3])
    raise AssertionError("no address space line")


def vm_size(pid):
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.timeout_s(120)
def test_the_smallest_memory_limit_leaves_r_working(daemons):
    """Inside: a session at the smallest memory limit the daemon takes
    (64 MiB) reads a file, allocates a few MiB, forks, and gets R's own
    "cannot allocate" error (limit `memory`, the session kept) past the
    limit.  Until 2026-12-03 RLIMIT_AS was the limit itself, below the
    address space the worker starts with (107 MiB here, most of it library
    pages it never touches): readLines() of a file crashed R (signal 11,
    the state lost), an 8 MB vector failed under 96 MiB, and a fork of such
    a session failed with EIO (its copy crashed while restoring).  Outside:
    RLIMIT_AS is the limit plus no more than the worker's address space,
    and the cgroup (root) holds the limit itself."""
    d = daemons.start("pool=0")
    s = d.clone()
    limit = 64 * MIB
    s.write("limits", json.dumps({"memory": limit}))
    assert s.value("x <- 'kept'; length(readLines('/proc/self/status')) > 10") == "TRUE"
    assert s.value("length(numeric(2^19))") == "524288"      # 4 MiB
    r = s.result("y <- numeric(64 * 2^17); 'not stopped'")   # 64 MiB
    assert r["status"] == "error" and r["limit"] == "memory", r
    assert "cannot allocate vector" in r["error"], r
    assert s.value("x") == "kept"
    pid = only_worker(d)
    soft = soft_address_space(pid)
    assert limit < soft <= limit + vm_size(pid), (soft, vm_size(pid))
    if has_cgroup(d):
        where, _, limit_file = memory_cgroup(pid)
        with open(os.path.join(where, limit_file)) as f:
            assert int(f.read()) == limit
    copy = util.Session(d, s.read("fork").strip())
    assert copy.value("x") == "kept"
    assert copy.value("length(numeric(2^19))") == "524288"
    assert json.loads(copy.read("limits"))["memory"] == limit


@pytest.fixture(scope="module")
def native_dir(tmp_path_factory):
    return harness.build_r_lib(tmp_path_factory.mktemp("round10"), HERE / "round10.c", ["-pthread"])


def pss_mib(pid):
    return util.pss_kib(pid) / 1024


@pytest.mark.timeout_s(120)
def test_memory_held_past_the_limit_between_runs_is_taken_back(daemons, native_dir):
    """Inside: native code unmaps ICU's untouched data and maps anonymous
    memory in its place, as much as the address space allows, and keeps it
    after its run.  Without a cgroup (unprivileged) nothing counted it
    between runs until 2026-12-03: the idle worker held 137-145 MiB under a
    128 MiB limit.  Now the daemon's first look after the run counts it and
    replaces the worker: the next result's notice says so.  With a cgroup
    (root) the kernel holds the limit.  Outside: the worker's PSS (or the
    cgroup's charge) within the limit afterwards.  And a session that fills
    its limit with R's own data keeps its state across those looks."""
    limit = 128 * MIB
    d = daemons.start("pool=0", "r_libs=%s" % native_dir)
    s = d.clone()
    assert s.value("dyn.load('%s'); 1" % (native_dir / "round10.so")) == "1"
    s.write("limits", json.dumps({"memory": limit}))
    s.result(".C('hold_unmapped', 4000L, got = 0L)$got")
    time.sleep(util.scaled(1.5))
    pid = only_worker(d)
    r = s.result("1+1")
    assert r["status"] == "ok", r
    if has_cgroup(d):
        where, usage, _ = memory_cgroup(pid)
        with open(os.path.join(where, usage)) as f:
            assert int(f.read()) <= limit
    else:
        assert "over the session's memory limit of 128 MiB" in (r.get("notice") or ""), r
        assert pss_mib(only_worker(d)) <= limit / MIB
    # R's own data up to near the limit is the session's to keep.
    t = d.clone()
    t.write("limits", json.dumps({"memory": limit}))
    assert t.value("x <- numeric(70 * 2^17); length(x)") == str(70 * 2 ** 17)
    time.sleep(util.scaled(1.5))
    r = t.result("length(x)")
    assert r["status"] == "ok" and r["value"] == 70 * 2 ** 17 and not r.get("notice"), r


@pytest.mark.timeout_s(120)
def test_memory_filled_by_a_thread_after_the_first_idle_look_is_taken_back(daemons, native_dir):
    """Inside: a thread of the session's native code waits a second after
    its run, past the daemon's first look at the idle worker, then maps
    anonymous memory as hold_unmapped() does.  Until 2026-12-03 only that
    first look counted the worker's memory (attack helper, round 10): the
    idle worker kept 149 MiB under a 128 MiB limit for as long as it idled,
    and short runs did not count it either.  Now every idle look counts it
    (every second at most, with a thread): the next result's notice says the
    worker was replaced.  With a cgroup (root) the kernel holds the limit.
    Outside: the worker's PSS (or the cgroup's charge) within the limit."""
    limit = 128 * MIB
    d = daemons.start("pool=0", "r_libs=%s" % native_dir)
    s = d.clone()
    assert s.value("dyn.load('%s'); 1" % (native_dir / "round10.so")) == "1"
    s.write("limits", json.dumps({"memory": limit}))
    assert s.result(".C('hold_later', 4000L, 1000L); 1")["status"] == "ok"
    time.sleep(util.scaled(4))
    pid = only_worker(d)
    r = s.result("1+1")
    assert r["status"] == "ok", r
    if has_cgroup(d):
        where, usage, _ = memory_cgroup(pid)
        with open(os.path.join(where, usage)) as f:
            assert int(f.read()) <= limit
    else:
        assert "over the session's memory limit of 128 MiB" in (r.get("notice") or ""), r
        assert pss_mib(only_worker(d)) <= limit / MIB


@pytest.mark.timeout_s(60)
def test_a_worker_cgroup_still_busy_when_its_worker_went_is_removed(daemons):
    """Outside: a host process (root's, standing in for a worker on its way
    out: one whose zygote was killed before it answered) is put in a
    session worker's memory cgroup; the session is closed, so its worker is
    reaped while the cgroup still holds that process, and rmdir finds it
    busy.  Until 2026-12-03 the directory was left until the daemon stopped
    (test_round8's storm, under CI's load: two left).  Now the daemon tries
    again every 100 ms: the cgroup is gone once the process is (killed
    through cgroup.kill on v2; on v1 it exits by itself)."""
    d = daemons.start("pool=0")
    s = d.clone()
    assert s.value("1") == "1"
    where = memory_cgroup(only_worker(d))[0]
    if not has_cgroup(d):
        # Unprivileged: no cgroup of the daemon's, so none to leave.
        assert "securerfs-%d" % d.pid not in where, where
        return
    sleeper = subprocess.Popen(["sleep", "2"])
    try:
        with open(os.path.join(where, "cgroup.procs"), "w") as f:
            f.write(str(sleeper.pid))
        s.close()
        util.wait_for(lambda: not util.session_worker_pids(d.pid), util.scaled(10), "the worker reaped")
        sleeper.wait(util.scaled(10))
        util.wait_for(lambda: not os.path.exists(where), util.scaled(5), "the busy cgroup removed")
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.timeout_s(60)
@pytest.mark.parametrize("how", ["frame_later", "exit_later"])
def test_an_idle_worker_lost_between_runs_is_told_to_the_session(daemons, native_dir, how):
    """Inside: a thread of the session's native code, between runs, writes a
    frame the worker may not send then (or ends the worker).  Until
    2026-12-03 (attack helper, round 10) the state went without a word: the
    next result had no notice, and for the protocol breach the session's log
    had no event.  Now the next result's notice and the log say it.
    Outside: the worker was replaced (its pid gone) and the daemon's log
    names the breach."""
    d = daemons.start("pool=0", "r_libs=%s" % native_dir)
    s = d.clone()
    assert s.value("dyn.load('%s'); x <- 42; .C('%s', 300L); 1" % (native_dir / "round10.so", how)) == "1"
    old = only_worker(d)
    util.wait_for(lambda: old not in util.session_worker_pids(d.pid), util.scaled(10), "the worker replaced")
    r = s.result("exists('x')")
    assert r["status"] == "ok" and r["value"] is False, r
    notice = r.get("notice") or ""
    events = [json.loads(line) for line in s.read("log").splitlines() if line.strip()]
    if how == "frame_later":
        assert "broke the protocol" in notice and "state was lost" in notice, r
        assert any(e.get("event") == "worker_replaced" and "broke the protocol" in e.get("reason", "")
                   for e in events), events
        assert "broke the protocol" in d.stderr()
    else:
        assert "the idle R worker died" in notice and "state was lost" in notice, r
        assert any(e.get("event") == "crash" for e in events), events
