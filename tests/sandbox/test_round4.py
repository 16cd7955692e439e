"""Round 4 of attack (docs/security.md, "Round 4"): what was added since
round 3 — fork, snapshot, restore and persistence; sessions/N/eval; the
workspace scanner; the idle watch; the MCP server.  Each test is a finding:
it failed before its fix and asserts from both sides (what the session or
the user got, and what the host shows)."""
import errno
import os
import stat
import time
from pathlib import Path

import pytest

import harness
import round3tools
import util
from round4tools import MAGIC, parse, record, rebuild, r_blob, take, put, worker_of


HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def native_dir(tmp_path_factory):
    return harness.build_r_lib(tmp_path_factory.mktemp("round4"), HERE / "round4.c", ["-pthread"])


@pytest.fixture
def d(daemons):
    return daemons.start("pool=0")


# ---- 1. A snapshot whose entries clash: checked by the host, not half-restored ----------

def _victim(d):
    v = d.clone()
    v.run("mark <- 'intact'; writeLines('mark', 'mark.txt')")
    return v


def _intact(v):
    assert v.value("mark") == "intact"
    assert util.read_text(v.files("mark.txt")) == "mark\n"


@pytest.mark.timeout_s(120)
def test_clashing_entries_are_refused_before_anything_changes(d):
    """A snapshot whose workspace entries the worker cannot make (the same
    name twice, a file then a directory of that name, an entry under a
    file, a link or a directory the stream never made) passed the host's
    check; the restoring worker then replaced the global environment and
    emptied the workspace before it failed: the write answered EINVAL and
    the session had lost its variables and files.  Now the host refuses
    them first (EINVAL) and the session keeps both."""
    src = d.clone()
    src.run("y <- 1")
    meta, blob = r_blob(take(src))
    v = _victim(d)
    bodies = [
        record(b"F", b"a", 0o644, b"1") + record(b"F", b"a", 0o644, b"2"),
        record(b"F", b"a", 0o644, b"1") + record(b"D", b"a", 0o755),
        record(b"D", b"a", 0o755) + record(b"D", b"a", 0o755),
        record(b"F", b"a", 0o644, b"1") + record(b"F", b"a/b", 0o644, b"2"),
        record(b"L", b"l", 0o777, b"d") + record(b"D", b"d", 0o755) + record(b"F", b"l/x", 0o644, b"2"),
        record(b"F", b"nodir/x", 0o644, b"2"),
    ]
    for body in bodies:
        util.expect_errno(errno.EINVAL, put, v, rebuild(meta, record(b"R", payload=blob) + body + record(b"E")))
        _intact(v)
        assert not os.path.exists(v.files("a")) and not os.path.exists(v.files("l"))
    # A good one with nested entries still goes in.
    good = record(b"D", b"d", 0o755) + record(b"D", b"d/e", 0o700) + record(b"F", b"d/e/f", 0o600, b"ok") + \
        record(b"L", b"d/ln", 0o777, b"e/f")
    put(v, rebuild(meta, record(b"R", payload=blob) + good + record(b"E")))
    assert v.value("y") == "1"
    assert util.read_text(v.files("d", "e", "f")) == "ok"


# ---- 2. R code that runs when a snapshot reads the global environment -----------------

SPIN = "t0 <- proc.time()[[3]]; while (proc.time()[[3]] - t0 < 2) {}"


