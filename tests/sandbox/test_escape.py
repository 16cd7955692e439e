"""The escape suite: hostile R code against the strict jail (issue 3).

Every test is one attempt, written as R code run through the mount, and
proves the denial from both sides: inside (the exact error, errno or empty
result R got) and outside (no file appeared on the host, no listener was
reached, no process was signalled, the daemon and another session still
answer).  Raw system calls go through tests/sandbox/probe.c (see there).
Nothing is skipped: a missing kernel feature is a failure.
"""
import errno
import faulthandler
import ctypes
import os
import signal
import re
import socket
import subprocess
import threading
import time

import pytest

import jailtools
import util
from conftest import SECRET
from jailtools import failed, ok, value

LIBC = "Sys.glob(c('/lib/x86_64-linux-gnu/libc.so.6', '/usr/lib/*/libc.so.6'))[1]"


# ---------------------------------------------------------------- helpers


def warned(r, text):
    """True if the run gave a warning containing text (in the warnings list,
    or printed to the console when the value was shown)."""
    return any(text in w for w in r["warnings"]) or text in r.get("console", "")


def probe(s, jail, fn, *args):
    """Call probe.c's fn through .C with R expressions args; (ret, errno)."""
    code = ("if (!is.loaded('%s')) dyn.load('%s'); "
            "r <- .C('%s', %s ret = integer(1), err = integer(1)); c(r$ret, r$err)"
            % (fn, jail.probe, fn, "".join(a + ", " for a in args)))
    ret, err = value(s, code)
    return [ret, err]


def sc(s, jail, name, *args):
    """A raw system call with integer arguments: (ret, errno)."""
    a = list(args) + [0] * (6 - len(args))
    return probe(s, jail, "probe_syscall", "'%s'" % name, "as.double(c(%s))" % ", ".join(str(x) for x in a))


def still_fine(jail, witness):
    """Outside: the daemon is alive and another session still answers with
    its state intact."""
    assert jail.proc.poll() is None, "the daemon died"
    assert witness.value("witness_var") == "41"
    st = jail.json("stats")
    assert st["sessions"] >= 1


def with_bystander(daemons, *opts):
    """A daemon of the test's own (pool=0, then opts), the attacker's
    session, and a bystander session that holds z = 5 and must keep it:
    (daemon, session, bystander)."""
    d = daemons.start("pool=0", *opts)
    s = d.clone()
    other = d.clone()
    assert other.value("z <- 5; z") == "5"
    return d, s, other


def host_processes():
    return len(util.all_pids())


class Listener:
    """A host socket that records whether anything reached it."""

    def __init__(self, family, kind, address):
        self.kind = kind
        self.sock = socket.socket(family, kind)
        self.sock.bind(address)
        if kind == socket.SOCK_STREAM:
            self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()
        self.hits = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                if self.kind == socket.SOCK_STREAM:
                    conn, addr = self.sock.accept()
                    self.hits.append(addr)
                    conn.close()
                else:
                    data, addr = self.sock.recvfrom(100)
                    self.hits.append((addr, data))
            except (socket.timeout, OSError):
                continue

    def close(self):
        time.sleep(0.3)
        self.stop.set()
        self.thread.join(2)
        self.sock.close()
        return self.hits


# ---------------------------------------------------------------- identity and environment


def test_daemon_environment_not_visible(sess, jail, witness):
    # Outside: the secret really is in the daemon's environment.
    with open("/proc/%d/environ" % jail.pid, "rb") as f:
        assert SECRET.encode() in f.read()
    assert value(sess, "Sys.getenv('SECRET_MARKER')") == [""]
    assert value(sess, "any(grepl('%s', Sys.getenv(), fixed = TRUE))" % SECRET) == [False]
    still_fine(jail, witness)


def test_proc_environ_of_every_visible_process(sess, jail, witness):
    code = ("pids <- dir('/proc', pattern = '^[0-9]+$'); "
            "hits <- vapply(pids, function(p) { x <- tryCatch(readBin(file.path('/proc', p, 'environ'), "
            "'raw', 1e6), error = function(e) raw(0)); "
            "grepl('%s', rawToChar(x[x != as.raw(0)]), fixed = TRUE) }, NA); "
            "list(pids = as.integer(pids), hits = sum(hits))" % SECRET)
    v = value(sess, code)
    assert v["hits"] == 0
    # Only the worker itself (pid 1 of its namespace) is visible.
    assert v["pids"] == 1
    assert host_processes() > 10
    still_fine(jail, witness)


