"""Round 3, the daemon's loop (docs/security.md, "Round 3: the daemon's loop
and the worker between runs"): what each frame from a worker may cost it,
with the bounds in force (common/frame.h, sessions/protocol.c).

tests/sandbox/test_round3.py sends the frames that stalled the loop before
the bounds (16 MiB tool calls of 8 million values): they are now refused
before they are buffered.  Here the attacker sends the dearest frames that
are still admitted, from native code (tests/sandbox/round3_loop.c) and from
plain R at the same time, and a witness session must keep its round trip;
frames that break the bounds are refused from both sides."""
import json
import time
from pathlib import Path

import pytest

import harness
import round3tools
import util
from round3tools import Background, cpu_s, next_seq, p90, rss_mib, witness_while

HERE = Path(__file__).resolve().parent
# common/frame.h
TOOL_CALL_VALUES_MAX = 32768
# The worst plain-R call the worker sends: about 1 MiB of arguments holding
# as many JSON values as the daemon admits, to a tool that does not exist
# (answered with an error at once), in a tight loop.
PLAIN_R_FLOOD = ('f <- environment(getOption("device"))$tool_call_native; '
                 'a <- paste0(\'{"a":[\', strrep("0,", 32700), \'0],"b":"\', strrep("x", 960000), \'"}\'); '
                 'repeat tryCatch(.Call(f, "bogus", a), error = function(e) NULL)')


@pytest.fixture(scope="module")
def loop_dir(tmp_path_factory):
    return harness.build_r_lib(tmp_path_factory.mktemp("round3_loop"), HERE / "round3_loop.c")


def start(daemons, loop_dir, *opts):
    return round3tools.start(daemons, loop_dir, "round3_loop.so", *opts)


def load(d):
    return round3tools.load(d, "worst_calls")


@pytest.mark.load
@pytest.mark.timeout_s(150)
@pytest.mark.parametrize("pairs", [1, 3, 6])
def test_dearest_admitted_frames_leave_the_witness_its_round_trip(daemons, loop_dir, pairs):
    """Native code writes tool_call frames of 1 MiB holding 32,760 JSON
    values (the bounds) as fast as the daemon takes them, never waiting for
    an answer, while another session calls tool_call_native from plain R
    with 1 MiB arguments in a loop (one such pair of sessions, then three).
    Each frame costs the loop a few ms and each worker gets at most 10 ms
    of it in every 50 ms, all of them together at most 20 ms: the
    witness's `1+1` stays fast and the daemon small.  With three pairs the
    six floods' shares alone added up to more than the loop (a witness's
    p90 160-190 ms until 2026-12-02).  With six pairs each flood came
    back after its dear status had expired and was never held to the dear
    budget (a witness's p50 365 ms until 2026-12-03; docs/security.md,
    "Round 10")."""
    d = start(daemons, loop_dir)
    natives = [d.clone() for _ in range(pairs)]
    seqs = [next_seq(n) for n in natives]
    plains = [d.clone() for _ in range(pairs)]
    for p in plains:
        assert p.value("1") == "1"
    w = d.clone()
    assert w.value("witness_var <- 41; witness_var + 1") == "42"
    for s in natives + plains:
        s.write("timeout", "5")
    rss_before = rss_mib(d.pid)
    floods = [Background(lambda n=n, seq=seq: n.result(
        load(d) + ".C('worst_calls', %dL, 1000000L, %dL, 1024L, written = 0L, err = 0L)$written"
        % (seq, TOOL_CALL_VALUES_MAX - 8))) for n, seq in zip(natives, seqs)]
    floods += [Background(lambda p=p: p.result(PLAIN_R_FLOOD)) for p in plains]
    time.sleep(1)
    cpu0, t0 = cpu_s(d.pid), time.monotonic()
    seen = [0]
    rts = witness_while(d, w, lambda: not all(f.done() for f in floods), 3,
                        each=lambda: seen.append(rss_mib(d.pid)))
    peak = max(seen)
    loop_share = (cpu_s(d.pid) - cpu0) / (time.monotonic() - t0)
    results = [f.result(util.scaled(60)) for f in floods]
    assert len(rts) >= 10, "the witness made %d round trips in 3 s" % len(rts)
    # Every flood ran until its deadline (a native one is killed after the
    # grace period: .C() does not see the interrupt): the frames were
    # admitted, not taken for a breach.
    for r in results[:pairs]:
        assert r.get("error_kind") == "timeout", r
    for r in results[pairs:]:
        assert r["status"] == "timeout", r
    print("witness p90 %.1f ms (%d round trips), daemon RSS peak %.1f MiB (%.1f before), daemon CPU %.0f%%"
          % (p90(rts), len(rts), peak, rss_before, loop_share * 100))
    assert p90(rts) < util.scaled(50), "witness 1+1 p90 %.0f ms during the floods: %s" % (p90(rts), rts)
    assert peak < 60 + 20 * (pairs - 1), "daemon RSS %.0f MiB during the floods (%.0f before)" % (peak, rss_before)
    assert w.value("witness_var") == "41"
    st = d.json("stats")
    assert st.get("protocol_violations", 0) == 0, st


