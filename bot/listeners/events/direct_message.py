"""Direct messages to the bot (message.im), top-level or in a DM thread."""
from __future__ import annotations

from typing import Any

from slack_bolt import Ack, BoltContext
from slack_sdk import WebClient

from bot import answering, deps


def handle_direct_message(ack: Ack, body: dict[str, Any], event: dict[str, Any], client: WebClient,
                          context: BoltContext) -> None:
    ack()
    if event.get("subtype") == "message_deleted" and event.get("channel_type") == "im":
        deleted = event.get("previous_message") or {}   # a person's message, not one of a bot
        asker = deleted.get("user") if not deleted.get("bot_id") else None
        answering.question_deleted(event["channel"], event["deleted_ts"], asker, client, deps.of(context))
        return
    if not answering.is_direct_question(event):
        return  # edits, bots, channel messages: nothing to answer
    question = answering.question_from_event(event, body.get("event_id"), context.bot_user_id)
    if question is not None:   # a DM with someone of another organisation is a shared channel too
        answering.take_up(question, client, deps.of(context), shared_channel=bool(body.get("is_ext_shared_channel")))
