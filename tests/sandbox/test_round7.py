"""Round 7 of attack (docs/security.md, "Round 7"): the seccomp split (two
programs loaded when the jail is built, the lock at the attach), the pool's
warm frame and timers, the R client's run in C.  Native code of the session
(tests/sandbox/round7.c, dyn.load()ed from -o r_libs) is the attacker.  Each
test asserts from inside (the errno, what the session sees) and outside (the
worker's programs in its /proc/PID/status, the host's kernel log, the
daemon's processes).  Run it with the ASan daemon too
(SECURERFS_BUILD=build-asan): the daemon's stop fails the test on any
sanitizer report."""
import errno
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import conftest
import harness
import util
from jailtools import STALL_BOUND, answers, value

HERE = Path(__file__).resolve().parent
MIB = 1 << 20

# seccomp(2)'s operations (linux/seccomp.h) as round7.c's r7_seccomp makes
# them, then prctl's.
SET_FILTER, SET_FILTER_TSYNC, SET_FILTER_LISTENER, SET_STRICT, GET_ACTION_AVAIL, GET_NOTIF_SIZES = range(6)
PRCTL_FILTER, PRCTL_LOG_FILTER, PRCTL_STRICT, PRCTL_GET = range(6, 10)


@pytest.fixture(scope="module")
def native_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("round7")
    harness.build_r_lib(d, HERE / "round3.c", ["-pthread"])  # socket_hog
    return harness.build_r_lib(d, HERE / "round7.c")


class Stopper:
    """SIGSTOP processes; cont_all() continues every one (the fixture's
    clean-up calls it whatever happens)."""

    def __init__(self):
        self.pids = []
        self.lock = threading.Lock()

    def __call__(self, pid):
        with self.lock:
            self.pids.append(pid)
        os.kill(pid, signal.SIGSTOP)

    def cont_all(self):
        with self.lock:
            pids, self.pids = list(self.pids), []
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


def start(daemons, native_dir, *opts, **kw):
    d = daemons.start("r_libs=%s" % native_dir, *opts, **kw)
    d.so = str(native_dir / "round7.so")
    return d


def r7(s, d, fn, *args):
    """round7.c's fn through .C: its integer arguments after the call."""
    return value(s, "if (!is.loaded('%s')) dyn.load('%s'); unlist(.C('%s', %s))"
                 % (fn, d.so, fn, ", ".join("%dL" % a for a in args)))


def worker_pid(s, d):
    """The host pid of s's worker: the session worker of d in the pid
    namespace the session reads for itself (nsfs inode numbers are the
    host's)."""
    ns = value(s, "Sys.readlink('/proc/self/ns/pid')")[0]
    found = []
    for p in util.session_worker_pids(d.pid):
        try:
            if os.readlink("/proc/%d/ns/pid" % p) == ns:
                found.append(p)
        except OSError:
            pass
    assert len(found) == 1, (ns, found)
    return found[0]


