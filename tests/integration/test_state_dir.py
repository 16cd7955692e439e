"""-o state_dir=DIR: sessions persist across daemon restarts (a clean stop
writes them all; background checkpoints and ctl checkpoint; after SIGKILL
each comes back as of its last checkpoint; saved sessions reappear at once
and are restored on first use; rmdir removes the saved state; DIR is 0700
and refused if it is a link or another user's)."""
import errno
import json
import os
import signal
import subprocess
import time

import pytest

import util


def start(daemons, state, *opts, name=None, expect=()):
    return daemons.start("pool=0", "state_dir=%s" % state, *opts, name=name, expect=expect)


def stop(d, how):
    if how == signal.SIGKILL:
        # What a crash leaves: a stale mount, which we detach.
        os.kill(d.pid, signal.SIGKILL)
        assert d.wait_exit(util.scaled(10)) == -signal.SIGKILL
        subprocess.run(["fusermount3", "-u", "-z", str(d.mnt)], capture_output=True, timeout=10)
        d.stopped = True
        d.forget()
        return
    problems = d.stop(how)
    assert not problems, problems


def test_clean_stop_and_restore_on_first_use(daemons, tmp_path):
    state = tmp_path / "state"
    d = start(daemons, state, name="a")
    assert os.stat(state).st_mode & 0o777 == 0o700
    s = d.clone()
    s.run("x <- 'kept'; f <- function() 7; library(tools); set.seed(9); writeLines('w', 'w.txt')")
    s.write("timeout", "11")
    stop(d, signal.SIGTERM)
    assert (state / (s.name + ".snap")).exists()
    assert not [p for p in os.listdir(state) if p.endswith(".tmp")]
    d2 = start(daemons, state, name="b")
    assert s.name in os.listdir(d2.path("sessions"))
    t = d2.session(s.name)
    assert t.value("x") == "kept"
    assert t.value("f()") == "7"
    assert t.value("'package:tools' %in% search()") == "TRUE"
    assert util.read_text(t.p("files/w.txt")) == "w\n"
    assert t.read("timeout").strip() == "11"
    # A new session does not take a saved name.
    assert d2.clone().name != s.name


def test_fusermount_stop_writes_too(daemons, tmp_path):
    state = tmp_path / "state"
    d = start(daemons, state, name="a")
    s = d.clone()
    s.run("y <- 5")
    stop(d, "fusermount")
    d2 = start(daemons, state, name="b")
    assert d2.session(s.name).value("y") == "5"


def test_sigkill_keeps_the_last_checkpoint(daemons, tmp_path):
    state = tmp_path / "state"
    d = start(daemons, state, "checkpoint_interval=3600", name="a")
    s = d.clone()
    s.run("v <- 'checkpointed'")
    s.write("ctl", "checkpoint")           # returns once it is on disk
    s.run("v <- 'lost'")                   # after it: not saved
    stop(d, signal.SIGKILL)
    d2 = start(daemons, state, name="b")
    t = d2.session(s.name)
    assert t.value("v") == "checkpointed"


@pytest.mark.timeout_s(90)
def test_background_checkpoint(daemons, tmp_path):
    state = tmp_path / "state"
    d = start(daemons, state, "checkpoint_interval=1", name="a")
    s = d.clone()
    s.run("bg <- 'saved in the background'")
    saved = state / (s.name + ".snap")
    deadline = time.monotonic() + util.scaled(20)
    while time.monotonic() < deadline:
        if saved.exists() and b"saved in the background" in saved.read_bytes():
            break
        time.sleep(0.2)
    else:
        pytest.fail("no background checkpoint within 20 s")
    stop(d, signal.SIGKILL)
    d2 = start(daemons, state, name="b")
    assert d2.session(s.name).value("bg") == "saved in the background"


def test_rmdir_removes_the_saved_state(daemons, tmp_path):
    state = tmp_path / "state"
    d = start(daemons, state, name="a")
    s = d.clone()
    s.run("1")
    s.write("ctl", "checkpoint")
    assert (state / (s.name + ".snap")).exists()
    os.rmdir(s.dir)
    assert not (state / (s.name + ".snap")).exists()
    stop(d, signal.SIGTERM)
    d2 = start(daemons, state, name="b")
    assert s.name not in os.listdir(d2.path("sessions"))


