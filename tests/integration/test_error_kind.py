"""result.json's error_kind through the mount: every kind a run can end with
(README, docs/protocol.md), provoked for real — a parse error, an R error,
a tool's error raised in R, the deadline, a limit, ctl interrupt, ctl
restart, a crash, a worker killed from outside, a session with no worker —
and absent when the run ended ok.  The kind is what clients use instead of
the message's text."""
import json
import os
import signal

import pytest

import util

PY = "/usr/bin/python3"
EXPECT = [r"crash", r"signal", r"died", r"killed", r"exit", r"abort", r"lost", r"limit", r"memory",
          r"time(d)? ?out", r"interrupt", r"restart", r"could not start", r"did not start within",
          r"R could not start", r"tool"]
SHARED_OPTS = ("pool=2",)
SHARED_EXPECT = EXPECT

ABORT = ("dyn.load(Sys.glob(c('/lib/x86_64-linux-gnu/libc.so.6', '/lib*/libc.so.6',"
         " '/usr/lib/*/libc.so.6'))[1]); .C('abort')")
FAILING_TOOL = "import sys; sys.stdin.read(); sys.stderr.write('no such table\\n'); sys.exit(1)"


def define(d, name, spec, scope=("tools",)):
    util.write_bytes(d.path(*scope, name + ".json"), json.dumps(spec),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC)


def result(s, code, timeout=30):
    return util.bounded(lambda: s.result(code), util.scaled(timeout), s.daemon.kill)


def test_ok_has_no_kind(sess):
    r = result(sess, "1+1")
    assert r["status"] == "ok" and "error_kind" not in r, r


@pytest.mark.parametrize("code", ["1 +", "f <- function( {", "x <- 'unterminated"])
def test_syntax(sess, code):
    sess.run("kept <- 1")
    r = result(sess, code)
    assert r["status"] == "error" and r["error_kind"] == "syntax", r
    assert sess.value("kept") == "1"


def test_code_not_utf8_is_syntax(sess):
    util.write_bytes(sess.p("input"), b"x <- '\xff'")
    r = json.loads(sess.read("result.json"))
    assert r["status"] == "error" and r["error_kind"] == "syntax" and "UTF-8" in r["error"], r


@pytest.mark.parametrize("code", ["stop('boom')", "log(-1) + undefined_variable", "sqrt('a')"])
def test_runtime(sess, code):
    r = result(sess, code)
    assert r["status"] == "error" and r["error_kind"] == "runtime", r


def test_runtime_even_with_a_tool_error_caught_before(shared, tmp_path):
    """Only the error that ended the run counts: a tool error the code caught
    itself, then an R error, is runtime."""
    prog = tmp_path / "fail.py"
    prog.write_text(FAILING_TOOL)
    define(shared, "failing_k", {"description": "", "args": {}, "command": [PY, str(prog)]})
    s = shared.clone()
    try:
        r = result(s, "x <- tryCatch(failing_k(), error = function(e) 'caught'); x")
        assert r["status"] == "ok" and r["value"] == "caught" and "error_kind" not in r, r
        r = result(s, "tryCatch(failing_k(), error = function(e) NULL); stop('mine')")
        assert r["status"] == "error" and r["error_kind"] == "runtime" and "mine" in r["error"], r
    finally:
        s.close()
        os.unlink(str(shared.path("tools", "failing_k.json")))


def test_tool(shared, tmp_path):
    """A tool's own failure, the daemon's refusal (a tool this session does
    not see) and a mistyped argument checked in R are all tool errors."""
    prog = tmp_path / "fail.py"
    prog.write_text(FAILING_TOOL)
    define(shared, "failing_t", {"description": "", "args": {"n": "numeric"}, "command": [PY, str(prog)]})
    s = shared.clone()
    try:
        r = result(s, "failing_t(1)")
        assert r["status"] == "error" and r["error_kind"] == "tool" and "no such table" in r["error"], r
        r = result(s, "failing_t('one')")
        assert r["status"] == "error" and r["error_kind"] == "tool" and "numeric" in r["error"], r
        # The function the tool's body calls, asked for a tool the daemon
        # does not know: refused there.
        r = result(s, "invoke <- body(failing_t)[[1]]; invoke('no_such_tool', list(), list(), quote(x()))")
        assert r["status"] == "error" and r["error_kind"] == "tool" and "unknown tool" in r["error"], r
        assert s.value("1+1") == "2"
    finally:
        s.close()
        os.unlink(str(shared.path("tools", "failing_t.json")))


