"""The webhook ingress's tests: the aiohttp app under a test client (``fixtures.py``)."""

import pytest

# Helpers' asserts give pytest's detailed messages too.
pytest.register_assert_rewrite("tests.ingress.fixtures")