@pytest.mark.load
@pytest.mark.timeout_s(150)
def test_many_cheap_floods_leave_the_witness_its_round_trip(daemons, loop_dir):
    """24 sessions write 2 KiB tool calls from native code as fast as the
    daemon takes them: each read of one (16 frames) costs the loop under a
    millisecond, so none is dear, and each alone keeps to its share.  Until
    2026-12-03 nothing bounded them together: every turn of the loop read
    each of them, and a witness's `1+1` took 177 ms p50, 224 ms p90.  Now
    the busy workers together read for about a millisecond a turn (14 ms
    p50, 18-32 ms p90 here); the floods still get what the loop has left,
    and run to their deadline."""
    d = start(daemons, loop_dir, "max_tool_calls=1000000")
    floods_s = [d.clone() for _ in range(24)]
    seqs = [next_seq(s) for s in floods_s]
    w = d.clone()
    assert w.value("witness_var <- 41; witness_var + 1") == "42"
    for s in floods_s:
        s.write("timeout", "5")
    floods = [Background(lambda s=s, seq=seq: s.result(
        load(d) + ".C('worst_calls', %dL, 100000000L, 100L, 2L, written = 0L, err = 0L)$written" % seq))
        for s, seq in zip(floods_s, seqs)]
    time.sleep(1)
    rts = witness_while(d, w, lambda: not all(f.done() for f in floods), 3)
    results = [f.result(util.scaled(60)) for f in floods]
    assert len(rts) >= 10, "the witness made %d round trips in 3 s" % len(rts)
    for r in results:
        assert r.get("error_kind") == "timeout", r
    print("witness p50 %.1f p90 %.1f ms (%d round trips)" % (sorted(rts)[len(rts) // 2], p90(rts), len(rts)))
    assert p90(rts) < util.scaled(80), "witness 1+1 p90 %.0f ms during the floods: %s" % (p90(rts), rts)
    assert w.value("witness_var") == "41"
    assert d.json("stats").get("protocol_violations", 0) == 0


@pytest.mark.timeout_s(60)
def test_tool_call_over_the_values_bound_is_an_r_error(daemons, loop_dir):
    """Inside: plain R's call with more JSON values than the daemon admits
    is refused by the worker with an R error naming the bound, before it is
    sent.  Outside: the worker is the same process, the session goes on."""
    d = start(daemons, loop_dir)
    s = d.clone()
    assert s.value("kept <- 7") == "7"
    before = s.worker_pids()
    r = s.result('f <- environment(getOption("device"))$tool_call_native; '
                 '.Call(f, "bogus", paste0(\'{"a":[\', strrep("0,", 40000), \'0]}\'))')
    assert r["status"] == "error", r
    assert "JSON values" in r["error"] and str(TOOL_CALL_VALUES_MAX) in r["error"], r
    assert s.value("kept") == "7"
    assert s.worker_pids() == before


@pytest.mark.timeout_s(60)
@pytest.mark.parametrize("payload,why", [
    ('{"seq":%d,"type":"console","text":"x"}', "does not begin with its type"),
    ('{"type":"ready","r_version":"4.2"}', "may not send now"),
    ('{"type":"console","seq":%d,"text":"' + "x" * (500 << 10) + '"}', "over its type's bytes"),
    ('{"type":"tool_call","seq":%d,"id":1,"tool":"bogus","args":{"a":[' + ",".join(["0"] * 40000) + ']}}',
     "over its type's JSON values"),
], ids=["type-not-first", "phase", "bytes", "values"])
def test_frames_outside_their_bounds_kill_the_worker(daemons, loop_dir, payload, why):
    """Inside: a frame whose "type" is not its first member, one of a type
    the worker may not send while it runs, one over its type's bytes, one
    over its type's JSON values: each is refused before it is parsed (the
    bytes before the frame is buffered) and the worker is killed as a
    protocol breach, with the reason.  Outside: the daemon counts it, and a
    witness and the session's next worker go on."""
    d = start(daemons, loop_dir)
    w = d.clone()
    assert w.value("witness_var <- 41") == "41"
    s = d.clone()
    seq = next_seq(s)
    code = payload % seq if "%d" in payload else payload
    r = s.result(load(d) + ".C('raw_frame', %s, written = 0L, err = 0L); Sys.sleep(5); 1"
                 % json.dumps(code))
    assert r["status"] == "killed", r
    assert "broke the protocol" in r["error"] and why in r["error"], r
    assert d.json("stats")["protocol_violations"] >= 1
    assert w.value("witness_var") == "41"
    assert s.value("1+1") == "2"