def test_no_capabilities_no_new_privs_seccomp(sess, jail, witness):
    st = value(sess, "grep('^(Cap|NoNewPrivs|Seccomp)', readLines('/proc/self/status'), value = TRUE)")
    fields = dict(re.split(r":\s*", line, 1) for line in st)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == 0, (cap, fields[cap])
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"  # filter mode
    # the argument checks, the allowlist and the lock (docs/security.md,
    # "Three programs"): without the lock, seccomp and move_mount pass
    assert fields["Seccomp_filters"] == "3"
    assert value(sess, "c(Sys.info()[['effective_user']], as.character(Sys.getpid()))") == ["securerfs", "1"]
    still_fine(jail, witness)


# ---------------------------------------------------------------- files


def test_read_shadow_root_home(sess, jail, witness):
    assert os.path.exists("/etc/shadow") and os.path.isdir("/root")  # outside: they exist
    assert value(sess, "file.exists(c('/etc/shadow', '/root', '/home', '/var/lib', '/run', '/etc/ssh', "
                       "'/etc/sudoers', '/sys', '/boot', '/opt', '/mnt'))") == [False] * 11
    r = failed(sess, "readLines('/etc/shadow')")
    assert "cannot open" in r["error"]
    assert warned(r, "No such file or directory"), r
    assert value(sess, "list.files('/root', all.files = TRUE)") == []
    still_fine(jail, witness)


def test_etc_is_generated(sess, jail, witness):
    v = value(sess, "readLines('/etc/passwd')")
    assert v == ["securerfs:x:1000:1000::/work:/usr/sbin/nologin"]
    assert sorted(value(sess, "list.files('/etc')")) == sorted(
        x for x in ["R", "alternatives", "fonts", "group", "hostname", "hosts", "ld.so.cache",
                    "localtime", "nsswitch.conf", "passwd"]
        if x in ("group", "hostname", "hosts", "nsswitch.conf", "passwd") or os.path.exists("/etc/" + x))
    still_fine(jail, witness)


def test_write_under_usr_and_etc(sess, jail, witness):
    for path in ("/usr/escape-probe", "/etc/escape-probe", "/escape-probe", "/usr/lib/R/escape-probe"):
        r = ok(sess, "file.create('%s')" % path)
        assert r["value"] is False
        assert warned(r, "Read-only file system"), r
        assert not os.path.exists(path)
    r = ok(sess, "dir.create('/usr/lib/escape-dir')")
    assert r["value"] is False
    assert not os.path.exists("/usr/lib/escape-dir")
    still_fine(jail, witness)


def test_symlink_to_shadow_and_host_paths(sess, jail, witness):
    mnt = str(jail.mnt)
    v = value(sess, "c(file.symlink('/etc/shadow', '/work/s'), file.symlink('%s', '/work/m'), "
                    "file.symlink('/proc/%d/root', '/work/d'))" % (mnt, jail.pid))
    assert v == [True, True, True]  # links can be made, they lead nowhere:
    assert value(sess, "file.exists(c('/work/s', '/work/m', '/work/d'))") == [False, False, False]
    r = failed(sess, "readLines('/work/s')")
    assert warned(r, "No such file or directory"), r
    # /proc/1/root is the jail's own root, not the host's.
    assert value(sess, "identical(sort(list.files('/proc/1/root')), sort(list.files('/')))") == [True]
    assert not os.path.exists(os.path.join(mnt, "s"))
    still_fine(jail, witness)


def test_hard_links_across_mounts(sess, jail, witness):
    for src, dst in (("/etc/passwd", "/work/p"), ("/usr/bin/R", "/tmp/r"), ("/proc/self/environ", "/tmp/e")):
        r = ok(sess, "file.link('%s', '%s')" % (src, dst))
        assert r["value"] is False, r
        assert warned(r, "Invalid cross-device link"), r
    still_fine(jail, witness)


def test_mount_and_host_tree_invisible(sess, jail, witness):
    mnt = str(jail.mnt)
    assert value(sess, "file.exists(c('%s', '%s', '/tmp/pytest-of-root'))"
                 % (mnt, os.path.dirname(mnt))) == [False, False, False]
    v = value(sess, "readLines('/proc/self/mountinfo')")
    assert not any("fuse" in line or os.path.basename(os.path.dirname(mnt)) in line for line in v)
    # The jail's ~16 mounts and the masks over /proc entries (read-only,
    # docs/security.md, "/proc and /dev").
    assert len(v) < 64
    still_fine(jail, witness)


