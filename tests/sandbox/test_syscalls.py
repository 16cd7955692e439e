"""The seccomp allowlist from inside the real sandbox (issue 9 item 6, issue
16 items 1 and 2; docs/security.md, "seccomp" and "Per-user kernel
counters"): well-formed calls of each refused family get the filter's errno
(which the kernel's own answer to such a call could not be), and the host
shows no effect.  tests/unit/test_seccomp.c checks the compiled policy call
by call against Docker's default profile; this checks that it is the one the
worker runs.
"""
import errno
import os
import stat

import pytest

from jailtools import family, host_inotify_ok, keeper_path_of, ok, probe, raw, raw_path, value

EPERM, ENOSYS = errno.EPERM, errno.ENOSYS


def still_fine(jail, witness):
    assert jail.proc.poll() is None, "the daemon died"
    assert witness.value("witness_var") == "41"


@pytest.mark.parametrize("which, want", [
    ("modify_ldt", EPERM),      # the LDT: 16-bit segments, a classic kernel attack surface
    ("memfd_secret", EPERM),
    ("memfd_create", EPERM),    # native code loadable despite noexec /tmp and /work
    ("io_setup", EPERM),        # native AIO
    ("mbind", EPERM),           # NUMA policy (needs CAP_SYS_NICE in Docker)
    ("set_mempolicy", EPERM),
    ("get_mempolicy", EPERM),
    ("migrate_pages", EPERM),
    ("move_pages", EPERM),
    ("mq_open", EPERM),         # POSIX message queues (RLIMIT_MSGQUEUE is per user)
    ("shmget", EPERM),          # System V shared memory outlives its processes
    ("fanotify_init", EPERM),
    ("inotify_init1", ENOSYS),  # per-user instance count
    ("inotify_init", ENOSYS),
    ("epoll_create1", ENOSYS),  # per-user watch count
    ("openat2", ENOSYS),        # its mode is in memory: glibc falls back to openat
    ("pipe_grow", EPERM),       # F_SETPIPE_SZ: per-user pipe buffer pages
])
def test_refused_families(which, want, sess, jail, witness):
    assert family(sess, jail.probe, which) == [-1, want], which
    still_fine(jail, witness)


def test_what_stays_allowed(sess, jail, witness):
    # Pipes keep their default size and work; parallel's fork, plots and
    # sockets of the sandbox's own are exercised by the other suites.
    assert family(sess, jail.probe, "pipe_size") == [65536, 0]
    assert value(sess, "library(parallel); unlist(mccollect(mcparallel(6 * 7)))") == [42]
    still_fine(jail, witness)


def test_unknown_and_unneeded_calls_answer_enosys(sess, jail, witness):
    # Calls the filter does not allow answer as on a kernel without them,
    # where the kernel itself would have answered something else:
    # landlock's version query (a number), seccomp's action query (0),
    # process_mrelease on a bad pidfd (EBADF).
    LANDLOCK_CREATE_RULESET_VERSION = 1
    assert raw(sess, jail.probe, "landlock_create_ruleset", 0, 0, LANDLOCK_CREATE_RULESET_VERSION) == [-1, ENOSYS]
    assert raw(sess, jail.probe, "seccomp", 2, 0, 0) == [-1, ENOSYS]
    assert raw(sess, jail.probe, "process_mrelease", -1, 0) == [-1, ENOSYS]
    # fchmodat2 with a set-id mode: refused (ENOSYS wins over the EPERM).
    assert raw_path(sess, jail.probe, "fchmodat2", "/tmp", 1, -100, 0, 0o4755, 0) == [-1, ENOSYS]
    still_fine(jail, witness)


def test_the_attach_calls_are_locked(sess, jail, witness):
    # The two calls a worker's attach needs, which the filter lets through
    # until its lock is loaded (docs/security.md, "Three programs"): after
    # it, move_mount is the mount API's EPERM (the kernel alone would say
    # EBADF for descriptor -1) and seccomp ENOSYS, whatever the operation
    # (SECCOMP_SET_MODE_FILTER with no program: EFAULT from the kernel).
    MOVE_MOUNT_F_EMPTY_PATH = 4
    SECCOMP_SET_MODE_FILTER = 1
    assert raw(sess, jail.probe, "move_mount", -1, 0, -1, 0, MOVE_MOUNT_F_EMPTY_PATH) == [-1, EPERM]
    assert raw(sess, jail.probe, "seccomp", SECCOMP_SET_MODE_FILTER, 0, 0) == [-1, ENOSYS]
    still_fine(jail, witness)


# ---------------------------------------------------------------- set-id bits (issue 16 item 1)


def host_modes(jail, s, name):
    """(mode through files/, mode in the keeper's tmpfs) of a workspace file."""
    return os.lstat(str(s.p("files") / name)).st_mode, os.lstat(keeper_path_of(jail, name)).st_mode


