"""Round 8 of attack (docs/security.md, "Round 8"): the helpers of a session's
start faulted from outside while the daemon waits on them.  The attacker is
whoever can signal the daemon's helpers (an administrator, the OOM killer):
no user code runs in a worker before its attach.  Each test asserts what the
user sees (the errno of mkdir, a session that answers afterwards) and what
the host sees (the daemon alive; its descriptors, cgroups and mounts back).
Run it with the ASan daemon too (SECURERFS_BUILD=build-asan): the daemon's
stop fails the test on any sanitizer report."""
import errno
import os
import random
import re
import signal
import threading
import time

import pytest

import conftest
import util
from jailtools import STALL_BOUND, answers

EXPECT = conftest.EXPECTED_ERRORS + (r"pool worker could not start", r"did not", r"could not hand",
                                     r"could not send", r"keeper", r"workspace")


def alive(pid):
    st = util.proc_stat(pid)
    return bool(st) and st[0] != "Z"


def mkdir_in_thread(d, name):
    """Start mkdir sessions/name in a thread; box["err"] is None or the errno
    once box["done"] is set."""
    box = {"done": threading.Event()}

    def body():
        try:
            os.mkdir(str(d.path("sessions", name)))
            box["err"] = None
        except OSError as e:
            box["err"] = e.errno
        box["done"].set()

    threading.Thread(target=body, daemon=True).start()
    return box


