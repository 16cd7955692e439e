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
import subprocess
import time
from pathlib import Path

import pytest

import harness
import util
from jailtools import value

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


def start(daemons, native_dir, *opts, **kw):
    d = daemons.start("r_libs=%s" % native_dir, *opts, **kw)
    d.so = str(native_dir / "round7.so")
    return d


def r7(s, d, fn, *args):
    """round7.c's fn through .C: its integer arguments after the call."""
    return value(s, "if (!is.loaded('%s')) dyn.load('%s'); unlist(.C('%s', %s))"
                 % (fn, d.so, fn, ", ".join("%dL" % a for a in args)))


def host_status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split()[1]
    return None


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
    assert host_status(pid, "Seccomp") == "2" and host_status(pid, "Seccomp_filters") == "3", what
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
    assert host_status(pid, "Seccomp_filters") == "3", what
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
