"""A reviewer's decision taken in Slack: resume the agent's thread, then post the result at once."""
from __future__ import annotations

import logging

from slack_sdk import WebClient

from bot import deliveries, notices, review_view
from bot.deps import Deps
from core import db, feedback
from core.agent import run
from core.agent.state import Decision

logger = logging.getLogger(__name__)


def decide(client: WebClient, deps: Deps, review_id: int, decision: Decision, *, channel: str | None) -> bool:
    """Apply `decision` through `run.decide` (which claims the review row, so a second click or
    a second reviewer changes nothing) and drain the outbox, which posts the answer in the
    asker's thread and redraws the card. The reviewer hears in `channel` when nothing changed.
    True when this call decided the review."""
    reviewer = decision["reviewer"]
    try:
        outcome = run.decide(review_id, decision, context=deps.agent_context())
    except (run.ReviewNotFound, ValueError) as e:
        notices.tell(client, channel=channel, user=reviewer, text=str(e))
        return False
    except Exception:
        logger.exception("deciding review %s failed", review_id)
        notices.tell(client, channel=channel, user=reviewer, text=review_view.DECISION_FAILED)
        return False
    if outcome is None:
        with db.connection() as conn:
            review = feedback.get_review(conn, review_id)
        notices.tell(client, channel=channel, user=reviewer, text=review_view.already_decided(review, reviewer))
        return False
    try:
        deliveries.drain(deps)
    except Exception:  # decided and queued: the delivery loop posts it on its next round
        logger.exception("posting the decision on review %s failed; the delivery loop will retry", review_id)
    return True
