"""The fixed files of the tree, clone, and sessions/ (mkdir, names, rmdir)."""
import errno
import json
import os
import select
import stat
import subprocess
import threading
import time

import pytest

import util
from util import expect_errno

SESSION_FILES = ["input", "output", "error", "console", "status", "result.json",
                 "value.json", "ctl", "timeout", "limits", "log"]


def test_help_and_version():
    for flag in ("--help", "--version"):
        r = subprocess.run([str(util.DAEMON), flag], capture_output=True, text=True,
                           timeout=util.scaled(10))
        assert r.returncode == 0, (flag, r.returncode, r.stderr)
        text = r.stdout + r.stderr
        assert text.strip(), flag
    r = subprocess.run([str(util.DAEMON), "--version"], capture_output=True, text=True, timeout=10)
    assert "0." in r.stdout + r.stderr  # a version number


def test_root_listing(shared):
    names = set(os.listdir(shared.mnt))
    for n in ("README", "clone", "config", "stats", "sessions"):
        assert n in names, names
    assert stat.S_ISDIR(os.stat(shared.path("sessions")).st_mode)
    for f in ("README", "clone", "config", "stats"):
        assert stat.S_ISREG(os.stat(shared.path(f)).st_mode), f


def test_tools_dir(shared):
    # DESIGN §1: tools/ (its contents are the tools issue's; here: it exists)
    assert "tools" in os.listdir(shared.mnt)
    assert stat.S_ISDIR(os.stat(shared.path("tools")).st_mode)
    s = shared.clone()
    try:
        assert stat.S_ISDIR(os.stat(s.p("tools")).st_mode)
    finally:
        s.close()


def test_readme(shared):
    text = shared.read("README")
    assert len(text) > 40
    assert "clone" in text
    assert "sessions" in text


def test_config(shared):
    cfg = shared.json("config")
    for k in ("timeout", "pool", "max_code_bytes", "console_max_bytes", "sandbox", "limits"):
        assert k in cfg, (k, cfg)
    assert cfg["pool"] == 2
    assert cfg["timeout"] == 30
    assert cfg["sandbox"] == "strict"
    for k in ("cpu", "memory", "fsize", "nproc", "nofile", "stack"):
        assert k in cfg["limits"], (k, cfg)


def test_config_reflects_options(daemons):
    d = daemons.start("pool=0", "timeout=7", "max_code_bytes=1000", "console_max_bytes=5000",
                      "sandbox=none", "cpu=9")
    cfg = d.json("config")
    assert cfg["timeout"] == 7
    assert cfg["pool"] == 0
    assert cfg["max_code_bytes"] == 1000
    assert cfg["console_max_bytes"] == 5000
    assert cfg["sandbox"] == "none"
    assert cfg["limits"]["cpu"] == 9


def test_stats(shared):
    st = shared.json("stats")
    for k in ("sessions", "running", "executions", "errors", "timeouts", "crashes",
              "tool_calls", "pool_idle", "uptime"):
        assert k in st, (k, st)
    s = shared.clone()
    try:
        before = shared.json("stats")
        assert s.value("1+1") == "2"
        s.result("stop('x')")
        after = shared.json("stats")
        assert after["executions"] >= before["executions"] + 2
        assert after["errors"] >= before["errors"] + 1
        assert after["sessions"] >= 1
        assert after["running"] == 0
    finally:
        s.close()


def test_clone_creates_distinct_sessions(shared):
    names = set()
    for _ in range(3):
        s = shared.clone()
        assert s.name not in names
        names.add(s.name)
        assert s.name in os.listdir(shared.path("sessions"))
        assert stat.S_ISDIR(os.stat(s.dir).st_mode)
        listing = set(os.listdir(s.dir))
        for f in SESSION_FILES:
            assert f in listing, (f, listing)
    for n in names:
        shared.session(n).close()


def test_clone_then_run(sess):
    assert sess.run("1+1") == "2\n"
    assert sess.read("error") == ""


def test_mkdir_session(shared):
    d = shared.path("sessions", "my.Session-1_x")
    os.mkdir(d)
    try:
        assert "my.Session-1_x" in os.listdir(shared.path("sessions"))
        s = shared.session("my.Session-1_x")
        assert s.run("6*7") == "42\n"
        expect_errno(errno.EEXIST, os.mkdir, d)
    finally:
        shared.session("my.Session-1_x").close()


