"""One session's slow, hung or crashing call to a global server-mode tool
never fails or delays another session's call beyond that call's own timeout
(docs/tools.md, "server": a server per calling session)."""
import json
import os
import threading
import time

import pytest

import util

PY = "/usr/bin/python3"
# Answers each request as it comes (select, no thread per call): "sleep"
# replies after 30 s, "crash" exits at once, anything else replies at once.
# Shared by two sessions, one sleeping call would hold the other's behind
# it only at its timeout; one crash would fail the other's call in flight.
SERVER = r"""
import json, os, select, sys, time
if sys.argv[1:] == ["sequential"]:
    # One request at a time, as simple servers are: a sleeping call holds
    # every call behind it.
    for line in sys.stdin:
        req = json.loads(line)
        what = req["args"]["what"]
        if what == "sleep":
            time.sleep(30)
        sys.stdout.write(json.dumps({"id": req["id"], "value": what}) + "\n")
        sys.stdout.flush()
    sys.exit(0)
pending = []
buf = b""
while True:
    timeout = max(0.0, min(t for t, _ in pending) - time.monotonic()) if pending else None
    r, _, _ = select.select([0], [], [], timeout)
    now = time.monotonic()
    for due in [p for p in pending if p[0] <= now]:
        pending.remove(due)
        sys.stdout.write(json.dumps({"id": due[1], "value": "late"}) + "\n")
        sys.stdout.flush()
    if not r:
        continue
    data = os.read(0, 65536)
    if not data:
        break
    buf += data
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        req = json.loads(line)
        what = req["args"]["what"]
        if what == "crash":
            os._exit(3)
        if what == "sleep":
            pending.append((time.monotonic() + 30, req["id"]))
        elif what == "hold":
            pending.append((time.monotonic() + 1.5, req["id"]))
        else:
            sys.stdout.write(json.dumps({"id": req["id"], "value": what}) + "\n")
            sys.stdout.flush()
"""


@pytest.fixture
def mount(tmp_path):
    d = util.Daemon(tmp_path, ["pool=2"], expect=[r"tool server"]).start()
    srv = tmp_path / "srv.py"
    srv.write_text(SERVER)
    util.write_bytes(d.path("tools", "ask.json"),
                     json.dumps({"description": "", "args": {"what": "character"}, "command": [PY, str(srv)],
                                 "mode": "server", "timeout": 2}),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    util.write_bytes(d.path("tools", "ask_seq.json"),
                     json.dumps({"description": "", "args": {"what": "character"},
                                 "command": [PY, str(srv), "sequential"], "mode": "server", "timeout": 2}),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    d.server_script = str(srv)
    yield d
    problems = d.stop()
    assert not problems, problems


def in_thread(fn):
    box = {}

    def body():
        box["value"] = fn()

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, box


def warm_pair(mount):
    """Two sessions of mount, each of which has made one call (ask('warm')),
    so that each has its tool server running."""
    a, b = mount.clone(), mount.clone()
    assert a.value("ask('warm')") == "warm" and b.value("ask('warm')") == "warm"
    return a, b


def caught(call):
    """R code that makes the call and gives its error message as the value
    if it fails."""
    return "tryCatch(%s, error = function(e) conditionMessage(e))" % call


def servers(d):
    return [p for p, _ in util.descendants(d.pid) if d.server_script in util.proc_cmdline(p)]


@pytest.mark.timeout_s(60)
def test_a_call_that_hangs_does_not_delay_or_fail_another_session(mount):
    # A one-request-at-a-time server: A's call hangs it until A's timeout.
    a, b = mount.clone(), mount.clone()
    assert b.value("ask_seq('warm')") == "warm"
    t, box = in_thread(lambda: a.result(caught("ask_seq('sleep')")))
    time.sleep(0.3)  # A's call is under way
    times = []
    deadline = time.monotonic() + 3  # past A's timeout of 2 s
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        r = b.result("ask_seq('b')")
        times.append(time.monotonic() - t0)
        assert r["status"] == "ok" and r["value"] == "b", r
    t.join(util.scaled(10))
    ra = box["value"]
    assert ra["status"] == "ok" and "did not answer within the timeout of 2 s" in ra["value"], ra
    # Every one of B's calls was answered promptly, also across A's
    # timeout and the restart of A's server.
    assert len(times) > 10 and max(times) < util.scaled(0.5), times
    assert b.value("ask_seq('after')") == "after"
    assert a.value("ask_seq('a again')") == "a again"


@pytest.mark.timeout_s(60)
def test_a_timeout_does_not_fail_another_sessions_call_in_flight(mount):
    # B's call (answered after 1.5 s) is under way when A's call times out
    # and A's server is restarted.
    a, b = warm_pair(mount)
    ta, box_a = in_thread(lambda: a.result(caught("ask('sleep')")))
    time.sleep(1.0)
    tb, box_b = in_thread(lambda: b.result("ask('hold')"))
    ta.join(util.scaled(10))
    tb.join(util.scaled(10))
    assert "did not answer within the timeout of 2 s" in box_a["value"]["value"], box_a
    assert box_b["value"]["status"] == "ok" and box_b["value"]["value"] == "late", box_b


@pytest.mark.timeout_s(60)
def test_a_crashing_call_does_not_fail_another_sessions_call(mount):
    a, b = warm_pair(mount)
    # B's call is in flight (its answer comes after 1.5 s) when A's call
    # makes the server exit.
    t, box = in_thread(lambda: b.result("ask('hold')"))
    time.sleep(0.3)
    ra = a.result(caught("ask('crash')"))
    assert ra["status"] == "ok" and "tool server" in ra["value"], ra  # it closed its output, or exited
    t.join(util.scaled(10))
    rb = box["value"]
    assert rb["status"] == "ok" and rb["value"] == "late", rb
    # A's next call starts a server of its own again.
    assert a.value("ask('a again')") == "a again"


@pytest.mark.timeout_s(60)
def test_servers_end_with_their_session(mount):
    a, b = mount.clone(), mount.clone()
    assert a.value("ask('x')") == "x" and b.value("ask('y')") == "y"
    assert len(servers(mount)) == 2, servers(mount)
    a.close()
    deadline = time.monotonic() + util.scaled(5)
    while len(servers(mount)) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(servers(mount)) == 1
    assert b.value("ask('still')") == "still"
    os.unlink(str(mount.path("tools", "ask.json")))
    deadline = time.monotonic() + util.scaled(5)
    while servers(mount) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert servers(mount) == []
