"""Round 5 of attack: the jail as J17 left it (docs/sandbox.md steps 0-9):
user and pid namespaces from the clone, the rest unshared by the child after
its cgroup join; the new root moved over the scratch root and entered with
chroot("."), so the scratch tmpfs (mask sources) is the mount namespace's
root below the chroot.  Each test asserts from inside (the errno) and
outside (the host unchanged)."""
import errno
import os
import socket
from pathlib import Path

import pytest

import harness
from jailtools import probe, raw, raw_path, value

HERE = Path(__file__).resolve().parent
REFUSED = (errno.EPERM, errno.ENOSYS)


@pytest.fixture(scope="module")
def native_dir(tmp_path_factory):
    return harness.build_r_lib(tmp_path_factory.mktemp("round5"), HERE / "round5.c")


@pytest.fixture
def d(daemons, native_dir):
    d = daemons.start("pool=0", "r_libs=%s" % native_dir)
    d.so = str(native_dir / "round5.so")
    return d


def test_scratch_root_is_not_reachable(d):
    """.. walks, /proc/self/root, /proc/1/root, fchdir of any open
    directory and mountinfo all end at the new root; nothing names the
    scratch root or its /masks."""
    host_root = sorted(os.listdir("/"))
    with d.clone() as s:
        top = value(s, "sort(list.files('/', all.files = TRUE, no.. = TRUE))")
        for p in ["/..", "/../../..", "/proc/self/root/..", "/proc/1/root", "/proc/1/root/..",
                  "/proc/self/cwd/../../../..", "/work/../.."]:
            assert value(s, "sort(list.files('%s', all.files = TRUE, no.. = TRUE))" % p) == top, p
        assert value(s, "file.exists('/masks')") == [False]
        info = value(s, "readLines('/proc/self/mountinfo')")
        assert info[0].split()[4] == "/", info[0]
        assert not [l for l in info if "masks" in l.split()[4] or "newroot" in l or "oldroot" in l], info
        # No open directory descriptor leads out by "..".
        assert probe(s, d.so, "r5_fd_escape") == [0, 0]
        # The calls that would reach it are refused.
        assert raw_path(s, d.so, "chroot", "/tmp", 0)[1] in REFUSED
        assert raw_path(s, d.so, "pivot_root", "/tmp", 0)[1] in REFUSED
        assert raw_path(s, d.so, "mount", "/tmp", 0)[1] in REFUSED
        assert raw_path(s, d.so, "open_tree", "/", 1, -100, 0, 1)[1] in REFUSED
        assert raw_path(s, d.so, "fsopen", "tmpfs", 0)[1] in REFUSED
        assert raw_path(s, d.so, "fspick", "/", 1, -100, 0, 0)[1] in REFUSED
        assert raw(s, d.so, "unshare", 0x00020000)[1] in REFUSED            # CLONE_NEWNS
        assert raw(s, d.so, "unshare", 0x10000000)[1] in REFUSED            # CLONE_NEWUSER
        assert raw(s, d.so, "setns", 0, 0)[1] in REFUSED
        assert raw(s, d.so, "open_by_handle_at", -100, 0, 0)[1] in REFUSED + (errno.EFAULT,)
        # The session still works (the refusals did not kill it).
        assert s.value("1 + 1") == "2"
    assert sorted(os.listdir("/")) == host_root


def test_masks_are_read_only(d):
    """The masked /proc files and directories can be neither written nor
    changed (EROFS/EACCES/EPERM); the host's are as they were."""
    before = {p: os.stat(p).st_mode for p in ["/proc/keys", "/proc/kcore", "/proc/sysrq-trigger"] if os.path.exists(p)}
    O_WRONLY = 1
    with d.clone() as s:
        for p in ["/proc/keys", "/proc/kcore", "/proc/sysrq-trigger", "/proc/timer_list"]:
            if value(s, "file.exists('%s')" % p) != [True]:
                continue
            r = raw_path(s, d.so, "openat", p, 1, -100, 0, O_WRONLY)
            assert r[0] == -1 and r[1] in (errno.EROFS, errno.EACCES), (p, r)
            r = raw_path(s, d.so, "chmod", p, 0, 0, 0o666)
            assert r[0] == -1 and r[1] in (errno.EROFS, errno.EPERM), (p, r)
            assert value(s, "file.info('%s')$size" % p) == [0], p
        r = raw_path(s, d.so, "mkdir", "/proc/acpi/x", 0, 0, 0o755)
        assert r[0] == -1, r
    assert {p: os.stat(p).st_mode for p in before} == before


def test_abstract_sockets_stay_per_session(d):
    """A session listening on an abstract name is reachable from itself
    only: another session and the host get ECONNREFUSED."""
    name = "srfs-r5-%d" % os.getpid()
    with d.clone() as a, d.clone() as b:
        fd, err = probe(a, d.so, "r5_listen_abstract", "'%s'" % name)
        assert fd > 2 and err == 0
        assert probe(a, d.so, "probe_abstract", "'%s'" % name) == [0, 0]
        assert probe(b, d.so, "probe_abstract", "'%s'" % name) == [-1, errno.ECONNREFUSED]
        h = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with pytest.raises(ConnectionRefusedError):
            h.connect("\0" + name)
        h.close()


def test_cgroup_namespace_is_the_workers_own(d):
    """Namespaces unshared after the cgroup join: the session sees its
    cgroup as the root ("0::/" on cgroup v2, "N:controllers:/" for each
    hierarchy on v1), not the host's path to it."""
    with d.clone() as s:
        lines = value(s, "readLines('/proc/self/cgroup')")
        assert lines and all(l.split(":", 2)[2] == "/" for l in lines), lines
