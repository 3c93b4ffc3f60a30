"""The call orchestrator's tests: real workers against the simulated Calls API."""

import pytest

# Helpers' asserts give pytest's detailed messages too.
pytest.register_assert_rewrite("tests.orchestrator.fixtures")
