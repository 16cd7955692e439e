"""Clean shutdown: SIGTERM, SIGINT, fusermount3 -u; SIGKILL of the daemon
leaves no orphans and a stale mount point that the next start handles."""
import os
import signal
import time

import pytest

import util


def busy_daemon(daemons, **kw):
    """A daemon with a pool, an idle session and one in a long run."""
    d = daemons.start("pool=2", **kw)
    idle = d.clone()
    assert idle.run("1+1") == "2\n"
    busy = d.clone()
    busy.submit("Sys.sleep(30)")
    assert busy.status() == "running"
    workers = util.session_worker_pids(d.pid)
    assert len(workers) >= 2, workers
    return d


@pytest.mark.timeout_s(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly(daemons, sig):
    d = busy_daemon(daemons)
    snap = d.snapshot()
    os.kill(d.pid, sig)
    rc = d.wait_exit(10)
    assert rc is not None, "daemon did not exit within 10 s of %s" % sig.name
    assert rc == 0, rc
    assert not util.is_fuse_mounted(d.mnt)
    deadline = time.monotonic() + util.scaled(3)
    while util.leftover_workers(snap) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not util.leftover_workers(snap)
    # the fixture's stop() checks the rest (stderr, nothing left)


@pytest.mark.timeout_s(60)
def test_fusermount_unmounts_cleanly(daemons):
    d = busy_daemon(daemons)
    problems = d.stop()
    assert not problems, problems
    assert d.proc.returncode == 0
    assert not util.is_fuse_mounted(d.mnt)


@pytest.mark.timeout_s(90)
def test_sigkill_leaves_no_orphans_and_restart_works(daemons):
    d = busy_daemon(daemons)
    snap = d.snapshot()
    assert any(util.is_worker(p) for p, _ in snap)
    os.kill(d.pid, signal.SIGKILL)
    assert d.wait_exit(5) == -signal.SIGKILL
    deadline = time.monotonic() + util.scaled(2)
    left = util.leftover_workers(snap)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = util.leftover_workers(snap)
    assert not left, "orphaned workers: %s" % left
    # the mount point is stale now
    assert util.is_fuse_mounted(d.mnt)
    try:
        os.listdir(d.mnt)
        stale = False
    except OSError:
        stale = True
    assert stale
    d.stopped = True
    d.forget()
    # a new daemon on the same mount point, at once (as a supervisor would;
    # within the attribute timeout, stat() of the stale root still succeeds)
    d2 = util.Daemon(d.workdir, ["pool=0"], name=d.mnt.name)
    daemons.started.append(d2)
    d2.start()
    s = d2.clone()
    assert s.run("1+1") == "2\n"
    problems = d2.stop()
    assert not problems, problems
    assert not util.is_fuse_mounted(d.mnt)
