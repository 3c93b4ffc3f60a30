"""The simulators' own tests: each one judged against the published artifact."""

import pytest

# Helpers' asserts give pytest's detailed messages too.
pytest.register_assert_rewrite("tests.simulators.fixtures")