@pytest.mark.parametrize("name", ["bad name", "x" * 65, "\u00e9", ".hidden", "a*b"])
def test_mkdir_bad_names(shared, name):
    expect_errno(errno.EINVAL, os.mkdir, shared.path("sessions", name))
    assert name not in os.listdir(shared.path("sessions"))


def test_mkdir_longest_name(shared):
    name = "y" * 64
    os.mkdir(shared.path("sessions", name))
    shared.session(name).close()


def test_mkdir_outside_sessions_refused(shared):
    with pytest.raises(OSError):
        os.mkdir(shared.path("elsewhere"))


def test_rmdir_closes_session(shared):
    s = shared.clone()
    assert s.run("1") == "1\n"
    os.rmdir(s.dir)
    assert s.name not in os.listdir(shared.path("sessions"))
    expect_errno(errno.ENOENT, os.stat, s.dir)
    expect_errno(errno.ENOENT, util.read_text, s.p("output"))
    expect_errno(errno.ENOENT, util.write_bytes, s.p("input"), "1")


def test_handles_outlive_their_session(shared):
    """Descriptors left open on a session's files when it closes: each
    request on them is answered (ENOENT for the tree's own files, POLLHUP
    for a poll), every close succeeds, and the mount goes on.  A files/ file
    or directory keeps its own host descriptor: reading it is allowed to
    work or fail, but not to hang or take the daemon down."""
    s = shared.clone()
    assert s.run("41 + 1") == "42\n"
    spec = {"description": "cat", "args": {"x": ""}, "command": ["/bin/cat"]}
    create = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    util.write_bytes(s.p("tools") / "echoes.json", json.dumps(spec), create)
    util.write_bytes(s.p("files") / "a.txt", "abc", create)
    fds = {
        "output": os.open(s.p("output"), os.O_RDONLY),
        "input": os.open(s.p("input"), os.O_WRONLY),
        "status": os.open(s.p("status"), os.O_RDONLY),
        "tool": os.open(s.p("tools") / "echoes.json", os.O_RDWR),
        "errors": os.open(s.p("tools") / ".errors", os.O_RDONLY),
        "file": os.open(s.p("files") / "a.txt", os.O_RDONLY),
        "dir": os.open(s.p("files"), os.O_RDONLY | os.O_DIRECTORY),
    }
    try:
        assert os.pread(fds["output"], 100, 0) == b"42\n"
        os.rmdir(s.dir)
        for name in ("output", "status", "tool", "errors"):
            expect_errno(errno.ENOENT, os.pread, fds[name], 100, 0)
        expect_errno(errno.ENOENT, os.write, fds["input"], b"1")
        expect_errno(errno.ENOENT, os.write, fds["tool"], b"{}")
        p = select.poll()
        p.register(fds["output"], select.POLLIN)
        (_, ev), = p.poll(util.scaled(5) * 1000)
        assert ev & (select.POLLERR | select.POLLHUP), ev
        try:
            os.pread(fds["file"], 100, 0)
            os.listdir(fds["dir"])
        except OSError:
            pass
        # input's close flushes for a session that is gone: ENOENT (the
        # descriptor is closed all the same); the others close cleanly.
        expect_errno(errno.ENOENT, os.close, fds.pop("input"))
        while fds:
            os.close(fds.popitem()[1])
    finally:
        for fd in fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
    s2 = shared.clone()
    assert s2.run("2+2") == "4\n"
    s2.close()


def test_rmdir_missing_is_enoent(shared):
    expect_errno(errno.ENOENT, os.rmdir, shared.path("sessions", "nosuchsession"))


@pytest.mark.timeout_s(60)
def test_rmdir_during_run(shared):
    s = shared.clone()
    s.submit("Sys.sleep(30)")
    assert s.status() == "running"
    box = {}

    def reader():
        try:
            box["value"] = s.read("output")
        except OSError as e:
            box["errno"] = e.errno
        box["t"] = time.monotonic()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.3)  # let the reader park (nothing to wait on: it must be blocked)
    assert t.is_alive(), "the read of output during a run returned at once"
    t0 = time.monotonic()
    os.rmdir(s.dir)
    assert time.monotonic() - t0 < util.scaled(5)
    t.join(util.scaled(5))
    assert not t.is_alive(), "the parked reader hangs after rmdir"
    assert box.get("errno") in (errno.ENOENT, errno.EIO, errno.ENOTCONN) or "value" in box
    assert "value" not in box or box["value"] == "", box
    assert s.name not in os.listdir(shared.path("sessions"))
    # the mount goes on
    s2 = shared.clone()
    assert s2.run("2+2") == "4\n"
    s2.close()


