"""Who the worker is on the host (issue 9 item 1; docs/security.md, "Who the
worker is on the host"), checked with the kernel's own eyes: the Uid and Gid
lines of /proc/PID/status of every process of every session, and the owner
of what a session writes as the keeper's tmpfs holds it.

As root, each session has an unprivileged host id of the daemon's range
(-o id_range, default 1879048192:65536), the same number as uid and gid,
never 0 and never another session's; a pooled worker's id is adopted by the
session it goes to, and a replacement worker keeps the session's id.
Unprivileged, every worker is the daemon's own uid, as before: the only id
it has.
"""
import os
import time

import pytest

import util
from jailtools import AS_ROOT, ID_BASE, ID_COUNT, ids_of, keeper_path_of, new_worker, ok, tree, value, wait_gone


ABORT = ("dyn.load(Sys.glob(c('/lib/x86_64-linux-gnu/libc.so.6', '/lib*/libc.so.6',"
         " '/usr/lib/*/libc.so.6'))[1]); .C('abort')")


def wait_pool(d, n=1, timeout=15):
    """Until the pool holds n ready workers (stats' pool_idle)."""
    deadline = time.monotonic() + util.scaled(timeout)
    while time.monotonic() < deadline:
        if d.json("stats")["pool_idle"] >= n:
            return
        time.sleep(0.02)
    raise AssertionError("the pool did not fill: %s" % d.json("stats"))


def expected_id(pid):
    """The id a session's processes must have: its worker's, checked to be
    what the mode says."""
    uid, gid = ids_of(pid)
    if AS_ROOT:
        assert uid[0] != 0 and ID_BASE <= uid[0] < ID_BASE + ID_COUNT, uid
    else:
        assert uid[0] == os.getuid(), uid
    return uid[0]


def check_tree(pid, want):
    """Every process under pid (the worker included) has uid and gid want in
    all four fields.  Returns how many processes were checked."""
    procs = tree(pid)
    for p in procs:
        ids = ids_of(p)
        if ids is None:
            continue  # exited meanwhile
        uid, gid = ids
        assert uid == [want] * 4 and gid == [want] * 4, (p, uid, gid)
        if AS_ROOT:
            assert 0 not in uid + gid, (p, uid, gid)
    return len(procs)


@pytest.mark.timeout_s(90)
def test_every_process_of_every_session_has_its_own_host_id(daemons):
    d = daemons.start("pool=0")
    a = d.clone()
    assert a.value("1") == "1"
    pid_a = new_worker(d, [])
    b = d.clone()
    assert b.value("1") == "1"
    pid_b = new_worker(d, [pid_a])
    id_a, id_b = expected_id(pid_a), expected_id(pid_b)
    if AS_ROOT:
        assert id_a != id_b, "two sessions share host id %d" % id_a
    else:
        assert id_a == id_b == os.getuid()
    # Children of the run (parallel's fork) are the session's too.  They
    # end with the run that started them, so look while it runs.
    for s in (a, b):
        s.submit("library(parallel); for (i in 1:3) mcparallel(Sys.sleep(60)); Sys.sleep(60); 1")
    for pid, want in ((pid_a, id_a), (pid_b, id_b)):
        deadline = time.monotonic() + util.scaled(20)
        while check_tree(pid, want) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert check_tree(pid, want) >= 4
    for s in (a, b):
        s.write("ctl", "interrupt")
        assert s.result()["status"] == "error"
    # Its private /tmp and R's temporary directory there, as the host's
    # kernel sees them through the worker's root, are the session's too.
    for s, pid, want in ((a, pid_a, id_a), (b, pid_b, id_b)):
        tmpfile = value(s, "f <- tempfile(); writeLines('x', f); f")[0]
        for p in ("/tmp", "/tmp/R", tmpfile):
            st = os.lstat("/proc/%d/root%s" % (pid, p))
            assert (st.st_uid, st.st_gid) == (want, want), (p, st.st_uid, st.st_gid)
    # Inside: uid 1000, mapped to exactly that id and nothing else.
    for s, want in ((a, id_a), (b, id_b)):
        v = value(s, "c(Sys.info()[['effective_user']], readLines('/proc/self/uid_map'), "
                     "readLines('/proc/self/gid_map'), readLines('/proc/self/setgroups'))")
        assert v[0] == "securerfs"
        assert v[1].split() == ["1000", str(want), "1"] and v[2].split() == ["1000", str(want), "1"], v
        assert v[3] == "deny"
        # No supplementary group of the host (root's) came along.
        groups = value(s, "grep('^Groups:', readLines('/proc/self/status'), value = TRUE)")[0]
        assert groups.split()[1:] == [], groups
    a.close()
    b.close()
    assert wait_gone(tree(pid_a) + tree(pid_b))