def kernel_log():
    """The host's kernel log (dmesg), or None when this user may not read
    it (kernel.dmesg_restrict)."""
    r = subprocess.run(["dmesg"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def log_records(log, uid):
    """Audit records of SECCOMP_RET_LOG (code=0x7ffc0000) for processes of
    host uid uid."""
    return [l for l in (log or "").splitlines()
            if "type=1326" in l and "code=0x7ffc0000" in l and re.search(r"\buid=%d\b" % uid, l)]


def check_locked(s, d, what):
    """From inside: three programs, nothing can be added to them by either
    interface, the mount API refused; from outside: the worker still has
    exactly its three, and no SECCOMP_RET_LOG record of the session's uid
    reached the host's kernel log."""
    pid = worker_pid(s, d)
    uid = os.stat("/proc/%d" % pid).st_uid
    log_before = log_records(kernel_log(), uid)

    assert r7(s, d, "r7_filters", 0, 0) == [3, 0], what
    assert util.proc_status(pid, "Seccomp") == "2" and util.proc_status(pid, "Seccomp_filters") == "3", what
    for how in (SET_FILTER, SET_FILTER_TSYNC, SET_FILTER_LISTENER, SET_STRICT, GET_ACTION_AVAIL, GET_NOTIF_SIZES):
        # The lock answers seccomp(2) as the allowlist answers a call it
        # does not know: ENOSYS, whatever the operation.
        assert r7(s, d, "r7_seccomp", how, 0, 0, 0)[1:] == [-1, errno.ENOSYS, 3], (what, how)
    # prctl's way to the same kernel code: refused too, and the child that
    # tried still has the worker's three programs.  Outside first: a
    # SECCOMP_RET_LOG program that took would have put the child's next
    # system calls in the host's kernel log.
    got = {how: r7(s, d, "r7_seccomp", how, 0, 0, 0)[1:] for how in (PRCTL_FILTER, PRCTL_LOG_FILTER)}
    if log_before is not None:
        assert log_records(kernel_log(), uid) == log_before, (what, got)
    for how in (PRCTL_FILTER, PRCTL_LOG_FILTER):
        assert got[how] == [-1, errno.EPERM, 3], (what, how)
    # Strict mode on top of a filter: the kernel's own EINVAL comes first
    # or the rule's EPERM; either way the mode is not taken.
    got = r7(s, d, "r7_seccomp", PRCTL_STRICT, 0, 0, 0)[1:]
    assert got[0] == -1 and got[1] in (errno.EINVAL, errno.EPERM) and got[2] == 3, (what, got)
    # The query stays (2: filter mode).
    assert r7(s, d, "r7_seccomp", PRCTL_GET, 0, 0, 0)[1:] == [2, 0, 3], what
    # The attach's two calls: EPERM after it.
    assert r7(s, d, "r7_mount_api", 0, 0, 0)[1:] == [-1, errno.EPERM], what
    assert r7(s, d, "r7_mount_api", 1, 0, 0)[1:] == [-1, errno.EPERM], what
    assert s.value("1 + 1") == "2"
    # Outside: the same three on the worker, nothing logged for the
    # session's uid.
    assert util.proc_status(pid, "Seccomp_filters") == "3", what
    if log_before is not None:
        assert log_records(kernel_log(), uid) == log_before, what


# ---- 1. prctl(PR_SET_SECCOMP) added programs after the lock -------------------------


@pytest.mark.parametrize("opts", [("pool=0",), ("pool=1",), ("pool=1", "allow_exec")],
                         ids=["fresh", "pooled-warmed", "allow_exec"])
def test_no_program_is_added_after_the_lock(daemons, native_dir, opts):
    """Before: prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER) installed a fourth
    program after the lock (which answers only seccomp(2) ENOSYS); one
    answering SECCOMP_RET_LOG put every system call of the process in the
    host's kernel log.  Now EPERM, on every kind of worker: a fresh clone,
    a pooled one that was warmed, with -o allow_exec."""
    d = start(daemons, native_dir, *opts)
    if "pool=1" in opts:
        # Long past the 10 ms after which the pooled worker is warmed.
        time.sleep(0.3)
    with d.clone() as s:
        check_locked(s, d, opts)


def test_no_program_is_added_after_restart_restore_or_fork(daemons, native_dir):
    """The worker of ctl restart, of a restore from a snapshot and a fork's
    copy is locked the same way."""
    d = start(daemons, native_dir, "pool=1")
    with d.clone() as s:
        s.ok("x <- 1")
        s.write("ctl", "restart")
        util.wait_for(lambda: s.status() == "idle", util.scaled(20), "the restart")
        check_locked(s, d, "restart")
        s.ok("x <- 2")
        snap = util.read_bytes(s.p("snapshot"))
        with d.clone() as t:
            util.write_bytes(t.p("snapshot"), snap)
            assert t.value("x") == "2"
            check_locked(t, d, "restore")
        name = s.read("fork").strip()
        with d.session(name) as f:
            assert f.value("x") == "2"
            check_locked(f, d, "fork")


# ---- 2. prctl(PR_SET_DUMPABLE, 0) hid the session's processes from the monitor -----


@pytest.mark.timeout_s(90)
def test_processes_cannot_make_themselves_undumpable(daemons, native_dir):
    """Before: prctl(PR_SET_DUMPABLE, 0) made the worker's /proc/PID/fd and
    smaps_rollup root's, closed to an unprivileged daemon (no
    CAP_SYS_PTRACE): its monitor then counted none of the socket and pipe
    buffers of the worker and of the children it forks (they inherit the
    flag), the one bound on them without a memory cgroup ("Round 3",
    finding 4) -- 13 processes queued 3 x the memory limit and the run
    ended "ok".  Now EPERM: inside, the call fails and the processes stay
    dumpable; outside, the daemon's uid still lists the worker's fd
    directory, and the run ends on the memory limit as before."""
    d = start(daemons, native_dir, "pool=0")
    with d.clone() as s:
        pid = worker_pid(s, d)
        assert r7(s, d, "r7_set_dumpable", 0, 0, 0)[1:] == [-1, errno.EPERM]
        assert os.listdir("/proc/%d/fd" % pid)  # outside: still readable by the daemon's uid
        assert value(s, "readLines('/proc/self/status')[1]")  # the session goes on
        limit = 192 * MIB
        s.write("limits", json.dumps({"memory": limit}))
        r = s.result("dyn.load('%s'); .C('socket_hog', as.double(%d), 13L, 5000L, queued = 0)$queued"
                     % (native_dir / "round3.so", 3 * limit))
        assert r["status"] != "ok" and r.get("limit") == "memory", r
        if os.getuid() != 0:
            assert "socket and pipe buffers" in r["error"], r
        assert s.value("1+1") == "2"


# ---- the warm frame: nothing of it reaches the session ------------------------------

FINGERPRINT = ("list(last = if (exists('.Last.value', baseenv())) deparse(get('.Last.value', baseenv())) else NA, "
               "warn = length(warnings()), seed = exists('.Random.seed', globalenv()), "
               "vars = ls(globalenv(), all.names = TRUE), opts = sort(names(options())), "
               "devs = length(dev.list()), tmp = list.files(tempdir(), all.files = TRUE, no.. = TRUE), "
               "cons = length(showConnections(all = TRUE)))")


def first_run(d):
    with d.clone() as s:
        r = s.result(FINGERPRINT)
        assert r["status"] == "ok", r
        return r["seq"], r.get("console"), r["output"], r["value"]


def test_warm_leaves_nothing_for_the_session(daemons, native_dir):
    """A session's first run on a pooled worker that was warmed (1+1 for
    itself) sees what one on a fresh clone sees: no .Last.value, warning,
    RNG state, variable, option, device, temporary file or connection of
    the warm, and the same run number and console."""
    fresh = first_run(start(daemons, native_dir, "pool=0"))
    d = start(daemons, native_dir, "pool=2")
    time.sleep(0.3)
    assert first_run(d) == fresh
    time.sleep(0.3)
    assert first_run(d) == fresh


# ---- the pool's timers: storms, stalls, the stop with timers pending ----------------

POOL_EXPECT = conftest.EXPECTED_ERRORS + (r"pool worker could not start", r"did not", r"could not hand",
                                          r"could not send")


def mkdir_bounded(d, name, timeout=STALL_BOUND):
    """mkdir sessions/name: (None or the errno, seconds); the daemon is
    killed (failing the test) if it takes longer than timeout."""
    t0 = time.monotonic()

    def body():
        try:
            os.mkdir(str(d.path("sessions", name)))
            return None
        except OSError as e:
            return e.errno

    return util.bounded(body, util.scaled(timeout), d.kill), time.monotonic() - t0


def pooled(d):
    """The pooled workers (two programs: not attached yet)."""
    return [p for p in util.session_worker_pids(d.pid) if util.proc_status(p, "Seccomp_filters") == "2"]


@pytest.mark.timeout_s(120)
def test_storm_then_stop_with_timers_pending(daemons, native_dir):
    """mkdir and rmdir as fast as they come, past max_sessions, with the
    pool refilling and warming; then the unmount at once, with a refill,
    a warm and a back-off due (ASan: the stop frees every timer and
    worker; any report fails the test).  Every session made is fresh: a
    new pid namespace each, never one seen before."""
    d = start(daemons, native_dir, "pool=2", "max_sessions=3", expect=POOL_EXPECT)
    seen = set()
    for i in range(12):
        names = []
        for j in range(4):
            err, took = mkdir_bounded(d, "s%d-%d" % (i, j))
            assert took < util.scaled(STALL_BOUND)
            if err is None:
                names.append("s%d-%d" % (i, j))
            else:
                assert j == 3 and err in (errno.EAGAIN, errno.ENOSPC, errno.EMFILE, errno.EUSERS), err
        for n in names[:1]:
            # Its worker as the host knows it: pid and start time, which no
            # other process of the machine had (a namespace's inode number
            # is reused once the namespace is gone, a pid with another start
            # time is another process).
            pid = worker_pid(d.session(n), d)
            me = (pid, util.proc_stat(pid)[2])
            assert me not in seen, "session %s got a worker another session had" % n
            seen.add(me)
        for n in names:
            os.rmdir(str(d.path("sessions", n)))
        if i % 3 == 2:
            time.sleep(0.015)  # a warm comes due for the pool's workers
    assert os.listdir(str(d.path("sessions"))) == []
    # The stop now, with timers armed: stop() checks the exit, that no
    # worker is left, and (ASan) any report.
    problems = d.stop()
    assert not problems, problems


@pytest.mark.timeout_s(120)
def test_pooled_workers_stalled_or_killed_while_taken(daemons, native_dir, stopped):
    """Every pooled worker stopped (SIGSTOP), warmed or not: a session that
    takes one misses the attach deadline; the mkdir gets an answer within
    the bound, never a hang, and `stats` never waits.  Then the zygote is
    stopped with the refill due: the same.  Killed pooled workers are
    replaced.  Afterwards a new session answers."""
    d = start(daemons, native_dir, "pool=2", expect=POOL_EXPECT)
    util.wait_for(lambda: len(pooled(d)) == 2, util.scaled(10), "two pooled workers")
    time.sleep(0.1)  # warmed
    for p in pooled(d):
        stopped(p)
    err, took = mkdir_bounded(d, "a")
    assert took < util.scaled(STALL_BOUND), took
    t0 = time.monotonic()
    d.read("stats")
    assert time.monotonic() - t0 < util.scaled(1)
    if err is None:
        r = util.bounded(lambda: d.session("a").result("1+1"), util.scaled(STALL_BOUND), d.kill)
        assert r["status"] == "ok" and r["value"] == 2, r
    zygote = util.helper_pid(d.pid, util.ZYGOTE_COMM)
    stopped(zygote)
    for p in pooled(d):
        os.kill(p, signal.SIGKILL)
    err, took = mkdir_bounded(d, "b")
    assert took < util.scaled(STALL_BOUND), took
    t0 = time.monotonic()
    d.read("stats")
    assert time.monotonic() - t0 < util.scaled(1)
    stopped.cont_all()
    util.wait_for(lambda: len(pooled(d)) == 2, util.scaled(20), "the pool refilled")
    answers(d, "after the stalls")
    # The zygote killed with a refill due.
    for p in pooled(d):
        os.kill(p, signal.SIGKILL)
    os.kill(util.helper_pid(d.pid, util.ZYGOTE_COMM), signal.SIGKILL)
    # The first clone right after this is a session: its worker may be one
    # of the killed ones whose death is not seen yet, or be killed with the
    # zygote while it starts, or lose its socket while the workspace is
    # handed over; each is another worker's turn, not EPERM (which, as
    # nobody, about one clone in four answered until 2026-12-02).
    util.bounded(d.clone, util.scaled(STALL_BOUND), d.kill).close()
    answers(d, "after the zygote's death")
    util.wait_for(lambda: len(pooled(d)) == 2, util.scaled(20), "the pool refilled again")
