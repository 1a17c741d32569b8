"""The 👎 modal, submitted: the reason and the suggested answer join the person's vote. It is
recorded before the modal closes: the person sees a thank-you, or, if recording failed, the modal
stays open with what they wrote, to send again. An answer deleted since is said so."""
from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack

from bot import blocks, notices
from core import db, feedback


def handle_feedback_submission(ack: Ack, body: dict[str, Any], view: dict[str, Any],
                               logger: logging.Logger) -> None:
    try:
        answer_id = int(view["private_metadata"])
        form = blocks.read_feedback_form(view["state"]["values"])
        with db.connection() as conn:
            if feedback.get_answer(conn, answer_id) is None:
                logger.warning("feedback on unknown answer %s ignored", answer_id)
                ack(response_action="update", view=_closing(blocks.ANSWER_GONE))
                return
            feedback.record_rating(conn, answer_id, body["user"]["id"], "down", reason=form.reason,
                                   comment=form.comment, suggested_answer=form.suggested_answer)
    except Exception:
        logger.exception("recording 👎 details failed")
        ack(response_action="errors", errors={"reason": notices.SORRY})
        return
    ack(response_action="update", view=_closing(blocks.THANKS_DOWN))


def _closing(text: str) -> dict[str, Any]:
    return blocks.closing_modal(blocks.FEEDBACK_TITLE, [blocks.section(text)], callback_id=blocks.FEEDBACK_MODAL)