def test_root_cannot_be_left(sess, jail, witness):
    """The new root is moved over the scratch root and chrooted into (no
    second pivot_root, docs/sandbox.md step 7): ".." from "/" and from
    /proc/1/root stays in it, the scratch root's names are nowhere, and
    chroot itself is refused (it would need the capability the jail drops,
    and the filter refuses it)."""
    assert value(sess, "c(identical(list.files('/..', all.files = TRUE), list.files('/', all.files = TRUE)), "
                       "identical(list.files('/proc/1/root/../..', all.files = TRUE), "
                       "list.files('/', all.files = TRUE)), "
                       "file.exists(c('/mask-file', '/mask-dir', '/newroot', '/oldroot', '/../mask-file')))") == \
        [True, True, False, False, False, False, False]
    def host_root():
        # The host's own root mount (other programs on the machine may
        # mount elsewhere meanwhile).
        with open("/proc/self/mountinfo") as f:
            return [line for line in f if line.split()[4] == "/"]
    before = host_root()
    for path in (".", "/proc/1/root/.."):
        assert jailtools.raw_path(sess, jail.probe, "chroot", path, 0) == [-1, errno.EPERM]
    # Outside: the host's root is mounted as it was.
    assert host_root() == before and before
    still_fine(jail, witness)


def test_dev_holds_only_harmless_devices(sess, jail, witness):
    assert value(sess, "sort(list.files('/dev'))") == sorted(
        ["fd", "full", "null", "random", "stderr", "stdin", "stdout", "urandom", "zero"])
    assert value(sess, "file.exists(c('/dev/mem', '/dev/kmem', '/dev/sda', '/dev/vda', '/dev/kmsg', "
                       "'/dev/shm', '/dev/tty', '/dev/fuse', '/dev/port'))") == [False] * 9
    assert value(sess, "writeLines('x', '/dev/null'); length(readBin('/dev/urandom', 'raw', 16))") == [16]
    r = ok(sess, "file.create('/dev/mem')")
    assert r["value"] is False
    assert warned(r, "Read-only file system"), r
    still_fine(jail, witness)


def test_other_sessions_tmp_and_work(sess, jail, witness):
    assert value(witness, "writeLines('w', '/tmp/witness-file'); writeLines('w', '/work/witness-file'); "
                          "file.exists('/tmp/witness-file')") == [True]
    assert value(sess, "file.exists(c('/tmp/witness-file', '/work/witness-file'))") == [False, False]
    assert value(sess, "grep('witness', list.files(c('/tmp', '/work'), recursive = TRUE, all.files = TRUE), "
                       "value = TRUE)") == []
    # Outside: the host's /tmp does not have it either.
    assert not os.path.exists("/tmp/witness-file")
    still_fine(jail, witness)


def test_other_sessions_processes_and_ipc(sess, jail, witness):
    assert value(witness, "Sys.getpid()") == [1]
    assert value(sess, "Sys.getpid()") == [1]
    # No System V or POSIX IPC objects of anyone else.
    v = value(sess, "c(length(readLines('/proc/sysvipc/shm')), length(readLines('/proc/sysvipc/msg')), "
                    "file.exists('/dev/shm'), file.exists('/dev/mqueue'))")
    assert v == [1, 1, False, False]  # header lines only
    still_fine(jail, witness)


# ---------------------------------------------------------------- processes and signals


def test_signal_host_process(sess, jail, witness):
    victim = subprocess.Popen(["sleep", "60"])
    try:
        v = value(sess, "c(tools::pskill(%d, tools::SIGKILL), tools::pskill(%d, tools::SIGTERM))"
                  % (victim.pid, jail.pid))
        assert v == [False, False]
        time.sleep(0.2)
        assert victim.poll() is None, "the host process was killed"
    finally:
        victim.kill()
        victim.wait()
    still_fine(jail, witness)


def test_kill_every_process(sess, jail, witness):
    victim = subprocess.Popen(["sleep", "60"])
    try:
        # kill(-1) from pid 1 reaches only its own namespace (there: nothing).
        ok(sess, "tools::pskill(-1, tools::SIGKILL)")
        time.sleep(0.2)
        assert victim.poll() is None
        assert sess.value("1+1") == "2"
    finally:
        victim.kill()
        victim.wait()
    still_fine(jail, witness)


