"""Helpers for the integration tests: start and stop a real securerfs mount,
find its processes, and do plain file I/O on the tree.

Everything here bounds its own waits, so that a daemon that hangs fails one
test instead of wedging the run (see conftest.py for the per-test watchdog,
which kills every live daemon when a test overruns: a FUSE request blocked in
the kernel only returns once its daemon answers or dies).
"""
import ctypes
import errno
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("SECURERFS_BUILD", REPO / "build"))
DAEMON = BUILD / "securerfs"
WORKER_NAME = "securerfs-worker"
# Use this worker binary instead of the one next to the daemon (-o worker=).
WORKER_OVERRIDE = os.environ.get("SECURERFS_WORKER", "")
# Waits are multiplied by this (scripts/test sets 3 for the sanitizer build).
SCALE = float(os.environ.get("SECURERFS_TIME_SCALE", "1"))

# Every daemon started and not yet stopped; the watchdog kills these.
LIVE = []
LIVE_LOCK = threading.Lock()

_LOG_SERIAL = itertools.count()

# Lines of the daemon's stderr with this are never expected.
SANITIZER = re.compile(r"Sanitizer|runtime error:|==\d+==ERROR")
ERROR_LINE = re.compile(r"error:", re.IGNORECASE)


def scaled(seconds):
    return seconds * SCALE


def become_subreaper():
    """Make this process the reaper of orphaned descendants, so that a worker
    left behind by a dead daemon becomes our child and we can see it."""
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


# ---------------------------------------------------------------- processes


def proc_stat(pid):
    """(state, ppid, starttime) of pid, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[19])


def proc_status(pid, key):
    """A field of /proc/PID/status (its first word); None once the process
    is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return line.split()[1]
    except OSError:
        pass
    return None


