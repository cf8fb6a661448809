"""The relay: task messages sent after the commit, from one thread, in batches."""

from __future__ import annotations

import threading

from tasker.transport.relay import Relay


class Recorder:
    """A `send_many` that records each batch; it blocks while `gate` is clear."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail = fail

    def __call__(self, ids: list[int]) -> None:
        self.entered.set()
        self.gate.wait()
        self.batches.append(list(ids))
        if self.fail:
            raise ConnectionError("broker down")


def test_flush_returns_once_every_submitted_id_was_sent_in_order():
    """Given a relay, when ids are submitted and flushed, then each was sent once, in order."""
    sent = Recorder()
    relay = Relay(sent)
    relay.submit([1, 2])
    relay.submit([3])
    assert relay.flush()
    assert [i for batch in sent.batches for i in batch] == [1, 2, 3]
    relay.stop()


def test_ids_that_pile_up_during_a_send_go_in_batches_of_at_most_batch():
    """Given a relay whose first send is held, when five more ids are submitted meanwhile,
    then they are sent after it in batches of at most two (the batch size)."""
    sent = Recorder()
    relay = Relay(sent, batch=2)
    sent.gate.clear()
    relay.submit([0])
    assert sent.entered.wait(5)
    relay.submit([1, 2, 3])
    relay.submit([4, 5])
    sent.gate.set()
    assert relay.flush()
    assert sent.batches == [[0], [1, 2], [3, 4], [5]]
    relay.stop()


def test_stop_sends_what_is_pending_then_ends_the_thread_and_a_submit_starts_another():
    """Given ids pending behind a held send, when stop is called (and the send released),
    then every id was sent when stop returns; a later submit is sent by a new thread."""
    sent = Recorder()
    relay = Relay(sent)
    sent.gate.clear()
    relay.submit([1])
    assert sent.entered.wait(5)
    relay.submit([2, 3])
    thread = relay._thread
    threading.Timer(0.05, sent.gate.set).start()
    relay.stop()
    assert [i for batch in sent.batches for i in batch] == [1, 2, 3]
    assert thread is not None and not thread.is_alive()

    relay.submit([4])
    assert relay.flush()
    assert sent.batches[-1] == [4]
    relay.stop()


def test_a_failed_send_is_logged_and_the_relay_goes_on(caplog):
    """Given a broker that refuses every send, when ids are submitted, then the failure is
    logged (the sweeper will re-send from the outbox) and later ids are still tried."""
    sent = Recorder(fail=True)
    relay = Relay(sent)
    relay.submit([1])
    assert relay.flush()
    relay.submit([2])
    assert relay.flush()
    assert sent.batches == [[1], [2]]
    assert "the sweeper will" in caplog.text
    relay.stop()


def test_flush_without_anything_submitted_returns_at_once():
    """Given a relay that never sent anything, flush and stop return at once."""
    relay = Relay(Recorder())
    assert relay.flush(timeout=0)
    relay.stop()


def test_an_idle_relay_ends_its_thread_and_a_later_submit_starts_another():
    """Given a relay with a short idle time, when it has sent everything and stays idle,
    then its thread ends; a later submit is still sent, by a new thread."""
    sent = Recorder()
    relay = Relay(sent, idle_seconds=0.01)
    relay.submit([1])
    assert relay.flush()
    thread = relay._thread
    if thread is not None:  # (it may have ended already)
        thread.join(5)
        assert not thread.is_alive()
    relay.submit([2])
    assert relay.flush()
    assert sent.batches == [[1], [2]]
    relay.stop()