def test_kill_other_sessions_worker(daemons, probe_dir):
    d = daemons.start("pool=0")
    a = d.clone()
    assert a.value("keep <- 7; Sys.getpid()") == "1"
    pids_a = set(util.session_worker_pids(d.pid))
    b = d.clone()
    assert b.value("1") == "1"
    pid_b = (set(util.session_worker_pids(d.pid)) - pids_a).pop()
    pid_a = pids_a.pop()
    # B tries every plausible number: the host pids of A's worker and of the
    # daemon, and the low pids of its own namespace.
    code = ("targets <- c(%d, %d, 2:50); any(vapply(targets, function(p) tools::pskill(p, tools::SIGKILL), NA))"
            % (pid_a, d.pid))
    assert b.value(code) == "FALSE"
    assert util.proc_stat(pid_a)[0] != "Z" and util.proc_stat(d.pid)[0] != "Z"
    assert a.value("keep") == "7"
    assert util.proc_stat(pid_b) is not None
    a.close()
    b.close()


def test_ptrace_and_process_vm(sess, jail, witness):
    PTRACE_TRACEME, PTRACE_ATTACH = 0, 16
    assert sc(sess, jail, "ptrace", PTRACE_TRACEME) == [-1, errno.EPERM]
    assert sc(sess, jail, "ptrace", PTRACE_ATTACH, jail.pid) == [-1, errno.EPERM]
    assert sc(sess, jail, "process_vm_readv", 1) == [-1, errno.EPERM]
    assert sc(sess, jail, "process_vm_writev", 1) == [-1, errno.EPERM]
    assert sc(sess, jail, "kcmp", 1, 1, 0) == [-1, errno.EPERM]
    # Outside: nobody traces the daemon.
    with open("/proc/%d/status" % jail.pid) as f:
        assert "TracerPid:\t0" in f.read()
    still_fine(jail, witness)


# ---------------------------------------------------------------- network


def test_tcp_to_host_loopback(sess, jail, witness):
    lst = Listener(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0))
    port = lst.address[1]
    r = failed(sess, "socketConnection('127.0.0.1', %d, timeout = 2)" % port)
    assert "cannot open the connection" in r["error"], r
    assert warned(r, "127.0.0.1:%d cannot be opened" % port), r
    r = failed(sess, "readLines(url('http://127.0.0.1:%d/'))" % port)
    assert "cannot open" in r["error"], r
    assert lst.close() == [], "the host listener was reached"
    still_fine(jail, witness)


def test_udp_to_host_loopback(sess, jail, witness):
    lst = Listener(socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 0))
    assert probe(sess, jail, "probe_udp", "%dL" % lst.address[1]) == [-1, errno.EPERM]
    assert lst.close() == []
    still_fine(jail, witness)


def test_socket_families(sess, jail, witness):
    AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_VSOCK, AF_ALG = 1, 2, 10, 16, 17, 40, 38
    SOCK_STREAM, SOCK_DGRAM, SOCK_RAW = 1, 2, 3
    for fam, kind in ((AF_INET, SOCK_STREAM), (AF_INET6, SOCK_DGRAM), (AF_NETLINK, SOCK_RAW),
                      (AF_PACKET, SOCK_RAW), (AF_VSOCK, SOCK_STREAM), (AF_ALG, 5)):
        assert sc(sess, jail, "socket", fam, kind, 0) == [-1, errno.EPERM], fam
    assert sc(sess, jail, "socketpair", AF_INET, SOCK_STREAM, 0) == [-1, errno.EPERM]
    ret, err = sc(sess, jail, "socket", AF_UNIX, SOCK_STREAM, 0)
    assert ret >= 0 and err == 0
    still_fine(jail, witness)


def test_host_abstract_unix_socket(sess, jail, witness):
    name = "securerfs-escape-%d" % os.getpid()
    lst = Listener(socket.AF_UNIX, socket.SOCK_STREAM, "\0" + name)
    # AF_UNIX is allowed; the network namespace has its own abstract names.
    assert probe(sess, jail, "probe_abstract", "'%s'" % name) == [-1, errno.ECONNREFUSED]
    assert lst.close() == []
    still_fine(jail, witness)


def test_network_interfaces_down(sess, jail, witness):
    v = value(sess, "readLines('/proc/net/dev')")
    ifaces = [line.split(":")[0].strip() for line in v[2:]]
    assert ifaces == ["lo"]
    assert value(sess, "readLines('/proc/net/tcp')[-1]") == []  # no sockets at all
    still_fine(jail, witness)


