"""Scale (issues 15 and 17): one session's big workspace costs the others
nothing, thousands of sessions come and go leaving nothing behind, and
max_sessions is checked against the machine at start.

These are tests, not benchmarks: the one bound on time is the witness's
p90 beside a 60,000-file neighbour, generous (5 ms times
SECURERFS_TIME_SCALE, plus twice its own idle p90 of the same run on a
loaded machine) against its idle figure of about 0.5 ms.
"""
import os
import resource
import threading
import time

import pytest

import util

N_FILES = 60000


def round_trip_ms(s, code="1+1", expect="2\n"):
    t0 = time.perf_counter()
    s.submit(code)
    out = s.read("output")
    took = (time.perf_counter() - t0) * 1000
    assert out == expect, out
    return took


def p90(xs):
    xs = sorted(xs)
    return xs[int(len(xs) * 0.9)]


@pytest.mark.timeout_s(240)
def test_witness_beside_a_60000_file_session(daemons):
    d = daemons.start("pool=2")
    big, witness = d.clone(), d.clone()
    # 60,000 empty files, within the tmpfs's inode cap.
    assert big.value('invisible(file.create(sprintf("f%%05d", 1:%d))); length(dir())' % N_FILES) \
        == "%d" % N_FILES
    # files still names what a run created, however big the workspace.
    r = big.result('file.create("made_by_this_run"); 1')
    assert r["status"] == "ok" and r["files"] == ["made_by_this_run"], r
    assert "files_truncated" not in r
    r = big.result("1")
    assert r["files"] == [], r
    # A host-side write between runs: the next run does not report it.
    (big.dir / "files" / "from_the_host").write_text("x")
    r = big.result('writeLines("y", "f00001"); 1')
    assert r["files"] == ["f00001"], r

    idle = [round_trip_ms(witness) for _ in range(100)]
    stop = threading.Event()
    loops = []
    errors = []

    def neighbour():
        try:
            while not stop.is_set():
                r = big.result("1")
                assert r["status"] == "ok", r
                loops.append(1)
        except Exception as e:  # reported by the main thread
            errors.append(e)

    th = threading.Thread(target=neighbour)
    th.start()
    try:
        # The neighbour is looping runs (each one's after-scan walks 60,000
        # entries) while the witness measures.
        deadline = time.monotonic() + util.scaled(30)
        while not loops and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = []
        while len(busy) < 300 or (len(loops) < 10 and time.monotonic() < deadline + util.scaled(60)):
            busy.append(round_trip_ms(witness))
    finally:
        stop.set()
        th.join(util.scaled(60))
    assert not errors, errors
    assert len(loops) >= 10, "the neighbour's runs did not loop: %d" % len(loops)
    # 5 ms (times the scale) on a quiet machine; on a loaded one the
    # witness's own idle p90 of the same run is added twice, so that only
    # what the neighbour adds counts (main: p90 261 ms against an idle 6).
    bound = 5.0 * util.SCALE + 2 * p90(idle)
    assert p90(busy) < bound, "witness p90 %.2f ms beside the big session (idle p90 %.2f ms, %d neighbour runs)" % (
        p90(busy), p90(idle), len(loops))
    # The huge directory through files/: every name, once.
    names = os.listdir(big.dir / "files")
    assert len(names) == N_FILES + 2 and len(set(names)) == len(names)
    # Looked up one by one (a node each, as ls -l makes), then the session
    # closed with its nodes: the witness goes on.
    for name in sorted(names)[:5000]:
        assert (big.dir / "files" / name).stat().st_size in (0, 1, 2)
    stats = d.json("stats")
    assert stats["workspace_bytes"] >= 0 and stats["running"] == 0
    big.close()
    assert round_trip_ms(witness) < 1000 * util.SCALE
    assert d.json("stats")["sessions"] == 1


@pytest.mark.timeout_s(120)
def test_deep_tree_and_long_names_are_bounded(daemons):
    d = daemons.start("pool=2")
    s, witness = d.clone(), d.clone()
    # 2,000 levels: what lies below the scan's depth is not listed, and
    # result.json says so; the daemon answers the witness meanwhile.
    r = s.result('for (i in 1:2000) { dir.create("d"); setwd("d") }; file.create("deep"); setwd("/work"); 1')
    assert r["status"] == "ok", r
    assert r.get("files_truncated") is True and r["files"] == [], r
    assert round_trip_ms(witness) < 1000
    # Long names are listed whole (255 bytes, the kernel's NAME_MAX).
    long = "n" * 255
    r = s.result('file.create("%s"); 1' % long)
    assert long in r["files"], r
    assert long in os.listdir(s.dir / "files")


