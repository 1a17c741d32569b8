"""Review cards in the reviewers' channel, and who may decide them."""
from __future__ import annotations

import logging

import psycopg
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import posting, review_view, store
from bot.throttle import UpdateThrottle
from core import db, feedback
from core.config import Settings

logger = logging.getLogger(__name__)


def is_reviewer(client: WebClient, settings: Settings, user_id: str) -> bool:
    """Listed in `settings.reviewers`, or a member of `settings.reviewer_group` (asked of Slack
    on each decision, so a change in the group applies at once)."""
    if user_id in settings.reviewers:
        return True
    if not settings.reviewer_group:
        if not settings.reviewers:
            logger.warning("no reviewers are configured (FLYWHEEL_REVIEWERS / FLYWHEEL_REVIEWER_GROUP)")
        return False
    members = client.usergroups_users_list(usergroup=settings.reviewer_group)
    return user_id in (members.get("users") or [])


def post_card(client: WebClient, settings: Settings, review_id: int) -> None:
    """Post the card of a new review to the reviewers' channel and remember where it is. Without
    a channel (or if Slack refuses), the review still waits in the dashboard: log, don't raise."""
    with db.connection() as conn:
        review = feedback.get_review(conn, review_id)
        answer = feedback.get_answer(conn, review.answer_id) if review else None
    if review is None or answer is None:
        logger.error("review %s is gone; no card posted", review_id)
        return
    if not settings.review_channel:
        logger.warning("no review channel is configured (FLYWHEEL_REVIEW_CHANNEL); review %s waits "
                       "in the dashboard", review_id)
        return
    try:
        ts = posting.post(client, channel=settings.review_channel, thread_ts=None,
                          message=review_view.review_card(review, answer))
    except SlackApiError:
        logger.exception("could not post the card of review %s to %s", review_id, settings.review_channel)
        return
    with db.connection() as conn:
        store.set_review_card(conn, answer.id, settings.review_channel, ts)


def refresh_card(client: WebClient, throttle: UpdateThrottle, conn: psycopg.Connection, answer_id: int) -> None:
    """Redraw an answer's review card from the database (after a decision: who, when, no buttons)."""
    where = store.for_answer(conn, answer_id)
    review = feedback.review_for_answer(conn, answer_id)
    answer = feedback.get_answer(conn, answer_id)
    if where is None or where.review_ts is None or where.review_channel_id is None or review is None or answer is None:
        return
    posting.replace(client, throttle, channel=where.review_channel_id, ts=where.review_ts,
                    message=review_view.review_card(review, answer))