def test_session_files_modes(sess):
    for f in ("output", "error", "console", "status", "result.json", "value.json", "log"):
        st = os.stat(sess.p(f))
        assert stat.S_ISREG(st.st_mode)
        assert st.st_mode & 0o444, f
    assert os.stat(sess.p("input")).st_mode & 0o200
    assert os.stat(sess.p("ctl")).st_mode & 0o200
    # read-only files refuse writing
    expect_errno((errno.EACCES, errno.EPERM, errno.EROFS), util.write_bytes, sess.p("output"), "x")


def test_stat_size_matches_content(sess):
    sess.run("paste(rep('ab', 100), collapse='')")
    for f in ("output", "error", "result.json", "value.json", "status"):
        content = util.read_bytes(sess.p(f))
        assert os.stat(sess.p(f)).st_size == len(content), f
    sess.run("1")
    content = util.read_bytes(sess.p("output"))
    assert content == b"1\n"
    assert os.stat(sess.p("output")).st_size == 2


def test_pool_fills(daemons):
    d = daemons.start("pool=2")
    deadline = time.monotonic() + util.scaled(20)
    while d.json("stats")["pool_idle"] < 2:
        assert time.monotonic() < deadline, d.json("stats")
        time.sleep(0.05)
    t0 = time.monotonic()
    s = d.clone()
    assert time.monotonic() - t0 < util.scaled(2)
    assert s.run("1+1") == "2\n"
    # refilled in the background
    deadline = time.monotonic() + util.scaled(20)
    while d.json("stats")["pool_idle"] < 2:
        assert time.monotonic() < deadline, d.json("stats")
        time.sleep(0.05)
    s.close()


def _minflt(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def _first_run_faults(d, pooled):
    """A new session, the minor page faults its worker took for its first
    run (1+1), and what ls(all.names = TRUE) gives after it.  The session's
    worker is the one that was there before the clone (pooled: it left the
    pool) or else the one that came (a zygote still starting may be counted
    among the workers before it names itself, hence not "the only one")."""
    before = set(util.session_worker_pids(d.pid))
    s = d.clone()
    after = set(util.session_worker_pids(d.pid))
    mine = (after & before) if pooled else (after - before)
    assert len(mine) == 1, (before, after)
    pid = mine.pop()
    f0 = _minflt(pid)
    assert s.run("1+1") == "2\n"
    faults = _minflt(pid) - f0
    return s, s.run("ls(all.names = TRUE)"), faults


def test_pooled_worker_is_warmed_and_keeps_nothing(daemons):
    # A worker that waited in the pool is sent "warm" and evaluates 1+1 for
    # itself (docs/protocol.md): the session that takes it finds the pages a
    # first run writes already copied from the zygote, and nothing of the
    # warm-up (no variable, no result, no run counted).
    cold = daemons.start("pool=0")
    s, out, cold_faults = _first_run_faults(cold, False)
    assert out == "character(0)\n"
    s.close()
    d = daemons.start("pool=1")
    util.wait_for(lambda: d.json("stats")["pool_idle"] == 1, 20, "the pool full")
    pooled = set(util.session_worker_pids(d.pid))
    time.sleep(util.scaled(0.5))
    st = d.json("stats")
    # warm sent nothing back: no protocol violation, the pooled worker kept
    assert st["protocol_violations"] == 0 and st["crashes"] == 0, st
    assert set(util.session_worker_pids(d.pid)) == pooled
    s, out, warm_faults = _first_run_faults(d, True)
    assert out == "character(0)\n"
    assert json.loads(util.read_text(s.p("result.json")))["seq"] == 2
    assert d.json("stats")["executions"] == 2
    # the first 1+1 of a cold worker writes shared pages (about a hundred
    # faults); a warmed one has had them copied already
    assert cold_faults > 20, cold_faults
    assert warm_faults < cold_faults / 2, (warm_faults, cold_faults)
    s.close()


def test_stats_json_parses_repeatedly(shared):
    # the file is generated on open; two reads must each be whole JSON
    for _ in range(5):
        json.loads(shared.read("stats"))
