"""The worker's side of the worker protocol (docs/protocol.md, "Worker
channel"), driven the way the daemon drives it: this test starts the real
`securerfs-worker --zygote --sandbox=none` with its control socket on fd 3,
asks it for a worker (which, cloned with CLONE_PARENT, is this process's
child), hands it a workspace and sends it exec, define_tool and tool_result
frames, reading back exactly what the worker sends.

What it checks: a result's error_kind ("syntax", "runtime", "tool",
"interrupted") whenever its status is not "ok", none when it is; and that
no frame the worker sends has a field the protocol does not name (the
daemon refuses unknown fields).
"""
import json
import os
import resource
import select
import signal
import socket
import struct
import time

import pytest

import util

WORKER = util.BUILD / "securerfs-worker"

# The fields docs/protocol.md names for each frame the worker sends.
FIELDS = {
    "ready": {"type", "r_version", "reserved_bytes"},
    "attached": {"type"},
    "fatal": {"type", "error"},
    "console": {"type", "seq", "text"},
    "tool_call": {"type", "seq", "id", "tool", "args"},
    "result": {"type", "seq", "status", "output", "value", "value_note", "error", "error_kind", "warnings",
               "limit"},
}


def wait_readable(sock, seconds):
    r, _, _ = select.select([sock], [], [], util.scaled(seconds))
    assert r, "nothing from the worker within %s s" % util.scaled(seconds)


class Worker:
    """One worker of a zygote of our own, and its channel."""

    def __init__(self, tmp):
        self.pids = []
        ctl, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ctl = ctl
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC",
               "HOME": str(tmp), "TMPDIR": str(tmp), "USER": "securerfs"}
        # As the daemon starts it: its control socket as fd 3.
        self.zygote = os.posix_spawn(str(WORKER), ["securerfs-worker", "--zygote", "--sandbox=none"], env,
                                     file_actions=[(os.POSIX_SPAWN_DUP2, ctl_child.fileno(), 3)])
        self.pids.append(self.zygote)
        ctl_child.close()
        wait_readable(ctl, 30)
        assert ctl.recv(512) == b"ready"
        sock, sock_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock = sock
        socket.send_fds(ctl, [b"spawn 1 %d %d" % (os.getuid(), os.getgid())], [sock_child.fileno()])
        sock_child.close()
        wait_readable(ctl, 10)
        answer = ctl.recv(512).decode()
        assert answer.startswith("spawned 1 "), answer
        self.pid = int(answer.split()[2])
        self.pids.append(self.pid)
        self.buf = b""
        assert self.frame()["type"] == "ready"
        workspace = os.open(str(tmp), os.O_RDONLY | os.O_DIRECTORY)
        try:
            data = json.dumps({"type": "workspace"}).encode()
            socket.send_fds(sock, [struct.pack(">I", len(data)) + data], [workspace])
        finally:
            os.close(workspace)
        assert self.frame()["type"] == "attached"
        self.seq = 0

    def send(self, msg):
        data = json.dumps(msg).encode()
        self.sock.sendall(struct.pack(">I", len(data)) + data)

    def frame(self, seconds=20):
        while len(self.buf) < 4 or len(self.buf) < 4 + struct.unpack(">I", self.buf[:4])[0]:
            wait_readable(self.sock, seconds)
            chunk = self.sock.recv(1 << 20)
            assert chunk, "the worker closed its socket"
            self.buf += chunk
        n = struct.unpack(">I", self.buf[:4])[0]
        msg = json.loads(self.buf[4:4 + n])
        self.buf = self.buf[4 + n:]
        assert set(msg) <= FIELDS[msg["type"]], "unknown fields in %r" % msg
        return msg

    def exec(self, code, limits=None, after=None):
        """Run code; after(msg) answers frames other than console (tool
        calls).  Returns the result frame."""
        self.seq += 1
        self.send({"type": "exec", "seq": self.seq, "code": code, "limits": limits or {}})
        while True:
            msg = self.frame()
            if msg["type"] == "result":
                assert msg["seq"] == self.seq
                return msg
            if msg["type"] != "console":
                assert after, "unexpected %r" % msg
                after(msg)

    def close(self):
        for s in (self.sock, self.ctl):
            s.close()
        deadline = time.monotonic() + util.scaled(10)
        for pid in self.pids:
            while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
                time.sleep(0.02)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


