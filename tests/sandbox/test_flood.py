"""A session cannot stall or flood the daemon (docs/security.md, "Floods").

The attacker floods the daemon with tool calls two ways: from plain R (a
tight loop calling the native tool entry point, reachable with no tool
defined, inside tryCatch so that R keeps going), and from hostile native
code (tests/sandbox/hostile.c) that writes tool_call frames on the worker's
socket as fast as it takes them, reading the replies or not.  Each test
proves the bound from the outside: a witness session's round trip, `stats`,
the flooding run's end, the daemon's RSS and the audit log's growth."""
import json
import os
import time
from pathlib import Path

import pytest

import harness
import util
from round3tools import Background, next_seq, p90, rss_mib

HERE = Path(__file__).resolve().parent
PLAIN_R_FLOOD = ('x <- "kept"; f <- environment(getOption("device"))$tool_call_native\n'
                 'repeat tryCatch(.Call(f, "bogus", list()), error = function(e) NULL)')
RSS_MAX_MIB = 60
AUDIT_PER_RUN_MAX = 64 << 10
WITNESS_P90_MS = 50


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory):
    return harness.build_r_lib(tmp_path_factory.mktemp("hostile"), HERE / "hostile.c")


def start(daemons, hostile_dir, tmp_path, *opts):
    audit = tmp_path / "audit.log"
    d = daemons.start("pool=2", "audit_log=%s" % audit, "r_libs=%s" % hostile_dir, *opts)
    d.audit = audit
    d.hostile = str(hostile_dir / "hostile.so")
    return d


def native_flood(d, seq, count, read_replies, tool="bogus", delay_ms=0):
    return ("dyn.load('%s'); .C('flood_calls', %dL, as.double(%d), 1, %dL, %dL, '%s', written = 0, err = 0L)"
            % (d.hostile, seq, count, read_replies, delay_ms, tool))


class Flood(Background):
    """Submit a flooding run; a thread waits for its result.  result()
    returns (result.json, seconds from the submit to the result)."""

    def __init__(self, s, code):
        start = time.monotonic()
        s.submit(code)
        super().__init__(lambda: (json.loads(s.read("result.json")), time.monotonic() - start))


def witness_round_trips(d, w, n=50):
    """n `1+1` round trips of the witness and a `stats` read after each,
    while the flood runs; every daemon RSS seen."""
    rts, stats, rss = [], [], []
    for _ in range(n):
        t = time.monotonic()
        assert w.value("1+1") == "2"
        rts.append((time.monotonic() - t) * 1000)
        t = time.monotonic()
        assert "executions" in d.json("stats")
        stats.append((time.monotonic() - t) * 1000)
        rss.append(rss_mib(d.pid))
    rts.sort()
    return rts, stats, rss


def audit_lines(d, session, seq):
    """The audit events of one run of a session: from its run_start to its
    run_end (tool_call lines carry no seq)."""
    out, inside = [], False
    for line in d.audit.read_text().splitlines():
        e = json.loads(line)
        if e.get("session") != session:
            continue
        if e["event"] == "run_start":
            inside = e["seq"] == seq
        if inside:
            out.append(e)
        if e["event"] == "run_end" and e["seq"] == seq:
            break
    return out


