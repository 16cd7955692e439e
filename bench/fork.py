#!/usr/bin/python3
"""bench/fork.py MODE MNT [ARGS]: the fork, snapshot and persistence figures
of scripts/bench (issue 12).  Prints "key value" lines (ms unless named).

  fork MNT           fork of an empty session, of one holding 1 MB and one
                     holding 100 MB of R data (p50): open+read of
                     sessions/N/fork until the copy's name comes back; then
                     snapshot (read of sessions/N/snapshot to a file) and
                     restore (the file written into a new session, to close)
                     of the same
  start DAEMON MNT STATE N
                     (run by scripts/bench around a daemon start) -
  checkpoint MNT     1+1 round trips of one session while another (20 MB)
                     is checkpointed back to back (ctl checkpoint), against
                     the same with no checkpoint: p50 and p99 of each (us)
"""
import os
import statistics
import sys
import threading
import time


def rd(path):
    with open(path, "rb") as f:
        return f.read()


def wr(path, data):
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def run(mnt, name, code):
    wr(os.path.join(mnt, "sessions", name, "input"), code)
    return rd(os.path.join(mnt, "sessions", name, "output")).decode()


def clone(mnt):
    name = rd(os.path.join(mnt, "clone")).decode().strip()
    # The bench's data is larger than the default memory limit allows twice.
    wr(os.path.join(mnt, "sessions", name, "limits"), '{"memory": null, "fsize": null}')
    return name


def close(mnt, name):
    os.rmdir(os.path.join(mnt, "sessions", name))


def p(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def fork_mode(mnt):
    sizes = [("0", "invisible(NULL)", 20), ("1mb", "x <- runif(131072)", 10),
             ("100mb", "x <- runif(13107200)", 3)]
    for label, code, n in sizes:
        src = clone(mnt)
        run(mnt, src, code)
        times = []
        for _ in range(n):
            t0 = time.monotonic()
            copy = rd(os.path.join(mnt, "sessions", src, "fork")).decode().strip()
            times.append((time.monotonic() - t0) * 1e3)
            if label != "0":
                out = run(mnt, copy, "length(x)")
                assert out.strip() in ("131072", "13107200"), out
            close(mnt, copy)
        print("fork_%s_ms_p50 %.1f" % (label, statistics.median(times)))
        if label == "0":
            close(mnt, src)
            continue
        snap_t, rest_t, size = [], [], 0
        for _ in range(n):
            t0 = time.monotonic()
            data = rd(os.path.join(mnt, "sessions", src, "snapshot"))
            snap_t.append((time.monotonic() - t0) * 1e3)
            size = len(data)
            dst = clone(mnt)
            t0 = time.monotonic()
            wr(os.path.join(mnt, "sessions", dst, "snapshot"), data)
            rest_t.append((time.monotonic() - t0) * 1e3)
            out = run(mnt, dst, "length(x)")
            assert out.strip() in ("131072", "13107200"), out
            close(mnt, dst)
        print("snapshot_%s_ms_p50 %.1f" % (label, statistics.median(snap_t)))
        print("restore_%s_ms_p50 %.1f" % (label, statistics.median(rest_t)))
        print("snapshot_%s_bytes %d" % (label, size))
        close(mnt, src)


def roundtrips(mnt, name, n):
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        r = run(mnt, name, "1+1")
        out.append((time.monotonic() - t0) * 1e6)
        assert r == "2\n", r
    return out


def checkpoint_mode(mnt):
    busy = clone(mnt)
    run(mnt, busy, "x <- runif(2621440)")
    probe = clone(mnt)
    roundtrips(mnt, probe, 50)
    base = roundtrips(mnt, probe, 500)
    stop = threading.Event()
    count = [0]

    def checkpoints():
        while not stop.is_set():
            wr(os.path.join(mnt, "sessions", busy, "ctl"), "checkpoint")
            count[0] += 1

    t = threading.Thread(target=checkpoints)
    t.start()
    try:
        during = roundtrips(mnt, probe, 500)
    finally:
        stop.set()
        t.join()
    print("ckpt_base_us_p50 %.0f" % p(base, 0.5))
    print("ckpt_base_us_p99 %.0f" % p(base, 0.99))
    print("ckpt_during_us_p50 %.0f" % p(during, 0.5))
    print("ckpt_during_us_p99 %.0f" % p(during, 0.99))
    print("ckpt_count %d" % count[0])
    close(mnt, busy)
    close(mnt, probe)


def prepare_mode(mnt, state, n):
    """Fill STATE with n saved sessions (copies of one small session's
    snapshot), for the start figure."""
    name = clone(mnt)
    run(mnt, name, "x <- 1:10")
    data = rd(os.path.join(mnt, "sessions", name, "snapshot"))
    close(mnt, name)
    os.makedirs(state, mode=0o700, exist_ok=True)
    for i in range(1, n + 1):
        with open(os.path.join(state, "s%d.snap" % i), "wb") as f:
            f.write(data)
    print("prepared %d" % n)


def started_mode(mnt, t0, n):
    """From t0 (the daemon's exec, CLOCK_MONOTONIC seconds) until the mount
    lists all n saved sessions, then one of them answers."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if len(os.listdir(os.path.join(mnt, "sessions"))) >= n:
                break
        except OSError:
            pass
        time.sleep(0.002)
    listed = (time.monotonic() - float(t0)) * 1e3
    t1 = time.monotonic()
    out = run(mnt, "s%d" % n, "sum(x)")
    assert out.strip() == "55", out
    print("start_%d_listed_ms %.0f" % (n, listed))
    print("start_first_use_ms %.0f" % ((time.monotonic() - t1) * 1e3))


def main():
    mode = sys.argv[1]
    if mode == "fork":
        fork_mode(sys.argv[2])
    elif mode == "checkpoint":
        checkpoint_mode(sys.argv[2])
    elif mode == "prepare":
        prepare_mode(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "started":
        started_mode(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
