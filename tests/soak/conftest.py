"""The soak (tests/soak/test_soak.py) reuses the integration suite's helpers
(tests/integration/util.py) and its per-test watchdog."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

import util  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout_s(seconds): per-test time limit")
    util.become_subreaper()
    if not util.DAEMON.exists():
        raise pytest.UsageError("%s does not exist: build first" % util.DAEMON)


def pytest_unconfigure(config):
    import subprocess
    for d in list(util.LIVE):
        d.kill()
        subprocess.run(["fusermount3", "-u", "-z", str(d.mnt)], capture_output=True)


@pytest.fixture(autouse=True)
def _watchdog(request):
    marker = request.node.get_closest_marker("timeout_s")
    yield from util.watchdog(util.scaled(marker.args[0] if marker else 60))
