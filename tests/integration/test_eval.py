"""sessions/N/eval, a run in two requests: write code, read the same
descriptor for that run's result.json; the rules of input (one run at a
time, EBUSY, EFBIG, UTF-8, O_NONBLOCK, EINTR), and output, error,
result.json and value.json true for runs started here."""
import contextlib
import errno
import json
import os
import select
import time

import pytest

import util
from util import expect_errno


def open_eval(sess, flags=0):
    return os.open(sess.p("eval"), os.O_RDWR | flags)


@contextlib.contextmanager
def eval_fd(sess, flags=0):
    """The session's eval file open read-write (with flags) for the block;
    closed when the block ends, whatever happens in it."""
    fd = open_eval(sess, flags)
    try:
        yield fd
    finally:
        os.close(fd)


def ev(fd, code, size=1 << 20):
    """One run on an open eval descriptor: pwrite at 0, pread at 0."""
    if isinstance(code, str):
        code = code.encode()
    assert os.pwrite(fd, code, 0) == len(code)
    return json.loads(os.pread(fd, size, 0))


def test_listed_rw(sess):
    assert "eval" in os.listdir(sess.dir)
    st = os.stat(sess.p("eval"))
    assert st.st_mode & 0o777 == 0o600
    assert st.st_size == 0


def test_kept_open_runs_many(sess):
    with eval_fd(sess) as fd:
        first = ev(fd, "x <- 1")
        assert first["status"] == "ok"
        for i in range(2, 20):
            r = ev(fd, "x <- x + 1; x")
            assert r["status"] == "ok"
            assert r["value"] == i and r["output"] == str(i), r
            assert r["seq"] == first["seq"] + i - 1


def test_result_is_result_json_and_files_agree(sess):
    with eval_fd(sess) as fd:
        r = ev(fd, "cat('hi\\n'); message('m'); 6*7")
    assert r == json.loads(sess.read("result.json"))
    assert r["value"] == 42 and r["output"] == "42"
    assert sess.read("output") == "42\n"
    assert json.loads(sess.read("value.json")) == 42
    assert "hi" in sess.read("console")
    assert sess.read("error") == ""


def test_error_result(sess):
    with eval_fd(sess) as fd:
        r = ev(fd, "stop('boom')")
        assert r["status"] == "error"
        assert r["error_kind"] == "runtime"
        assert "boom" in r["error"]
        assert "boom" in sess.read("error")
        r = ev(fd, "'after'")
        assert r["status"] == "ok" and r["value"] == "after"


def test_code_in_several_writes(sess):
    with eval_fd(sess) as fd:
        os.pwrite(fd, b"a <- 20;", 0)
        os.pwrite(fd, b" a + 1", 8)
        r = json.loads(os.pread(fd, 65536, 0))
        assert r["value"] == 21


def test_sequential_write_read_without_seek(sess):
    """Plain write(2)/read(2) on the file position: the result is read from
    where the reads begin, and a write after a read is the next program."""
    with eval_fd(sess) as fd:
        for code, want in (("1+1", 2), ("'second program'", "second program"), ("3*3", 9)):
            os.write(fd, code.encode())
            out = b""
            while True:
                b = os.read(fd, 7)  # several reads of one result
                if not b:
                    break
                out += b
            assert json.loads(out)["value"] == want


def test_long_result_read_in_pieces(sess):
    with eval_fd(sess) as fd:
        os.pwrite(fd, b"paste(rep('y', 5000), collapse = '')", 0)
        out = b""
        while True:
            b = os.pread(fd, 1000, len(out))
            if not b:
                break
            out += b
        assert json.loads(out)["value"].count("y") == 5000


def test_reread_gives_same_result(sess):
    with eval_fd(sess) as fd:
        a = ev(fd, "runif(1)")
        b = json.loads(os.pread(fd, 65536, 0))
        assert a == b


def test_read_before_any_write_is_empty(sess):
    with eval_fd(sess) as fd:
        assert os.pread(fd, 4096, 0) == b""


def test_invalid_utf8_runs_nothing(sess):
    with eval_fd(sess) as fd:
        r = ev(fd, b"zz <- '\xff'")
        assert r["status"] == "error"
        assert "UTF-8" in r["error"]
        assert ev(fd, "exists('zz')")["value"] is False


def test_efbig(daemons):
    d = daemons.start("pool=0", "max_code_bytes=1000")
    s = d.clone()
    with eval_fd(s) as fd:
        before = ev(fd, "'before'")
        code = b"x <- 1\n" + b"#" * 1993
        expect_errno(errno.EFBIG, os.pwrite, fd, code, 0)
        expect_errno(errno.EFBIG, os.pread, fd, 4096, 0)
        assert s.result()["seq"] == before["seq"]
        r = ev(fd, b"exists('x')")
        assert r["value"] is False and r["seq"] == before["seq"] + 1
        assert ev(fd, b"'z'" + b" " * 997)["value"] == "z"  # exactly the maximum


