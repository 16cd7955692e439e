"""Round 4 of attack (docs/security.md, "Round 4"): what was added since
round 3 — fork, snapshot, restore and persistence; sessions/N/eval; the
workspace scanner; the idle watch; the MCP server.  Each test is a finding:
it failed before its fix and asserts from both sides (what the session or
the user got, and what the host shows)."""
import errno
import os
import time

import pytest

import util
from round4tools import MAGIC, parse, record, rebuild, r_blob, take, put, worker_of


@pytest.fixture
def d(daemons):
    return daemons.start("pool=0")


# ---- 1. A snapshot whose entries clash: checked by the host, not half-restored ----------

def _victim(d):
    v = d.clone()
    v.run("mark <- 'intact'; writeLines('mark', 'mark.txt')")
    return v


def _intact(v):
    assert v.value("mark") == "intact"
    assert util.read_text(v.files("mark.txt")) == "mark\n"


@pytest.mark.timeout_s(120)
def test_clashing_entries_are_refused_before_anything_changes(d):
    """A snapshot whose workspace entries the worker cannot make (the same
    name twice, a file then a directory of that name, an entry under a
    file, a link or a directory the stream never made) passed the host's
    check; the restoring worker then replaced the global environment and
    emptied the workspace before it failed: the write answered EINVAL and
    the session had lost its variables and files.  Now the host refuses
    them first (EINVAL) and the session keeps both."""
    src = d.clone()
    src.run("y <- 1")
    meta, blob = r_blob(take(src))
    v = _victim(d)
    bodies = [
        record(b"F", b"a", 0o644, b"1") + record(b"F", b"a", 0o644, b"2"),
        record(b"F", b"a", 0o644, b"1") + record(b"D", b"a", 0o755),
        record(b"D", b"a", 0o755) + record(b"D", b"a", 0o755),
        record(b"F", b"a", 0o644, b"1") + record(b"F", b"a/b", 0o644, b"2"),
        record(b"L", b"l", 0o777, b"d") + record(b"D", b"d", 0o755) + record(b"F", b"l/x", 0o644, b"2"),
        record(b"F", b"nodir/x", 0o644, b"2"),
    ]
    for body in bodies:
        util.expect_errno(errno.EINVAL, put, v, rebuild(meta, record(b"R", payload=blob) + body + record(b"E")))
        _intact(v)
        assert not os.path.exists(v.files("a")) and not os.path.exists(v.files("l"))
    # A good one with nested entries still goes in.
    good = record(b"D", b"d", 0o755) + record(b"D", b"d/e", 0o700) + record(b"F", b"d/e/f", 0o600, b"ok") + \
        record(b"L", b"d/ln", 0o777, b"e/f")
    put(v, rebuild(meta, record(b"R", payload=blob) + good + record(b"E")))
    assert v.value("y") == "1"
    assert util.read_text(v.files("d", "e", "f")) == "ok"
