"""Helpers for the identity and kernel-surface tests (test_identity.py,
test_proc_dev.py, test_syscalls.py, test_secrets.py): running R in a session
and reading the answer, calling tests/sandbox/probe.c, and looking at the
daemon's processes from the host with the kernel's own eyes (/proc/PID)."""
import ctypes
import os
import re
import time

import pytest

import util

ID_BASE = 1879048192  # the default -o id_range (common/hostids.h)
ID_COUNT = 65536
AS_ROOT = os.geteuid() == 0

_libseccomp = ctypes.CDLL("libseccomp.so.2")
_libseccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
_libc = ctypes.CDLL(None, use_errno=True)


def nr(name):
    """The x86-64 number of a system call, as libseccomp knows it."""
    n = _libseccomp.seccomp_syscall_resolve_name(name.encode())
    assert n >= 0, name
    return n


def result(s, code):
    return s.result(code)


def ok(s, code):
    r = s.result(code)
    assert r["status"] == "ok", r
    return r


def failed(s, code):
    r = s.result(code)
    assert r["status"] == "error", r
    return r


def value(s, code):
    """The value as JSON, a length-one vector (a JSON scalar) as a list."""
    v = ok(s, code)["value"]
    return v if isinstance(v, (list, dict)) else [v]


def warned(r, text):
    return any(text in w for w in r["warnings"]) or text in r.get("console", "") or text in (r.get("error") or "")


def probe(s, probe_so, fn, *args):
    """probe.c's fn through .C with R expressions args: [ret, errno]."""
    code = ("if (!is.loaded('%s')) dyn.load('%s'); "
            "r <- .C('%s', %s ret = integer(1), err = integer(1)); c(r$ret, r$err)"
            % (fn, probe_so, fn, "".join(a + ", " for a in args)))
    return value(s, code)


def family(s, probe_so, which):
    """A well-formed call of a refused family (probe.c, probe_family)."""
    return probe(s, probe_so, "probe_family", "'%s'" % which)


def raw(s, probe_so, name, *args):
    """The raw system call by number with integer arguments."""
    a = list(args) + [0] * (6 - len(args))
    return probe(s, probe_so, "probe_nr", "as.double(%d)" % nr(name),
                 "as.double(c(%s))" % ", ".join(str(x) for x in a))


def raw_path(s, probe_so, name, path, path_arg, *args):
    a = list(args) + [0] * (6 - len(args))
    return probe(s, probe_so, "probe_nr_path", "as.double(%d)" % nr(name), "'%s'" % path, "%dL" % path_arg,
                 "as.double(c(%s))" % ", ".join(str(x) for x in a))


def host_inotify_ok():
    """Can this (host) process still make an inotify instance?"""
    fd = _libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        return ctypes.get_errno()
    os.close(fd)
    return 0


# ---------------------------------------------------------------- processes


def ids_of(pid):
    """The Uid and Gid lines of /proc/PID/status, all four fields each
    (real, effective, saved, file system), or None if pid is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            text = f.read()
    except OSError:
        return None
    uid = [int(x) for x in re.search(r"^Uid:\s+(.*)$", text, re.M).group(1).split()]
    gid = [int(x) for x in re.search(r"^Gid:\s+(.*)$", text, re.M).group(1).split()]
    return uid, gid


def tree(pid):
    """pid and every live descendant of it."""
    return [pid] + [p for p, _ in util.descendants(pid)]


def keeper_pid(daemon):
    """The keeper: the daemon's child that is not a securerfs-worker."""
    for pid in util.all_pids():
        st = util.proc_stat(pid)
        if st and st[1] == daemon.pid and st[0] != "Z" and not util.is_worker(pid):
            return pid
    raise AssertionError("no keeper process under %d" % daemon.pid)


def keeper_path_of(daemon, name):
    """Where a file named name (unique) is in the keeper's view of the
    workspaces: /proc/KEEPER/root/<workspace id>/name."""
    root = "/proc/%d/root" % keeper_pid(daemon)
    for d in os.listdir(root):
        p = os.path.join(root, d, name)
        if os.path.lexists(p):
            return p
    raise AssertionError("%s is in no workspace of the keeper (%s)" % (name, os.listdir(root)))


def new_worker(daemon, before, timeout=10):
    """The one session worker pid that is not in before."""
    deadline = time.monotonic() + util.scaled(timeout)
    while time.monotonic() < deadline:
        now = set(util.session_worker_pids(daemon.pid)) - set(before)
        if len(now) == 1:
            return now.pop()
        time.sleep(0.02)
    raise AssertionError("no single new worker (before %s, now %s)" % (before, util.session_worker_pids(daemon.pid)))


def wait_gone(pids, timeout=10):
    deadline = time.monotonic() + util.scaled(timeout)
    while time.monotonic() < deadline:
        if not [p for p in pids if util.proc_stat(p) and util.proc_stat(p)[0] != "Z"]:
            return True
        time.sleep(0.02)
    return False


# The longest helper deadline (5 s per spawn) plus slack, as in
# tests/integration/test_faults.py: what a mkdir or a first run may take
# while helpers are stalled or killed (test_round7.py, test_round8.py).
STALL_BOUND = 12


def answers(d, label):
    """A new session answers 1+1 within the bound."""
    try:
        s = util.bounded(d.clone, util.scaled(STALL_BOUND), d.kill)
    except OSError as e:
        pytest.fail("%s: clone: %s; daemon log:\n%s" % (label, e, d.stderr()[-3000:]))
    r = util.bounded(lambda: s.result("1+1"), util.scaled(STALL_BOUND), d.kill)
    assert r["status"] == "ok" and r["value"] == 2, (label, r)
    s.close()


def has_cgroup(d):
    """Does daemon d give each worker a cgroup (root, a writable hierarchy)?"""
    return "no per-worker cgroup" not in d.stderr()


def only_worker(d, timeout=10):
    """The one session worker of daemon d (a replacement may still be
    starting: waited for within timeout)."""
    deadline = time.monotonic() + util.scaled(timeout)
    pids = util.session_worker_pids(d.pid)
    while len(pids) != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
        pids = util.session_worker_pids(d.pid)
    assert len(pids) == 1, pids
    return pids[0]


def memory_cgroup(pid):
    """pid's memory cgroup on the host: (directory, file of what it holds,
    file of its limit), for v1 or v2; None without one."""
    v2 = None
    with open("/proc/%d/cgroup" % pid) as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(","):
                return "/sys/fs/cgroup/memory" + path, "memory.usage_in_bytes", "memory.limit_in_bytes"
            if controllers == "":
                v2 = ("/sys/fs/cgroup" + path, "memory.current", "memory.max")
    return v2
