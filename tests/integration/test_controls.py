"""Per-session timeout and limits files, run timeouts, and ctl."""
import errno
import json
import time

import pytest

import util
from util import expect_errno

DEFAULT_LIMITS = {"cpu": 60, "memory": 536870912, "fsize": 52428800, "nproc": 50,
                  "nofile": 256}
# A timed-out run may be logged by the daemon.
SHARED_EXPECT = [r"time(d)? ?out", r"interrupt"]


# ---------------------------------------------------------------- timeout file


def test_timeout_default(sess):
    assert sess.read("timeout") == "30\n"


def test_timeout_from_option(daemons):
    d = daemons.start("pool=0", "timeout=7")
    s = d.clone()
    assert s.read("timeout") == "7\n"


def test_timeout_write(sess):
    sess.write("timeout", "2")
    assert sess.read("timeout") == "2\n"
    sess.write("timeout", "15\n")
    assert sess.read("timeout") == "15\n"
    sess.write("timeout", "0")
    assert sess.read("timeout") == "0\n"


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5x", "99999999999999999999999", "nan", "inf"])
def test_timeout_bad_values(sess, bad):
    sess.write("timeout", "12")
    expect_errno(errno.EINVAL, sess.write, "timeout", bad)
    assert sess.read("timeout") == "12\n"


def test_timeout_open_without_write_changes_nothing(sess):
    sess.write("timeout", "12")
    try:
        sess.write("timeout", "")
    except OSError as e:
        assert e.errno == errno.EINVAL
    assert sess.read("timeout") == "12\n"


# ---------------------------------------------------------------- limits file


def test_limits_defaults(sess):
    lim = json.loads(sess.read("limits"))
    assert set(lim) >= {"cpu", "memory", "fsize", "nproc", "nofile", "stack"}, lim
    for k, v in DEFAULT_LIMITS.items():
        assert lim[k] == v, (k, lim)


def test_limits_write_one_key(sess):
    before = json.loads(sess.read("limits"))
    sess.write("limits", '{"cpu": 5}')
    after = json.loads(sess.read("limits"))
    assert after["cpu"] == 5
    for k in before:
        if k != "cpu":
            assert after[k] == before[k], k


@pytest.mark.parametrize("bad", ['{"cpu": ', "not json", '{"bogus": 1}', '{"cpu": -1}',
                                 '{"memory": "lots"}', "[1, 2]", '{"nofile": 1.5e400}'])
def test_limits_bad_values(sess, bad):
    before = sess.read("limits")
    expect_errno(errno.EINVAL, sess.write, "limits", bad)
    assert sess.read("limits") == before


def test_limits_seen_by_r(sess):
    # R has no rlimit reader of its own; the kernel's /proc/self/limits is one.
    sess.write("limits", '{"nofile": 100}')
    lim = sess.run("l <- readLines('/proc/self/limits'); l[grepl('open files', l)]")
    assert "100" in lim, lim


# ---------------------------------------------------------------- timeouts


@pytest.mark.timeout_s(60)
@pytest.mark.parametrize("body", ["while (TRUE) {}", "Sys.sleep(30)"])
def test_timeout_keeps_state(sess, body):
    sess.write("timeout", "1")
    sess.run("y <- 7")
    t0 = time.monotonic()
    sess.submit("y <- 8; " + body)
    err = sess.read("error")
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < util.scaled(5), elapsed
    assert "time" in err.lower(), err
    r = sess.result()
    assert r["status"] == "timeout", r
    assert sess.read("output") == ""
    assert sess.run("y") == "8\n"
    assert sess.status() == "idle"


@pytest.mark.timeout_s(60)
def test_timeout_zero_means_none(sess):
    sess.write("timeout", "0")
    assert sess.run("Sys.sleep(1.2); 'slept'") == "slept\n"


# ---------------------------------------------------------------- ctl


def wait_console(sess, text, timeout=10):
    """Wait until the run under way has printed text (console grows live)."""
    deadline = time.monotonic() + util.scaled(timeout)
    while text not in sess.read("console"):
        assert time.monotonic() < deadline, "console never showed %r" % text
        time.sleep(0.02)


@pytest.mark.timeout_s(60)
def test_ctl_interrupt_keeps_state(sess):
    sess.run("y <- 7")
    sess.submit("cat('sleeping\\n'); Sys.sleep(30)")
    wait_console(sess, "sleeping")  # R is inside Sys.sleep now
    t0 = time.monotonic()
    sess.write("ctl", "interrupt")
    sess.read("output")
    assert time.monotonic() - t0 < util.scaled(3)
    r = sess.result()
    assert r["status"] == "error", r
    assert "nterrupt" in r["error"], r
    assert sess.run("y") == "7\n"


@pytest.mark.timeout_s(90)
def test_ctl_interrupt_right_after_submit_keeps_state(shared):
    # The interrupt may reach the worker before R has started the run (most
    # often in a fresh session): it must still end the run with the state
    # kept, not through the grace-period kill.
    for i in range(8):
        s = shared.clone()
        try:
            s.run("y <- 7")
            s.submit("Sys.sleep(30)")
            s.write("ctl", "interrupt")
            s.read("output")
            r = s.result()
            assert r["status"] == "error", (i, r)
            assert s.run("y") == "7\n", i
        finally:
            s.close()


@pytest.mark.timeout_s(60)
def test_ctl_interrupt_busy_loop(sess):
    sess.run("y <- 9")
    sess.submit("while (TRUE) {}")
    time.sleep(0.2)
    sess.write("ctl", "interrupt\n")
    sess.read("output")
    assert sess.run("y") == "9\n"


def test_ctl_interrupt_when_idle_is_harmless(sess):
    sess.run("y <- 3")
    try:
        sess.write("ctl", "interrupt")
    except OSError:
        pass
    assert sess.run("y") == "3\n"


@pytest.mark.timeout_s(60)
def test_ctl_restart_clears_state(sess):
    sess.run("y <- 7")
    sess.write("ctl", "restart")
    assert sess.run("exists('y')") == "FALSE\n"
    assert sess.run("1+1") == "2\n"


@pytest.mark.timeout_s(60)
def test_ctl_restart_during_run(sess):
    sess.run("y <- 7")
    sess.submit("Sys.sleep(30)")
    sess.write("ctl", "restart")
    sess.read("output")
    assert sess.run("exists('y')") == "FALSE\n"


@pytest.mark.parametrize("bad", ["explode", "interrupt now", "RESTART", "restart\nrestart"])
def test_ctl_bad_command(sess, bad):
    sess.run("y <- 1")
    expect_errno(errno.EINVAL, sess.write, "ctl", bad)
    assert sess.run("y") == "1\n"


def test_ctl_not_readable_as_data(sess):
    # ctl is write-only: a read is refused or empty
    try:
        assert util.read_text(sess.p("ctl")) == ""
    except OSError as e:
        assert e.errno in (errno.EACCES, errno.EPERM, errno.EINVAL)