# ---------------------------------------------------------------- programs and native code


def test_system_refused(sess, jail, witness):
    marker = "/tmp/securerfs-escape-exec-%d" % os.getpid()
    r = ok(sess, "system('id > %s; touch %s')" % (marker, marker))
    assert r["value"] == 127
    assert warned(r, "error in running command"), r
    r = failed(sess, "system2('/usr/bin/id', stdout = TRUE)")
    assert "cannot popen" in r["error"] and "refuses to run programs" in r["error"], r
    assert not os.path.exists(marker)
    still_fine(jail, witness)


def test_execve_refused_natively(sess, jail, witness):
    assert probe(sess, jail, "probe_execve") == [-1, errno.EPERM]
    assert sc(sess, jail, "execveat", -100) == [-1, errno.EPERM]
    assert sess.value("1+1") == "2"  # still the same worker
    still_fine(jail, witness)


def test_setuid_programs_useless(sess, jail, witness):
    # The binaries are there (read-only /usr) ...
    assert value(sess, "file.exists(c('/usr/bin/passwd', '/usr/bin/mount', '/usr/bin/fusermount3'))") == \
        [os.path.exists(p) for p in ("/usr/bin/passwd", "/usr/bin/mount", "/usr/bin/fusermount3")]
    # ... but /usr is nosuid inside, and no program can start at all.
    assert "nosuid" in " ".join(value(sess, "grep(' /usr ', readLines('/proc/self/mountinfo'), value = TRUE)"))
    r = ok(sess, "system('/usr/bin/fusermount3 -u /work')")
    assert r["value"] == 127
    still_fine(jail, witness)


def test_dyn_load_host_library_outside_jail(sess, jail, witness, tmp_path):
    so = tmp_path / "outside.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), "-x", "c", "-"], input=b"int f(void){return 1;}",
                   check=True)
    os.chmod(tmp_path, 0o755)
    assert so.exists()  # outside: it is there
    r = failed(sess, "dyn.load('%s')" % so)
    assert "No such file or directory" in r["error"], r
    still_fine(jail, witness)


def test_dyn_load_of_code_written_inside(sess, jail, witness):
    # Copy a valid shared object into the writable places: they are noexec.
    for d in ("/tmp", "/work"):
        r = failed(sess, "file.copy('%s', '%s/p.so', overwrite = TRUE); dyn.load('%s/p.so')" % (jail.probe, d, d))
        assert "failed to map segment from shared object" in r["error"], r
    still_fine(jail, witness)


def test_dyn_load_libc(sess, jail, witness):
    # libc can be loaded (it is in /usr); .C() passes pointers and drops the
    # return value, so the calls give nothing to observe and every argument
    # is an address: what native code could do is what probe.c shows.
    v = value(sess, "dyn.load(%s); c(is.loaded('ptrace'), is.loaded('mount'), length(.C('sync')))" % LIBC)
    assert v == [True, True, 0]
    assert sess.value("1+1") == "2"
    still_fine(jail, witness)


# ---------------------------------------------------------------- the seccomp rules


def test_mount_family(sess, jail, witness):
    before = open("/proc/self/mountinfo").read()
    for name, args in (("mount", (0, 0, 0, 0, 0)), ("umount2", (0, 0)), ("pivot_root", (0, 0)),
                       ("chroot", (0,)), ("fsopen", (0, 0)), ("open_tree", (-100, 0, 0))):
        assert sc(sess, jail, name, *args) == [-1, errno.EPERM], name
    assert open("/proc/self/mountinfo").read().count("\n") == before.count("\n")
    still_fine(jail, witness)


def test_namespaces(sess, jail, witness):
    CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x20000, 0x10000000, 0x40000000, 0x20000000
    # unshare(0) is a no-op for the kernel: EPERM can only be the filter.
    assert sc(sess, jail, "unshare", 0) == [-1, errno.EPERM]
    assert sc(sess, jail, "unshare", CLONE_NEWUSER) == [-1, errno.EPERM]
    assert sc(sess, jail, "setns", 0, 0) == [-1, errno.EPERM]
    for flag in (CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID):
        assert probe(sess, jail, "probe_clone", "%d" % flag) == [-1, errno.EPERM], flag
    # A plain clone (fork) works; clone3 says ENOSYS so that glibc falls back.
    ret, err = probe(sess, jail, "probe_clone", "0")
    assert ret > 1 and err == 0
    assert probe(sess, jail, "probe_clone3", "0") == [-1, errno.ENOSYS]
    assert probe(sess, jail, "probe_clone3", "%d" % CLONE_NEWUSER) == [-1, errno.ENOSYS]
    still_fine(jail, witness)


