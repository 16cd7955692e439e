#!/usr/bin/env python3
"""What a fresh exec per worker would cost, against today's fork of one zygote
(issue 16 item 6; docs/security.md, "What workers share").

Only an exec gives a worker its own address-space layout and glibc pointer
guard.  This measures, on this machine:

  fork   new session to its first result (`1+1`) through a real mount with
         no pool (pool=0): the zygote clones a worker, it builds its jail and
         answers; and the PSS of N idle sessions' workers.
  exec   what each worker would pay if it were exec'd instead: starting
         `securerfs-worker --zygote` (execve, Rf_initEmbeddedR, jsonlite,
         worker.R, the seccomp policy) until it says "ready" (the jail and
         the first run come on top, as for fork); and the PSS of N such
         freshly exec'd, initialised R processes side by side, which share
         only the pages of their files (libR.so, ...), nothing of the heap.

Usage: bench/exec_vs_fork.py [BUILD_DIR] [N]   (default build/, 8)
Prints a table; medians over N.  Run as root or as the user the daemon runs
as; the worker binary must be built.
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else REPO / "build"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 8
os.environ["SECURERFS_BUILD"] = str(BUILD)
sys.path.insert(0, str(REPO / "tests" / "integration"))

import util  # noqa: E402


def r_home():
    out = subprocess.run(["R", "RHOME"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def exec_worker():
    """Start one `securerfs-worker --zygote` as the daemon does; return
    (process, its control socket, seconds from fork to "ready")."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC", "HOME": "/work",
           "TMPDIR": "/tmp", "USER": "securerfs", "LOGNAME": "securerfs", "R_HOME": r_home()}
    t0 = time.perf_counter()
    p = subprocess.Popen([str(BUILD / "securerfs-worker"), "--zygote", "--sandbox=strict", "--tmp-size=67108864"],
                         pass_fds=(theirs.fileno(), 3), env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         preexec_fn=lambda: os.dup2(theirs.fileno(), 3))
    theirs.close()
    ours.settimeout(30)
    msg = ours.recv(512)
    t1 = time.perf_counter()
    if msg != b"ready":
        raise SystemExit("the worker said %r" % msg)
    return p, ours, t1 - t0


def measure_exec():
    procs, times = [], []
    for _ in range(N):
        p, sock, t = exec_worker()
        procs.append((p, sock))
        times.append(t)
    time.sleep(0.5)
    pss = [util.pss_kib(p.pid) for p, _ in procs]
    for p, sock in procs:
        sock.close()
        p.kill()
        p.wait()
    return times, pss


def measure_fork(workdir):
    d = util.Daemon(workdir, ("pool=0", "max_sessions=%d" % (N + 4)), name="mnt")
    d.start()
    try:
        times, sessions = [], []
        # One warm-up, so that the zygote is ready.
        w = d.clone()
        w.value("1+1")
        for _ in range(N):
            t0 = time.perf_counter()
            s = d.clone()
            assert s.value("1+1") == "2"
            times.append(time.perf_counter() - t0)
            sessions.append(s)
        time.sleep(0.5)
        workers = util.session_worker_pids(d.pid)
        pss = [util.pss_kib(p) for p in workers]
        zygote = util.worker_pids(d.pid)[0]
        zpss = util.pss_kib(zygote)
        for s in sessions + [w]:
            s.close()
    finally:
        d.stop()
    return times, pss, zpss


def main():
    with tempfile.TemporaryDirectory(prefix="securerfs-execbench.") as tmp:
        os.chmod(tmp, 0o755)
        f_times, f_pss, z_pss = measure_fork(tmp)
    e_times, e_pss = measure_exec()
    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    mib = lambda xs: statistics.median(xs) / 1024  # noqa: E731
    print("%d workers each, medians (min) (%s, load average %.1f)" % (N, time.strftime("%Y-%m-%d"),
                                                                       os.getloadavg()[0]))
    print("%-44s %20s %20s" % ("", "fork", "exec"))
    print("%-44s %9.1f (%5.1f) ms %9.1f (%5.1f) ms" % ("new worker ready (fork: to first result)", ms(f_times),
                                                       min(f_times) * 1000, ms(e_times), min(e_times) * 1000))
    print("%-44s %16.1f MiB %16.1f MiB" % ("PSS per idle worker", mib(f_pss), mib(e_pss)))
    print("%-44s %16.1f MiB %20s" % ("PSS of the zygote (shared by the forks)", z_pss / 1024, "-"))
    print("(exec: the jail and the first run, about the fork figure, come on top of the first row)")


if __name__ == "__main__":
    util.become_subreaper()
    main()
