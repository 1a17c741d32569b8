"""Ephemeral replies to one person: thanks for a vote, "only reviewers can do this", errors."""
from __future__ import annotations

import logging
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

logger = logging.getLogger(__name__)

SORRY = "Sorry, that didn't work; the error has been logged. Please try again in a moment."


def tell(client: WebClient, *, channel: str | None, user: str, text: str, thread_ts: str | None = None) -> None:
    """Only `user` sees it. Best effort: a notice that can't be shown is logged, not raised."""
    if not channel:
        logger.warning("no channel to tell %s: %s", user, text)
        return
    try:
        client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
    except SlackApiError:
        logger.exception("could not tell %s in %s: %s", user, channel, text)


def tell_clicker(client: WebClient, body: dict[str, Any], text: str) -> None:
    """Reply to whoever clicked a button, where the button is (in its thread, if it is in one)."""
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    message = body.get("message") or {}
    # A message that starts a thread carries its own ts as thread_ts: reply beside it, not inside.
    thread_ts = message.get("thread_ts") if message.get("thread_ts") != message.get("ts") else None
    tell(client, channel=channel, user=body["user"]["id"], text=text, thread_ts=thread_ts)