def proc_comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def proc_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def proc_argv0(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")[0].decode("utf-8", "replace")
    except OSError:
        return ""


def is_worker(pid):
    """Is pid a securerfs-worker (zygote or worker)?  By argv[0] or comm, not
    anywhere in the command line: the daemon's own may hold -o worker=PATH."""
    return (os.path.basename(proc_argv0(pid)).startswith(WORKER_NAME)
            or proc_comm(pid).startswith(WORKER_NAME[:15]))


def descendants(root):
    """Live (pid, starttime) below root, found through ppid links."""
    children = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st:
            children.setdefault(st[1], []).append((pid, st[2]))
    out, todo = [], [root]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            out.append((pid, start))
            todo.append(pid)
    return out


# The daemon's helpers name themselves (prctl PR_SET_NAME) so that they can be
# told from workers: the zygote is a securerfs-worker too, and a restarted one
# is younger than the workers it made.
ZYGOTE_COMM = "srfs-zygote"
KEEPER_COMM = "srfs-keeper"


def worker_pids(daemon_pid):
    """The daemon's securerfs-worker children (zygote and workers), oldest
    first."""
    found = []
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[1] == daemon_pid and st[0] != "Z" and is_worker(pid):
            found.append((st[2], pid))
    return [pid for _, pid in sorted(found)]


def session_worker_pids(daemon_pid):
    """Worker pids of sessions (and pool), the zygote excluded."""
    return [p for p in worker_pids(daemon_pid) if proc_comm(p) != ZYGOTE_COMM]


def helper_pid(daemon_pid, comm):
    """The live child of the daemon named comm (ZYGOTE_COMM, KEEPER_COMM),
    or None."""
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[1] == daemon_pid and st[0] != "Z" and proc_comm(pid) == comm:
            return pid
    return None


def reap_orphans():
    """Reap zombie workers reparented to us (we are a subreaper)."""
    me = os.getpid()
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[1] == me and st[0] == "Z" and proc_comm(pid).startswith(WORKER_NAME[:15]):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def leftover_workers(snapshot):
    """Workers still alive among snapshot [(pid, start)] or orphaned to us."""
    reap_orphans()
    left = []
    for pid, start in snapshot:
        st = proc_stat(pid)
        if st and st[2] == start and st[0] != "Z" and is_worker(pid):
            left.append(pid)
    me = os.getpid()
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[1] == me and st[0] != "Z" and is_worker(pid) and pid not in left:
            left.append(pid)
    return left


def rss_kib(pid):
    """A process's resident set (VmRSS of /proc/PID/status) in KiB; 0 if it
    shows none."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    """How many descriptors the process holds."""
    return len(os.listdir("/proc/%d/fd" % pid))


def pss_kib(pid):
    total = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total


# ---------------------------------------------------------------- mounts


def unescape_mount_path(p):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), p)


def mount_fstype(path):
    """The fstype of the topmost mount at exactly path, or None."""
    path = str(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if unescape_mount_path(left.split()[4]) == path:
                found = right.split()[0]
    return found


def is_fuse_mounted(path):
    t = mount_fstype(str(path))
    return t is not None and t.startswith("fuse")


def bounded(fn, timeout, on_timeout=None):
    """Run fn() in a thread; return its result, or raise TimeoutError after
    timeout seconds (calling on_timeout first, e.g. to kill a daemon so that
    the blocked thread is released)."""
    box = {}

    def body():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: B902 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        if on_timeout:
            on_timeout()
        t.join(5)
        raise TimeoutError("%r did not return within %.1f s" % (fn, timeout))
    if "error" in box:
        raise box["error"]
    return box.get("value")


# The head of a probe script for interrupt_probe(): SIGUSR1 raises
# Interrupted, so that a read the signal interrupts shows as that exception.
INTERRUPTIBLE = r"""
import json, os, signal, sys
class Interrupted(Exception):
    pass
def handler(signum, frame):
    raise Interrupted()
signal.signal(signal.SIGUSR1, handler)
"""


def interrupt_probe(body, path, timeout, what):
    """Run INTERRUPTIBLE + body (Python) in a process of its own with path
    as its argument; once it prints "ready" (it is about to block in a read
    of the mount), wait 0.3 s and send it SIGUSR1.  Returns what it printed
    after "ready".  If it has not ended within timeout seconds it is killed
    and the test fails with `what`."""
    import pytest

    p = subprocess.Popen([sys.executable, "-c", INTERRUPTIBLE + body, str(path)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    p.send_signal(signal.SIGUSR1)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        pytest.fail(what)
    return out


class Daemon:
    """One securerfs process mounted on its own directory."""

    def __init__(self, workdir, opts=(), env=None, expect=(), args=(), name="mnt"):
        self.workdir = Path(workdir)
        self.mnt = self.workdir / name
        try:
            self.mnt.mkdir(exist_ok=True)
        except OSError as e:
            if e.errno != errno.ENOTCONN:  # a stale mount there is for the daemon to handle
                raise
        self.opts = list(opts)
        self.args = list(args)
        self.extra_env = dict(env or {})
        self.expect = [re.compile(p, re.IGNORECASE) for p in expect]
        self.log_path = self.workdir / ("%s.%d.stderr" % (name, next(_LOG_SERIAL)))
        self.proc = None
        self.stopped = False
        self.allow_failure = False  # a test that expects a non-zero exit sets this

    # -- life cycle

    def cmd(self):
        c = [str(DAEMON), "-f"]
        opts = list(self.opts)
        if WORKER_OVERRIDE:
            opts.append("worker=%s" % WORKER_OVERRIDE)
        if opts:
            c += ["-o", ",".join(opts)]
        return c + self.args + [str(self.mnt)]

    def start(self, wait=True):
        env = dict(os.environ)
        env.update(self.extra_env)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.cmd(), stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            env=env, start_new_session=True)
        with LIVE_LOCK:
            LIVE.append(self)
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.allow_failure = True  # already reported by this exception
                raise
        return self

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout=15):
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("securerfs exited with %s before mounting:\n%s"
                                     % (self.proc.returncode, self.stderr()))
            if is_fuse_mounted(self.mnt):
                try:
                    text = bounded(lambda: (self.mnt / "README").read_text(),
                                   max(1.0, deadline - time.monotonic()), self.kill)
                except OSError:
                    text = None  # a stale mount from before, or not answering yet
                if text:
                    return
            time.sleep(0.02)
        self.kill()
        raise AssertionError("securerfs did not mount %s within %d s:\n%s"
                             % (self.mnt, scaled(timeout), self.stderr()))

    def revive(self):
        """Start again on the same mount point if the daemon died (the
        watchdog kills it when a test hangs), so that the tests after it in
        the module still have a mount.  Its stderr file is kept, and checked
        at the final stop()."""
        if self.proc is None or self.proc.poll() is None or self.stopped:
            return False
        self.log.close()
        subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True,
                       timeout=10)
        self.forget()
        self.start()
        return True

    def kill(self):
        """SIGKILL the daemon (releases every FUSE request blocked on it)."""
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait_exit(self, timeout=10):
        try:
            return self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            return None

    def snapshot(self):
        """Every live process below the daemon, to check after it ends."""
        if self.proc.poll() is not None:
            return []
        return descendants(self.proc.pid)

    def forget(self):
        with LIVE_LOCK:
            if self in LIVE:
                LIVE.remove(self)

    def stop(self, how="fusermount"):
        """End the daemon and check what it left.  Returns a list of problems
        (empty when all is well)."""
        problems = []
        if self.stopped:
            return problems
        self.stopped = True
        snap = self.snapshot()
        if self.proc.poll() is None:
            if how == "fusermount":
                ok = False
                for _ in range(int(scaled(20))):
                    r = subprocess.run(["fusermount3", "-u", str(self.mnt)],
                                       capture_output=True, text=True, timeout=scaled(10))
                    if r.returncode == 0 or self.proc.poll() is not None:
                        ok = True
                        break
                    time.sleep(0.25)
                if not ok:
                    problems.append("fusermount3 -u failed: %s" % r.stderr.strip())
            else:
                os.kill(self.proc.pid, how)
            if self.wait_exit(10) is None:
                problems.append("securerfs did not exit within 10 s of unmount")
                self.kill()
                self.wait_exit(5)
        rc = self.proc.returncode
        if rc != 0 and not problems and how != signal.SIGKILL and not self.allow_failure:
            problems.append("securerfs exited with status %s" % rc)
        # workers die with the daemon (PR_SET_PDEATHSIG); give them 3 s
        deadline = time.monotonic() + scaled(3)
        left = leftover_workers(snap)
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = leftover_workers(snap)
        if left:
            problems.append("worker processes left: %s" % ", ".join(
                "%d (%s)" % (p, proc_cmdline(p)) for p in left))
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if is_fuse_mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True,
                           timeout=10)
            if not problems:
                problems.append("mount still present after the daemon exited")
        problems += self.unexpected_errors()
        self.forget()
        try:
            self.log.close()
        except Exception:
            pass
        return problems

    def unexpected_errors(self):
        bad = []
        lines = self.stderr().splitlines()
        report = None  # a sanitizer report, whole: its stack is the point
        for i, line in enumerate(lines):
            if SANITIZER.search(line):
                if report is None and ("==ERROR" in line or "runtime error:" in line):
                    report = lines[i:i + 40]
                bad.append(line)
            elif ERROR_LINE.search(line) and not any(p.search(line) for p in self.expect):
                bad.append(line)
        if report:
            bad = report + [l for l in bad if l not in report]
        if bad:
            return ["unexpected lines in securerfs stderr (%s):\n  %s"
                    % (self.log_path, "\n  ".join(bad[:60]))]
        return []

    # -- tree access

    def path(self, *parts):
        return self.mnt.joinpath(*parts)

    def read(self, *parts):
        return read_text(self.path(*parts))

    def json(self, *parts):
        return json.loads(self.read(*parts))

    def clone(self):
        name = self.read("clone").strip()
        assert name, "clone returned an empty name"
        return Session(self, name)

    def session(self, name):
        return Session(self, name)


# ---------------------------------------------------------------- file I/O


def read_bytes(path, flags=0):
    fd = os.open(str(path), os.O_RDONLY | flags)
    try:
        chunks = []
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path):
    return read_bytes(path).decode("utf-8")


def write_bytes(path, data, flags=os.O_WRONLY | os.O_TRUNC):
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd = os.open(str(path), flags)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def expect_errno(err, fn, *args, **kw):
    """Call fn and check that it fails with OSError errno err (or one of err)."""
    errs = err if isinstance(err, (tuple, list, set)) else (err,)
    try:
        fn(*args, **kw)
    except OSError as e:
        assert e.errno in errs, "expected %s, got %s" % (
            "/".join(errno.errorcode[x] for x in errs), e)
        return e
    raise AssertionError("expected %s, call succeeded" % "/".join(errno.errorcode[x] for x in errs))


class Session:
    """One sessions/NAME directory."""

    def __init__(self, daemon, name):
        self.daemon = daemon
        self.name = name
        self.dir = daemon.mnt / "sessions" / name

    def p(self, f):
        return self.dir / f

    def read(self, f):
        return read_text(self.p(f))

    def write(self, f, data):
        write_bytes(self.p(f), data)

    def submit(self, code):
        """Write code to input and close: the run starts on flush."""
        write_bytes(self.p("input"), code)

    def run(self, code):
        """Run code and return output (the formatted value + newline)."""
        self.submit(code)
        return self.read("output")

    def value(self, code):
        out = self.run(code)
        return out[:-1] if out.endswith("\n") else out

    def result(self, code=None):
        if code is not None:
            self.submit(code)
        return json.loads(self.read("result.json"))

    def ok(self, code):
        """Run code; the run must succeed; return result.json."""
        r = self.result(code)
        assert r["status"] == "ok", r
        return r

    def files(self, *parts):
        """A path under the session's files/ (its workspace, from the host)."""
        return self.dir.joinpath("files", *parts)

    def status(self):
        return self.read("status").strip()

    def close(self):
        try:
            os.rmdir(self.dir)
        except FileNotFoundError:
            pass

    # `with d.clone() as s:` closes the session at the end.
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def worker_pids(self):
        return session_worker_pids(self.daemon.pid)


def wait_for(cond, timeout, what, step=0.05):
    """cond()'s first true value, polled every step seconds for at most
    scaled(timeout); AssertionError naming what otherwise."""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("%s: not within %.0f s" % (what, scaled(timeout)))


def breakable_worker(directory):
    """A worker program that fails (exit 3) while directory/broken exists
    and is the real one otherwise: (the flag's path, the wrapper's path) for
    -o worker=WRAPPER."""
    flag = directory / "broken"
    wrapper = directory / "worker-wrapper"
    real = WORKER_OVERRIDE or str(BUILD / "securerfs-worker")
    wrapper.write_text("#!/bin/sh\n[ -e '%s' ] && exit 3\nexec '%s' \"$@\"\n" % (flag, real))
    wrapper.chmod(0o755)
    os.chmod(str(directory), 0o755)
    return flag, wrapper


class TestTimeout(Exception):
    pass


def watchdog(limit):
    """Generator for an autouse fixture: a test that runs longer than limit
    seconds gets every live daemon killed (which releases any FUSE request it
    is blocked in) and fails with TestTimeout, instead of wedging the run."""
    main = threading.main_thread().ident
    fired = threading.Event()

    def on_alarm(signum, frame):
        raise TestTimeout("test exceeded its %.0f s limit (every daemon was killed)" % limit)

    def fire():
        fired.set()
        with LIVE_LOCK:
            live = list(LIVE)
        for d in live:
            d.kill()
        signal.pthread_kill(main, signal.SIGALRM)

    old = signal.signal(signal.SIGALRM, on_alarm)
    timer = threading.Timer(limit, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        signal.signal(signal.SIGALRM, old)
    if fired.is_set():
        import pytest
        pytest.fail("test exceeded its %.0f s limit" % limit)
