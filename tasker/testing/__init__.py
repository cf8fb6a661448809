"""Helpers for testing code that uses tasker.

`FakeClock` is time that moves only when told; `run_step` runs one step of a task handler in
isolation; `speedrun` drives a task through its waits on a FakeClock until it ends, is
paused or waits only for what the clock cannot bring (an event); the pytest plugin
(`tasker.testing.plugin`, installed with the package) gives the fixtures `tasker_app` and
`fake_clock`.
"""

from tasker.testing.clock import FakeClock
from tasker.testing.speedrun import speedrun
from tasker.testing.steps import StepRun, run_step

__all__ = ["FakeClock", "StepRun", "run_step", "speedrun"]
