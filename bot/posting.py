"""Showing messages in Slack: replace the bot's own message in place, or post in the thread."""
from __future__ import annotations

import logging
from collections.abc import Sequence

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.blocks import Message
from bot.throttle import UpdateThrottle

logger = logging.getLogger(__name__)

# chat.update errors after which posting a new message is the right thing to do.
_GONE = {"message_not_found", "cant_update_message", "edit_window_closed"}


def replace(client: WebClient, throttle: UpdateThrottle, *, channel: str, ts: str, message: Message) -> None:
    """chat.update, spaced by the throttle."""
    throttle.wait(channel, ts)
    client.chat_update(channel=channel, ts=ts, text=message.text, blocks=message.blocks)


def post(client: WebClient, *, channel: str, thread_ts: str | None, message: Message) -> str:
    response = client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=message.text,
                                       blocks=message.blocks)
    return str(response["ts"])


def show(client: WebClient, throttle: UpdateThrottle, *, channel: str, thread_ts: str, ts: str | None,
         messages: Sequence[Message]) -> str | None:
    """Show `messages` in a thread: the first replaces the bot's message at `ts` (the
    placeholder), the rest follow it. If that message is gone (deleted by someone) or was never
    posted, the first is posted too. Returns the ts of the first message shown."""
    if not messages:
        return ts
    first = ts
    if ts is not None:
        try:
            replace(client, throttle, channel=channel, ts=ts, message=messages[0])
        except SlackApiError as e:
            if e.response.get("error") not in _GONE:
                raise
            logger.warning("message %s in %s can't be updated (%s); posting instead",
                           ts, channel, e.response.get("error"))
            first = None
    if first is None:
        first = post(client, channel=channel, thread_ts=thread_ts, message=messages[0])
    for message in messages[1:]:
        post(client, channel=channel, thread_ts=thread_ts, message=message)
    return first
