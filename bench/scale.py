#!/usr/bin/env python3
"""Scale figures (issues 15 and 17), for scripts/bench.

  scale.py MNT DAEMON_PID ROUNDTRIP levels 1,1000,5000 [ITERATIONS]
      With 1, 1,000 and 5,000 idle sessions: one session's 1+1 round trip
      (build/roundtrip rt), the creation and removal of 100 more sessions
      (ms each), ls sessions (ms), memory per idle session (the fall of
      MemAvailable over the sessions made, MiB), the daemon's RSS (MiB)
      and descriptors, and the CPU of the kernel's DAMON threads (% of one
      CPU, at rest and while the 100 are made), where the kernel runs them.
  scale.py MNT DAEMON_PID ROUNDTRIP neighbour [ITERATIONS]
      A witness's 1+1 round trip alone, then beside a session with 60,000
      files looping runs.

Prints "key value" lines.
"""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

import util  # noqa: E402


def mem_available_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def kdamond_ticks():
    """CPU ticks of the kernel's DAMON threads (kdamond.N), which this VM
    runs on physical memory: their rmap walks grow with the processes that
    map a page, here every worker mapping the zygote's (docs/performance.md,
    "Creation with 5,000 sessions on this VM")."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                st = f.read()
        except OSError:
            continue
        if st[st.index("(") + 1:st.rindex(")")].startswith("kdamond"):
            fields = st[st.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
    return total


def kdamond_pct(t0_ticks, seconds):
    return (kdamond_ticks() - t0_ticks) * 100.0 / os.sysconf("SC_CLK_TCK") / seconds


def run(mnt, name, code):
    with open(os.path.join(mnt, "sessions", name, "input"), "w") as f:
        f.write(code)
    with open(os.path.join(mnt, "sessions", name, "output")) as f:
        return f.read()


def roundtrip(rt, mnt, n):
    out = subprocess.run([rt, mnt, "rt", str(n)], capture_output=True, text=True, check=True).stdout
    return dict(line.split() for line in out.splitlines())


def levels(mnt, pid, rt, counts, n):
    made = 0
    serial = 0
    avail0 = mem_available_kib()
    for count in counts:
        while made < count:
            os.mkdir(os.path.join(mnt, "sessions", "idle%d" % serial))
            serial += 1
            made += 1
        k0 = kdamond_ticks()
        time.sleep(3)  # let the pool refill; the kernel's DAMON threads at rest
        print("kdamond%d_idle_pct %.1f" % (count, kdamond_pct(k0, 3)))
        r = roundtrip(rt, mnt, n)
        print("rt%d_us_p50 %s" % (count, r["rt_us_p50"]))
        print("rt%d_us_p90 %s" % (count, r["rt_us_p90"]))
        # 100 more sessions made, one at a time, then removed.
        extra = []
        k0 = kdamond_ticks()
        t0 = time.perf_counter()
        for i in range(100):
            name = "extra%d_%d" % (count, i)
            os.mkdir(os.path.join(mnt, "sessions", name))
            extra.append(name)
        t1 = time.perf_counter()
        print("kdamond%d_create_pct %.1f" % (count, kdamond_pct(k0, t1 - t0)))
        for name in extra:
            os.rmdir(os.path.join(mnt, "sessions", name))
        t2 = time.perf_counter()
        print("create%d_ms %.2f" % (count, (t1 - t0) * 1000 / 100))
        print("remove%d_ms %.2f" % (count, (t2 - t1) * 1000 / 100))
        ls = []
        for _ in range(5):
            t0 = time.perf_counter()
            names = os.listdir(os.path.join(mnt, "sessions"))
            ls.append((time.perf_counter() - t0) * 1000)
        assert len(names) == made, (len(names), made)
        print("ls%d_ms %.2f" % (count, sorted(ls)[2]))
        time.sleep(1)
        avail = mem_available_kib()
        print("mem%d_mib_per_session %.2f" % (count, (avail0 - avail) / 1024 / made))
        print("rss%d_mib %.1f" % (count, util.rss_kib(pid) / 1024))
        print("fds%d %d" % (count, util.fd_count(pid)))


def clone(mnt):
    with open(os.path.join(mnt, "clone")) as f:
        return f.read().strip()


def neighbour(mnt, rt, n):
    r = roundtrip(rt, mnt, n)
    print("witness_alone_us_p50 %s" % r["rt_us_p50"])
    print("witness_alone_us_p90 %s" % r["rt_us_p90"])
    big = clone(mnt)
    run(mnt, big, 'invisible(file.create(sprintf("f%05d", 1:60000))); 1')
    stop = threading.Event()
    loops = [0]

    def loop():
        while not stop.is_set():
            run(mnt, big, "1")
            loops[0] += 1

    th = threading.Thread(target=loop)
    th.start()
    time.sleep(0.5)
    try:
        r = roundtrip(rt, mnt, n)
    finally:
        stop.set()
        th.join()
    print("witness_beside_us_p50 %s" % r["rt_us_p50"])
    print("witness_beside_us_p90 %s" % r["rt_us_p90"])
    print("neighbour_runs %d" % loops[0])
    os.rmdir(os.path.join(mnt, "sessions", big))


def main():
    mnt, pid, rt, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if mode == "levels":
        counts = [int(c) for c in sys.argv[5].split(",")]
        levels(mnt, pid, rt, counts, int(sys.argv[6]) if len(sys.argv) > 6 else 1000)
    elif mode == "neighbour":
        neighbour(mnt, rt, int(sys.argv[5]) if len(sys.argv) > 5 else 1000)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
