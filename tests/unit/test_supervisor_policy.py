"""The worker supervisor's pure decisions: restart delays and the default graceful timeout."""

from __future__ import annotations

import itertools

import pytest

from tasker import StepTemplate, Tasker, TaskHandler
from tasker.transport.worker import (
    RESTART_DELAY_FIRST,
    RESTART_DELAY_MAX,
    longest_step_timeout,
    restart_delay,
)


def noop(task, sequence, step):
    return {}


def test_a_child_that_ran_for_a_while_is_restarted_at_once():
    assert restart_delay(0) == 0.0


def test_quick_crashes_in_a_row_double_the_delay_up_to_the_cap():
    """Given a child that keeps dying quickly, then each restart waits twice as long as
    the one before, from the first delay, and never longer than the cap."""
    delays = [restart_delay(n) for n in range(1, 12)]
    assert delays[0] == RESTART_DELAY_FIRST
    assert all(b == min(2 * a, RESTART_DELAY_MAX) for a, b in itertools.pairwise(delays))
    assert delays[-1] == RESTART_DELAY_MAX


@pytest.fixture
def app(tmp_path, clean_env):
    a = Tasker(database_url=f"sqlite:///{tmp_path}/t.db", step_timeout=120)
    yield a
    a.close()


def test_the_default_graceful_timeout_is_the_longest_step_timeout(app):
    """Given handlers whose steps have their own time limits or the app's default, then the
    graceful timeout is the longest of them, over every name and version."""

    class Short(TaskHandler):
        name = "short"
        step_templates = (StepTemplate(name="a", handler=noop, timeout=5),)

    class LongOld(TaskHandler):
        name = "long"
        version = "1.0.0"
        step_templates = (StepTemplate(name="a", handler=noop, timeout=900),)

    class LongNew(TaskHandler):
        name = "long"
        version = "2.0.0"
        step_templates = (StepTemplate(name="a", handler=noop, timeout=10),)

    app.register(Short)
    assert longest_step_timeout(app) == 5
    app.register(LongOld)
    app.register(LongNew)
    assert longest_step_timeout(app) == 900


def test_steps_without_their_own_limit_use_the_apps_step_timeout(app):
    class Plain(TaskHandler):
        name = "plain"
        step_templates = (StepTemplate(name="a", handler=noop),)

    assert longest_step_timeout(app) == 120  # nothing registered: the app's default
    app.register(Plain)
    assert longest_step_timeout(app) == 120


def test_a_negative_graceful_timeout_is_refused_before_anything_starts(capsys):
    """Given `tasker worker --graceful-timeout -1`, then it exits 2 naming the option,
    without loading the app (which does not exist here)."""
    from tasker.cli.main import main

    assert main(["worker", "no_such_module:app", "--graceful-timeout", "-1"]) == 2
    assert "--graceful-timeout" in capsys.readouterr().err
