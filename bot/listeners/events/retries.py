"""Slack retries an event it thinks timed out: answer each event id once."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
from slack_bolt import BoltRequest, BoltResponse

from bot import store
from core import db


def drop_retries(body: dict[str, Any], request: BoltRequest, next: Callable[[], None],  # noqa: A002
                 logger: logging.Logger) -> BoltResponse | None:
    """Listener middleware: record the event id before the listener runs (and before Slack's
    request is answered); an id already recorded is acknowledged and dropped. With the database
    down, a first delivery goes on and a retry is dropped."""
    event_id = body.get("event_id")
    if not event_id:
        next()
        return None
    retry = (request.headers.get("x-slack-retry-num") or [None])[0]
    try:
        with db.connection() as conn:
            first = store.record_event(conn, event_id, (body.get("event") or {}).get("type") or "unknown")
    except psycopg.Error:   # a pool timeout too
        # The database is down. Slack is answered all the same, or it would send the event again
        # and again in vain: the first delivery goes on to the listener, whose own failure to record
        # the question leaves an apology in the thread; a retry is dropped, to leave one apology.
        logger.exception("could not record event %s (retry %s)", event_id, retry or "none")
        first = retry is None
    if first:
        next()
        return None
    logger.info("event %s already taken up; dropping retry %s", event_id, retry)
    return BoltResponse(status=200, body="")