def test_workspace_belongs_to_the_session_id(daemons):
    d = daemons.start("pool=1")
    wait_pool(d)
    [pooled] = util.session_worker_pids(d.pid)
    pooled_id = expected_id(pooled)
    s = d.clone()
    # The session adopted the pooled worker, and with it its id.
    want = inside_id(s)
    assert want == pooled_id and pooled in workers_with_uid(d, want), (want, pooled_id)
    marker = "owned-%d" % os.getpid()
    ok(s, "writeLines('x', '%s.txt'); dir.create('%s.d'); writeLines('y', '%s.d/in')" % (marker, marker, marker))
    # The host side writes into files/ too: a file and a directory.
    files = s.p("files")
    with open(str(files / (marker + ".host")), "w") as f:
        f.write("from the host\n")
    os.mkdir(str(files / (marker + ".hostdir")))
    # Outside, as the keeper's tmpfs holds them: the session's id owns all.
    for name in (marker + ".txt", marker + ".d", marker + ".d/in", marker + ".host", marker + ".hostdir"):
        st = os.lstat(keeper_path_of(d, name))
        assert (st.st_uid, st.st_gid) == (want, want), (name, st.st_uid, st.st_gid)
    root = os.lstat(os.path.dirname(keeper_path_of(d, marker + ".txt")))
    assert (root.st_uid, root.st_gid) == (want, want) and root.st_mode & 0o7777 == 0o755, oct(root.st_mode)
    # Inside: what the host made is the code's (uid 1000), and writable.
    v = value(s, "c(file.info(c('%s.host', '%s.hostdir'))$uid, "
                 "{cat('more\\n', file = '%s.host', append = TRUE); length(readLines('%s.host'))}, "
                 "file.create('%s.hostdir/new'))" % ((marker,) * 5))
    assert v == [1000, 1000, 2, True], v
    s.close()


def inside_id(s):
    """The host uid the session's worker maps its 1000 to, from inside."""
    v = value(s, "scan(text = readLines('/proc/self/uid_map'), quiet = TRUE)")
    assert v[0] == 1000 and v[2] == 1, v
    return int(v[1])


def workers_with_uid(d, uid):
    return [p for p in util.session_worker_pids(d.pid) if ids_of(p) and ids_of(p)[0][0] == uid]


@pytest.mark.timeout_s(90)
def test_replacement_workers_keep_the_sessions_id(daemons):
    d = daemons.start("pool=1", expect=[r"crash", r"signal", r"abort", r"lost", r"died"])
    s = d.clone()
    assert s.value("x <- 1; 1") == "1"
    own = inside_id(s)
    first = workers_with_uid(d, own)
    # As root only this session's worker has its id; unprivileged every
    # worker (the pooled one too) is the daemon's uid.
    assert len(first) == 1 if AS_ROOT else len(first) >= 1, first
    for p in first:
        check_tree(p, own)
    # ctl restart: a fresh worker (state gone), the same host id; as root
    # it comes from the zygote, not the pool, whose worker keeps its own id.
    s.write("ctl", "restart")
    assert s.value("exists('x')") == "FALSE"
    assert inside_id(s) == own
    # A crash: replaced, same id.
    r = s.result(ABORT)
    assert r["status"] in ("crashed", "killed"), r
    assert inside_id(s) == own
    current = workers_with_uid(d, own)
    if AS_ROOT:
        assert wait_gone(first)
        current = workers_with_uid(d, own)
        assert len(current) == 1 and current[0] not in first, current
        others = [p for p in util.session_worker_pids(d.pid) if p not in current]
        assert others and all(ids_of(p)[0][0] not in (0, own) for p in others), others
    for p in current:
        check_tree(p, own)
    s.close()


