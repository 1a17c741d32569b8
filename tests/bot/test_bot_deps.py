"""The worker pool and per-thread locks: one agent run at a time per Slack thread, never a wait
on another thread's run, and nothing a run raises goes unlogged."""
from __future__ import annotations

import logging
import threading

import pytest
from slack_sdk import WebClient

from bot.deps import Deps, KeyedLocks
from core.config import get_settings


def test_a_thread_waits_only_for_a_run_in_the_same_thread_and_its_lock_goes_when_unused() -> None:
    locks = KeyedLocks()
    release = threading.Event()
    first_in, same_thread_in, other_thread_in = threading.Event(), threading.Event(), threading.Event()

    def run(key: str, inside: threading.Event, hold: bool = False) -> None:
        with locks.hold(key):
            inside.set()
            if hold:
                release.wait(30)

    first = threading.Thread(target=run, args=("slack:C1:1", first_in, True))
    first.start()
    assert first_in.wait(30)
    follow_up = threading.Thread(target=run, args=("slack:C1:1", same_thread_in))
    other = threading.Thread(target=run, args=("slack:C1:2", other_thread_in))
    follow_up.start()
    other.start()
    assert other_thread_in.wait(30)           # another thread's question goes at once
    assert not same_thread_in.wait(0.2)       # the follow-up waits for the answer before it
    release.set()
    assert same_thread_in.wait(30)
    for t in (first, follow_up, other):
        t.join(30)
    assert len(locks) == 0


def test_an_agent_run_that_raises_past_its_own_handlers_is_logged_with_its_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    deps = Deps(settings=get_settings(), client=WebClient())

    def escapes() -> None:
        raise RuntimeError("escaped the run's handlers")

    deps.run_later(escapes, if_not_started=lambda: None)
    deps.close()
    [record] = [r for r in caplog.records if r.name == "bot.deps"]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "escaped the run's handlers" in str(record.exc_info[1])
