"""What the listeners need besides Bolt's own arguments: settings, the agent's context, a
worker pool for agent runs, the update throttle. Attached to Bolt's `context` by a middleware."""
from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
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


class KeyedLocks:
    """A lock per key, kept only while some thread holds or waits for it: threads with
    different keys never wait for each other."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, list[int]]] = {}   # key: (lock, [users])

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if users[0] == 0:
                    del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


@dataclass(frozen=True)
class Deps:
    """One per bot process. `agent_context` is called per question and per decision (tests
    give a scripted model; the default reads the configured backend and the live adapter)."""

    settings: Settings
    client: WebClient                              # the app's client, for work outside a request
    agent_context: Callable[[], AgentContext] = run.default_context
    workers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=AGENT_RUNS, thread_name_prefix="agent"))
    throttle: UpdateThrottle = field(default_factory=UpdateThrottle)
    reviewer_groups: GroupMembers = field(default_factory=GroupMembers)
    # This process, in the records of the questions it is answering (see store.release_orphans).
    process_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    _thread_locks: KeyedLocks = field(default_factory=KeyedLocks)

    @contextmanager
    def conversation(self, thread_key: str) -> Iterator[None]:
        """One agent run at a time per Slack thread in this process: a quick follow-up waits
        for the answer before it, so the thread's history stays in order."""
        with self._thread_locks.hold(thread_key):
            yield

    def run_later(self, work: Callable[[], None], *, if_not_started: Callable[[], None]) -> None:
        """Run `work` on the worker pool; `if_not_started` instead when the pool closes first
        (or has already closed: a question can arrive while the process stops)."""
        try:
            future = self.workers.submit(work)
        except RuntimeError:  # cannot schedule new futures after shutdown
            if_not_started()
            return
        future.add_done_callback(lambda f: _settled(f, if_not_started))

    def close(self) -> None:
        """Finish the agent runs under way; those not begun get their `if_not_started` (the
        process is stopping)."""
        self.workers.shutdown(wait=True, cancel_futures=True)


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
