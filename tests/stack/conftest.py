"""Whole-system tests: the services as processes, through HAProxy and in containers."""

import pytest

# Helpers' asserts give pytest's detailed messages too.
pytest.register_assert_rewrite("tests.stack.fixtures")
