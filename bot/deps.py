"""What the listeners need besides Bolt's own arguments: settings, the agent's context, a
worker pool for agent runs, the update throttle. Attached to Bolt's `context` by a middleware."""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
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
    """Work run on a pool of `workers` threads, one piece at a time per key, in the order given.
    A piece has keys (its Slack thread and its asker): it starts once none of them is busy and
    no piece given before it, still waiting, shares one. So a thread's answers come in the order
    asked, and neither a busy thread (a burst of follow-ups) nor one asker (a flood of
    questions) can take every worker from the others."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent")
        self._guard = threading.Lock()
        self._closed = False
        self._busy: set[str] = set()   # keys of the pieces started and not done
        self._started = 0
        self._waiting: list[tuple[frozenset[str], Callable[[], None], Callable[[], None]]] = []

    def submit(self, keys: Sequence[str], work: Callable[[], None], *, if_not_started: Callable[[], None]) -> None:
        """Run `work` after the work given before it that shares one of `keys`; `if_not_started`
        instead when the pool closes first (or has closed)."""
        with self._guard:
            self._waiting.append((frozenset(keys), work, if_not_started))
        self._dispatch()

    def _dispatch(self) -> None:
        """Start the pieces now free to start; once closing, hand them on instead. A piece handed
        on holds its keys as a running one does, so the pieces of a key are handed on in order
        whichever thread hands them on."""
        while True:
            with self._guard:
                free, still, blocked = [], [], set(self._busy)
                for piece in self._waiting:
                    keys = piece[0]
                    if keys & blocked:
                        still.append(piece)   # it waits, and so does any later piece sharing a key with it
                    else:
                        free.append(piece)
                        self._busy |= keys
                        self._started += 1
                    blocked |= keys
                self._waiting = still
                closed = self._closed
            if not free:
                return
            for keys, work, if_not_started in free:
                if not closed:
                    self._start(keys, work, if_not_started)
                    continue
                try:
                    if_not_started()
                finally:
                    self._release(keys)
            if not closed:
                return   # the next pieces start as these are done

    def _start(self, keys: frozenset[str], work: Callable[[], None], if_not_started: Callable[[], None]) -> None:
        try:
            future = self._pool.submit(work)
        except RuntimeError:  # cannot schedule new futures after shutdown
            try:
                if_not_started()
            finally:
                self._done(keys)
            return
        future.add_done_callback(lambda f: self._finished(f, keys, if_not_started))

    def _finished(self, future: Future[None], keys: frozenset[str], if_not_started: Callable[[], None]) -> None:
        try:
            _settled(future, if_not_started)
        finally:
            self._done(keys)

    def _release(self, keys: frozenset[str]) -> None:
        with self._guard:
            self._busy -= keys
            self._started -= 1

    def _done(self, keys: frozenset[str]) -> None:
        self._release(keys)
        self._dispatch()

    def __len__(self) -> int:
        """Pieces of work running or waiting."""
        with self._guard:
            return self._started + len(self._waiting)

    def close(self) -> None:
        """Finish the work under way; the rest gets its `if_not_started`. (A cancelled future's
        callback runs inside the pool's shutdown, which a submit there would wait on: once
        closing, nothing is submitted.)"""
        with self._guard:
            self._closed = True
        self._dispatch()
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

    def run_later(self, thread_key: str, asker: str, work: Callable[[], None], *,
                  if_not_started: Callable[[], None]) -> None:
        """Run `work` on the worker pool once the work given before for the same Slack thread,
        or from the same asker, is done (one agent run at a time per thread and per asker in this
        process: a quick follow-up waits for the answer before it, so the thread's history stays
        in order, and one asker's flood of questions waits on itself, not on everyone else);
        `if_not_started` instead when the pool closes first (or has already closed: a question
        can arrive while the process stops)."""
        self.agent_runs.submit((thread_key, f"asker:{asker}"), work, if_not_started=if_not_started)

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
