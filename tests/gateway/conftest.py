"""The media gateway's tests: one gateway per test on real sockets, with the Realtime
simulator and a simulated Infobip media leg (``fixtures.py``)."""

import pytest

# Helpers' asserts give pytest's detailed messages too.
pytest.register_assert_rewrite("tests.gateway.fixtures")

from tests.gateway.fixtures import make_gateway, open_leg, rt_sim  # noqa: E402, F401