def test_kernel_attack_surface(sess, jail, witness):
    UFFD_USER_MODE_ONLY = 1
    for name, args in (("bpf", (0, 0, 0)), ("perf_event_open", (0, 0, -1, -1, 0)),
                       ("userfaultfd", (UFFD_USER_MODE_ONLY,)), ("io_uring_setup", (1, 0)),
                       ("io_uring_enter", (0, 0, 0, 0, 0)), ("io_uring_register", (0, 0, 0, 0)),
                       ("keyctl", (0, -3, 0)), ("add_key", (0, 0, 0, 0, 0)), ("request_key", (0, 0, 0, 0))):
        assert sc(sess, jail, name, *args) == [-1, errno.EPERM], name
    still_fine(jail, witness)


def test_machine_control(sess, jail, witness):
    for name, args in (("kexec_load", ()), ("kexec_file_load", (-1, -1, 0, 0, 0)), ("init_module", ()),
                       ("finit_module", (-1, 0, 0)), ("delete_module", ()),
                       ("reboot", (0xfee1dead, 672274793, 0x4321fedc)), ("swapon", ()), ("swapoff", ()),
                       ("acct", ()), ("quotactl", ())):
        assert sc(sess, jail, name, *args) == [-1, errno.EPERM], name
    still_fine(jail, witness)


def test_file_handles(sess, jail, witness):
    assert sc(sess, jail, "open_by_handle_at", -100, 0, 0) == [-1, errno.EPERM]
    assert probe(sess, jail, "probe_name_to_handle") == [-1, errno.EPERM]
    still_fine(jail, witness)


def test_personality(sess, jail, witness):
    ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, PER_LINUX32 = 0x0040000, 0x0400000, 0x0008
    assert sc(sess, jail, "personality", 0xffffffff) == [0, 0]  # the query
    assert sc(sess, jail, "personality", 0) == [0, 0]  # PER_LINUX: what it is
    for p in (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, PER_LINUX32, 0xfffffffe):
        assert sc(sess, jail, "personality", p) == [-1, errno.EPERM], hex(p)
    assert value(sess, "grep('^(0|ffffffff)$', 'x')") == []  # R itself unaffected
    still_fine(jail, witness)


def test_rlimits_cannot_be_lifted(daemons, probe_dir):
    d = daemons.start("pool=0", "r_libs=%s" % probe_dir, "nofile=200")
    d.probe = str(probe_dir / "probe.so")
    s = d.clone()
    pids = util.session_worker_pids(d.pid)
    ret, err = probe(s, d, "probe_prlimit", "1L", "v = double(1)")
    assert (ret, err) == (-1, errno.EPERM)
    # Reading works (glibc's getrlimit is prlimit64 with no new limit).
    assert value(s, "dyn.load('%s'); .C('probe_prlimit', 0L, v = double(1), ret = integer(1), "
                    "err = integer(1))[c('v', 'ret', 'err')]" % d.probe) == {"v": 200, "ret": 0, "err": 0}
    assert probe(s, d, "probe_setrlimit") == [-1, errno.EPERM]
    # Outside: the limit the daemon set is still there.
    with open("/proc/%d/limits" % pids[-1]) as f:
        assert re.search(r"Max open files\s+200\s+200", f.read())
    s.close()


def test_hostname(sess, jail, witness):
    host = socket.gethostname()
    assert probe(sess, jail, "probe_sethostname", "'pwned'") == [-1, errno.EPERM]
    assert value(sess, "Sys.info()[['nodename']]") == ["securerfs"]
    assert socket.gethostname() == host
    still_fine(jail, witness)


def test_tiocsti(sess, jail, witness):
    assert probe(sess, jail, "probe_tiocsti", "0L") == [-1, errno.EPERM]
    still_fine(jail, witness)


def host_signal_of(so, fn):
    """The signal that kills a host process (outside any sandbox) calling
    fn of so, or 0 if it returns: some kernels offer no i386 ABI at all (on
    this project's VM, int 0x80 is SIGSEGV in any process)."""
    pid = os.fork()
    if pid == 0:
        try:
            faulthandler.disable()  # the child's crash is the expected answer
            lib = ctypes.CDLL(str(so))
            ret, err = ctypes.c_int(0), ctypes.c_int(0)
            getattr(lib, fn)(ctypes.byref(ret), ctypes.byref(err))
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


