"""Review card buttons. Only reviewers may decide; everyone else is told so, privately."""
from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, BoltContext
from slack_sdk import WebClient

from bot import decisions, deps, notices, review_view, reviews
from core import db, feedback


def handle_approve(ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient,
                   context: BoltContext, logger: logging.Logger) -> None:
    ack()
    try:
        if not _reviewer(client, body, context):
            return
        user = body["user"]["id"]
        decisions.decide(client, deps.of(context), int(action["value"]), {"action": "approve", "reviewer": user},
                         channel=body["channel"]["id"])
    except Exception:
        logger.exception("approving a review failed")
        notices.tell_clicker(client, body, review_view.DECISION_FAILED)


def handle_edit(ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient,
                context: BoltContext, logger: logging.Logger) -> None:
    """Open the edit modal with the draft in it; the submission decides (views/review.py)."""
    ack()
    try:
        if not _reviewer(client, body, context):
            return
        review_id = int(action["value"])
        review, answer = _review(review_id)
        if answer is None:
            notices.tell_clicker(client, body, review_view.already_decided(review, body["user"]["id"]))
            return
        if answer.restricted and not deps.of(context).settings.reviewers_see_restricted:
            notices.tell_clicker(client, body, review_view.RESTRICTED_EDIT)
            return
        client.views_open(trigger_id=body["trigger_id"], view=review_view.edit_modal(review_id, answer.draft or ""))
    except Exception:
        logger.exception("opening the edit modal failed")
        notices.tell_clicker(client, body, notices.SORRY)


def handle_reject(ack: Ack, body: dict[str, Any], action: dict[str, Any], client: WebClient,
                  context: BoltContext, logger: logging.Logger) -> None:
    """Ask for the reason; the submission decides (views/review.py)."""
    ack()
    try:
        if not _reviewer(client, body, context):
            return
        review_id = int(action["value"])
        review, waiting = _review(review_id)
        if waiting is None:  # before the reviewer types a reason for nothing
            notices.tell_clicker(client, body, review_view.already_decided(review, body["user"]["id"]))
            return
        client.views_open(trigger_id=body["trigger_id"], view=review_view.reject_modal(review_id))
    except Exception:
        logger.exception("opening the reject modal failed")
        notices.tell_clicker(client, body, notices.SORRY)


def _reviewer(client: WebClient, body: dict[str, Any], context: BoltContext) -> bool:
    if reviews.is_reviewer(client, deps.of(context).settings, body["user"]["id"], deps.of(context).reviewer_groups):
        return True
    notices.tell_clicker(client, body, review_view.ONLY_REVIEWERS)
    return False


def _review(review_id: int) -> tuple[feedback.Review | None, feedback.Answer | None]:
    """A review, and its answer while it still waits for its decision (None once decided, or gone)."""
    with db.connection() as conn:
        review = feedback.get_review(conn, review_id)
        answer = feedback.get_answer(conn, review.answer_id) if review else None
    return review, (answer if review is not None and review.status == "pending" else None)
