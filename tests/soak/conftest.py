"""The soak (tests/soak/test_soak.py) reuses the integration suite's helpers
(tests/integration/util.py) and its per-test watchdog."""
import os
import sys


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from harness import pytest_configure, pytest_unconfigure, _watchdog  # noqa: E402,F401 (hooks)