def test_saved_sessions_appear_dormant(daemons, tmp_path):
    state = tmp_path / "state"
    d = start(daemons, state, name="a")
    names = []
    for _ in range(3):
        s = d.clone()
        s.run("z <- '%s'" % s.name)
        names.append(s.name)
    stop(d, signal.SIGTERM)
    d2 = start(daemons, state, name="b")
    listed = os.listdir(d2.path("sessions"))
    assert set(names) <= set(listed)
    for n in listed:  # ls -l: a stat of each starts none of them
        os.stat(d2.path("sessions", n))
    # Nothing started yet: no worker but the zygote (once it has named
    # itself: until then it is a securerfs-worker like the others).
    deadline = time.monotonic() + util.scaled(15)
    while util.helper_pid(d2.pid, util.ZYGOTE_COMM) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert util.session_worker_pids(d2.pid) == []

    assert d2.session(names[1]).value("z") == names[1]
    # The others are still saved; the first name looked up inside one
    # starts it.
    assert d2.session(names[0]).status() in ("starting", "idle")


LIMITS_SEEN = ("grep('^Max (processes|cpu time|file size|stack size)', readLines('/proc/self/limits'), "
               "value = TRUE)")


def soft_limits(text):
    """{"Max processes": "13", ...}: the soft column of /proc/PID/limits."""
    out = {}
    for line in text.splitlines():
        for name in ("Max processes", "Max cpu time", "Max file size", "Max stack size"):
            if name in line:
                out[name] = line.split(name)[1].split()[0]
    return out


@pytest.mark.timeout_s(90)
def test_a_saved_sessions_first_run_has_its_settings(daemons, tmp_path):
    """Inside: the first run of a saved session after a restart (written
    before the session was ever looked at, so that it waits for the restore)
    runs under the session's own limits and timeout.  Until 2026-12-03 a run
    queued during the restore was sent as the worker answered, before the
    settings were taken: it ran under the daemon's defaults (nproc 50, no
    timeout of 2 s).  Outside: the worker's own /proc/PID/limits says the
    same as the run saw."""
    state = tmp_path / "state"
    d = start(daemons, state, name="a")
    lim = d.clone()
    lim.write("limits", '{"nproc": 13, "cpu": 7, "fsize": 3145728, "stack": 6291456}')
    lim.run("x <- 1")
    slow = d.clone()
    slow.write("timeout", "2")
    slow.run("y <- 1")
    stop(d, signal.SIGTERM)
    d2 = start(daemons, state, name="b")
    t = d2.session(lim.name)
    t.submit(LIMITS_SEEN)
    seen = soft_limits(t.read("output"))
    assert seen["Max processes"] == "13", seen
    assert seen["Max file size"] == "3145728", seen
    assert seen["Max stack size"] == "6291456", seen
    assert 7 <= int(seen["Max cpu time"]) <= 9, seen   # the worker's CPU so far + 7
    (pid,) = util.session_worker_pids(d2.pid)
    with open("/proc/%d/limits" % pid) as f:
        outside = soft_limits(f.read())
    assert outside["Max processes"] == "13" and outside["Max file size"] == "3145728", outside
    u = d2.session(slow.name)
    t0 = time.monotonic()
    r = u.result("Sys.sleep(20); 'not stopped'")
    assert r["status"] == "timeout", r
    assert time.monotonic() - t0 < util.scaled(15)
    assert u.value("y") == "1"   # the restore went in, and a timeout keeps the state


def test_ctl_checkpoint_without_state_dir_is_enotsup(mount):
    s = mount.clone()
    util.expect_errno(errno.ENOTSUP, s.write, "ctl", "checkpoint")