@pytest.mark.timeout_s(120)
def test_snapshot_runs_no_code_of_the_session(d):
    """snapshot_state() took every binding's value with mget(), which calls
    an active binding's function and forces a promise (delayedAssign): code
    the session left ran in the worker outside any run — no run's deadline,
    no session-wide CPU, memory or process watch, the idle watch suspended
    for the transfer (up to its 120 s deadline) — whenever the user (or
    state_dir's checkpoint, by itself) took a snapshot or a fork.  Now such
    bindings are not carried, by name in the notes, and nothing of theirs
    runs: inside, the session keeps them (a run can still use them);
    outside, the worker spent no CPU on them and wrote nothing."""
    before = util.session_worker_pids(d.pid)
    s = d.clone()
    s.run("kept <- 3; makeActiveBinding('ab', function() { cat('ran\\n', file = '/work/ab.txt', append = TRUE); "
          "%s; 1 }, globalenv()); delayedAssign('pr', { cat('ran\\n', file = '/work/pr.txt', append = TRUE); "
          "%s; 2 }); invisible(NULL)" % (SPIN, SPIN))
    pid = worker_of(d, before)
    cpu0 = round3tools.cpu_s(pid)
    data = take(s)
    spent = round3tools.cpu_s(pid) - cpu0
    assert not os.path.exists(s.files("ab.txt")), "the active binding's function ran during the snapshot"
    assert not os.path.exists(s.files("pr.txt")), "the promise was forced during the snapshot"
    assert spent < 1.0, "the snapshot spent %.1f s of the worker's CPU" % spent
    log = s.read("log")
    assert "ab: not carried" in log and "pr: not carried" in log, log
    # The source keeps both; a run may use them (inside a run's limits).
    assert s.value("kept") == "3"
    # The copy has what could be carried.
    t = d.clone()
    put(t, data)
    assert t.value("kept") == "3"
    assert t.value("exists('ab') || exists('pr')") == "FALSE"


# ---- 3. CPU between runs in children reaped between the idle watch's looks --------------

def _cutime_s(pid):
    st = util.proc_stat(pid)
    if not st:
        return None
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout_s(90)
def test_idle_cpu_of_reaped_children_counts(daemons, native_dir):
    """The idle watch counted the worker's own utime+stime and the
    processes alive at each look.  A thread left behind that has a child
    spin between two looks (they come at a schedule the thread can work
    out: 0, 250, 750 ms after the run, then every second) and reaps it
    before the next showed nothing: the child's CPU went to the worker's
    cutime, and the session idled at about 70% of a CPU for as long as it
    liked, its worker kept.  Now the watch counts the CPU of reaped
    children too: the worker is replaced at the first look after a burst.
    Inside: the next result's notice, the state gone.  Outside: the old
    worker gone within a few seconds, having had little CPU."""
    d = daemons.start("pool=0", "r_libs=%s" % native_dir)
    so = str(native_dir / "round4.so")
    before = util.session_worker_pids(d.pid)
    s = d.clone()
    assert s.value("kept <- 7") == "7"
    old = worker_of(d, before)
    r = s.result("dyn.load('%s'); .C('hidden_bursts', 8L, ret = 0L)$ret" % so)
    assert r["status"] == "ok" and r["value"] == 0, r
    end = time.monotonic() + util.scaled(6)
    used = 0.0
    while time.monotonic() < end and util.proc_stat(old) and util.proc_stat(old)[0] != "Z":
        used = _cutime_s(old) or used
        time.sleep(0.1)
    st = util.proc_stat(old)
    assert not st or st[0] == "Z", \
        "the idle worker is still there after its children used %.1f s of CPU between runs" % used
    assert used < 2.0, used
    r = s.result("exists('kept')")
    assert r["status"] == "ok" and r["value"] is False, r
    assert "replaced" in r.get("notice", ""), r
    assert "worker_replaced" in s.read("log")


# ---- 4. The first look after a run came at the idle watch's old schedule ----------------

