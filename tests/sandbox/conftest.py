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
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

import harness  # noqa: E402
from harness import pytest_configure, pytest_unconfigure, _watchdog  # noqa: E402,F401 (hooks)

SECRET = "securerfs-escape-secret-5b7e"

# Lines the daemon logs, at error level, for what these tests provoke.
EXPECTED_ERRORS = (
    r"worker .*(killed|signal|crash)",
    r"session .*(killed|signal|crash|exited)",
    r"could not start",
    r"user namespaces",
)


class Daemons(harness.Daemons):
    expect = EXPECTED_ERRORS


@pytest.fixture
def daemons(tmp_path):
    ds = Daemons(tmp_path)
    yield ds
    ds.check()


@pytest.fixture(scope="session")
def probe_dir(tmp_path_factory):
    return harness.build_r_lib(tmp_path_factory.mktemp("probe"), HERE / "probe.c")


@pytest.fixture(scope="module")
def jail(tmp_path_factory, probe_dir):
    ds = Daemons(tmp_path_factory.mktemp("jail"))
    d = ds.start("pool=2", "r_libs=%s" % probe_dir, env={"SECRET_MARKER": SECRET})
    d.probe = str(probe_dir / "probe.so")
    yield d
    ds.check()


@pytest.fixture
def sess(jail):
    with jail.clone() as s:
        yield s


@pytest.fixture(scope="module")
def witness(jail):
    """Another session of the same daemon, holding a variable."""
    s = jail.clone()
    assert s.value("witness_var <- 41; witness_var + 1") == "42"
    yield s
    s.close()
