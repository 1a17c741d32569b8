"""The agent runs: one at a time per Slack thread and per asker, in order, holding one worker
per thread and asker (a busy thread, or an asker's flood of questions, never starves the others);
nothing a run raises goes unlogged; work not begun when the bot stops is handed on."""
from __future__ import annotations

import logging
import threading

import pytest
from slack_sdk import WebClient
from support.polling import wait_until

from bot.deps import Deps, KeyedQueue
from core.config import get_settings


def test_a_busy_thread_holds_one_worker_and_its_questions_run_in_order() -> None:
    runs = KeyedQueue(workers=2)
    release = threading.Event()
    order: list[str] = []
    other_thread_in = threading.Event()

    def run(name: str, hold: bool = False, inside: threading.Event | None = None) -> None:
        order.append(name)
        if inside is not None:
            inside.set()
        if hold:
            release.wait(30)

    first_in = threading.Event()
    runs.submit(["slack:C1:1"], lambda: run("first", hold=True, inside=first_in), if_not_started=lambda: None)
    assert first_in.wait(30)
    for n in range(2, 6):   # a burst of follow-ups in the same thread
        runs.submit(["slack:C1:1"], lambda n=n: run(f"follow-up {n}"), if_not_started=lambda: None)
    runs.submit(["slack:C1:2"], lambda: run("other thread", inside=other_thread_in), if_not_started=lambda: None)
    assert other_thread_in.wait(30)   # the second worker was free for another thread's question
    assert order == ["first", "other thread"]   # the follow-ups wait for the answer before them
    release.set()
    wait_until(lambda: len(runs) == 0, what="the thread's questions answered")
    assert order == ["first", "other thread", "follow-up 2", "follow-up 3", "follow-up 4", "follow-up 5"]
    runs.close()


def test_one_askers_flood_of_questions_holds_one_worker_and_others_are_answered_meanwhile() -> None:
    runs = KeyedQueue(workers=3)
    release = threading.Event()
    order: list[str] = []
    inside = {name: threading.Event() for name in ("flood 0", "asker B", "asker C")}

    def run(name: str) -> None:   # a slow answer each, until released
        order.append(name)
        if name in inside:
            inside[name].set()
        release.wait(30)

    for n in range(6):   # six top-level DMs from one asker: six threads, one asker
        runs.submit([f"slack:DA:{n}", "asker:UA"], lambda n=n: run(f"flood {n}"), if_not_started=lambda: None)
    assert inside["flood 0"].wait(10)
    runs.submit(["slack:DB:1", "asker:UB"], lambda: run("asker B"), if_not_started=lambda: None)
    runs.submit(["slack:DC:1", "asker:UC"], lambda: run("asker C"), if_not_started=lambda: None)
    # Both others at once beside the flood: it holds one of the three workers, no more.
    assert inside["asker B"].wait(10) and inside["asker C"].wait(10)
    assert sorted(order) == ["asker B", "asker C", "flood 0"] and len(runs) == 8
    release.set()
    wait_until(lambda: len(runs) == 0, what="the flood answered")
    assert [name for name in order if name.startswith("flood")] == [f"flood {n}" for n in range(6)]   # in order
    runs.close()


def _one_worker_busy() -> tuple[KeyedQueue, threading.Event]:
    """Runs on one worker, which a piece of work keyed "t0" holds until the event is set."""
    runs = KeyedQueue(workers=1)
    release, started = threading.Event(), threading.Event()

    def held() -> None:
        started.set()
        release.wait(30)

    runs.submit(["t0"], held, if_not_started=lambda: None)
    assert started.wait(30)
    return runs, release


def test_work_not_begun_when_the_runs_close_is_handed_on_in_order() -> None:
    runs, release = _one_worker_busy()
    handed_on: list[str] = []
    for name in ("t1 first", "t2 first", "t1 second", "t1 third"):   # t1 first waits in the pool, the rest here
        runs.submit([name.split()[0]], lambda: None, if_not_started=lambda name=name: handed_on.append(name))
    closing = threading.Thread(target=runs.close)
    closing.start()
    wait_until(lambda: handed_on, what="the close to cancel what had not begun")   # with the held run still going
    release.set()
    closing.join(30)
    assert not closing.is_alive(), "closing hung"
    assert [n for n in handed_on if n.startswith("t1")] == ["t1 first", "t1 second", "t1 third"]
    assert sorted(handed_on) == ["t1 first", "t1 second", "t1 third", "t2 first"]
    runs.submit(["t3"], lambda: None, if_not_started=lambda: handed_on.append("after close"))
    assert handed_on[-1] == "after close" and len(runs) == 0


def test_a_hand_on_that_fails_does_not_hold_up_the_rest_of_its_thread() -> None:
    runs, release = _one_worker_busy()
    handed_on: list[str] = []

    def fails() -> None:
        handed_on.append("t1 first")
        raise RuntimeError("the database is down")

    runs.submit(["t1", "asker:U1"], lambda: None, if_not_started=fails)
    runs.submit(["t1", "asker:U2"], lambda: None, if_not_started=lambda: handed_on.append("t1 second"))
    closing = threading.Thread(target=runs.close)
    closing.start()
    wait_until(lambda: len(handed_on) == 2, what="both handed on")
    release.set()
    closing.join(30)
    assert not closing.is_alive(), "closing hung"
    assert handed_on == ["t1 first", "t1 second"] and len(runs) == 0


def test_an_agent_run_that_raises_past_its_own_handlers_is_logged_with_its_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    deps = Deps(settings=get_settings(), client=WebClient())

    def escapes() -> None:
        raise RuntimeError("escaped the run's handlers")

    deps.run_later("slack:C1:1", "U1", escapes, if_not_started=lambda: None)
    deps.close()
    [record] = [r for r in caplog.records if r.name == "bot.deps"]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "escaped the run's handlers" in str(record.exc_info[1])