def test_ebusy_while_a_run_is_under_way(sess):
    with eval_fd(sess) as fd:
        assert ev(fd, "'earlier'")["value"] == "earlier"
        sess.submit("Sys.sleep(30)")
        expect_errno(errno.EBUSY, os.pwrite, fd, b"1", 0)
        # the read after a refused write does not pass the last result off
        expect_errno(errno.EBUSY, os.pread, fd, 4096, 0)
        util.write_bytes(sess.p("ctl"), "interrupt")
        sess.read("output")
        assert ev(fd, "'free again'")["value"] == "free again"


def test_ebusy_on_read_keeps_the_program(sess):
    with eval_fd(sess) as fd:
        os.pwrite(fd, b"'kept'", 0)
        sess.submit("Sys.sleep(30)")  # a run through input gets there first
        expect_errno(errno.EBUSY, os.pread, fd, 4096, 0)
        util.write_bytes(sess.p("ctl"), "interrupt")
        sess.read("output")
        assert json.loads(os.pread(fd, 4096, 0))["value"] == "kept"


def test_input_ebusy_during_eval_run(sess):
    with eval_fd(sess, os.O_NONBLOCK) as fd:
        os.pwrite(fd, b"Sys.sleep(30)", 0)
        expect_errno(errno.EAGAIN, os.pread, fd, 4096, 0)
        assert sess.status() == "running"
        expect_errno(errno.EBUSY, os.open, sess.p("input"), os.O_WRONLY | os.O_TRUNC)
        fd2 = open_eval(sess)
        try:
            expect_errno(errno.EBUSY, os.pwrite, fd2, b"1", 0)
        finally:
            os.close(fd2)
        util.write_bytes(sess.p("ctl"), "interrupt")
    sess.read("output")


def test_nonblocking_eagain_then_poll_then_result(sess):
    with eval_fd(sess, os.O_NONBLOCK) as fd:
        os.pwrite(fd, b"Sys.sleep(0.5); 'slept'", 0)
        expect_errno(errno.EAGAIN, os.pread, fd, 4096, 0)
        expect_errno(errno.EAGAIN, os.pread, fd, 4096, 0)
        p = select.poll()
        p.register(fd, select.POLLIN)
        ev_ = p.poll(util.scaled(10) * 1000)
        assert ev_ and ev_[0][1] & select.POLLIN, ev_
        r = json.loads(os.pread(fd, 4096, 0))
        assert r["value"] == "slept"


def test_blocking_read_waits_for_the_run(sess):
    with eval_fd(sess) as fd:
        t0 = time.monotonic()
        r = ev(fd, "Sys.sleep(0.4); 'late'")
        assert time.monotonic() - t0 >= 0.35
        assert r["value"] == "late"


def test_own_result_kept_after_another_run(sess):
    """A non-blocking eval run that ends and is followed by another run
    (through input) still reads its own result."""
    with eval_fd(sess, os.O_NONBLOCK) as fd:
        os.pwrite(fd, b"'mine'", 0)
        try:
            os.pread(fd, 4096, 0)
        except BlockingIOError:
            pass
        deadline = time.monotonic() + util.scaled(10)
        while sess.status() != "idle" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sess.run("'theirs'") == "theirs\n"
        assert json.loads(os.pread(fd, 4096, 0))["value"] == "mine"


# Blocks in a read of eval while its run sleeps (util.interrupt_probe).
EINTR_PROBE = r"""
fd = os.open(sys.argv[1], os.O_RDWR)
os.pwrite(fd, b"Sys.sleep(1.5); 'done'", 0)
print("ready", flush=True)
try:
    os.pread(fd, 4096, 0)
    print("returned", flush=True)
except Interrupted:
    print("EINTR", flush=True)
# the run went on: a retried read waits for it and gets its result
print(json.loads(os.pread(fd, 4096, 0))["value"], flush=True)
"""


@pytest.mark.timeout_s(60)
def test_signal_interrupts_waiting_read(sess):
    out = util.interrupt_probe(EINTR_PROBE, sess.p("eval"), util.scaled(10),
                               "a signal did not interrupt the waiting eval read")
    assert out.split() == ["EINTR", "done"]
    assert sess.status() == "idle"


def test_closed_session_enoent(daemons):
    d = daemons.start("pool=0")
    s = d.clone()
    with eval_fd(s) as fd:
        assert ev(fd, "1")["value"] == 1
        os.rmdir(s.dir)
        expect_errno(errno.ENOENT, os.pwrite, fd, b"1", 0)
        expect_errno(errno.ENOENT, os.pread, fd, 4096, 0)


def test_close_mid_run_loses_nothing(sess):
    fd = open_eval(sess, os.O_NONBLOCK)
    os.pwrite(fd, b"Sys.sleep(0.3); 'closed early'", 0)
    expect_errno(errno.EAGAIN, os.pread, fd, 4096, 0)
    os.close(fd)
    assert sess.read("output") == "closed early\n"