def test_state_dir_symlink_and_other_owner_refused(daemons, tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    d = daemons.start("pool=0", "state_dir=%s" % link, wait=False, name="l",
                      expect=[r"state_dir .*symbolic link", r"starting: "])
    d.allow_failure = True
    assert d.wait_exit(util.scaled(15)) not in (None, 0)
    assert "symbolic link" in d.stderr()
    if os.geteuid() == 0:
        other = tmp_path / "other"
        other.mkdir(mode=0o700)
        os.chown(other, 65534, 65534)
    else:
        other = "/"  # root's
    d = daemons.start("pool=0", "state_dir=%s" % other, wait=False, name="o",
                      expect=[r"state_dir .*not by this daemon's user", r"starting: "])
    d.allow_failure = True
    assert d.wait_exit(util.scaled(15)) not in (None, 0)
    assert "not by this daemon's user" in d.stderr()


def test_corrupt_saved_file_starts_empty(daemons, tmp_path):
    """Inside: a saved session whose file is not a snapshot starts empty,
    and its first result's notice and its log say so.  Outside: the file is
    kept as NAME.snap.unrestored, byte for byte, through the next
    checkpoint (until 2026-12-03 the first checkpoint wrote over the only
    copy, and the session heard nothing); rmdir removes it too."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    bad = b"SRFSNAP\nnot a snapshot"
    (state / "broken.snap").write_bytes(bad)
    d = daemons.start("pool=0", "state_dir=%s" % state, name="a",
                      expect=[r"saved state (is not|could not be) restored"])
    s = d.session("broken")
    r = s.result("exists('anything')")
    assert r["value"] is False, r
    assert "started empty" in r.get("notice", "") and "broken.snap.unrestored" in r["notice"], r
    assert "notice" not in s.result("1")
    assert any(json.loads(line).get("event") == "restore_failed" for line in s.read("log").splitlines()), \
        s.read("log")
    assert s.status() == "idle"
    assert (state / "broken.snap.unrestored").read_bytes() == bad
    s.write("ctl", "checkpoint")
    assert (state / "broken.snap").read_bytes() != bad
    assert (state / "broken.snap.unrestored").read_bytes() == bad
    assert sorted(os.listdir(d.path("sessions"))) == ["broken"]
    s.close()
    assert not [f for f in os.listdir(state) if f.startswith("broken.")], os.listdir(state)


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize("member", ["timeout", "limits", "tools", "tool"])
def test_a_bad_member_of_saved_settings_costs_that_member_only(daemons, tmp_path, member):
    """Inside: a saved session whose NAME.settings has one member of the
    wrong kind (a timeout that is a string, limits that are a list, tools
    that are not an object, one tool that is not a string) comes back with
    its state and every other setting; that member takes the daemon's
    default, and its first result's notice says which.  Until 2026-12-03
    (attack helper, round 10) a timeout of "x" read as none (a run of 8 s
    under a 5 s timeout ended ok) and the next checkpoint wrote 0 back,
    and any other bad member threw the saved state away.  Outside: the
    worker's /proc/PID/limits, and NAME.settings after the next stop."""
    state = tmp_path / "state"
    d = start(daemons, state, name="a")
    s = d.clone()
    s.write("limits", '{"nproc": 13}')
    s.write("timeout", "5")
    util.write_bytes(s.p("tools/echo.json"), json.dumps({"description": "", "args": {}, "command": ["/bin/cat"]}),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    s.run("v <- 100")
    stop(d, signal.SIGTERM)
    path = state / (s.name + ".settings")
    settings = json.loads(path.read_text())
    if member == "timeout":
        settings["timeout"] = "x"
    elif member == "limits":
        settings["limits"] = []
    elif member == "tools":
        settings["tools"] = "echo.json"
    else:
        settings["tools"]["bad.json"] = 5
    path.write_text(json.dumps(settings))
    d2 = start(daemons, state, "timeout=3", name="b")
    t = d2.session(s.name)
    r = t.result("v")
    assert r["status"] == "ok" and r["value"] == 100, r
    said = {"timeout": "its saved timeout is not a number", "limits": "its saved limits",
            "tools": "its saved tools are not an object", "tool": "its saved tool bad.json is not a string"}[member]
    assert said in r.get("notice", ""), r
    default_timeout = d2.clone().read("timeout").strip()
    assert t.read("timeout").strip() == (default_timeout if member == "timeout" else "5")
    inside = soft_limits(t.run(LIMITS_SEEN))["Max processes"]
    assert (inside == "13") == (member != "limits"), inside
    outside = []
    for pid in util.session_worker_pids(d2.pid):
        with open("/proc/%d/limits" % pid) as f:
            outside.append(soft_limits(f.read())["Max processes"])
    assert ("13" in outside) == (member != "limits"), outside
    tools = sorted(f for f in os.listdir(t.p("tools")) if not f.startswith("."))
    assert tools == ([] if member == "tools" else ["echo.json"]), tools
    if member == "timeout":
        assert t.result("Sys.sleep(%d); 1" % util.scaled(20))["status"] == "timeout"
    stop(d2, signal.SIGTERM)
    kept = json.loads(path.read_text())
    if member == "timeout":
        assert kept["timeout"] == float(default_timeout) and kept["timeout"] > 0, kept
    else:
        assert kept["timeout"] == 5, kept
    assert (kept["limits"].get("nproc") == 13) == (member != "limits"), kept
    assert sorted(kept["tools"]) == ([] if member == "tools" else ["echo.json"]), kept


POISON = ("unlockBinding('serialize', baseenv()); "
          "assign('serialize', function(...) as.raw(c(0x42, 0x0a, 1:64)), envir = baseenv()); 1")


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("how", ["poisoned", "corrupt", "missing"])
def test_a_saved_session_that_starts_empty_keeps_its_settings(daemons, tmp_path, how):
    """Inside: a saved session whose state does not come back — its own code
    replaced base's serialize(), so that its checkpoint is bytes R cannot
    read; or its .snap file is corrupt; or gone by its first use — starts
    empty, but under its own limits and timeout and with its tools, which
    are the daemon's own NAME.settings, never the state's.  Until 2026-12-03 it came back
    under the daemon's defaults (nproc 50, no timeout: session code could
    shed its limits across a restart), and the next stop wrote them over
    its settings.  Outside: the worker's /proc/PID/limits, and the settings
    file after the next stop."""
    state = tmp_path / "state"
    d = start(daemons, state, name="a")
    s = d.clone()
    s.write("limits", '{"nproc": 13, "fsize": 3145728}')
    s.write("timeout", "2")
    util.write_bytes(s.p("tools/echo.json"), json.dumps({"description": "", "args": {}, "command": ["/bin/cat"]}),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    assert s.value(POISON if how == "poisoned" else "x <- 1; 1") == "1"
    stop(d, signal.SIGTERM)
    snap = state / (s.name + ".snap")
    if how == "corrupt":
        snap.write_bytes(b"SRFSNAP\nnot a snapshot")
    d2 = start(daemons, state, name="b", expect=[r"saved state (is not|could not be|cannot be) (restored|read)"])
    if how == "missing":
        snap.unlink()   # listed at start, gone by its first use
    t = d2.session(s.name)
    t.submit(LIMITS_SEEN)
    seen = soft_limits(t.read("output"))
    assert seen["Max processes"] == "13" and seen["Max file size"] == "3145728", seen
    (pid,) = util.session_worker_pids(d2.pid)
    with open("/proc/%d/limits" % pid) as f:
        outside = soft_limits(f.read())
    assert outside["Max processes"] == "13", outside
    assert t.value("exists('x')") == "FALSE"
    assert "echo.json" in os.listdir(t.p("tools"))
    r = t.result("Sys.sleep(20); 'not stopped'")
    assert r["status"] == "timeout", r
    stop(d2, signal.SIGTERM)
    kept = json.loads((state / (s.name + ".settings")).read_text())
    assert kept["timeout"] == 2 and kept["limits"]["nproc"] == 13, kept
    assert "echo.json" in kept["tools"], kept


def test_a_failed_checkpoint_is_told_once_with_its_reason(daemons, tmp_path):
    """Inside: a checkpoint that cannot be written (a directory stands where
    NAME.snap goes) fails the ctl write, and the session's next result says
    so with the reason, once for a row of failures, and again when one
    succeeds; its log has each.  Until 2026-12-03 (attack helper, round
    10) the daemon's log said "checkpoint failed: " with no reason, and the
    session, no longer saved, heard nothing.  Outside: the reason in the
    daemon's log, and the file written once the directory is gone."""
    state = tmp_path / "state"
    d = start(daemons, state, "checkpoint_interval=3600", name="a", expect=[r"checkpoint failed: Is a directory"])
    s = d.clone()
    s.run("v <- 1")
    (state / (s.name + ".snap")).mkdir()
    for _ in range(2):
        util.expect_errno((errno.EIO, errno.EISDIR), s.write, "ctl", "checkpoint")
    assert "checkpoint failed: Is a directory" in d.stderr()
    r = s.result("1")
    assert "its checkpoint to state_dir failed (Is a directory)" in r.get("notice", ""), r
    assert r["notice"].count("failed") == 1, r
    (state / (s.name + ".snap")).rmdir()
    s.write("ctl", "checkpoint")
    assert (state / (s.name + ".snap")).is_file()
    r = s.result("2")
    assert "its checkpoint to state_dir succeeded again" in r.get("notice", ""), r
    events = [json.loads(line)["event"] for line in s.read("log").splitlines()]
    assert events.count("checkpoint_failed") == 2 and "checkpoint" in events, events