@pytest.fixture
def worker(tmp_path):
    w = Worker(tmp_path)
    yield w
    w.close()


def test_ok_has_no_error_kind(worker):
    r = worker.exec("1 + 1")
    assert r["status"] == "ok" and r["output"] == "2" and r["value"] == 2
    assert "error_kind" not in r


def test_syntax_error(worker):
    r = worker.exec("1 +")
    assert r["status"] == "error" and r["error_kind"] == "syntax"
    assert r["error"].startswith("Syntax error")
    r = worker.exec("f(")
    assert r["error_kind"] == "syntax"


def test_runtime_error(worker):
    r = worker.exec("stop('boom')")
    assert r["status"] == "error" and r["error_kind"] == "runtime" and "boom" in r["error"]
    # A condition with a class of its own is still the code's.
    r = worker.exec("stop(structure(class = c('my_error', 'error', 'condition'), "
                    "list(message = 'mine', call = NULL)))")
    assert r["error_kind"] == "runtime" and "mine" in r["error"]
    # The state is kept; the next run is ok.
    assert worker.exec("x <- 5; x * 2")["status"] == "ok"


def test_tool_error(worker):
    worker.send({"type": "define_tool", "name": "lookup", "args": {"key": "character"},
                 "description": "a test tool"})
    calls = []

    def answer_error(msg):
        assert msg["type"] == "tool_call" and msg["tool"] == "lookup" and msg["args"] == {"key": "a"}
        calls.append(msg["id"])
        worker.send({"type": "tool_result", "id": msg["id"], "error": "no such key"})

    r = worker.exec("lookup('a')", after=answer_error)
    assert r["status"] == "error" and r["error_kind"] == "tool" and "no such key" in r["error"], r
    # Arguments of the wrong type: refused by the tool's own function.
    r = worker.exec("lookup(1)")
    assert r["error_kind"] == "tool" and "must be character" in r["error"], r
    # A tool error the code caught, then an error of its own: runtime.
    r = worker.exec("tryCatch(lookup('a'), error = function(e) NULL); stop('after')", after=answer_error)
    assert r["error_kind"] == "runtime" and "after" in r["error"], r
    # The tool's error re-raised by the code is still the tool's.
    r = worker.exec("tryCatch(lookup('a'), error = function(e) stop(e))", after=answer_error)
    assert r["error_kind"] == "tool", r
    # And the next plain error is not.
    r = worker.exec("stop('plain')")
    assert r["error_kind"] == "runtime", r

    def answer_value(msg):
        worker.send({"type": "tool_result", "id": msg["id"], "value": "found"})

    r = worker.exec("lookup('a')", after=answer_value)
    assert r["status"] == "ok" and r["value"] == "found" and "error_kind" not in r
    assert len(calls) == 3


def test_interrupted(worker):
    # The daemon's interrupt frame for the run, then its SIGINT.
    worker.seq += 1
    worker.send({"type": "exec", "seq": worker.seq, "code": "Sys.sleep(60)", "limits": {}})
    worker.send({"type": "interrupt", "seq": worker.seq})
    os.kill(worker.pid, signal.SIGINT)
    msg = worker.frame()
    while msg["type"] != "result":
        msg = worker.frame()
    assert msg["status"] == "interrupted" and msg["error_kind"] == "interrupted", msg
    assert worker.exec("1")["status"] == "ok"


def test_cpu_limit_is_runtime(worker):
    # As the daemon sets it: the soft RLIMIT_CPU at what the worker used so
    # far plus the limit (here 1 s), from outside.
    used = 0.0
    with open("/proc/%d/stat" % worker.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
        used = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hard = resource.prlimit(worker.pid, resource.RLIMIT_CPU)[1]
    resource.prlimit(worker.pid, resource.RLIMIT_CPU, (int(used) + 2, hard))
    r = worker.exec("repeat {}", limits={"cpu": 1})
    assert r["status"] == "error" and r["limit"] == "cpu" and r["error_kind"] == "runtime", r
