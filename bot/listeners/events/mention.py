"""@mentions in channels (and in their threads, for follow-ups)."""
from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, BoltContext
from slack_sdk import WebClient

from bot import answering, deps


def handle_app_mention(ack: Ack, body: dict[str, Any], event: dict[str, Any], client: WebClient,
                       context: BoltContext, logger: logging.Logger) -> None:
    ack()
    question = answering.question_from_event(event, body.get("event_id"), context.bot_user_id)
    if question is None:
        logger.info("app_mention without an author; ignored")
        return
    answering.take_up(question, client, deps.of(context), shared_channel=bool(body.get("is_ext_shared_channel")))