def test_no_set_id_or_sticky_bit_from_r(sess, jail, witness):
    name = "report-%d.csv" % os.getpid()
    # The attack: a real program, made set-id.
    v = value(sess, "writeBin(readBin('/usr/bin/id', 'raw', 1e6), '%s'); "
                    "c(Sys.chmod('%s', '6777', use_umask = FALSE), Sys.chmod('%s', '4755', use_umask = FALSE), "
                    "Sys.chmod('%s', '1777', use_umask = FALSE), Sys.chmod('%s', '0755', use_umask = FALSE))"
                    % ((name,) * 5))
    assert v == [False, False, False, True], v
    assert value(sess, "as.integer(file.info('%s')$mode)" % name) == [0o755]
    # Outside, through files/ and in the workspace tmpfs itself.
    for mode in host_modes(jail, sess, name):
        assert stat.S_IMODE(mode) & 0o7000 == 0, oct(mode)
        assert stat.S_IMODE(mode) == 0o755, oct(mode)
    # Directories: no setgid (inherited group), no sticky bit.
    v = value(sess, "c(suppressWarnings(dir.create('d-%d', mode = '2775')), "
                    "suppressWarnings(dir.create('t-%d', mode = '1777')), dir.create('ok-%d', mode = '0755'))"
                    % ((os.getpid(),) * 3))
    assert v == [False, False, True], v
    assert not os.path.exists(str(sess.p("files") / ("d-%d" % os.getpid())))
    still_fine(jail, witness)


CREAT = os.O_CREAT | os.O_WRONLY


@pytest.mark.parametrize("call, path_arg, bad, plain", [
    ("open", 0, (0, CREAT, 0o4755), (0, CREAT, 0o755)),
    ("openat", 1, (-100, 0, CREAT, 0o2755), (-100, 0, CREAT, 0o755)),
    ("creat", 0, (0, 0o6755), (0, 0o755)),
    ("mkdir", 0, (0, 0o1777), (0, 0o777)),
    ("mkdirat", 1, (-100, 0, 0o3777), (-100, 0, 0o777)),
    ("mknod", 0, (0, stat.S_IFIFO | 0o4644, 0), (0, stat.S_IFIFO | 0o644, 0)),
    ("mknodat", 1, (-100, 0, stat.S_IFIFO | 0o2644, 0), (-100, 0, stat.S_IFIFO | 0o644, 0)),
    ("chmod", 0, (0, 0o4755), (0, 0o755)),
    ("fchmodat", 1, (-100, 0, 0o2755), (-100, 0, 0o755)),
])
def test_no_set_id_bit_through_any_call(call, path_arg, bad, plain, sess, jail, witness):
    name = "setid-%s-%d" % (call, os.getpid())
    existing = call in ("chmod", "fchmodat")
    if existing:
        ok(sess, "writeLines('x', '%s'); writeLines('x', '%s-plain')" % (name, name))
    assert raw_path(sess, jail.probe, call, "/work/" + name, path_arg, *bad) == [-1, EPERM], call
    # Outside: nothing was made, or what is there has no 07000 bit.
    p = str(sess.p("files") / name)
    assert os.path.lexists(p) == existing
    if existing:
        assert stat.S_IMODE(os.lstat(p).st_mode) & 0o7000 == 0
        assert stat.S_IMODE(os.lstat(keeper_path_of(jail, name)).st_mode) & 0o7000 == 0
    # The same call without those bits works.
    ret, err = raw_path(sess, jail.probe, call, "/work/%s-plain" % name, path_arg, *plain)
    assert err == 0, (call, plain, err)
    still_fine(jail, witness)


# ---------------------------------------------------------------- per-user counters (issue 16 item 2)


def test_inotify_flood_leaves_the_host_its_instances(sess, jail, witness):
    # The attack: take every inotify instance of the uid, which is
    # counted across user namespaces (up to the namespace's owner).
    assert host_inotify_ok() == 0  # outside: possible before
    v = probe(sess, jail.probe, "probe_inotify_many", "200L")
    assert v == [0, ENOSYS], v  # not one instance; each refused
    # R itself gets an error for each too (no R function uses inotify; the
    # probe stands for native code).  Outside: a process of the daemon's uid
    # can still make one.
    assert host_inotify_ok() == 0
    still_fine(jail, witness)


def test_message_queues_and_epoll_out_of_reach(sess, jail, witness):
    assert family(sess, jail.probe, "mq_open") == [-1, EPERM]
    assert family(sess, jail.probe, "epoll_create1") == [-1, ENOSYS]
    assert raw(sess, jail.probe, "epoll_create", 1) == [-1, ENOSYS]
    # The host's /dev/mqueue, where mounted, shows nothing of the session.
    if os.path.isdir("/dev/mqueue"):
        assert "probe" not in os.listdir("/dev/mqueue")
    still_fine(jail, witness)
