"""The edit and reject modals, submitted by a reviewer: decide the review."""
from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, BoltContext
from slack_sdk import WebClient

from bot import decisions, deps, notices, review_view, reviews, store
from core import db, feedback
from core.agent.state import Decision


def handle_edit_submission(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient,
                           context: BoltContext, logger: logging.Logger) -> None:
    text = review_view.read_modal_text(view["state"]["values"], "answer")
    _submit(ack, body, view, client, context, logger, field="answer", text=text, empty=review_view.EMPTY_EDIT,
            decision={"action": "edit", "reviewer": body["user"]["id"], "text": text})


def handle_reject_submission(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient,
                             context: BoltContext, logger: logging.Logger) -> None:
    reason = review_view.read_modal_text(view["state"]["values"], "reason")
    _submit(ack, body, view, client, context, logger, field="reason", text=reason, empty=review_view.EMPTY_REASON,
            decision={"action": "reject", "reviewer": body["user"]["id"], "reason": reason})


def _submit(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient, context: BoltContext,
            logger: logging.Logger, *, field: str, text: str, empty: str, decision: Decision) -> None:
    """Check in the modal (empty text, not a reviewer, decided meanwhile), close it, then decide."""
    user = body["user"]["id"]
    if not text:
        ack(response_action="errors", errors={field: empty})
        return
    try:
        allowed = reviews.is_reviewer(client, deps.of(context).settings, user, deps.of(context).reviewer_groups)
    except Exception:
        logger.exception("checking whether %s is a reviewer failed", user)
        ack(response_action="errors", errors={field: notices.SORRY})
        return
    if not allowed:
        ack(response_action="errors", errors={field: review_view.ONLY_REVIEWERS})
        return
    review_id = int(view["private_metadata"])
    try:
        with db.connection() as conn:
            review = feedback.get_review(conn, review_id)
    except Exception:
        logger.exception("reading review %s failed", review_id)
        ack(response_action="errors", errors={field: review_view.DECISION_FAILED})
        return
    if review is None or review.status != "pending":   # decided while they typed: show by whom, keep the text
        ack(response_action="update", view=review_view.decided_meanwhile(review, text))
        return
    ack()
    channel = deps.of(context).settings.review_channel or None  # where cards go, unless the record says
    try:
        with db.connection() as conn:
            card = store.for_review(conn, review_id)
        if card is not None and card.review_channel_id:
            channel = card.review_channel_id
        decisions.decide(client, deps.of(context), review_id, decision, channel=channel)
    except Exception:
        logger.exception("deciding review %s from a modal failed", review_id)
        notices.tell(client, channel=channel, user=user, text=review_view.DECISION_FAILED)