@pytest.mark.timeout_s(120)
def test_ids_return_to_the_free_set_least_recently_freed_first(daemons):
    base = 1879100000
    d = daemons.start("pool=1", "max_sessions=2", "id_range=%d:3" % base)

    sid = inside_id
    wait_pool(d)
    a = d.clone()
    wait_pool(d)
    b = d.clone()
    ids = [sid(a), sid(b)]
    if not AS_ROOT:
        # Unprivileged: no range, the daemon's own id for all.
        assert ids == [os.getuid()] * 2
        a.close()
        b.close()
        return
    # The pool took base first, a adopted it, the pool took base+1, b adopted it.
    assert ids == [base, base + 1], ids
    workers = [p for p in util.session_worker_pids(d.pid)]
    # An id returns only once the session is closed and its worker reaped:
    # close them one after the other, so that a's id is freed first.
    for s, sid_of in ((a, ids[0]), (b, ids[1])):
        mine = [p for p in workers if ids_of(p) and ids_of(p)[0][0] == sid_of]
        s.close()
        assert wait_gone(mine)
    wait_pool(d)
    c = d.clone()
    wait_pool(d)
    e = d.clone()
    # c adopts the pool's base+2; the pool then takes base (freed first),
    # which e adopts.
    assert [sid(c), sid(e)] == [base + 2, base], [sid(c), sid(e)]
    c.close()
    e.close()


def test_id_range_overlapping_host_ids_is_refused(daemons):
    # 65534 is nobody's uid and group in /etc/passwd and /etc/group.
    d = daemons.start("pool=0", "id_range=65000:1000", wait=False, expect=[r"id_range"])
    if not AS_ROOT:
        # Unprivileged there is no range to check: it starts and its workers
        # are the daemon's own uid.
        d.wait_ready()
        s = d.clone()
        assert s.value("1") == "1"
        assert ids_of(util.session_worker_pids(d.pid)[-1])[0][0] == os.getuid()
        s.close()
        return
    d.allow_failure = True
    assert d.proc.wait(timeout=util.scaled(20)) != 0
    err = d.stderr()
    assert "id_range" in err and "/etc/passwd" in err and "65534" in err, err
    assert not util.is_fuse_mounted(d.mnt)


@pytest.mark.parametrize("opt, words", [
    ("id_range=0:100", "id 0"),
    ("id_range=100", "BASE:COUNT"),
    ("id_range=4294967294:1", "4294967294"),
])
def test_bad_id_range_values_are_refused(daemons, opt, words):
    d = daemons.start("pool=0", opt, wait=False, expect=[r"id_range"])
    d.allow_failure = True
    assert d.proc.wait(timeout=util.scaled(20)) != 0
    assert words in d.stderr(), d.stderr()


def test_id_range_smaller_than_the_sessions_is_refused(daemons):
    d = daemons.start("pool=2", "max_sessions=10", "id_range=%d:5" % ID_BASE, wait=False, expect=[r"id_range"])
    if not AS_ROOT:
        d.wait_ready()
        return
    d.allow_failure = True
    assert d.proc.wait(timeout=util.scaled(20)) != 0
    assert "fewer ids than max_sessions + pool" in d.stderr(), d.stderr()


def test_config_shows_the_id_range(daemons):
    d = daemons.start("pool=0", "id_range=%d:1000" % (ID_BASE + 5000))
    assert d.json("config")["id_range"] == {"base": ID_BASE + 5000, "count": 1000}