@pytest.mark.parametrize("fn", ["probe_x32", "probe_int80"])
def test_other_syscall_abis_kill(fn, daemons, probe_dir):
    d, s, other = with_bystander(daemons, "r_libs=%s" % probe_dir)
    assert s.value("y <- 1; y") == "1"
    s.submit("dyn.load('%s'); .C('%s', ret = integer(1), err = integer(1))" % (probe_dir / "probe.so", fn))
    r = s.result()
    assert r["status"] == "crashed", r
    if fn == "probe_int80" and host_signal_of(probe_dir / "probe.so", fn) == signal.SIGSEGV:
        # The host's kernel refuses the ABI to every process: the call
        # never reaches a system call, inside as outside.
        assert "signal 11" in s.read("error"), s.read("error")
    else:
        assert "signal 31" in s.read("error") or "SIGSYS" in s.read("error") or \
            "Bad system call" in s.read("error"), s.read("error")
    # Replaced with a fresh worker; the other session did not notice.
    assert s.value("exists('y')") == "FALSE"
    assert other.value("z") == "5"
    s.close()
    other.close()


# ---------------------------------------------------------------- resources


@pytest.mark.timeout_s(120)
def test_fork_bomb(daemons):
    d, s, other = with_bystander(daemons, "nproc=30")
    before = host_processes()
    r = failed(s, "library(parallel); for (i in 1:1000) mcparallel(Sys.sleep(60))")
    assert r["limit"] == "nproc", r
    assert "unable to fork" in r["error"] and "process limit" in r["error"], r
    # Outside: bounded, and the daemon and the other session are fine.
    assert host_processes() - before <= 35
    assert other.value("z") == "5"
    assert s.value("1+1") == "2"  # the session survives the failed fork
    # What the run forked ended with it (docs/security.md, "The processes
    # of a run"; tests/sandbox/test_run_processes.py).
    worker = util.session_worker_pids(d.pid)
    assert [p for w in worker for p, _ in util.descendants(w)] == [], "forked children survived the run"
    s.close()
    other.close()


def test_memory_bomb(sess, jail, witness):
    assert value(sess, "keep <- 3; keep") == [3]
    r = failed(sess, "x <- numeric(2e9)")
    assert r["limit"] == "memory", r
    assert "cannot allocate vector" in r["error"] and "memory limit" in r["error"], r
    r = failed(sess, "l <- list(); for (i in 1:100) l[[i]] <- numeric(1e8)")
    assert r["limit"] == "memory", r
    assert value(sess, "rm(l); keep") == [3]  # R recovered: same session, same state
    still_fine(jail, witness)


def test_disk_filler(sess, jail, witness):
    st = os.statvfs("/tmp")
    host_free = st.f_bavail * st.f_frsize
    r = failed(sess, "con <- file('/tmp/fill', 'wb'); on.exit(close(con)); "
                     "for (i in 1:200) writeBin(raw(1e6), con); flush(con); close(con); "
                     "if (file.size('/tmp/fill') < 2e8) stop('disk full at ', file.size('/tmp/fill'))")
    assert "disk full at" in r["error"] or "No space left" in r["error"], r
    size = value(sess, "file.size('/tmp/fill')")[0]
    assert size <= 64 << 20
    # Outside: the host's /tmp did not lose what the jail wrote.
    st = os.statvfs("/tmp")
    assert host_free - st.f_bavail * st.f_frsize < 32 << 20
    assert value(sess, "unlink('/tmp/fill'); writeLines('ok', '/tmp/after'); readLines('/tmp/after')") == ["ok"]
    still_fine(jail, witness)


def test_inode_filler(sess, jail, witness):
    v = value(sess, "n <- 0; for (i in 1:40000) { if (!suppressWarnings(file.create(sprintf('/tmp/i%05d', i)))) "
                    "break; n <- n + 1 }; n")
    assert 1000 <= v[0] < 40000
    assert value(sess, "unlink(Sys.glob('/tmp/i*')); length(list.files('/tmp', pattern = '^i'))") == [0]
    still_fine(jail, witness)


def test_fd_exhauster(daemons):
    d, s, other = with_bystander(daemons, "nofile=40")
    r = failed(s, "cons <- list(); for (i in 1:100) cons[[i]] <- file('/dev/null', 'r')")
    assert r["limit"] == "nofile", r
    assert warned(r, "Too many open files"), r
    assert s.value("closeAllConnections(); rm(cons); 1") == "1"  # R recovered
    assert other.value("z") == "5"
    # R's own cap of 128 connections comes first with the default nofile.
    s.close()
    other.close()