@pytest.mark.load
@pytest.mark.timeout_s(90)
@pytest.mark.parametrize("how", ["plain_r", "native"])
def test_flood_does_not_stall_the_daemon(daemons, hostile_dir, tmp_path, how):
    # max_tool_calls so high that the flood goes on until its timeout: what
    # is tested here is that the daemon's loop (timers, FUSE, other
    # sessions) keeps its turn while it answers every call.
    d = start(daemons, hostile_dir, tmp_path, "max_tool_calls=1000000")
    w = d.clone()
    assert w.value("witness_var <- 41; witness_var + 1") == "42"
    fl = d.clone()
    seq = next_seq(fl)
    timeout = 6
    fl.write("timeout", str(timeout))
    audit_before = d.audit.stat().st_size
    rss_before = rss_mib(d.pid)
    stats_before = d.json("stats")
    flood = Flood(fl, PLAIN_R_FLOOD if how == "plain_r" else native_flood(d, seq, 10 ** 9, 1))
    time.sleep(0.5)
    rts, stats, rss = witness_round_trips(d, w)
    assert not flood.done(), "the flood ended before the witness was measured"
    r, elapsed = flood.result(util.scaled(timeout + 20))
    stats_after = d.json("stats")

    # The witness kept its turn, and its state.
    assert p90(rts) < WITNESS_P90_MS, "witness 1+1 p90 %.1f ms (all: %s)" % (p90(rts), rts)
    assert max(stats) < 1000, stats
    assert w.value("witness_var") == "41"
    # The flood ran, and the run's deadline fired on time although the
    # worker wrote frames as fast as the daemon read them.
    assert r["tool_calls"] > 1000, r
    if how == "plain_r":
        assert r["status"] == "timeout", r
        assert elapsed < timeout + util.scaled(3), elapsed
        assert fl.value("x") == "kept"
    else:
        # Native code deaf to the interrupt: killed after the grace period.
        assert r["status"] == "killed" and "Timed out" in r["error"], r
        assert elapsed < timeout + 2 + util.scaled(3), elapsed
    assert stats_after["timeouts"] == stats_before["timeouts"] + 1, (stats_before, stats_after)
    # Bounded memory and audit log: refused calls are logged in full only
    # for the first few of a run, then counted in one line.
    assert max(rss) < RSS_MAX_MIB and rss_mib(d.pid) < RSS_MAX_MIB, (rss_before, max(rss))
    grown = d.audit.stat().st_size - audit_before
    assert grown < AUDIT_PER_RUN_MAX, grown
    lines = audit_lines(d, fl.name, seq)
    assert len([e for e in lines if e["event"] == "tool_call"]) == 10, lines[:20]
    summary = [e for e in lines if e["event"] == "tool_calls_refused"]
    assert len(summary) == 1 and summary[0]["refused"] == r["tool_calls"], summary
    assert summary[0]["not_logged"] == r["tool_calls"] - 10, summary


@pytest.mark.timeout_s(60)
def test_run_past_max_tool_calls_ends_with_an_error(daemons, hostile_dir, tmp_path):
    d = start(daemons, hostile_dir, tmp_path)
    s = d.clone()
    seq = next_seq(s)
    before = d.audit.stat().st_size
    t = time.monotonic()
    r = s.result(PLAIN_R_FLOOD)
    elapsed = time.monotonic() - t
    assert r["status"] == "error" and r["limit"] == "tool_calls", r
    assert "more than 1000 tool calls" in r["error"] and "state is kept" in r["error"], r
    assert r["tool_calls"] == 1000, r
    assert elapsed < util.scaled(10), elapsed
    # The worker unwound: the session kept its state.
    assert s.value("x") == "kept"
    assert d.audit.stat().st_size - before < AUDIT_PER_RUN_MAX
    lines = audit_lines(d, s.name, seq)
    events = [e["event"] for e in lines]
    assert events.count("tool_call") == 10 and events.count("limit") == 1, events
    summary = [e for e in lines if e["event"] == "tool_calls_refused"][0]
    assert summary["refused"] == 1000 and summary["not_logged"] == 990 and summary["dropped"] == 1, summary
    # The same lines in the session's own log.
    own = [json.loads(l) for l in s.read("log").splitlines()]
    first = [i for i, e in enumerate(own) if e["event"] == "run_start" and e["seq"] == seq][0]
    assert [e["event"] for e in own[first:first + len(events)]] == events


