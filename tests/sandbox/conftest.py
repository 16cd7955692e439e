"""Fixtures for the escape suite (tests/sandbox).

The daemon is the real one (build/securerfs, sandbox strict, the default),
driven with plain file I/O through tests/integration/util.py.  Each attempt
is checked inside (what R got) and outside (the host shows no effect).

- A per-test watchdog as in tests/integration: a test that overruns kills
  every live daemon and fails.
- `probe_dir`: tests/sandbox/probe.c compiled into a directory that the
  daemons get as -o r_libs=DIR, so that R code can dyn.load() it and make
  raw system calls (see probe.c for why).
- `jail`: one daemon for the module (pool=2, a secret in its environment);
  `sess` a fresh session of it; `witness` a second session that must keep
  answering and keep its variables whatever the first one does.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

import util  # noqa: E402

DEFAULT_TIMEOUT = 60
SECRET = "securerfs-escape-secret-5b7e"

# Lines the daemon logs, at error level, for what these tests provoke.
EXPECTED_ERRORS = (
    r"worker .*(killed|signal|crash)",
    r"session .*(killed|signal|crash|exited)",
    r"could not start",
    r"user namespaces",
)



def pytest_configure(config):
    config.addinivalue_line("markers", "timeout_s(seconds): per-test time limit")
    util.become_subreaper()
    if not util.DAEMON.exists():
        raise pytest.UsageError("%s does not exist: build first" % util.DAEMON)


def pytest_unconfigure(config):
    for d in list(util.LIVE):
        d.kill()
        subprocess.run(["fusermount3", "-u", "-z", str(d.mnt)], capture_output=True)


@pytest.fixture(autouse=True)
def _watchdog(request):
    marker = request.node.get_closest_marker("timeout_s")
    yield from util.watchdog(util.scaled(marker.args[0] if marker else DEFAULT_TIMEOUT))


class Daemons:
    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.started = []

    def start(self, *opts, env=None, expect=EXPECTED_ERRORS, wait=True):
        d = util.Daemon(self.workdir, opts, env=env, expect=expect,
                        name="mnt%d" % len(self.started))
        self.started.append(d)
        return d.start(wait=wait)

    def stop_all(self):
        problems = []
        for d in self.started:
            problems += ["%s: %s" % (d.mnt, p) for p in d.stop()]
        return problems


@pytest.fixture(scope="session")
def probe_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("probe")
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(d / "probe.so"), str(HERE / "probe.c")],
                   check=True)
    # The daemon binds r_libs at the same path inside; it must be readable
    # by whoever runs the daemon (nobody, in the unprivileged run).
    for p in [d] + list(d.parents):
        if str(p) in ("/", "/tmp"):
            break
        try:
            os.chmod(p, os.stat(p).st_mode | 0o755)
        except PermissionError:
            pass
    return d


@pytest.fixture
def daemons(tmp_path):
    ds = Daemons(tmp_path)
    yield ds
    problems = ds.stop_all()
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture(scope="module")
def jail(tmp_path_factory, probe_dir):
    ds = Daemons(tmp_path_factory.mktemp("jail"))
    d = ds.start("pool=2", "r_libs=%s" % probe_dir, env={"SECRET_MARKER": SECRET})
    d.probe = str(probe_dir / "probe.so")
    yield d
    problems = ds.stop_all()
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def sess(jail):
    s = jail.clone()
    yield s
    s.close()


@pytest.fixture(scope="module")
def witness(jail):
    """Another session of the same daemon, holding a variable."""
    s = jail.clone()
    assert s.value("witness_var <- 41; witness_var + 1") == "42"
    yield s
    s.close()
