#!/usr/bin/python3
"""bench/recovery.py MNT DAEMON_PID [N]: how long the mount takes to serve
again after kill -9 of each helper (scripts/bench, figure h).

For the keeper and the zygote: from the kill to the end of the first
new session's first result (mkdir, `1+1` into input, output read); for a
session's worker: from the kill to the end of that session's next result
(the daemon replaces the worker first).  N tries of each (default 3); the
helpers are killed 10.5 s apart, so that each has run long enough to be
restarted at once (common/backoff.h: one that dies again within 10 s waits
100 ms, doubling).  Needs -o pool=0.  Prints "key value" lines (medians and
worsts, ms)."""
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

import util  # noqa: E402


def children(ppid):
    """The live (not zombie) children of ppid."""
    out = []
    for p in util.all_pids():
        st = util.proc_stat(p)
        if st and st[1] == ppid and st[0] != "Z":
            out.append(p)
    return out


def helper(daemon, name):
    for _ in range(500):
        for p in children(daemon):
            if util.proc_comm(p) == name:
                return p
        time.sleep(0.01)
    raise SystemExit("recovery: no %s" % name)


def run(mnt, name, code="1+1"):
    with open(os.path.join(mnt, "sessions", name, "input"), "w") as f:
        f.write(code)
    with open(os.path.join(mnt, "sessions", name, "output")) as f:
        out = f.read()
    if out != "2\n":
        raise SystemExit("recovery: %s gave %r" % (code, out))


def new_session_ms(mnt, daemon, victim, serial):
    pid = helper(daemon, victim)
    name = "rec%d" % serial
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    os.mkdir(os.path.join(mnt, "sessions", name))
    run(mnt, name)
    ms = (time.monotonic() - t0) * 1e3
    os.rmdir(os.path.join(mnt, "sessions", name))
    return ms


def worker_ms(mnt, daemon, serial):
    name = "recw%d" % serial
    before = set(children(daemon))
    os.mkdir(os.path.join(mnt, "sessions", name))
    run(mnt, name)
    time.sleep(0.3)
    mine = [p for p in set(children(daemon)) - before if util.proc_comm(p).startswith("securerfs-worke")]
    if len(mine) != 1:
        raise SystemExit("recovery: cannot tell the session's worker (pool=0 expected): %s" % mine)
    t0 = time.monotonic()
    os.kill(mine[0], signal.SIGKILL)
    # The daemon must see the death first, else the run goes to the dead
    # worker and ends crashed: wait for the reaping, as part of the time.
    while os.path.exists("/proc/%d" % mine[0]):
        time.sleep(0.0005)
    run(mnt, name)
    ms = (time.monotonic() - t0) * 1e3
    os.rmdir(os.path.join(mnt, "sessions", name))
    return ms


def main():
    mnt, daemon = sys.argv[1], int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    serial = 0
    for key, pause, fn in (("keeper", 10.5, lambda i: new_session_ms(mnt, daemon, "srfs-keeper", i)),
                           ("zygote", 10.5, lambda i: new_session_ms(mnt, daemon, "srfs-zygote", i)),
                           ("worker", 0.5, lambda i: worker_ms(mnt, daemon, i))):
        v = []
        for _ in range(n):
            time.sleep(pause)
            serial += 1
            v.append(fn(serial))
        print("recover_%s_ms_p50 %.1f" % (key, statistics.median(v)))
        print("recover_%s_ms_max %.1f" % (key, max(v)))


if __name__ == "__main__":
    main()