def churn(d, n, fds0):
    """n sessions made, found, run in and removed; their workers reaped and
    the daemon's descriptors back within 8 of fds0."""
    sessions = []
    for i in range(n):
        name = "s%d" % i
        os.mkdir(d.mnt / "sessions" / name)
        sessions.append(d.session(name))
    listed = os.listdir(d.mnt / "sessions")
    assert len(listed) == n and set(listed) == {"s%d" % i for i in range(n)}
    assert d.json("stats")["sessions"] == n
    # Each session found by name and id among thousands: a run in each.
    for i, s in enumerate(sessions):
        assert s.value("%d + 1" % i) == "%d" % (i + 1)
    assert util.fd_count(d.pid) > fds0 + n  # they did hold descriptors
    for s in sessions:
        os.rmdir(s.dir)
    assert os.listdir(d.mnt / "sessions") == []
    # Each rmdir SIGKILLs its worker and is answered at once; the kernel
    # tears 2,000 processes down in its own time, and the loop reaps each
    # (only the pool's 4 stay).  Give them a moment.
    deadline = time.monotonic() + util.scaled(120)
    while time.monotonic() < deadline and (util.fd_count(d.pid) > fds0 + 8 or
                                           len(util.session_worker_pids(d.pid)) > 4):
        time.sleep(0.2)
    assert len(util.session_worker_pids(d.pid)) <= 4
    fds1 = util.fd_count(d.pid)
    assert fds1 <= fds0 + 8, "descriptors: %d at start, %d after %d sessions came and went" % (fds0, fds1, n)


@pytest.mark.load
@pytest.mark.timeout_s(900)
def test_thousands_of_sessions_leave_nothing_behind(daemons):
    # Under ASan each worker costs several times the memory: fewer of them,
    # and a small quarantine, so that freed memory is given back and
    # counted as such (as tests/soak does).
    asan = os.environ.get("ASAN_OPTIONS")
    n = int(os.environ.get("SECURERFS_SCALE_SESSIONS", "300" if asan else "2000"))
    env = {"ASAN_OPTIONS": asan + ":quarantine_size_mb=8"} if asan else None
    d = daemons.start("pool=4", "max_sessions=%d" % (n + 16), env=env)
    # Warm up: one session made, run and removed, so that what the daemon
    # keeps for good (the pool, the helpers, the scanner) is there at start.
    w = d.clone()
    assert w.value("1") == "1"
    w.close()
    time.sleep(0.5)
    fds0, rss0 = util.fd_count(d.pid), util.rss_kib(d.pid)
    # Memory: what the sessions held is given back (the daemon trims its
    # heap a moment after the last worker went: 16 MB stayed before).  What
    # the allocator keeps depends on where its last live blocks landed in a
    # heap that grew for thousands of sessions (2.2 to 5.1 MB after 2,000
    # here, from one run to the next): up to 8 MiB after the first round
    # (24 MiB under ASan, which keeps a quarantine and its own size classes:
    # 15.5-16.4 MiB after 300 sessions, so that 16 failed one run in three),
    # and a second round of half as many sessions must not add to it beyond
    # 4 MiB (1.1-1.9 under ASan): a leak grows with every round, the
    # allocator's keep does not.
    slack = 24576 if asan else 8192
    rss = [rss0]
    for round_, count in enumerate((n, n // 2)):
        churn(d, count, fds0)
        seen = []
        try:
            util.wait_for(lambda: seen.append(util.rss_kib(d.pid)) or seen[-1] <= rss[0] + slack, 10, "RSS back")
        except AssertionError:
            raise AssertionError("RSS %d KiB, not back within %d KiB of its %d KiB (round %d)" %
                                 (seen[-1], slack, rss[0], round_ + 1))
        time.sleep(0.5)
        rss.append(util.rss_kib(d.pid))
    assert rss[2] <= rss[1] + 4096, "RSS %s KiB: at start, after %d sessions, after %d more" % (rss, n, n // 2)
    stats = d.json("stats")
    assert stats["sessions"] == 0 and stats["running"] == 0


@pytest.mark.timeout_s(60)
def test_max_sessions_beyond_the_machine_is_refused_at_start(daemons):
    # A million sessions need more descriptors, pids or memory than this
    # machine has: the daemon says which and does not mount.
    d = daemons.start("pool=0", "max_sessions=1000000", wait=False,
                      expect=[r"max_sessions"])
    d.allow_failure = True
    rc = d.proc.wait(util.scaled(15))
    assert rc != 0
    assert not util.is_fuse_mounted(d.mnt)
    err = d.stderr()
    assert "max_sessions=1000000" in err, err
    assert any(w in err for w in ("RLIMIT_NOFILE", "pid_max", "MiB")), err


@pytest.mark.timeout_s(60)
def test_descriptor_limit_raised_at_start(daemons):
    # The soft limit is raised to the hard one, so that max_sessions is not
    # held to a soft 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    d = daemons.start("pool=0")
    with open("/proc/%d/limits" % d.pid) as f:
        line = next(l for l in f if l.startswith("Max open files"))
    got_soft = line.split()[3]
    assert got_soft == (str(hard) if hard != resource.RLIM_INFINITY else "unlimited"), line


@pytest.mark.timeout_s(60)
def test_none_mode_small_and_big_workspaces(daemons):
    # none mode has no inode count: a small workspace is scanned on the
    # loop, a bigger one on the scanner thread; either way files is right.
    d = daemons.start("pool=0", "sandbox=none")
    s = d.clone()
    r = s.result('file.create("a"); 1')
    assert r["files"] == ["a"], r
    r = s.result('invisible(file.create(sprintf("g%04d", 1:500))); 1')
    assert len(r["files"]) == 100 and r.get("files_truncated") is True, r
    r = s.result('file.create("b"); 1')
    assert r["files"] == ["b"] and "files_truncated" not in r, r
    (s.dir / "files" / "from_the_host").write_text("x")
    r = s.result("1")
    assert r["files"] == [], r
