"""-o audit_log=PATH and sessions/N/log."""
import json
import os
import stat
import time

import pytest

import util

EXPECT = [r"crash", r"signal", r"died", r"killed", r"lost", r"time(d)? ?out", r"abort"]
ABORT = ("dyn.load(Sys.glob(c('/lib/x86_64-linux-gnu/libc.so.6', '/lib*/libc.so.6'))[1]);"
         " .C('abort')")


def kind(ev):
    for k in ("event", "type", "kind", "action"):
        if isinstance(ev.get(k), str):
            return ev[k].lower()
    return ""


def text(ev):
    return json.dumps(ev).lower()


def parse_lines(data):
    events = []
    for line in data.splitlines():
        if line.strip():
            ev = json.loads(line)
            assert isinstance(ev, dict), line
            events.append(ev)
    return events


def find(events, pred, what):
    hits = [e for e in events if pred(e)]
    assert hits, "no %s event in:\n%s" % (what, "\n".join(json.dumps(e) for e in events))
    return hits


@pytest.mark.timeout_s(90)
def test_audit_log(daemons, tmp_path):
    log = tmp_path / "audit.jsonl"
    d = daemons.start("pool=0", "audit_log=%s" % log, expect=EXPECT)
    s = d.clone()
    other = d.clone()
    assert s.run("'marker-one'; 1+1") == "2\n"
    assert other.run("'marker-other'") == "marker-other\n"
    s.write("timeout", "1")
    s.submit("Sys.sleep(30)")
    assert s.result()["status"] == "timeout"
    s.submit(ABORT)
    assert s.result()["status"] == "crashed"
    s.write("ctl", "restart")
    assert s.run("1") == "1\n"
    long_code = "1 # " + "x" * 20000
    s.run(long_code)
    session_log = s.read("log")
    s.close()
    other.close()
    time.sleep(0.2)

    st = os.lstat(log)
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    events = parse_lines(log.read_text())
    mine = [e for e in events if s.name in json.dumps(e)]
    assert mine, events

    find(mine, lambda e: "open" in kind(e) or "creat" in kind(e), "session open")
    starts = find(mine, lambda e: "start" in kind(e) and "marker-one" in json.dumps(e),
                  "run start with code")
    ends = find(mine, lambda e: ("end" in kind(e) or "result" in kind(e) or "finish" in kind(e))
                and "status" in e, "run end with status")
    assert any("elapsed" in k for e in ends for k in e), ends
    find(mine, lambda e: "timeout" in text(e), "timeout")
    find(mine, lambda e: "crash" in text(e), "crash")
    find(mine, lambda e: "restart" in kind(e) or "restart" in text(e), "restart")
    find(mine, lambda e: "close" in kind(e), "session close")
    # code is cut at 10 KB
    longs = [e for e in mine if "xxxxxxxxxx" in json.dumps(e)]
    assert longs
    for e in longs:
        assert len(json.dumps(e)) < 12000, len(json.dumps(e))
    del starts

    # sessions/N/log: this session's events only, JSON lines
    own = parse_lines(session_log)
    assert any("marker-one" in json.dumps(e) for e in own), own
    assert not any("marker-other" in json.dumps(e) for e in own)
    assert not any(other.name in json.dumps(e) and s.name not in json.dumps(e) for e in own)


def test_session_log_without_audit_option(shared):
    s = shared.clone()
    try:
        s.run("'hello-log'")
        events = parse_lines(s.read("log"))
        assert any("hello-log" in json.dumps(e) for e in events), events
    finally:
        s.close()


@pytest.mark.timeout_s(60)
def test_audit_log_refuses_symlink(daemons, tmp_path):
    target = tmp_path / "target"
    target.write_text("")
    link = tmp_path / "audit.jsonl"
    os.symlink(target, link)
    d = daemons.start("pool=0", "audit_log=%s" % link, wait=False,
                      expect=[r"audit", r"symlink", r"link"])
    d.allow_failure = True
    try:
        rc = d.proc.wait(util.scaled(15))
    except Exception:
        pytest.fail("securerfs started with a symlink as audit log")
    assert rc != 0
    assert not util.is_fuse_mounted(d.mnt)
    err = d.stderr().lower()
    assert "audit" in err or str(link).lower() in err, err
    assert "link" in err, err
    assert target.read_text() == ""