@pytest.mark.timeout_s(90)
def test_cpu_spinner_children_end_with_the_run(daemons):
    d = daemons.start("pool=0", "cpu=3")
    s = d.clone()
    assert s.value("library(parallel); for (i in 1:3) mcparallel(repeat {}); 1") == "1"
    # The spinners ended with the run that started them (the session's CPU
    # as a whole: tests/sandbox/test_session_limits.py).
    worker = util.session_worker_pids(d.pid)
    assert [p for w in worker for p, _ in util.descendants(w)] == [], "spinners outlived their run"
    # And a spinner in the worker itself gets a clear error.
    r = failed(s, "repeat {}")
    assert r["limit"] == "cpu", r
    assert s.value("1+1") == "2"
    s.close()


def test_forked_children_die_when_session_closes(daemons):
    d = daemons.start("pool=0")
    s = d.clone()
    assert s.value("1") == "1"
    # Closed while its run, and the children of that run, go on.
    s.submit("library(parallel); for (i in 1:3) mcparallel(Sys.sleep(120)); Sys.sleep(120)")
    worker = util.session_worker_pids(d.pid)
    deadline = time.monotonic() + util.scaled(10)
    kids = []
    while len(kids) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
        kids = [p for w in worker for p, _ in util.descendants(w)]
    assert len(kids) == 3
    s.close()
    deadline = time.monotonic() + util.scaled(5)
    while time.monotonic() < deadline and any(util.proc_stat(p) and util.proc_stat(p)[0] != "Z" for p in kids):
        time.sleep(0.05)
    assert not [p for p in kids if util.proc_stat(p) and util.proc_stat(p)[0] != "Z"]
    assert not [p for p in worker if util.proc_stat(p) and util.proc_stat(p)[0] != "Z"]


# ---------------------------------------------------------------- options and failure modes


def test_allow_exec_still_jailed(daemons):
    d = daemons.start("pool=0", "allow_exec")
    assert d.json("config")["allow_exec"] is True
    s = d.clone()
    assert s.value("system('id -u', intern = TRUE)") == "1000"
    # no_new_privs and nosuid: a setuid program gains nothing.
    v = s.value("system('/usr/bin/mount -t tmpfs none /tmp 2>&1; echo rc=$?', intern = TRUE)")
    assert "rc=0" not in v
    # noexec /tmp: a copied program cannot run.
    assert s.value("file.copy('/usr/bin/true', '/tmp/t'); Sys.chmod('/tmp/t', '755'); system('/tmp/t')") == "126"
    assert s.value("system('cat /proc/self/status | grep NoNewPrivs', intern = TRUE)") == "NoNewPrivs:\t1"
    s.close()


def test_no_user_namespaces_fails_closed(daemons, tmp_path):
    """Item 5: without user namespaces the session refuses to start, the
    error names the kernel feature, the daemon logs it and stats shows it.
    The worker runs under tests/sandbox/nouserns.c, a seccomp filter that
    refuses CLONE_NEWUSER as a container's default profile would."""
    wrapper = tmp_path / "nouserns"
    real = util.BUILD / "securerfs-worker"
    subprocess.run(["cc", "-O1", "-DREAL_WORKER=\"%s\"" % real, "-o", str(wrapper),
                    os.path.join(os.path.dirname(__file__), "nouserns.c"), "-lseccomp"], check=True)
    os.chmod(tmp_path, 0o755)
    d = daemons.start("pool=0", "worker=%s" % wrapper)
    e = util.expect_errno((errno.EPERM, errno.EIO, errno.EAGAIN, errno.ENOSPC),
                          os.mkdir, str(d.mnt / "sessions" / "nouserns"))
    assert not os.path.exists(str(d.mnt / "sessions" / "nouserns")), e
    st = d.json("stats")
    msg = st["last_start_error"]
    assert "clone: user namespaces are not available" in msg, st
    assert "max_user_namespaces" in msg and "Operation not permitted" in msg, st
    assert "user namespaces are not available" in d.stderr(), d.stderr()
    # Strict never falls back: a second try fails the same way.
    util.expect_errno((errno.EPERM, errno.EIO, errno.EAGAIN, errno.ENOSPC), d.read, "clone")
