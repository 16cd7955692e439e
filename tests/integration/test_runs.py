"""Runs through input/output: formatting, state, blocking reads, poll,
O_NONBLOCK, EBUSY, EFBIG, errors, console, status, result.json, value.json."""
import errno
import json
import os
import select
import signal
import subprocess
import threading
import time

import pytest

import util
from util import expect_errno

PRIMES = ("p <- 2:1000; p <- p[sapply(p, function(n) all(n %% 2:max(2, floor(sqrt(n))) != 0"
          " | n == 2))]; sum(p[1:100])")


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("code,expected", [
    ("1+1", "2"),
    (PRIMES, "24133"),
    ("mean(1:100)", "50.5"),
    ("x <- 5", "5"),
    ("NULL", "NULL"),
    ("invisible(42)", "42"),
    ("'hello'", "hello"),
    ("TRUE", "TRUE"),
    ("a <- 1\nb <- 2\na + b", "3"),
])
def test_values(sess, code, expected):
    assert sess.run(code) == expected + "\n"
    assert sess.read("error") == ""


def test_data_frame_cut_at_30_rows(sess):
    out = sess.run("data.frame(a = 1:100, b = letters[(0:99 %% 26) + 1])")
    lines = out.rstrip("\n").split("\n")
    assert lines[-1] == "... (100 rows total)", lines[-3:]
    printed = lines[:-1]
    assert len(printed) == 31, printed  # header + 30 rows
    assert printed[0].split() == ["a", "b"]
    assert printed[30].split()[:2] == ["30", "30"]
    assert not any(l.split()[:1] == ["31"] for l in printed)


def test_small_data_frame_not_cut(sess):
    out = sess.run("data.frame(a = 1:3)")
    assert "rows total" not in out
    assert len(out.rstrip("\n").split("\n")) == 4


def test_long_output_cut_at_50_lines(sess):
    out = sess.run("1:1000")
    lines = out.rstrip("\n").split("\n")
    assert lines[-1] == "... (output truncated)", lines[-3:]
    assert len(lines) == 51
    assert lines[0].startswith("   [1]")


def test_vector_printed(sess):
    assert sess.run("1:3") == "[1] 1 2 3\n"


def test_state_persists(sess):
    assert sess.run("y <- 7") == "7\n"
    assert sess.run("y") == "7\n"
    assert sess.run("y * 2") == "14\n"


def test_sessions_are_isolated(shared):
    a, b = shared.clone(), shared.clone()
    try:
        a.run("only_in_a <- 1")
        assert b.run("exists('only_in_a')") == "FALSE\n"
    finally:
        a.close()
        b.close()


def test_read_after_close_sees_new_run(sess):
    # open(O_CREAT|O_TRUNC) + write + close, then read: never the stale value
    for i in range(50):
        with open(sess.p("input"), "w") as f:
            f.write("%d * 3\n" % i)
        with open(sess.p("output")) as f:
            assert f.read() == "%d\n" % (i * 3), i


