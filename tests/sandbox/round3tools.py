"""What the round-3 suites and the flood suite share (test_round3*.py,
test_flood.py): starting a daemon that gets a directory of test-only native
code as -o r_libs=DIR, reading a process's CPU time and resident set from
/proc, running a flood in a thread, and measuring a witness session's round
trips while it runs.  The native code itself is compiled with
harness.build_r_lib(); its helpers are in native_common.h."""
import os
import threading
import time

import util



def start(daemons, lib_dir, so_name, *opts):
    """A daemon with pool=0 and r_libs=lib_dir (plus opts); d.so is the
    path of lib_dir/so_name, as the sandbox sees it too."""
    d = daemons.start("pool=0", "r_libs=%s" % lib_dir, *opts)
    d.so = str(lib_dir / so_name)
    return d


def load(d, symbol):
    """R code that dyn.load()s d.so once (unless symbol is loaded already)."""
    return "if (!is.loaded('%s')) dyn.load('%s'); " % (symbol, d.so)


def next_seq(s):
    """The seq the session's next run gets (one more than its last)."""
    assert s.value("1") == "1"
    return s.result()["seq"] + 1


def cpu_s(pid, tid=None):
    """utime + stime of a process (all its threads), or of one thread."""
    path = "/proc/%d/stat" % pid if tid is None else "/proc/%d/task/%d/stat" % (pid, tid)
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    """A process's resident set (VmRSS) in MiB; 0 if it shows none."""
    return util.rss_kib(pid) / 1024


def p90(v):
    """The 90th percentile of v (the lower value: no interpolation)."""
    v = sorted(v)
    return v[max(0, int(0.9 * len(v)) - 1)]


class Background:
    """Run fn in a thread; done() says whether it ended, result() joins it
    and returns what fn returned (or raises what it raised)."""

    def __init__(self, fn):
        self.box = {}
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.box["value"] = fn()
        except BaseException as e:  # reported by result()
            self.box["error"] = e

    def done(self):
        return not self.thread.is_alive()

    def result(self, timeout):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "did not end within %.0f s" % timeout
        if "error" in self.box:
            raise self.box["error"]
        return self.box["value"]


def witness_while(d, w, busy, seconds, each=None):
    """The witness w's `1+1` round trips (ms) for `seconds`, while busy();
    each() (if given) is called after every round trip."""
    rts = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and busy():
        t = time.monotonic()
        assert w.value("1+1") == "2"
        rts.append((time.monotonic() - t) * 1000)
        if each:
            each()
    return rts
