"""/proc and /dev are no levers (issue 9 item 2; docs/security.md, "/proc and
/dev"), proved from both sides: what R gets inside, and the host's values,
modes and times unchanged outside.  Every probe is harmless if the jail were
wrong: it writes the value that is there, chmods to the mode that is there
(use_umask = FALSE), and puts back anything it changed.
"""
import os

import pytest

from jailtools import AS_ROOT, failed, probe, value, warned

# The paths the jail masks (sandbox/jail.c, proc_masked_files/dirs); those
# this kernel has are checked.
MASKED_FILES = ["kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug", "interrupts",
                "key-users", "kallsyms", "kmsg", "softirqs", "iomem", "ioports", "partitions", "diskstats", "swaps",
                "locks", "cmdline", "sysrq-trigger", "vmallocinfo", "slabinfo", "pagetypeinfo", "kpagecount",
                "kpageflags", "kpagecgroup"]
MASKED_DIRS = ["asound", "acpi", "scsi", "bus", "irq", "fs", "driver", "tty", "pressure"]


@pytest.fixture
def probe_so(jail):
    return jail.probe


def read_host(path):
    """The host's content of path, or None when this user may not read it."""
    try:
        with open(path) as f:
            return f.read()
    except PermissionError:
        return None


def test_proc_self_mem_does_not_open_for_writing(sess, jail, witness):
    # The attack of issue 9: open our own memory read-write from plain R,
    # seek to a libc function, write code.  The open itself fails.
    r = failed(sess, "con <- file('/proc/self/mem', 'r+b')")
    assert "cannot open the connection" in r["error"], r
    assert warned(r, "Read-only file system"), r
    # Reading (what ptrace-read rules allow a process of itself) still is
    # possible; writing is not, through any open mode.
    for mode in ("wb", "ab", "w+b"):
        r = failed(sess, "con <- file('/proc/self/mem', '%s')" % mode)
        assert warned(r, "Read-only file system"), (mode, r)
    assert sess.value("1+1") == "2"
    assert witness.value("witness_var") == "41"


def test_host_sysctl_not_writable(sess, jail, witness):
    path = "/proc/sys/kernel/printk_ratelimit_burst"
    before = read_host(path).strip()
    try:
        # Writing the value that is there: harmless even if it went through.
        r = failed(sess, "writeLines('%s', '%s')" % (before, path))
        assert "cannot open" in r["error"], r
        assert warned(r, "Permission denied") or warned(r, "Read-only file system"), r
    finally:
        after = read_host(path).strip()
        if after != before and AS_ROOT:
            with open(path, "w") as f:
                f.write(before + "\n")
    assert after == before, "the host's %s changed from %s to %s" % (path, before, after)
    # The other steering sysctls of the issue: an open for appending writes
    # nothing, and is refused.
    for p in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/panic", "/proc/sys/vm/drop_caches",
              "/proc/sys/fs/protected_symlinks", "/proc/sys/kernel/modprobe"):
        if not os.path.exists(p):
            continue
        host = read_host(p)
        r = failed(sess, "con <- file('%s', 'a'); close(con)" % p)
        assert warned(r, "Permission denied") or warned(r, "Read-only file system"), (p, r)
        assert read_host(p) == host
    # Reading stays possible (docs: /proc/sys is read-only, as in Docker).
    assert value(sess, "readLines('%s')" % path) == [before]


def test_proc_files_of_the_worker_are_read_only(sess, jail, witness):
    for p in ("/proc/self/oom_score_adj", "/proc/self/coredump_filter", "/proc/self/comm",
              "/proc/self/attr/current", "/proc/self/clear_refs", "/proc/self/timerslack_ns"):
        r = failed(sess, "con <- file('%s', 'a'); close(con)" % p)
        assert warned(r, "Read-only file system") or warned(r, "Permission denied") or \
            warned(r, "No such file"), (p, r)
    assert value(sess, "length(readLines('/proc/self/status')) > 10") == [True]


def test_masked_paths_show_nothing(sess, jail, witness):
    files = [f for f in MASKED_FILES if os.path.lexists("/proc/" + f)]
    dirs = [d for d in MASKED_DIRS if os.path.isdir("/proc/" + d)]
    assert "keys" in files and "timer_list" in files and "interrupts" in files, files
    # Inside: the names of those that show anything (none may).
    code = ("f <- c(%s); d <- c(%s); list(files = I(f[vapply(f, function(p) length(readBin(file.path('/proc', p), "
            "'raw', 1e6)), 0) > 0]), dirs = I(d[vapply(d, function(p) length(list.files(file.path('/proc', p), "
            "all.files = TRUE, no.. = TRUE)), 0) > 0]), n = length(f) + length(d))"
            % (", ".join("'%s'" % f for f in files), ", ".join("'%s'" % d for d in dirs) or "character(0)"))
    v = value(sess, code)
    assert v["files"] == [] and v["dirs"] == [], v
    assert v["n"] == len(files) + len(dirs)
    # The host's own are not empty: the masks hide something real.
    assert len(read_host("/proc/interrupts")) > 0
    if AS_ROOT:
        assert len(read_host("/proc/timer_list")) > 0
    # Masks cannot be written through or removed.
    r = failed(sess, "con <- file('/proc/keys', 'a'); close(con)")
    assert warned(r, "Read-only file system") or warned(r, "Permission denied"), r
    # What R and the tests need is still there.
    assert value(sess, "c(length(readLines('/proc/meminfo')) > 0, length(readLines('/proc/self/status')) > 0, "
                       "file.exists('/proc/self/fd/1'))") == [True, True, True]
    assert witness.value("witness_var") == "41"


def stat_of(path):
    st = os.stat(path)
    return (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns)


def test_device_nodes_cannot_be_changed(sess, jail, witness):
    so = jail.probe
    before = {p: stat_of(p) for p in ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom")}
    # chmod to the mode that is there (use_umask = FALSE: R applies the
    # umask otherwise), explicit times, touch to now (write permission is
    # enough for that one), chown to the owner that is there.
    v = value(sess, "c(Sys.chmod('/dev/null', file.info('/dev/null')$mode, use_umask = FALSE), "
                    "Sys.chmod('/dev/zero', file.info('/dev/zero')$mode, use_umask = FALSE), "
                    "Sys.setFileTime('/dev/zero', Sys.time()), Sys.setFileTime('/dev/null', Sys.time()))")
    assert v == [False, False, False, False], v
    EROFS, EPERM = 30, 1
    for p in ("/dev/null", "/dev/zero", "/dev/urandom"):
        assert probe(sess, so, "probe_touch_now", "'%s'" % p) == [-1, EROFS], p
        assert probe(sess, so, "probe_chown_same", "'%s'" % p)[1] in (EROFS, EPERM), p
    # Reading and writing them still works.
    v = value(sess, "writeLines('x', '/dev/null'); c(sum(as.integer(readBin('/dev/zero', 'raw', 64))), "
                    "length(readBin('/dev/urandom', 'raw', 16)), length(readBin('/dev/random', 'raw', 8)))")
    assert v == [0, 16, 8], v
    # Outside: mode, owner, mtime and ctime of the host's nodes unchanged.
    after = {p: stat_of(p) for p in before}
    assert after == before, (before, after)
    assert witness.value("witness_var") == "41"


def test_dev_is_read_only_and_minimal(sess, jail, witness):
    v = value(sess, "c(file.create('/dev/x'), dir.create('/dev/d'), "
                    "suppressWarnings(file.symlink('/proc/self/fd/0', '/dev/tty')))")
    assert v == [False, False, False], v
    assert not os.path.exists("/dev/x") and not os.path.exists("/dev/d")