def test_shell_echo_cat(sess):
    for i in range(5):
        r = subprocess.run(["sh", "-c", 'echo "%d + 100" > "$1/input"; cat "$1/output"' % i,
                            "sh", str(sess.dir)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "%d\n" % (i + 100)


def test_same_code_twice_runs_twice(sess):
    sess.run("n <- 0")
    assert sess.run("n <- n + 1") == "1\n"
    assert sess.run("n <- n + 1") == "2\n"
    s1 = sess.result()["seq"]
    sess.run("n <- n + 1")
    assert sess.result()["seq"] > s1


def test_write_in_pieces(sess):
    fd = os.open(sess.p("input"), os.O_WRONLY | os.O_TRUNC)
    for piece in ("x_", "pieces <- ", "1", "0", "0"):
        os.write(fd, piece.encode())
    os.close(fd)
    assert sess.read("output") == "100\n"


# ---------------------------------------------------------------- blocking


def _reader(path, box):
    t0 = time.monotonic()
    try:
        box["value"] = util.read_text(path)
    except OSError as e:
        box["errno"] = e.errno
    box["elapsed"] = time.monotonic() - t0


@pytest.mark.parametrize("fname", ["output", "error", "result.json", "value.json"])
def test_read_blocks_until_run_ends(sess, fname):
    sess.submit("Sys.sleep(1); 'done'")
    box = {}
    t = threading.Thread(target=_reader, args=(sess.p(fname), box), daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(util.scaled(20))
    assert not t.is_alive()
    assert time.monotonic() - t0 >= 0.8, box
    assert "value" in box, box
    if fname == "output":
        assert box["value"] == "done\n"
    elif fname == "error":
        assert box["value"] == ""
    elif fname == "result.json":
        r = json.loads(box["value"])
        assert r["status"] == "ok", r
        assert r["value"] in ("done", "done\n"), r
    else:
        assert json.loads(box["value"]) == "done"
    assert sess.status() == "idle"


def test_many_parked_readers(sess):
    sess.submit("Sys.sleep(1); 99")
    boxes = [{} for _ in range(8)]
    threads = [threading.Thread(target=_reader, args=(sess.p("output"), b), daemon=True)
               for b in boxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(util.scaled(20))
    assert all(b.get("value") == "99\n" for b in boxes), boxes


def test_nonblocking_read_gets_eagain(sess):
    sess.submit("Sys.sleep(2); 5")
    fd = os.open(sess.p("output"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        expect_errno(errno.EAGAIN, os.read, fd, 4096)
    finally:
        os.close(fd)
    assert sess.read("output") == "5\n"
    # idle: a non-blocking read answers at once
    assert util.read_bytes(sess.p("output"), os.O_NONBLOCK) == b"5\n"


def test_poll_reports_readable_when_run_ends(sess):
    sess.submit("Sys.sleep(1.5); 8")
    fd = os.open(sess.p("output"), os.O_RDONLY)
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        t0 = time.monotonic()
        assert p.poll(300) == [], "output polled readable during the run"
        ev = p.poll(int(util.scaled(20) * 1000))
        elapsed = time.monotonic() - t0
        assert ev and ev[0][1] & select.POLLIN, ev
        assert elapsed >= 1.0, elapsed
        assert os.read(fd, 4096) == b"8\n"
    finally:
        os.close(fd)


def test_select_when_idle(sess):
    sess.run("1")
    fd = os.open(sess.p("output"), os.O_RDONLY)
    try:
        r, _, _ = select.select([fd], [], [], 2)
        assert r == [fd]
    finally:
        os.close(fd)


def test_status_running_then_idle(sess):
    assert sess.status() in ("idle", "starting")
    assert util.read_text(sess.p("status")) in ("idle\n", "starting\n")
    sess.submit("Sys.sleep(1)")
    assert sess.read("status") == "running\n"
    sess.read("output")
    assert sess.read("status") == "idle\n"


# ---------------------------------------------------------------- refusals


def test_ebusy_write_during_run(sess):
    sess.submit("Sys.sleep(1.5); 1")
    expect_errno(errno.EBUSY, os.open, sess.p("input"), os.O_WRONLY | os.O_TRUNC)
    assert sess.read("output") == "1\n"
    assert sess.run("2") == "2\n"


def test_ebusy_second_writer(sess):
    fd = os.open(sess.p("input"), os.O_WRONLY | os.O_TRUNC)
    try:
        expect_errno(errno.EBUSY, os.open, sess.p("input"), os.O_WRONLY | os.O_TRUNC)
        os.write(fd, b"'first'")
    finally:
        os.close(fd)
    assert sess.read("output") == "first\n"


def test_efbig(daemons):
    d = daemons.start("pool=0", "max_code_bytes=1000")
    s = d.clone()
    assert s.run("'before'") == "before\n"
    seq = s.result()["seq"]
    code = "x <- 1\n" + "#" * 1993
    assert len(code) == 2000
    with pytest.raises(OSError) as e:
        fd = os.open(s.p("input"), os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, code.encode())
        finally:
            os.close(fd)
    assert e.value.errno == errno.EFBIG
    assert s.read("output") == "before\n"
    assert s.result()["seq"] == seq
    assert s.run("exists('x')") == "FALSE\n"
    # exactly the maximum is fine
    assert s.run("'z'" + " " * 997) == "z\n"


def test_invalid_utf8(sess):
    sess.submit(b"x <- '\xff'")
    err = sess.read("error")
    assert "UTF-8" in err or "utf-8" in err.lower(), err
    assert sess.read("output") == ""
    assert sess.result()["status"] == "error"
    assert sess.run("exists('x')") == "FALSE\n"


def test_syntax_error_runs_nothing(sess):
    sess.submit("z <- 1; 1 +* 2")
    err = sess.read("error")
    assert "syntax" in err.lower() or "unexpected" in err.lower(), err
    assert sess.read("output") == ""
    assert sess.result()["status"] == "error"
    assert sess.run("exists('z')") == "FALSE\n"


def test_runtime_error_keeps_state(sess):
    sess.run("keep <- 11")
    sess.submit("stop('boom')")
    assert "boom" in sess.read("error")
    assert sess.read("output") == ""
    r = sess.result()
    assert r["status"] == "error"
    assert "boom" in r["error"]
    assert sess.run("keep") == "11\n"
    assert sess.read("error") == ""


def test_error_after_side_effects(sess):
    sess.submit("partial <- 3; stop('late')")
    assert "late" in sess.read("error")
    assert sess.run("partial") == "3\n"


def test_empty_code(sess):
    sess.run("1")
    r = sess.result("")
    assert r["status"] in ("ok", "error")
    assert sess.run("2") == "2\n"


# ---------------------------------------------------------------- console


def test_console_captures_output(sess):
    sess.submit("cat('hello cat\\n'); print('hello print'); message('hello message');"
                " warning('w1'); 3")
    assert sess.read("output") == "3\n"
    con = sess.read("console")
    for s in ("hello cat", "hello print", "hello message", "w1"):
        assert s in con, (s, con)
    r = sess.result()
    assert r["status"] == "ok"
    assert any("w1" in w for w in r["warnings"]), r
    assert "hello cat" in r["console"]


def test_console_reset_each_run(sess):
    sess.run("cat('first-run\\n')")
    sess.run("cat('second-run\\n')")
    con = sess.read("console")
    assert "second-run" in con and "first-run" not in con


def test_console_grows_during_run(sess):
    sess.submit("for (i in 1:10) { cat(sprintf('line%02d\\n', i)); Sys.sleep(0.2) }; 'end'")
    time.sleep(1.0)
    mid = sess.read("console")
    assert "line01" in mid, mid
    assert "line10" not in mid, mid
    assert sess.read("output") == "end\n"
    assert "line10" in sess.read("console")


def test_console_cap(daemons):
    d = daemons.start("pool=0", "console_max_bytes=1000")
    s = d.clone()
    assert s.run("cat(strrep('a', 10000)); 1") == "1\n"
    con = s.read("console")
    assert len(con.encode()) <= 1200, len(con)
    assert con.count("a") >= 500
    tail = con.replace("a", "")
    assert tail.strip(), "no truncation marker in console"
    assert "truncat" in con.lower() or "..." in con, con[-200:]


# ---------------------------------------------------------------- result.json / value.json


def test_result_json_shape(sess):
    r = sess.result("1+1")
    for k in ("seq", "status", "value", "error", "console", "warnings", "elapsed_ms",
              "tool_calls"):
        assert k in r, (k, r)
    assert r["status"] == "ok"
    assert r["error"] == ""
    assert isinstance(r["warnings"], list)
    assert isinstance(r["elapsed_ms"], (int, float)) and r["elapsed_ms"] >= 0
    assert r["tool_calls"] == 0
    seq = r["seq"]
    r2 = sess.result("2")
    assert r2["seq"] > seq


@pytest.mark.parametrize("code,expected", [
    ("1:3", [1, 2, 3]),
    ("42", 42),
    ("'a'", "a"),
    ("NA", None),
    ("TRUE", True),
    ("data.frame(a = 1:2, b = c('x', 'y'))", [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]),
    ("list(a = 1, b = 'x')", {"a": 1, "b": "x"}),
    ("c(1.5, NA)", [1.5, None]),
])
def test_value_json(sess, code, expected):
    sess.submit(code)
    assert json.loads(sess.read("value.json")) == expected
    assert sess.result()["status"] == "ok"


def test_value_json_function_is_null_with_note(sess):
    sess.submit("function(x) x")
    assert json.loads(sess.read("value.json")) is None
    r = sess.result()
    assert r["status"] == "ok"
    notes = [v for k, v in r.items() if "note" in k]
    assert notes and all(isinstance(n, str) and n for n in notes), r


def test_value_json_after_error(sess):
    sess.submit("stop('e')")
    v = sess.read("value.json").strip()
    assert v in ("", "null"), v


# ---------------------------------------------------------------- interrupts of parked reads


@pytest.mark.timeout_s(60)
def test_ctrl_c_on_blocked_cat(sess):
    sess.submit("Sys.sleep(30)")
    p = subprocess.Popen(["cat", str(sess.p("output"))], stdout=subprocess.PIPE)
    time.sleep(0.5)
    assert p.poll() is None, "cat returned during the run"
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    try:
        p.wait(util.scaled(2))
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        pytest.fail("cat blocked on output did not end within 2 s of SIGINT")
    assert time.monotonic() - t0 < util.scaled(2)
    assert sess.status() == "running"
    util.write_bytes(sess.p("ctl"), "interrupt")


# Blocks in a read of a parked file (util.interrupt_probe).
EINTR_PROBE = r"""
fd = os.open(sys.argv[1], os.O_RDONLY)
print("ready", flush=True)
try:
    os.read(fd, 4096)
    print("returned")
except Interrupted:
    print("EINTR")
"""


@pytest.mark.timeout_s(60)
def test_signal_interrupts_parked_read(sess):
    sess.submit("Sys.sleep(30)")
    out = util.interrupt_probe(EINTR_PROBE, sess.p("output"), util.scaled(2),
                               "a signal did not interrupt the parked read within 2 s")
    assert out.strip() == "EINTR"
    util.write_bytes(sess.p("ctl"), "interrupt")
    sess.read("output")
    assert sess.status() == "idle"
