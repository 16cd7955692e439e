"""Round 10 (docs/security.md, "Round 10"): what the limits leave a session
at their edges.  Each test asserts what the session's code sees and what the
host sees from outside (the worker's /proc/PID/limits, its cgroup)."""
import json
import os

import pytest

import util
from jailtools import has_cgroup, memory_cgroup, only_worker

MIB = 1 << 20


def soft_address_space(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max address space"):
                return int(line.split()[3])
    raise AssertionError("no address space line")


def vm_size(pid):
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.timeout_s(120)
def test_the_smallest_memory_limit_leaves_r_working(daemons):
    """Inside: a session at the smallest memory limit the daemon takes
    (64 MiB) reads a file, allocates a few MiB, forks, and gets R's own
    "cannot allocate" error (limit `memory`, the session kept) past the
    limit.  Until 2026-12-03 RLIMIT_AS was the limit itself, below the
    address space the worker starts with (107 MiB here, most of it library
    pages it never touches): readLines() of a file crashed R (signal 11,
    the state lost), an 8 MB vector failed under 96 MiB, and a fork of such
    a session failed with EIO (its copy crashed while restoring).  Outside:
    RLIMIT_AS is the limit plus no more than the worker's address space,
    and the cgroup (root) holds the limit itself."""
    d = daemons.start("pool=0")
    s = d.clone()
    limit = 64 * MIB
    s.write("limits", json.dumps({"memory": limit}))
    assert s.value("x <- 'kept'; length(readLines('/proc/self/status')) > 10") == "TRUE"
    assert s.value("length(numeric(2^19))") == "524288"      # 4 MiB
    r = s.result("y <- numeric(64 * 2^17); 'not stopped'")   # 64 MiB
    assert r["status"] == "error" and r["limit"] == "memory", r
    assert "cannot allocate vector" in r["error"], r
    assert s.value("x") == "kept"
    pid = only_worker(d)
    soft = soft_address_space(pid)
    assert limit < soft <= limit + vm_size(pid), (soft, vm_size(pid))
    if has_cgroup(d):
        where, _, limit_file = memory_cgroup(pid)
        with open(os.path.join(where, limit_file)) as f:
            assert int(f.read()) == limit
    copy = util.Session(d, s.read("fork").strip())
    assert copy.value("x") == "kept"
    assert copy.value("length(numeric(2^19))") == "524288"
    assert json.loads(copy.read("limits"))["memory"] == limit
