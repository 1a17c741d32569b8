"""Post what reviewers decided, wherever they decided it (Slack, dashboard, CLI): the outbox.

`core.agent.run.decide` queues one delivery row per decided answer and NOTIFYs. The bot claims
rows for surface 'slack' one at a time and posts each inside the claiming transaction, so a
post that fails for a passing reason (network) rolls the claim back and is tried again later,
and two bot processes never post the same row. The same loop takes up the questions a stopped
bot left waiting (`answering.answer_waiting`), at start-up and on every round after."""
from __future__ import annotations

import logging
import threading
import time

import psycopg
from psycopg import sql
from slack_sdk.errors import SlackApiError

from bot import answering, blocks, posting, reviews, store
from bot.deps import Deps
from core import db, feedback

logger = logging.getLogger(__name__)

EVENT_MEMORY_S = 24 * 3600   # Slack retries within minutes; a day of event ids is plenty


def drain(deps: Deps) -> int:
    """Post every queued Slack delivery; returns how many were taken. Raises on a passing
    failure, leaving that row (and the rest) queued."""
    taken = 0
    while True:
        with db.connection() as conn:
            items = feedback.claim_deliveries(conn, "slack", limit=1)
            if not items:
                return taken
            deliver(deps, conn, items[0])
        taken += 1


def deliver(deps: Deps, conn: psycopg.Connection, item: feedback.Delivery) -> None:
    """Post one delivery in the asker's thread, then redraw the review card. Slack refusing
    (archived channel, bot removed) is final: logged, and the row counts as delivered."""
    where = store.for_answer(conn, item.answer_id)
    answer = feedback.get_answer(conn, item.answer_id)
    if where is None or answer is None:
        logger.error("answer %s has no Slack thread on record; its %s is not posted", item.answer_id, item.kind)
        return
    messages = (blocks.answer_messages(item.answer_id, item.text, answer.sources) if item.kind == "answer"
                else [blocks.note(item.text)])
    try:
        first = posting.show(deps.client, deps.throttle, channel=where.channel_id, thread_ts=where.thread_ts,
                             ts=None, messages=messages)
    except SlackApiError:
        logger.exception("Slack refused the %s for answer %s; not retrying", item.kind, item.answer_id)
        return
    store.set_delivered(conn, item.answer_id, first or "")
    try:
        reviews.refresh_card(deps.client, deps.throttle, conn, item.answer_id)
    except Exception:  # the asker has the answer; a stale card must not re-post it
        logger.exception("could not redraw the review card of answer %s", item.answer_id)


class DeliveryLoop:
    """A background thread in the bot process: LISTENs for new deliveries and drains at once,
    and drains every `poll_s` anyway (a missed notification, a row whose post failed); takes
    up waiting questions each time."""

    def __init__(self, deps: Deps, *, poll_s: float = 30.0, url: str | None = None) -> None:
        self.deps = deps
        self.poll_s = poll_s
        self._url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deliveries", daemon=True)

    def start(self) -> DeliveryLoop:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url or db.database_url(), autocommit=True) as conn:
                    # LISTEN before the first drain: a row queued in between is seen by one or the other.
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(feedback.DELIVERY_CHANNEL)))
                    backoff = 1.0
                    self._listen(conn)
            except Exception:
                logger.exception("delivery loop lost its database connection; retrying in %.0fs", backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)

    def _listen(self, conn: psycopg.Connection) -> None:
        forget_at = 0.0
        while not self._stop.is_set():
            self._drain()
            self._answer_waiting()
            if time.monotonic() >= forget_at:
                store.forget_events(conn, EVENT_MEMORY_S)
                forget_at = time.monotonic() + 3600
            deadline = time.monotonic() + self.poll_s
            # Short waits, so stop() is quick; any notification ends the wait.
            while not self._stop.is_set() and time.monotonic() < deadline:
                if list(conn.notifies(timeout=0.5, stop_after=1)):
                    break

    def _drain(self) -> None:
        try:
            drain(self.deps)
        except Exception:
            logger.exception("posting deliveries failed; trying again on the next wake-up")

    def _answer_waiting(self) -> None:
        try:
            answering.answer_waiting(self.deps.client, self.deps)
        except Exception:
            logger.exception("taking up waiting questions failed; trying again on the next wake-up")
