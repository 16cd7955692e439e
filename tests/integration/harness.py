"""What every suite that drives real daemons shares (tests/integration,
tests/sandbox, tests/soak): each conftest.py imports these names, and pytest
takes the hooks and fixtures from there.

- A per-test watchdog (pytest-timeout is not available here): when a test
  overruns its limit, every live daemon is SIGKILLed (that releases any FUSE
  request blocked in the kernel) and the test fails with TestTimeout.  Limit:
  @pytest.mark.timeout_s(N), default 60 s, times SECURERFS_TIME_SCALE.
- `Daemons`: starts `securerfs -f -o OPTS MNT` in one directory; stop_all()
  unmounts each with fusermount3 -u and checks it: exited within 10 s, no
  worker left, no unexpected "error:" in its stderr.
- `build_r_lib()`: native code that sessions dyn.load() from -o r_libs=DIR.
"""
import os
import subprocess

import pytest

import util

DEFAULT_TIMEOUT = 60


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout_s(seconds): per-test time limit")
    config.addinivalue_line(
        "markers", "load: loads the daemon's loop for tens of seconds (floods, thousands of sessions) "
        "and measures what is left; what it measures is the loop's, whatever the daemon's uid, so "
        "scripts/test runs it in the root suites only (-m 'not load' as nobody)")
    util.become_subreaper()
    if not util.DAEMON.exists():
        raise pytest.UsageError("%s does not exist: build first (ninja -C %s)"
                                % (util.DAEMON, util.BUILD))


def pytest_unconfigure(config):
    # Whatever a crashed test left mounted.
    for d in list(util.LIVE):
        d.kill()
        subprocess.run(["fusermount3", "-u", "-z", str(d.mnt)], capture_output=True)


@pytest.fixture(autouse=True)
def _watchdog(request):
    marker = request.node.get_closest_marker("timeout_s")
    yield from util.watchdog(util.scaled(marker.args[0] if marker else DEFAULT_TIMEOUT))


class Daemons:
    # Patterns of error lines the daemons may log (a suite's conftest sets
    # its own in a subclass).
    expect = ()

    def __init__(self, workdir):
        self.workdir = workdir
        self.started = []

    def start(self, *opts, env=None, expect=None, args=(), wait=True, name=None):
        name = name or "mnt%d" % len(self.started)
        d = util.Daemon(self.workdir, opts, env=env, expect=self.expect if expect is None else expect,
                        args=args, name=name)
        self.started.append(d)
        return d.start(wait=wait)

    def stop_all(self):
        problems = []
        for d in self.started:
            problems += ["%s: %s" % (d.mnt, p) for p in d.stop()]
        return problems

    def check(self):
        """Stop every daemon; fail the test if one stopped badly."""
        problems = self.stop_all()
        if problems:
            pytest.fail("\n".join(problems))


def build_r_lib(directory, source, extra_flags=()):
    """Compile source (a .c file) into directory/<stem>.so and return the
    directory.  The daemon binds r_libs at the same path inside; it must be
    readable by whoever runs the daemon (nobody, in the unprivileged run)."""
    out = directory / (source.stem + ".so")
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", *extra_flags, "-o", str(out), str(source)], check=True)
    for p in [directory] + list(directory.parents):
        if str(p) in ("/", "/tmp"):
            break
        try:
            os.chmod(p, os.stat(p).st_mode | 0o755)
        except PermissionError:
            pass
    return directory
