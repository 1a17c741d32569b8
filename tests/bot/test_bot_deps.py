"""One agent run at a time per Slack thread, and never a wait on another thread's run."""
from __future__ import annotations

import threading

from bot.deps import KeyedLocks


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
