"""Helpers for testing code that uses tasker."""

from tasker.testing.clock import FakeClock

__all__ = ["FakeClock"]
