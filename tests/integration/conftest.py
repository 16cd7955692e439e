"""Fixtures for the integration tests.

- The per-test watchdog and the daemons' checks of harness.py.
- `daemons`: a factory that starts `securerfs -f -o OPTS MNT` in the test's own
  directory; at teardown each is unmounted with fusermount3 -u and checked:
  exited within 10 s, no worker left, no unexpected "error:" in its stderr.
- `mount`: one default daemon for the test; `shared`: one per module, for
  tests that only create their own sessions; `sess`: a fresh session of
  `shared`, closed afterwards.
"""
import pytest

from harness import Daemons, pytest_configure, pytest_unconfigure, _watchdog  # noqa: F401 (hooks)


@pytest.fixture
def daemons(tmp_path):
    ds = Daemons(tmp_path)
    yield ds
    ds.check()


@pytest.fixture
def mount(daemons):
    return daemons.start("pool=0")


@pytest.fixture(scope="module")
def shared(request, tmp_path_factory):
    """A module-wide mount.  A module whose tests make the daemon log errors
    lists their patterns in SHARED_EXPECT, and may set SHARED_OPTS."""
    ds = Daemons(tmp_path_factory.mktemp("shared"))
    yield ds.start(*getattr(request.module, "SHARED_OPTS", ("pool=2",)),
                   expect=getattr(request.module, "SHARED_EXPECT", ()))
    ds.check()


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

