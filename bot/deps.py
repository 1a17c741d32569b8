"""What the listeners need besides Bolt's own arguments: settings, the agent's context, a
worker pool for agent runs, the update throttle. Attached to Bolt's `context` by a middleware."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import BoltContext
from slack_sdk import WebClient

from bot.throttle import UpdateThrottle
from core.agent import run
from core.agent.state import AgentContext
from core.config import Settings

KEY = "flywheel"
AGENT_RUNS = 8          # questions answered at once per bot process; more wait their turn
_STRIPES = 64


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
    _thread_locks: tuple[threading.Lock, ...] = field(
        default_factory=lambda: tuple(threading.Lock() for _ in range(_STRIPES)))

    @contextmanager
    def conversation(self, thread_key: str) -> Iterator[None]:
        """One agent run at a time per Slack thread in this process: a quick follow-up waits
        for the answer before it, so the thread's history stays in order."""
        with self._thread_locks[hash(thread_key) % _STRIPES]:
            yield

    def run_later(self, work: Callable[[], None], *, if_not_started: Callable[[], None]) -> None:
        """Run `work` on the worker pool; `if_not_started` instead when the pool closes first."""
        future = self.workers.submit(work)
        future.add_done_callback(lambda f: if_not_started() if f.cancelled() else None)

    def close(self) -> None:
        """Finish the agent runs under way; those not begun get their `if_not_started` (the
        process is stopping)."""
        self.workers.shutdown(wait=True, cancel_futures=True)


def middleware(deps: Deps) -> Callable[..., Any]:
    """A global Bolt middleware that puts `deps` into every request's context."""

    def attach_deps(context: BoltContext, next: Callable[[], None]) -> None:  # noqa: A002  (Bolt injects by name)
        context[KEY] = deps
        next()

    return attach_deps


def of(context: BoltContext) -> Deps:
    return context[KEY]  # type: ignore[no-any-return]
