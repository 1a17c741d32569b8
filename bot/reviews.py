"""Review cards in the reviewers' channel, and who may decide them."""
from __future__ import annotations

import logging
import math
import threading
import time

import psycopg
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import posting, review_view, store
from bot.throttle import UpdateThrottle
from core import db, feedback
from core.config import Settings

logger = logging.getLogger(__name__)


class GroupMembers:
    """Members of Slack user groups, asked of Slack at most once per `max_age_s` a group. Every
    review click checks them before Slack's 3-second deadline, and Slack allows about 20 of
    these calls a minute: asking each time, a busy review channel was made to wait out 429s."""

    def __init__(self, max_age_s: float = 60.0) -> None:
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, frozenset[str]]] = {}   # group: (read at, members)

    def of(self, client: WebClient, group: str) -> frozenset[str]:
        with self._lock:
            read_at, members = self._known.get(group, (-math.inf, frozenset()))
        if time.monotonic() - read_at < self.max_age_s:
            return members
        members = frozenset(client.usergroups_users_list(usergroup=group).get("users") or [])
        with self._lock:
            self._known[group] = (time.monotonic(), members)
        return members


def is_reviewer(client: WebClient, settings: Settings, user_id: str, groups: GroupMembers) -> bool:
    """Listed in `settings.reviewers`, or a member of `settings.reviewer_group` (so a change in
    the group applies within `groups.max_age_s`)."""
    if user_id in settings.reviewers:
        return True
    if not settings.reviewer_group:
        if not settings.reviewers:
            logger.warning("no reviewers are configured (FLYWHEEL_REVIEWERS / FLYWHEEL_REVIEWER_GROUP)")
        return False
    return user_id in groups.of(client, settings.reviewer_group)


def post_card(client: WebClient, settings: Settings, review_id: int) -> None:
    """Post the card of a new review to the reviewers' channel and remember where it is. Without
    a channel (or if Slack refuses, or cannot be reached), the review still waits in the
    dashboard: log, don't raise; the delivery loop tries again (`post_missing_cards`)."""
    with db.connection() as conn:
        _post_card(conn, client, settings, review_id)


def post_missing_cards(client: WebClient, settings: Settings) -> None:
    """Post the cards a failed post left out: pending reviews of Slack questions the bot is done
    with that have no card. Each is taken (row-locked) for its post, so two bot processes never
    both post one, and one Slack keeps refusing does not hold back the others."""
    if not settings.review_channel:
        return
    with db.connection() as conn:
        missing = store.reviews_without_card(conn)
    for review_id in missing:
        with db.connection() as conn:
            if store.take_for_card(conn, review_id):
                _post_card(conn, client, settings, review_id)


def _post_card(conn: psycopg.Connection, client: WebClient, settings: Settings, review_id: int) -> None:
    review = feedback.get_review(conn, review_id)
    answer = feedback.get_answer(conn, review.answer_id) if review else None
    where = store.for_answer(conn, answer.id) if answer else None
    if review is None or answer is None:
        logger.error("review %s is gone; no card posted", review_id)
        return
    if where is not None and where.review_ts is not None:   # by a process that stopped before it was done
        logger.info("the card of review %s is already posted", review_id)
        return
    if not settings.review_channel:
        logger.warning("no review channel is configured (FLYWHEEL_REVIEW_CHANNEL); review %s waits "
                       "in the dashboard", review_id)
        return
    try:
        ts = posting.post(client, channel=settings.review_channel, thread_ts=None,
                          message=card(conn, review, answer, settings))
    except (SlackApiError, OSError):   # refused, or out of reach: the asker keeps the review note, not an apology
        logger.exception("could not post the card of review %s to %s; trying again later",
                         review_id, settings.review_channel)
        return
    store.set_review_card(conn, answer.id, settings.review_channel, ts)


def remind_overdue(client: WebClient, settings: Settings) -> int:
    """Remind the reviewers of each review pending for `review_reminder_hours` (since its card
    went up, or its last reminder) in its card's thread, naming the reviewer group; returns how
    many were posted. Each is claimed before it is posted, so it is reminded at most once per
    interval: one Slack refuses (a deleted card) or that fails to reach Slack is tried again
    after the next interval, not every round."""
    if not settings.review_reminder_hours:
        return 0
    with db.connection() as conn:
        overdue = store.take_overdue_reviews(conn, settings.review_reminder_hours * 3600)
    posted = 0
    for put_to_review, where in overdue:
        try:
            posting.post(client, channel=where.review_channel_id, thread_ts=where.review_ts,  # type: ignore[arg-type]
                         message=review_view.reminder(put_to_review, settings.reviewer_group))
            posted += 1
        except Exception:   # one failing must not hold back the others
            logger.exception("could not remind the reviewers of answer %s; trying again in %s hours",
                             where.answer_id, settings.review_reminder_hours)
    return posted


def card(conn: psycopg.Connection, review: feedback.Review, answer: feedback.Answer, settings: Settings) -> Message:
    """The review card of `answer` as it stands, with the turn before it."""
    return review_view.review_card(review, answer, feedback.earlier_turn(conn, answer),
                                   show_restricted=settings.reviewers_see_restricted)


def redraw_card(client: WebClient, throttle: UpdateThrottle, conn: psycopg.Connection, where: store.SlackAnswer,
                answer: feedback.Answer, settings: Settings) -> None:
    """Redraw an answer's review card from the database (after a decision: who, when, no buttons),
    for a caller that has read the answer and where it lives already."""
    review = feedback.review_for_answer(conn, answer.id)
    if where.review_ts is None or where.review_channel_id is None or review is None:
        return
    posting.replace(client, throttle, channel=where.review_channel_id, ts=where.review_ts,
                    message=card(conn, review, answer, settings))


def report_undelivered(client: WebClient, throttle: UpdateThrottle, conn: psycopg.Connection,
                       where: store.SlackAnswer, answer: feedback.Answer, kind: feedback.DeliveryKind, why: str,
                       settings: Settings) -> None:
    """A decided answer (or the note that it was rejected) never reached the asker: say so in
    the card's thread, so the reviewers can reach the asker another way, then redraw the card
    (the decision, no buttons)."""
    if where.review_ts is None or where.review_channel_id is None:
        return
    posting.post(client, channel=where.review_channel_id, thread_ts=where.review_ts,
                 message=review_view.undelivered(answer, kind, why))
    redraw_card(client, throttle, conn, where, answer, settings)
