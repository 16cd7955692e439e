"""Many sessions running at once."""
import threading
import time

import pytest

import util


@pytest.mark.timeout_s(120)
def test_16_sessions_at_once(daemons):
    d = daemons.start("pool=0")
    sessions = [d.clone() for _ in range(16)]
    results = [None] * 16
    errors = []
    barrier = threading.Barrier(16)

    def work(i, s):
        try:
            barrier.wait(util.scaled(30))
            results[i] = s.run("Sys.sleep(0.5); %d * 2" % i)
        except BaseException as e:  # reported below
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=work, args=(i, s), daemon=True)
               for i, s in enumerate(sessions)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(util.scaled(60))
    elapsed = time.monotonic() - t0
    assert not errors, errors
    assert results == ["%d\n" % (i * 2) for i in range(16)]
    # they ran side by side, not one after another (16 x 0.5 s = 8 s)
    assert elapsed < util.scaled(6), elapsed
    st = d.json("stats")
    assert st["sessions"] == 16
    assert st["running"] == 0
    for s in sessions:
        s.close()
    assert d.json("stats")["sessions"] == 0


@pytest.mark.timeout_s(90)
def test_clone_from_many_threads(daemons):
    d = daemons.start("pool=2")
    names, errors = [], []
    lock = threading.Lock()

    def work():
        try:
            s = d.clone()
            v = s.run("Sys.getpid() > 0")
            with lock:
                names.append((s.name, v))
        except BaseException as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=work, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(util.scaled(60))
    assert not errors, errors
    assert len({n for n, _ in names}) == 8
    assert all(v == "TRUE\n" for _, v in names)