def _gone_within(pid, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        st = util.proc_stat(pid)
        if not st or st[0] == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.mark.timeout_s(150)
def test_a_run_after_a_long_idle_is_watched_at_once(daemons, native_dir):
    """The idle watch backs off to a look every 30 s.  When a run ended,
    the look "20 ms after the result" was not armed if a look was armed
    already — the idle watch's, up to 30 s later — and the idle CPU's base
    was taken at that look: a thread the run left spun (or processes it
    left lived) unseen and uncounted until then.  Here the session idled
    20 s (its next look was about 12 s after the run): the thread spun about
    12 s of CPU before anything saw it.  Now the run's end brings the look
    forward: the worker is replaced within about a second.  Inside: the
    notice, the state gone.  Outside: the worker gone soon, with little
    CPU spent."""
    d = daemons.start("pool=0", "r_libs=%s" % native_dir)
    so = str(native_dir / "round4.so")
    before = util.session_worker_pids(d.pid)
    s = d.clone()
    assert s.value("kept <- 7; dyn.load('%s'); 1" % so) == "1"
    old = worker_of(d, before)
    time.sleep(20)  # the idle watch's gaps: 0.25, 0.5, 1, 2, 4, 8, then 16 s
    cpu0 = round3tools.cpu_s(old)
    t0 = time.monotonic()
    r = s.result(".C('spin_thread', ret = 0L)$ret")
    assert r["status"] == "ok" and r["value"] == 0, r
    gone = _gone_within(old, util.scaled(4))
    spent = (round3tools.cpu_s(old) if util.proc_stat(old) else 0) - cpu0
    assert gone, "the spinning idle worker is still there %.1f s after the run (%.1f s of CPU)" % (
        time.monotonic() - t0, spent)
    r = s.result("exists('kept')")
    assert r["status"] == "ok" and r["value"] is False, r
    assert "replaced" in r.get("notice", ""), r


# ---- 5. Code that runs during a transfer: a finalizer ------------------------------------

FINALIZER = (
    "for (i in 1:12) assign(paste0('v', i), runif(1e6)); con <- textConnection('abc'); "
    "mk <- function() { e <- new.env(); reg.finalizer(e, function(e) { "
    "  if (!file.exists('/work/fin.txt')) { writeLines('ran', '/work/fin.txt'); "
    "    for (i in 1:2) parallel::mcparallel({ t0 <- proc.time()[[3]]; while (proc.time()[[3]] - t0 < 30) {} }); "
    "    Sys.sleep(8) } ; mk() }); invisible(NULL) }; "
    "mk(); invisible(NULL)")


@pytest.mark.timeout_s(120)
def test_processes_started_during_a_snapshot_do_not_live_on(d):
    """R's collector runs finalizers during the snapshot's serialization
    (a state with a connection and large bindings makes it go binding by
    binding and collect), so a finalizer the session registered runs in the
    worker between runs.  It forked two spinning children and slept: the
    children spun, outside every limit of a run, for as long as the
    transfer lasted — up to its 120 s deadline — and the idle watch did not
    look while a transfer was under way.  Now the daemon looks at a worker
    writing its state as it does at an idle one: the processes are killed
    within a look and the worker replaced (the snapshot fails with EIO).
    Inside: the next result says why, the state is gone.  Outside: the
    children gone within a few seconds, the log's worker_replaced."""
    before = util.session_worker_pids(d.pid)
    s = d.clone()
    s.run(FINALIZER)
    assert not os.path.exists(s.files("fin.txt"))
    w = worker_of(d, before)
    t0 = time.monotonic()
    bg = round3tools.Background(lambda: take(s))
    first = last = None
    end = time.monotonic() + util.scaled(8)
    while time.monotonic() < end and not bg.done():
        if util.descendants(w):
            last = time.monotonic()
            first = first or last
        time.sleep(0.05)
    took = time.monotonic() - t0
    assert first is None or last - first < util.scaled(1.5), "the snapshot's processes lived %.1f s" % (last - first)
    with pytest.raises(OSError) as e:
        bg.result(util.scaled(30))
    assert e.value.errno == errno.EIO, e.value
    # The finalizer ran (else nothing was tested), and the snapshot did not
    # wait for its sleep.
    assert os.path.exists(s.files("fin.txt")), "the finalizer never ran: nothing tested"
    assert took < util.scaled(4), took
    assert _gone_within(w, util.scaled(3))
    r = s.result("exists('v1')")
    assert r["status"] == "ok" and r["value"] is False, r
    assert "state was being written" in r.get("notice", ""), r
    assert "worker_replaced" in s.read("log")


# ---- 6. state_dir: a saved session that is not a regular file ---------------------------

@pytest.mark.timeout_s(90)
def test_saved_session_that_is_a_fifo_does_not_stall_the_daemon(daemons, tmp_path):
    """persist_open_saved() opened DIR/NAME.snap with a blocking O_RDONLY
    before it checked that it is a regular file: a FIFO there (or a device
    node) made the daemon's one loop wait in open(2) for a writer when the
    session was first used — every session and the mount stalled.  Now it
    opens without blocking and refuses what is not a regular file: the
    session starts empty, with the reason in the daemon's log, and the
    daemon answers meanwhile."""
    state = tmp_path / "state"
    d = daemons.start("pool=0", "state_dir=%s" % state, name="a")
    d.stop()
    os.mkfifo(state / "5.snap", 0o600)
    d2 = daemons.start("pool=0", "state_dir=%s" % state, name="b",
                       expect=[r"saved state", r"not restored"])
    assert "5" in os.listdir(d2.path("sessions"))
    w = d2.clone()
    t = d2.session("5")

    def use():
        return t.value("exists('anything')")

    bg = round3tools.Background(use)
    assert bg.result(util.scaled(15)) == "FALSE"
    assert w.value("1 + 1") == "2"
    # Kept beside as it was (never opened to wait on), so that the
    # session's checkpoints do not replace it (round 10, finding 9).
    assert stat.S_ISFIFO(os.lstat(state / "5.snap.unrestored").st_mode)


# ---- 7. The size of what a worker writes into the daemon's file -------------------------

@pytest.mark.timeout_s(120)
def test_a_snapshot_is_no_larger_than_a_state_can_be(daemons, native_dir):
    """For a transfer the worker's file-size limit was lifted altogether
    (the file is the daemon's: a memfd, or state_dir's file on the host's
    disk).  A thread the session left took the descriptor as it came,
    made the worker's own writes wait, and wrote into it at will: as
    nobody (no memory cgroup) 400 MiB of the host's memory went into a
    snapshot of a session held to 256 MiB with a 1 MiB workspace — and
    any amount would have, or, with state_dir, of the host's disk.  Now the
    limit for a transfer is what a state can take (the memory limit, twice
    the workspace's quota for its files and their headers, the metadata):
    past it the write fails (EFBIG).  Since finding 7 the worker gets a
    pipe and the thread writes into that: the daemon's copy stops at the
    same bound and the snapshot fails.  Outside: the snapshot the user
    reads is no larger than that (or the snapshot fails)."""
    d = daemons.start("pool=0", "files_max_bytes=1M", "r_libs=%s" % native_dir)
    so = str(native_dir / "round4.so")
    s = d.clone()
    r = s.result("dyn.load('%s'); .C('hijack_state_fd', 400L, ret = 0L)$ret" % so)
    assert r["status"] == "ok" and r["value"] == 0, r
    s.write("limits", '{"memory": 268435456}')
    r = s.result("x <- runif(2e6); length(x)")
    assert r["status"] == "ok", r
    bound = (256 << 20) + 2 * (1 << 20) + (1 << 20) + 16 + (1 << 20)
    try:
        data = util.read_bytes(s.p("snapshot"))
    except OSError as e:
        assert e.errno == errno.EIO, e
        return
    n = len(data)
    del data
    assert n <= bound, "a snapshot of %d MiB" % (n >> 20)


@pytest.mark.timeout_s(120)
def test_a_saved_state_is_not_the_workers_to_change_later(daemons, native_dir, tmp_path):
    """A checkpoint's worker gets the descriptor of DIR/.NAME.snap.tmp,
    which the daemon renames to NAME.snap once the worker said it is
    written.  A thread of the session keeps a copy, and seconds later —
    the session idle, no transfer under way — writes into the saved file
    (here its magic): what the daemon restores after a restart is no longer
    what it checked and renamed, and each kept descriptor also pins a file
    the next checkpoint unlinked (up to RLIMIT_NOFILE of them, each as
    large as a state).  Outside: the saved file keeps the bytes the
    checkpoint wrote.  Now the worker gets a pipe the daemon copies from:
    inside, the kept write end's late write fails with EPIPE (the daemon
    closed its end when the checkpoint was over)."""
    state = tmp_path / "state"
    d = daemons.start("pool=0", "state_dir=%s" % state, "checkpoint_interval=3600", "r_libs=%s" % native_dir)
    so = str(native_dir / "round4.so")
    s = d.clone()
    r = s.result("v <- runif(3e6); dyn.load('%s'); .C('keep_state_fd', 1500L, ret = 0L)$ret" % so)
    assert r["status"] == "ok" and r["value"] == 0, r
    s.write("ctl", "checkpoint")
    saved = state / (s.name + ".snap")
    assert saved.read_bytes()[:8] == MAGIC
    time.sleep(util.scaled(2.5))
    assert saved.read_bytes()[:8] == MAGIC, "the worker changed the saved state after its checkpoint"
    # Inside: what the thread kept (the pipe's write end) reaches nothing now.
    r = s.result(".C('keep_state_result', ret = 0L)$ret")
    assert r["status"] == "ok" and r["value"] == errno.EPIPE, r


# ---- 8. CPU during a transfer ------------------------------------------------------------

@pytest.mark.timeout_s(200)
def test_a_transfer_is_held_to_the_cpu_limit(daemons, native_dir):
    """A transfer had no CPU bound of its own but its 120 s deadline: the
    idle watch does not count it (it is the worker's own work) and the
    run's CPU limit is a soft rlimit whose SIGXCPU the worker only turns
    into an interrupt.  A thread of the session that made the worker's
    writes wait (its descriptor pointed at a pipe nobody reads) and spun
    got 120 s of CPU from a session held to 2 s, at every snapshot — and,
    with state_dir, at every checkpoint, which any run brings.  Now the
    daemon's looks during a transfer hold the worker to the session's CPU
    limit: it is killed soon after (the snapshot fails with EIO).  Outside:
    the worker gone within seconds, having used about the limit."""
    d = daemons.start("pool=0", "r_libs=%s" % native_dir)
    so = str(native_dir / "round4.so")
    before = util.session_worker_pids(d.pid)
    s = d.clone()
    w = worker_of(d, before)
    r = s.result("x <- runif(3e6); dyn.load('%s'); .C('stall_transfer', 0L, 0L, ret = 0L)$ret" % so)
    assert r["status"] == "ok" and r["value"] == 0, r
    s.write("limits", '{"cpu": 2}')
    cpu0 = round3tools.cpu_s(w)
    t0 = time.monotonic()
    bg = round3tools.Background(lambda: take(s))
    gone = _gone_within(w, util.scaled(8))
    took = time.monotonic() - t0
    assert gone, "the stalled transfer's worker still spins after %.0f s (%.1f s of CPU)" % (
        took, round3tools.cpu_s(w) - cpu0)
    with pytest.raises(OSError) as e:
        bg.result(util.scaled(10))
    assert e.value.errno == errno.EIO, e.value


@pytest.mark.timeout_s(200)
def test_a_restore_is_held_to_the_session_s_processes(daemons, native_dir):
    """The same thread in a session that a snapshot is written into: it
    makes the restoring worker's reads wait (an empty pipe in place of the
    file) and has three children spin.  The worker itself sleeps, so its
    own CPU shows nothing; the children spun until the transfer's 120 s
    deadline, each with the session's whole memory rlimit, the session
    idle as far as every other watch knew.  Now a restoring worker may have
    one process of its own (the child that checks the state), no more, and
    the CPU of all of them counts: it is replaced within a look, and the
    write fails with EIO.  Outside: the worker and its children gone within
    seconds."""
    d = daemons.start("pool=0", "r_libs=%s" % native_dir)
    so = str(native_dir / "round4.so")
    src = d.clone()
    src.run("y <- runif(3e6)")  # a restore long enough for the thread to catch its descriptor
    good = take(src)
    before = util.session_worker_pids(d.pid)
    v = d.clone()
    w = worker_of(d, before)
    r = v.result("dyn.load('%s'); .C('stall_transfer', 3L, 1L, ret = 0L)$ret" % so)
    assert r["status"] == "ok" and r["value"] == 0, r
    t0 = time.monotonic()
    bg = round3tools.Background(lambda: put(v, good))
    gone = _gone_within(w, util.scaled(6))
    kids = util.descendants(w) if not gone else []
    assert gone, "the stalled restore's worker is still there after %.0f s, with %d processes" % (
        time.monotonic() - t0, len(kids))
    with pytest.raises(OSError) as e:
        bg.result(util.scaled(10))
    assert e.value.errno == errno.EIO, e.value
    assert "worker_replaced" in v.read("log")


# ---- 9. A restore that fails in the worker after the global environment went ------------

HOSTILE_TREE = ("p <- paste(rep('a', 70), collapse = '/'); dir.create(p, recursive = TRUE); "
                "writeLines('deep', file.path(p, 'leaf')); dir.create('ro/sub', recursive = TRUE); "
                "writeLines('x', 'ro/sub/x'); Sys.chmod('ro', '555', use_umask = FALSE); "
                "dir.create('shut'); writeLines('s', 'shut/s'); Sys.chmod('shut', '000', use_umask = FALSE); "
                "file.symlink('/tmp', 'out'); writeLines('keep', '/tmp/outside'); "
                "close(fifo('fifo', 'w+')); 1")


@pytest.mark.timeout_s(120)
def test_a_restore_that_fails_in_the_worker_changes_nothing(daemons):
    """What the host cannot check fails in the worker.  Before, the worker
    replaced the global environment and emptied the workspace first: a
    session's own tree deeper than clear_tree() went (66 levels) kept the
    snapshot's directory `a` from being made (EEXIST), the write answered
    EINVAL and the session had lost its variables.  Now the worker stages
    the files beside the session's, swaps them in, and only then replaces
    the global environment.  The session's tree here is hostile (70 levels
    deep, a 0000 and a 0555 directory, a link out of /work, a FIFO, and
    700 KiB of a 1 MiB workspace).  A snapshot of 600 KiB whose directory
    is `a` fails in the staging (no room beside the old files): EINVAL, and
    variables, files and modes are as they were, nothing staged left.  With
    room made, the same snapshot goes in whole: the deep tree is gone (at
    any depth), the snapshot's `a` is there with its mode, and the link's
    target outside /work is untouched."""
    d = daemons.start("pool=0", "files_max_bytes=1M")
    src = d.clone()
    src.run("dir.create('a'); writeBin(as.raw(rep(7L, 600 * 1024)), 'a/f'); "
            "Sys.chmod('a', '555', use_umask = FALSE); y <- 1")
    good = take(src)
    v = d.clone()
    v.run("mark <- 'intact'; writeBin(as.raw(rep(1L, 700 * 1024)), 'mine'); " + HOSTILE_TREE)
    deep = v.files(*(["a"] * 70 + ["leaf"]))
    names = ["a", "fifo", "mine", "out", "ro", "shut"]
    assert sorted(os.listdir(v.files())) == names
    util.expect_errno(errno.EINVAL, put, v, good)
    assert v.value("exists('mark') && !exists('y')") == "TRUE", "a refused snapshot cost the session its variables"
    assert sorted(os.listdir(v.files())) == names, "the staging was left behind, or files went"
    assert util.read_text(deep) == "deep\n"
    assert os.stat(v.files("ro")).st_mode & 0o777 == 0o555
    assert os.stat(v.files("shut")).st_mode & 0o777 == 0o000
    assert os.path.islink(v.files("out"))
    v.run("unlink('mine')")
    put(v, good)
    assert v.value("exists('y') && !exists('mark')") == "TRUE"
    assert sorted(os.listdir(v.files())) == ["a"]
    assert os.listdir(v.files("a")) == ["f"]
    assert os.path.getsize(v.files("a", "f")) == 600 * 1024
    assert os.stat(v.files("a")).st_mode & 0o777 == 0o555
    assert v.value("readLines('/tmp/outside')") == "keep", "the clear followed the link out of /work"


@pytest.mark.timeout_s(120)
def test_a_restore_that_does_not_fit_beside_the_old_files_changes_nothing(daemons):
    """The staged files need room beside the session's own until the swap:
    with a 1 MiB workspace, a session holding 700 KiB cannot stage a
    snapshot of 600 KiB (the host's check passes it: it fits alone).  The
    write fails (EINVAL, the reason in the session's log) before anything
    changed: its variables and files are all there, and nothing staged is
    left.  With room made, the same snapshot goes in."""
    d = daemons.start("pool=0", "files_max_bytes=1M")
    src = d.clone()
    src.run("writeBin(as.raw(rep(7L, 600 * 1024)), 'big'); y <- 1")
    good = take(src)
    v = d.clone()
    v.run("mark <- 'intact'; writeBin(as.raw(rep(1L, 700 * 1024)), 'mine'); 1")
    util.expect_errno(errno.EINVAL, put, v, good)
    assert v.value("exists('mark') && !exists('y')") == "TRUE"
    assert os.listdir(v.files()) == ["mine"]
    assert os.path.getsize(v.files("mine")) == 700 * 1024
    assert "beside its own" in util.read_text(v.p("log"))
    v.run("unlink('mine')")
    put(v, good)
    assert v.value("y") == "1"
    assert os.listdir(v.files()) == ["big"]


@pytest.mark.timeout_s(120)
def test_snapshot_and_restore_take_the_workspace_not_the_working_directory(d):
    """The worker took its working directory for the workspace, and the
    session's code moves it (setwd): a session that had run
    setwd('/tmp/elsewhere') gave a snapshot of that directory instead of
    /work, and a restore into such a session made its files in /tmp and
    emptied that directory, /work left as it was.  Now both take the
    workspace the worker was attached to.  Inside and outside: the
    snapshot holds /work's file only, the copy's /work gets it, the copy's
    /tmp directory is untouched."""
    src = d.clone()
    src.run("writeLines('w', 'inwork'); dir.create('/tmp/elsewhere'); writeLines('t', '/tmp/elsewhere/intmp'); "
            "setwd('/tmp/elsewhere'); y <- 1")
    snap = take(src)
    assert [r[1] for r in parse(snap)[1] if r[0] == b"F"] == ["inwork"]
    v = d.clone()
    v.run("writeLines('m', 'mine'); dir.create('/tmp/other'); writeLines('o', '/tmp/other/o'); "
          "setwd('/tmp/other'); 1")
    put(v, snap)
    assert os.listdir(v.files()) == ["inwork"]
    assert v.value("paste(list.files('/tmp/other'), collapse = ',')") == "o"
    assert v.value("y") == "1"


# ---- What held: a fork whose source writes garbage ---------------------------------------

@pytest.mark.timeout_s(120)
def test_a_fork_from_a_hostile_source_fails_cleanly(native_dir, daemons):
    """A thread of the source session takes the pipe a fork gives its
    worker and writes garbage into it for as long as it can.  The copy's
    worker refuses the stream (it is not a state), the fork fails with EIO
    within seconds, no copy is left, and the daemon and another session
    answer throughout."""
    dd = daemons.start("pool=0", "r_libs=%s" % native_dir, name="g", expect=[r"the fork of \d+ failed"])
    so = str(native_dir / "round4.so")
    w = dd.clone()
    assert w.value("wv <- 5") == "5"
    s = dd.clone()
    r = s.result("x <- runif(3e6); dyn.load('%s'); .C('garbage_fork', ret = 0L)$ret" % so)
    assert r["status"] == "ok" and r["value"] == 0, r
    names = set(os.listdir(dd.path("sessions")))
    t0 = time.monotonic()
    bg = round3tools.Background(lambda: util.read_text(s.p("fork")))
    while not bg.done() and time.monotonic() - t0 < util.scaled(10):
        assert w.value("wv") == "5"
        time.sleep(0.2)
    with pytest.raises(OSError) as e:
        bg.result(util.scaled(20))
    assert e.value.errno == errno.EIO, e.value
    assert time.monotonic() - t0 < util.scaled(10)
    assert set(os.listdir(dd.path("sessions"))) <= names
    assert w.value("wv") == "5"


# ---- 10. A saved state's metadata forged by the worker: host tools ------------------------

@pytest.mark.timeout_s(150)
def test_a_worker_cannot_give_its_session_host_tools(daemons, native_dir, tmp_path):
    """A snapshot's metadata carries the session's tools — host commands
    that run outside the jail as the daemon's user — and the worker holds
    a writable descriptor of the very file.  A thread of the session kept
    the checkpoint's descriptor and, after the daemon renamed the file,
    wrote it anew: the daemon's magic, metadata of its own with a session
    tool `pwn` whose command writes a file on the host, then its state.
    After a restart the saved session came back with that tool, and R
    code called it: a command of the sandbox's choosing ran on the host (as
    root, for a root daemon).  Outside: no such file on the host; inside:
    no tool `pwn` in the restored session."""
    state = tmp_path / "state"
    marker = tmp_path / "pwned"
    d = daemons.start("pool=0", "state_dir=%s" % state, "checkpoint_interval=3600", "r_libs=%s" % native_dir,
                      name="a")
    so = str(native_dir / "round4.so")
    s = d.clone()
    r = s.result("v <- runif(3e6); dyn.load('%s'); .C('forge_tools', 1000L, '%s', ret = 0L)$ret" % (so, marker))
    assert r["status"] == "ok" and r["value"] == 0, r
    s.write("ctl", "checkpoint")
    time.sleep(util.scaled(2))
    # A crash keeps the last checkpoint (a clean stop would write another).
    os.kill(d.pid, 9)
    d.wait_exit(util.scaled(10))
    import subprocess
    subprocess.run(["fusermount3", "-u", "-z", str(d.mnt)], capture_output=True, timeout=10)
    d.stopped = True
    d.forget()
    d2 = daemons.start("pool=0", "state_dir=%s" % state, name="b")
    t = d2.session(s.name)
    t.result("1")  # the restore, then the session's tools go to its worker
    r = t.result("if (exists('pwn')) pwn() else 'no tool'")
    time.sleep(0.5)
    assert not marker.exists(), "a command the sandbox chose ran on the host"
    assert r.get("value") == "no tool" or r["status"] == "error", r


@pytest.mark.timeout_s(120)
def test_a_snapshot_read_carries_the_daemons_metadata(daemons, native_dir, tmp_path):
    """The same forgery through sessions/N/snapshot: the thread takes the
    memfd, makes the worker write into a pipe drained to nowhere, and
    writes a whole container of its own — metadata with the tool `pwn` —
    before the worker answers.  The user got that file as N's snapshot; a
    restore of it into another session gave that session the tool, and
    its code ran the command on the host.  Now the daemon seals the memfd
    once the worker answered and checks that the header and metadata are
    the ones it wrote: the snapshot fails (EIO) instead.  Outside: no
    such file on the host."""
    marker = tmp_path / "pwned"
    d = daemons.start("pool=0", "r_libs=%s" % native_dir)
    so = str(native_dir / "round4.so")
    s = d.clone()
    r = s.result("x <- runif(3e6); b <- serialize(list(format = 'securerfs-state', version = 1L, globals = list(), "
                 "packages = character(), notes = character()), NULL, xdr = FALSE); dyn.load('%s'); "
                 ".C('forge_snapshot', b, length(b), '%s', ret = 0L)$ret" % (so, marker))
    assert r["status"] == "ok" and r["value"] == 0, r
    try:
        data = take(s)
    except OSError as e:
        assert e.errno == errno.EIO, e
        data = None
    if data is not None:
        meta, _ = parse(data)
        assert "pwn.json" not in meta.get("tools", {}), "the user's snapshot carries the worker's metadata"
        t = d.clone()
        put(t, data)
        t.result("1")
        t.result("if (exists('pwn')) pwn() else 'no tool'")
        time.sleep(0.5)
    assert not marker.exists(), "a command the sandbox chose ran on the host"