def test_workers_killed_while_the_keeper_stalls_their_workspace(daemons):
    """The keeper stopped (SIGSTOP), so a new session's workspace, and each
    of its workers' copies of it, wait on the keeper; each worker is killed
    (SIGKILL) while it waits, until the session's retries are used up and
    its mkdir is answered.  Until 2026-12-02 the daemon then gave up the
    last worker's request on the workspace the failed session had just
    freed (a use after free: SIGSEGV without ASan after one to three kills,
    a heap-use-after-free report with it).  Now: mkdir answers EAGAIN (or
    succeeds, if a retry won), the daemon lives, and new sessions answer."""
    d = daemons.start("pool=2", expect=EXPECT)
    util.wait_for(lambda: len(util.session_worker_pids(d.pid)) == 2, util.scaled(10), "two pooled workers")
    keeper = util.helper_pid(d.pid, util.KEEPER_COMM)
    assert keeper, "no keeper (strict sandbox expected)"
    os.kill(keeper, signal.SIGSTOP)
    try:
        box = mkdir_in_thread(d, "v")
        killed = 0
        # Each kill lands on a worker whose request waits on the stopped
        # keeper; the retries (two, sessions/session.c) are used up by the
        # third, within the keeper's own deadline (3 s, after which it is
        # killed and started again).
        for _ in range(4):
            time.sleep(0.6)
            if box["done"].is_set():
                break
            for p in util.session_worker_pids(d.pid):
                try:
                    os.kill(p, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
    finally:
        try:
            os.kill(keeper, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert box["done"].wait(util.scaled(STALL_BOUND)), "mkdir not answered"
    assert killed >= 3, killed
    assert alive(d.pid), "the daemon died; its log:\n" + d.stderr()[-3000:]
    assert box["err"] in (None, errno.EAGAIN), (box["err"], d.stderr()[-3000:])
    answers(d, "after the kills")
    d.read("stats")


def worker_cgroups(pid):
    """The workers' cgroup directories (w<id>) under the daemon's own
    securerfs-<pid> directories, in every hierarchy (none when it runs
    without cgroups)."""
    n = 0
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        if os.path.basename(top) == "securerfs-%d" % pid:
            n += sum(1 for x in dirs if x.startswith("w"))
            dirs[:] = []
    return n


def cgroup_members(pid):
    """What is still in the workers' cgroups: {cgroup: [pid comm]}."""
    out = {}
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        if os.path.basename(top) == "securerfs-%d" % pid:
            for x in dirs:
                try:
                    with open(os.path.join(top, x, "cgroup.procs")) as f:
                        out[os.path.join(top, x)] = ["%s %s" % (p, util.proc_status(int(p), "Name"))
                                                     for p in f.read().split()]
                except OSError as e:
                    out[os.path.join(top, x)] = str(e)
            dirs[:] = []
    return out


def fd_kinds(pid):
    """The daemon's descriptors by what they are (socket, pipe, anon_inode:
    kind, or a path), with counts."""
    kinds = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            k = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except FileNotFoundError:
            continue
        k = k.split(":[")[0] if k.startswith(("socket:", "pipe:")) else k
        # A worker's cgroup counter (sessions/worker.h, oom_fd): one per
        # worker, whichever workers the pool holds.
        k = re.sub(r"/w[0-9]+/memory\.", "/w*/memory.", k)
        kinds[k] = kinds.get(k, 0) + 1
    return kinds


def counts(d):
    """What the daemon holds that a failed start must give back: its
    descriptors, its workers' cgroup directories, the host's mounts of its
    own (under its work directory: other daemons on the host mount and
    unmount theirs meanwhile)."""
    fds = fd_kinds(d.pid)
    mine = str(d.workdir)
    with open("/proc/self/mountinfo") as f:
        mounts = sum(1 for line in f if (line.split()[4] + "/").startswith(mine + "/"))
    return {"fds": fds, "cgroups": worker_cgroups(d.pid), "mounts": mounts}


def settled(d):
    """counts(d) once the pool holds its two workers and nothing has changed
    for a second (a closed session's worker being reaped, a refill, a
    keeper starting again all take a moment)."""
    last = []

    def still():
        c = counts(d)
        pooled = [p for p in util.session_worker_pids(d.pid) if util.proc_status(p, "Seccomp_filters") == "2"]
        last.append(c)
        return len(util.session_worker_pids(d.pid)) == 2 and len(pooled) == 2 and last[-5:] == [c] * 5

    util.wait_for(still, 30, "the daemon settled", step=0.2)
    return last[-1]


@pytest.mark.timeout_s(180)
def test_helpers_killed_at_random_during_a_mkdir_storm(daemons):
    """mkdir and rmdir as fast as they come for 12 s while pooled workers,
    session workers, the zygote and the keeper are SIGKILLed (and the
    keeper now and then SIGSTOPped for a moment) at random.  Every mkdir is
    answered within the bound, with success or EAGAIN (a helper's fault,
    never EPERM, which would blame the jail); the daemon lives; afterwards
    a new session answers, and its descriptors and the host's mounts come
    back to where they were."""
    d = daemons.start("pool=2", expect=EXPECT)
    util.wait_for(lambda: len(util.session_worker_pids(d.pid)) == 2, util.scaled(10), "two pooled workers")
    answers(d, "before")
    before = settled(d)
    assert before["mounts"] >= 1, before   # its own FUSE mount at least
    stop = threading.Event()
    rng = random.Random(8)
    stopped = []

    def attacker():
        while not stop.is_set():
            time.sleep(rng.uniform(0.01, 0.1))
            what = rng.random()
            if what < 0.55:
                pids = util.session_worker_pids(d.pid)
            elif what < 0.7:
                pids = [util.helper_pid(d.pid, util.ZYGOTE_COMM)]
            elif what < 0.8:
                pids = [util.helper_pid(d.pid, util.KEEPER_COMM)]
            else:
                k = util.helper_pid(d.pid, util.KEEPER_COMM)
                if k:
                    stopped.append(k)
                    os.kill(k, signal.SIGSTOP)
                    time.sleep(rng.uniform(0.2, 1.0))
                    os.kill(k, signal.SIGCONT)
                    stopped.remove(k)
                continue
            for p in pids:
                if p:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    t = threading.Thread(target=attacker, daemon=True)
    t.start()
    answered = {None: 0, errno.EAGAIN: 0}
    try:
        end = time.monotonic() + 12
        i = 0
        while time.monotonic() < end:
            name = "s%d" % i
            i += 1
            box = mkdir_in_thread(d, name)
            assert box["done"].wait(util.scaled(STALL_BOUND)), "mkdir %s not answered" % name
            assert alive(d.pid), "the daemon died; its log:\n" + d.stderr()[-3000:]
            assert box["err"] in answered, (name, box["err"], d.stderr()[-3000:])
            answered[box["err"]] += 1
            if box["err"] is None:
                os.rmdir(str(d.path("sessions", name)))
    finally:
        stop.set()
        t.join(util.scaled(5))
        for k in list(stopped):
            try:
                os.kill(k, signal.SIGCONT)
            except ProcessLookupError:
                pass
    assert answered[None] + answered[errno.EAGAIN] >= 5, answered
    answers(d, "after the storm")
    # What the failed starts held is given back.
    now = settled(d)
    assert now == before, "not back: before %s, now %s; left in cgroups %s; stats %s" % (
        before, now, cgroup_members(d.pid), d.read("stats"))
