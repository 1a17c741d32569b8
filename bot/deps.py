"""What the listeners need besides Bolt's own arguments: settings, the agent's context, a
worker pool for agent runs, the update throttle. Attached to Bolt's `context` by a middleware."""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import BoltContext
from slack_sdk import WebClient

from bot.reviews import GroupMembers
from bot.throttle import UpdateThrottle
from core.agent import run
from core.agent.state import AgentContext
from core.config import Settings

logger = logging.getLogger(__name__)

KEY = "flywheel"
AGENT_RUNS = 8          # questions answered at once per bot process; more wait their turn


class KeyedQueue:
    """Work run on a pool of `workers` threads, one piece at a time per key, in the order given:
    the pieces of one key hold one worker between them, so a busy Slack thread (a burst of follow-ups) cannot take
    every worker from the other threads, and a thread's answers come in the order asked."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent")
        self._guard = threading.Lock()
        self._closed = False
        self._waiting: dict[str, deque[tuple[Callable[[], None], Callable[[], None]]]] = {}  # key: after the running

    def submit(self, key: str, work: Callable[[], None], *, if_not_started: Callable[[], None]) -> None:
        """Run `work` after the work of `key` given before it; `if_not_started` instead when the
        pool closes first (or has closed)."""
        with self._guard:
            if key in self._waiting:   # one of this key's runs: it starts this one when it is done
                self._waiting[key].append((work, if_not_started))
                return
            self._waiting[key] = deque()
        self._start(key, work, if_not_started)

    def _start(self, key: str, work: Callable[[], None], if_not_started: Callable[[], None]) -> None:
        try:
            future = self._pool.submit(work)
        except RuntimeError:  # cannot schedule new futures after shutdown
            if_not_started()
            self._next(key)
            return
        future.add_done_callback(lambda f: (_settled(f, if_not_started), self._next(key)))

    def _next(self, key: str) -> None:
        """Start the key's next piece; once closing, hand on all the rest instead. (A cancelled
        future's callback runs inside the pool's shutdown, which a submit there would wait on.)"""
        with self._guard:
            waiting = self._waiting[key]
            following = waiting.popleft() if waiting and not self._closed else None
            if following is None:
                del self._waiting[key]
        if following is not None:
            self._start(key, *following)
            return
        for _, not_started in waiting:   # closing: the rest is handed on, in order
            not_started()

    def __len__(self) -> int:
        """Keys with work running or waiting."""
        with self._guard:
            return len(self._waiting)

    def close(self) -> None:
        """Finish the work under way; the rest gets its `if_not_started`."""
        with self._guard:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class Deps:
    """One per bot process. `agent_context` is called per question and per decision (tests
    give a scripted model; the default reads the configured backend and the live adapter)."""

    settings: Settings
    client: WebClient                              # the app's client, for work outside a request
    agent_context: Callable[[], AgentContext] = run.default_context
    agent_runs: KeyedQueue = field(default_factory=lambda: KeyedQueue(AGENT_RUNS))
    throttle: UpdateThrottle = field(default_factory=UpdateThrottle)
    reviewer_groups: GroupMembers = field(default_factory=GroupMembers)
    # This process, in the records of the questions it is answering (see store.release_orphans).
    process_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")

    def run_later(self, thread_key: str, work: Callable[[], None], *, if_not_started: Callable[[], None]) -> None:
        """Run `work` on the worker pool once the work given before for the same Slack thread is
        done (one agent run at a time per thread in this process: a quick follow-up waits for
        the answer before it, so the thread's history stays in order); `if_not_started` instead
        when the pool closes first (or has already closed: a question can arrive while the
        process stops)."""
        self.agent_runs.submit(thread_key, work, if_not_started=if_not_started)

    def close(self) -> None:
        """Finish the agent runs under way; those not begun get their `if_not_started` (the
        process is stopping)."""
        self.agent_runs.close()


def _settled(future: Future[None], if_not_started: Callable[[], None]) -> None:
    """A run the pool cancelled was never begun; one that raised past its own handlers is logged
    here, since nobody waits on its future."""
    if future.cancelled():
        if_not_started()
    elif (error := future.exception()) is not None:
        logger.error("an agent run failed outside its own error handling", exc_info=error)


def middleware(deps: Deps) -> Callable[..., Any]:
    """A global Bolt middleware that puts `deps` into every request's context."""

    def attach_deps(context: BoltContext, next: Callable[[], None]) -> None:  # noqa: A002  (Bolt injects by name)
        context[KEY] = deps
        next()

    return attach_deps


def of(context: BoltContext) -> Deps:
    return context[KEY]  # type: ignore[no-any-return]
