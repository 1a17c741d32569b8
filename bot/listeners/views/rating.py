"""The 👎 modal, submitted: the reason and the suggested answer join the person's vote."""
from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack

from bot import blocks
from core import db, feedback


def handle_feedback_submission(ack: Ack, body: dict[str, Any], view: dict[str, Any],
                               logger: logging.Logger) -> None:
    ack()
    try:
        answer_id = int(view["private_metadata"])
        form = blocks.read_feedback_form(view["state"]["values"])
        with db.connection() as conn:
            if feedback.get_answer(conn, answer_id) is None:
                logger.warning("feedback on unknown answer %s ignored", answer_id)
                return
            feedback.record_rating(conn, answer_id, body["user"]["id"], "down", reason=form.reason,
                                   comment=form.comment, suggested_answer=form.suggested_answer)
    except Exception:  # the modal has closed; there is nowhere left to show an error
        logger.exception("recording 👎 details failed")
