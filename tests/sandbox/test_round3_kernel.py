"""Round 3, kernel memory and host files (docs/security.md, "Round 3: the
daemon's loop and the worker between runs", findings 4 and 5): the seccomp
filter refuses raising socket buffers and leases, dnotify and SIGIO's owner
and signal; the monitor charges every socket and pipe a session holds
against its memory limit.  Native code: tests/sandbox/round3_kernel.c, and
socket_hog of tests/sandbox/round3.c."""
import errno
import fcntl
import json
import os
import socket
from pathlib import Path

import pytest

import harness
import round3tools

HERE = Path(__file__).resolve().parent
MIB = 1 << 20
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
F_SETLEASE = 1024
F_NOTIFY = 1026
F_SETOWN_EX = 15
F_SETSIG = 10


@pytest.fixture(scope="module")
def kdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("round3_kernel")
    (d / "owned.txt").write_text("a file the daemon's uid owns\n")
    harness.build_r_lib(d, HERE / "round3_kernel.c", ["-pthread"])
    return harness.build_r_lib(d, HERE / "round3.c", ["-pthread"])


def start(daemons, kdir):
    return round3tools.start(daemons, kdir, "round3_kernel.so")


@pytest.mark.timeout_s(60)
@pytest.mark.parametrize("opt", [socket.SO_SNDBUF, socket.SO_RCVBUF, SO_SNDBUFFORCE, SO_RCVBUFFORCE],
                         ids=["SO_SNDBUF", "SO_RCVBUF", "SO_SNDBUFFORCE", "SO_RCVBUFFORCE"])
def test_socket_buffers_cannot_be_raised(daemons, kdir, opt):
    """Inside: setsockopt fails with EPERM and the buffer keeps its default
    size.  Outside: the daemon and a witness go on."""
    d = start(daemons, kdir)
    w = d.clone()
    assert w.value("witness_var <- 41") == "41"
    s = d.clone()
    ret, err, size = s.result("dyn.load('%s'); r <- .C('try_sockopt', %dL, ret = 0L, err = 0L, size = 0L); "
                              "c(r$ret, r$err, r$size)" % (d.so, opt))["value"]
    assert (ret, err) == (-1, errno.EPERM), (ret, err)
    with open("/proc/sys/net/core/wmem_default") as f:
        default = int(f.read())
    assert size <= 2 * default, size
    assert w.value("witness_var") == "41"


@pytest.mark.timeout_s(90)
def test_socket_buffers_are_charged_to_the_memory_limit(daemons, kdir):
    """Inside: 13 processes filling socketpairs at the default size (the
    only one left) towards 3 x the limit: the run ends on the memory limit
    with the socket buffers named (or, as root, the worker's cgroup kills
    it: `limit` is still memory).  Outside: the daemon and a witness go on."""
    d = start(daemons, kdir)
    w = d.clone()
    assert w.value("witness_var <- 41") == "41"
    s = d.clone()
    limit = 192 * MIB
    s.write("limits", json.dumps({"memory": limit}))
    r = s.result("dyn.load('%s'); .C('socket_hog', as.double(%d), 13L, 5000L, queued = 0)$queued"
                 % (kdir / "round3.so", 3 * limit))
    assert r["status"] != "ok", r
    assert r.get("limit") == "memory", r
    if os.getuid() != 0:
        assert "socket and pipe buffers" in r["error"], r
    assert w.value("witness_var") == "41"
    assert s.value("1+1") == "2"


@pytest.mark.timeout_s(60)
@pytest.mark.parametrize("cmd,arg,target", [
    (F_SETLEASE, fcntl.F_RDLCK, "owned.txt"),
    (F_SETLEASE, fcntl.F_WRLCK, "owned.txt"),
    (F_NOTIFY, 0x80000001, "."),  # DN_ACCESS | DN_MULTISHOT on the r_libs directory
    (fcntl.F_SETOWN, 1, "owned.txt"),
    (F_SETOWN_EX, 0, "owned.txt"),
    (F_SETSIG, 10, "owned.txt"),
], ids=["F_SETLEASE-read", "F_SETLEASE-write", "F_NOTIFY", "F_SETOWN", "F_SETOWN_EX", "F_SETSIG"])
def test_fcntl_on_host_files_refused(daemons, kdir, cmd, arg, target):
    """Inside: fcntl fails with EPERM on a file of the r_libs directory that
    the daemon's uid owns (as nobody the worker's uid is that owner).
    Outside: a non-blocking open of the file on the host does not fail (no
    lease held), and the file is unchanged."""
    d = start(daemons, kdir)
    path = kdir / target
    before = (kdir / "owned.txt").read_bytes()
    s = d.clone()
    ret, err = s.result("dyn.load('%s'); r <- .C('try_fcntl', '%s', %dL, %dL, ret = 0L, err = 0L); c(r$ret, r$err)"
                        % (d.so, path, cmd, arg))["value"]
    fd = os.open(str(kdir / "owned.txt"), os.O_RDONLY | os.O_NONBLOCK)
    os.close(fd)
    assert (kdir / "owned.txt").read_bytes() == before
    assert (ret, err) == (-1, errno.EPERM), (ret, err)
