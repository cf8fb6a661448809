"""The elastic thread pool that runs step attempts."""

from __future__ import annotations

import threading
import time

from tasker.engine.threads import ElasticThreads


def _wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_calls_never_queue_behind_a_busy_thread():
    """Given three calls that block until released, when they are submitted,
    then all three run at once (each got a thread of its own)."""
    pool = ElasticThreads("t")
    release = threading.Event()
    running = []
    lock = threading.Lock()

    def block(i):
        with lock:
            running.append((i, threading.current_thread().name))
        release.wait(5)

    for i in range(3):
        pool.submit(block, i)
    _wait_until(lambda: len(running) == 3)
    release.set()
    assert len({name for _, name in running}) == 3


def test_an_idle_thread_is_reused():
    """Given a call that has finished, when another is submitted, then it runs on the
    same thread rather than a new one."""
    pool = ElasticThreads("t")
    seen = []
    done = threading.Event()
    pool.submit(lambda: (seen.append(threading.get_ident()), done.set()))
    assert done.wait(5)
    _wait_until(lambda: len(pool._idle) == 1)
    done.clear()
    pool.submit(lambda: (seen.append(threading.get_ident()), done.set()))
    assert done.wait(5)
    assert seen[0] == seen[1]


def test_a_thread_idle_for_too_long_ends():
    """Given a pool whose threads end after 50 ms idle, when a call finished, then its
    thread ends, and a later call still runs (on a new thread)."""
    pool = ElasticThreads("t", idle_seconds=0.05)
    threads = []
    done = threading.Event()
    pool.submit(lambda: (threads.append(threading.current_thread()), done.set()))
    assert done.wait(5)
    threads[0].join(5)
    assert not threads[0].is_alive()
    assert pool._idle == []
    done.clear()
    pool.submit(lambda: (threads.append(threading.current_thread()), done.set()))
    assert done.wait(5)
    assert threads[1] is not threads[0]
