"""At most one chat.update per message per interval (Slack's chat.update is Tier 3; about one
update a second per message keeps a busy channel clear of 429s)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable


class UpdateThrottle:
    """Per-process spacing of updates to the same message. `wait` reserves the next slot for a
    message and sleeps until it comes; different messages never wait for each other."""

    def __init__(self, interval_s: float = 1.0, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._sleep = sleep
        self._next: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def wait(self, channel: str, ts: str) -> None:
        with self._lock:
            now = self._clock()
            # Forget slots long past, so the map stays as small as the set of busy messages.
            self._next = {k: t for k, t in self._next.items() if t > now}
            slot = max(now, self._next.get((channel, ts), now))
            self._next[(channel, ts)] = slot + self.interval_s
        if slot > now:
            self._sleep(slot - now)
