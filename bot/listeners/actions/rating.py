"""👍 and 👎 on an answer: one vote per person and answer; a later click changes it."""
from __future__ import annotations

import logging
from typing import Any

import psycopg
from slack_bolt import Ack
from slack_sdk import WebClient

from bot import blocks, notices
from core import db, feedback


def handle_rate_up(ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient,
                   logger: logging.Logger) -> None:
    ack()
    try:
        answer_id, user = int(action["value"]), body["user"]["id"]
        with db.connection() as conn:
            known = _known(conn, answer_id, logger)
            if known:
                feedback.record_rating(conn, answer_id, user, "up")
        notices.tell_clicker(client, body, blocks.THANKS_UP if known else blocks.ANSWER_GONE)
    except Exception:
        logger.exception("recording a 👍 failed")
        notices.tell_clicker(client, body, notices.SORRY)


def handle_rate_down(ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient,
                     logger: logging.Logger) -> None:
    """Count the 👎 at once (the modal may be closed unanswered) and ask what was wrong. A
    person who already said what was wrong sees their earlier answers in the modal."""
    ack()
    try:
        answer_id, user = int(action["value"]), body["user"]["id"]
        previous = None
        with db.connection() as conn:
            known = _known(conn, answer_id, logger)
            if known:
                previous = next((f for f in feedback.ratings_for(conn, answer_id) if f.user_id == user), None)
                if previous is None or previous.rating != "down":
                    feedback.record_rating(conn, answer_id, user, "down")
                    previous = None
        if not known:
            notices.tell_clicker(client, body, blocks.ANSWER_GONE)
            return
        client.views_open(trigger_id=body["trigger_id"], view=blocks.feedback_modal(answer_id, previous))
    except Exception:
        logger.exception("recording a 👎 failed")
        notices.tell_clicker(client, body, notices.SORRY)


def _known(conn: psycopg.Connection, answer_id: int, logger: logging.Logger) -> bool:
    if feedback.get_answer(conn, answer_id) is None:
        logger.warning("vote on unknown answer %s ignored", answer_id)
        return False
    return True
