"""Fixtures for the integration tests.

- A per-test watchdog (pytest-timeout is not available here): when a test
  overruns its limit, every live daemon is SIGKILLed (that releases any FUSE
  request blocked in the kernel) and the test fails with TestTimeout.  Limit:
  @pytest.mark.timeout_s(N), default 60 s, times SECURERFS_TIME_SCALE.
- `daemons`: a factory that starts `securerfs -f -o OPTS MNT` in the test's own
  directory; at teardown each is unmounted with fusermount3 -u and checked:
  exited within 10 s, no worker left, no unexpected "error:" in its stderr.
- `mount`: one default daemon for the test; `shared`: one per module, for
  tests that only create their own sessions; `sess`: a fresh session of
  `shared`, closed afterwards.
"""
import subprocess

import pytest

import util

DEFAULT_TIMEOUT = 60



def pytest_configure(config):
    config.addinivalue_line("markers", "timeout_s(seconds): per-test time limit")
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
    def __init__(self, workdir):
        self.workdir = workdir
        self.started = []

    def start(self, *opts, env=None, expect=(), args=(), wait=True, name=None):
        name = name or "mnt%d" % len(self.started)
        d = util.Daemon(self.workdir, opts, env=env, expect=expect, args=args, name=name)
        self.started.append(d)
        return d.start(wait=wait)

    def stop_all(self):
        problems = []
        for d in self.started:
            problems += ["%s: %s" % (d.mnt, p) for p in d.stop()]
        return problems


@pytest.fixture
def daemons(tmp_path):
    ds = Daemons(tmp_path)
    yield ds
    problems = ds.stop_all()
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def mount(daemons):
    return daemons.start("pool=0")


@pytest.fixture(scope="module")
def shared(request, tmp_path_factory):
    """A module-wide mount.  A module whose tests make the daemon log errors
    lists their patterns in SHARED_EXPECT, and may set SHARED_OPTS."""
    ds = Daemons(tmp_path_factory.mktemp("shared"))
    d = ds.start(*getattr(request.module, "SHARED_OPTS", ("pool=2",)),
                 expect=getattr(request.module, "SHARED_EXPECT", ()))
    yield d
    problems = ds.stop_all()
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture(autouse=True)
def _revive_shared(request):
    """A test that hung got every daemon killed; give the next test of the
    module a working shared mount again."""
    if "shared" in request.fixturenames:
        request.getfixturevalue("shared").revive()


@pytest.fixture
def sess(shared):
    s = shared.clone()
    yield s
    if shared.proc.poll() is None:  # else the watchdog killed it: already failed
        s.close()