def test_timeout(sess):
    sess.run("kept <- 2")
    sess.write("timeout", "0.5")
    r = result(sess, "Sys.sleep(30)")
    assert r["status"] == "timeout" and r["error_kind"] == "timeout", r
    assert sess.value("kept") == "2"


def test_limit_memory(sess):
    sess.write("limits", '{"memory": 268435456}')
    r = result(sess, "x <- numeric(1e9)")
    assert r["error_kind"] == "limit" and r["limit"] == "memory", r


def test_limit_cpu(sess):
    sess.write("limits", '{"cpu": 1}')
    sess.write("timeout", "0")
    r = result(sess, "while (TRUE) {}")
    assert r["error_kind"] == "limit" and r["limit"] == "cpu", r


def test_limit_tool_calls(daemons):
    d = daemons.start("pool=0", "max_tool_calls=3", expect=EXPECT)
    define(d, "cat3", {"description": "", "args": {"x": ""}, "command": ["/bin/cat"]})
    s = d.clone()
    r = result(s, "for (i in 1:4) cat3(i)")
    assert r["status"] == "error" and r["error_kind"] == "limit" and r["limit"] == "tool_calls", r


def test_interrupted(sess):
    sess.run("kept <- 3")
    sess.submit("Sys.sleep(30)")
    util.wait_for(lambda: sess.status() == "running", 10, "the run")
    sess.write("ctl", "interrupt")
    r = json.loads(sess.read("result.json"))
    assert r["status"] == "error" and r["error_kind"] == "interrupted", r
    assert sess.value("kept") == "3"


def test_killed_by_restart(sess):
    sess.submit("Sys.sleep(30)")
    util.wait_for(lambda: sess.status() == "running", 10, "the run")
    sess.write("ctl", "restart")
    r = json.loads(sess.read("result.json"))
    assert r["status"] == "killed" and r["error_kind"] == "killed", r


@pytest.mark.timeout_s(60)
def test_crashed(daemons):
    d = daemons.start("pool=0", expect=EXPECT)
    s = d.clone()
    r = result(s, ABORT)
    assert r["status"] == "crashed" and r["error_kind"] == "crashed", r
    assert s.value("1+1") == "2"


@pytest.mark.timeout_s(60)
def test_killed_from_outside_is_crashed(daemons):
    """The daemon did not kill it: as far as it knows, the worker crashed."""
    d = daemons.start("pool=0", expect=EXPECT)
    s = d.clone()
    assert s.value("1") == "1"
    pid = util.session_worker_pids(d.pid)[0]
    s.submit("Sys.sleep(30)")
    util.wait_for(lambda: s.status() == "running", 10, "the run")
    os.kill(pid, signal.SIGKILL)
    r = util.bounded(lambda: json.loads(s.read("result.json")), util.scaled(10), d.kill)
    assert r["status"] == "crashed" and r["error_kind"] == "crashed", r


@pytest.mark.timeout_s(120)
def test_dead(daemons, tmp_path):
    """No worker can be started (a zygote that cannot come back): the
    session is dead, and a run written to it ends at once with kind dead."""
    flag, wrapper = util.breakable_worker(tmp_path)
    d = daemons.start("pool=0", "worker=%s" % wrapper, expect=EXPECT)
    s = d.clone()
    assert s.value("1") == "1"
    flag.write_text("")
    os.kill(util.helper_pid(d.pid, util.ZYGOTE_COMM), signal.SIGKILL)
    os.kill(util.session_worker_pids(d.pid)[0], signal.SIGKILL)
    util.wait_for(lambda: s.status() == "dead", 60, "the session dead")
    r = result(s, "1")
    assert r["status"] == "error" and r["error_kind"] == "dead" and "restart" in r["error"], r