@pytest.mark.timeout_s(60)
def test_native_calls_past_the_limit_are_dropped(daemons, hostile_dir, tmp_path):
    # Hostile code that ignores the end of its run keeps writing calls: they
    # are read and dropped, never answered or logged one by one.
    d = start(daemons, hostile_dir, tmp_path)
    s = d.clone()
    assert s.value("x <- 7") == "7"
    seq = next_seq(s)
    before = d.audit.stat().st_size
    r = s.result(native_flood(d, seq, 20000, 1))
    # The native loop returns after its 20000 frames; R then meets the
    # interrupt and unwinds: an error naming the limit, state kept.
    assert r["status"] == "error" and r["limit"] == "tool_calls", r
    assert r["tool_calls"] == 1000
    assert s.value("x") == "7"
    summary = [e for e in audit_lines(d, s.name, seq) if e["event"] == "tool_calls_refused"]
    assert summary and summary[0]["dropped"] == 19000, summary
    assert d.audit.stat().st_size - before < AUDIT_PER_RUN_MAX


BIG_SERVER = r"""
import json, sys
for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.write(json.dumps({"id": req["id"], "value": "x" * 900000}) + "\n")
    sys.stdout.flush()
"""


@pytest.mark.timeout_s(60)
def test_worker_that_stops_reading_its_replies_is_killed(daemons, hostile_dir, tmp_path):
    d = start(daemons, hostile_dir, tmp_path)
    srv = tmp_path / "big.py"
    srv.write_text(BIG_SERVER)
    srv.chmod(0o755)
    util.write_bytes(d.path("tools", "big.json"), json.dumps(
        {"description": "", "args": {}, "command": ["/usr/bin/python3", str(srv)], "mode": "server"}),
        os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    w = d.clone()
    assert w.value("y <- 3") == "3"
    s = d.clone()
    seq = next_seq(s)
    stats_before = d.json("stats")
    # A call every 250 ms (time for the server's answer to come: a new call
    # cancels one still under way), each answered with 900 kB, none read.
    r = s.result(native_flood(d, seq, 40, 0, tool="big", delay_ms=250))
    assert r["status"] == "killed" and "stopped reading its replies" in r["error"], r
    assert d.json("stats")["killed"] == stats_before["killed"] + 1
    assert rss_mib(d.pid) < RSS_MAX_MIB
    # The session gets a fresh worker; the witness never noticed.
    assert s.value("1+1") == "2"
    assert w.value("y") == "3"


# Cheap calls, as fast as the daemon reads them (hostile.c's flood), then
# calls whose frames are dear to read and parse (800 KB of arguments each),
# each one timed inside: the daemon's pause of a worker whose read was dear
# must be counted from now, however often the loop resumed it early while its
# reads were cheap (it had nothing else to do).  CI saw a timeout's result
# wait over 2 s behind such a pause.
PAUSE_PROBE = ("dyn.load('%s'); fl <- .C('flood_calls', %dL, as.double(%d), 1, 1L, 0L, 'bogus', written = 0, err = 0L); "
               "dc <- .C('dear_calls', %dL, as.double(%d + 1), %dL, 800000L, worst = 0); c(fl$written, dc$worst)")


@pytest.mark.load
@pytest.mark.timeout_s(90)
def test_a_dear_read_after_a_long_flood_pauses_the_worker_briefly(daemons, hostile_dir, tmp_path):
    d = start(daemons, hostile_dir, tmp_path, "max_tool_calls=1000000")
    s = d.clone()
    s.write("timeout", "60")
    seq = next_seq(s)
    calls = 100000
    r = s.result(PAUSE_PROBE % (d.hostile, seq, calls, seq, calls, 20))
    assert r["status"] == "ok", r
    n, worst = r["value"]
    assert n == calls and worst >= 0, r
    # A pause is at most WORKER_PAUSE_MAX_NS (0.5 s) plus the read itself.
    assert worst < util.scaled(1.5), "a dear call waited %.2f s after %d cheap ones" % (worst, n)
