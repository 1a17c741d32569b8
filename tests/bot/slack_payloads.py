"""What Slack sends the bot, built from Slack's own examples (../shared/contracts/slack) with the
ids a test needs, and signed with the v0 scheme."""
from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

CONTRACTS = Path(__file__).resolve().parents[3] / "shared" / "contracts" / "slack"


@cache
def _example(name: str) -> dict[str, Any]:
    return json.loads((CONTRACTS / name).read_text())


def signed_headers(body: str, secret: str, *, timestamp: int | None = None,
                   content_type: str = "application/json") -> dict[str, str]:
    """X-Slack-Signature: v0= + hex HMAC-SHA256 of `v0:{timestamp}:{body}` with the signing secret."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"content-type": content_type, "x-slack-request-timestamp": ts, "x-slack-signature": f"v0={digest}"}


def app_mention(*, text: str, user: str, channel: str, ts: str, event_id: str, bot_user_id: str,
                thread_ts: str | None = None) -> dict[str, Any]:
    """An event_callback envelope with an app_mention, as in a channel."""
    body = copy.deepcopy(_example("events/app_mention_channel.json"))
    body["event_id"] = event_id
    body["authorizations"][0]["user_id"] = bot_user_id
    event = body["event"]
    event.update(text=f"<@{bot_user_id}> {text}", user=user, channel=channel, ts=ts, event_ts=ts)
    event["blocks"][0]["elements"][0]["elements"] = [{"type": "user", "user_id": bot_user_id},
                                                     {"type": "text", "text": f" {text}"}]
    if thread_ts:
        event["thread_ts"] = thread_ts
    return body


def direct_message(*, text: str, user: str, channel: str, ts: str, event_id: str, bot_user_id: str,
                   thread_ts: str | None = None, **extra: Any) -> dict[str, Any]:
    """An event_callback envelope with a message.im event (top-level unless thread_ts)."""
    body = copy.deepcopy(_example("events/message_im_thread_reply.json"))
    body["event_id"] = event_id
    body["authorizations"][0]["user_id"] = bot_user_id
    event = body["event"]
    event.update(text=text, user=user, channel=channel, ts=ts, event_ts=ts, **extra)
    event.pop("thread_ts", None)
    event.pop("parent_user_id", None)
    if thread_ts:
        event.update(thread_ts=thread_ts, parent_user_id=user)
    return body


def message_deleted(*, user: str, channel: str, deleted_ts: str, ts: str, event_id: str,
                    bot_user_id: str) -> dict[str, Any]:
    """An event_callback envelope with a message.im event of subtype message_deleted: `user`'s
    message at `deleted_ts` was deleted (the event is hidden and names no user; the deleted
    message rides along)."""
    body = copy.deepcopy(_example("events/message_im_thread_reply.json"))
    body["event_id"] = event_id
    body["authorizations"][0]["user_id"] = bot_user_id
    previous = {k: v for k, v in body["event"].items() if k in ("type", "text", "team")}
    body["event"] = {"type": "message", "subtype": "message_deleted", "hidden": True, "channel": channel,
                     "ts": ts, "deleted_ts": deleted_ts, "event_ts": ts, "channel_type": "im",
                     "previous_message": {**previous, "user": user, "ts": deleted_ts}}
    return body


def block_action(*, action_id: str, value: str, user: str, channel: str, message: dict[str, Any],
                 trigger_id: str = "111.222.trigger") -> dict[str, Any]:
    """A block_actions payload: `user` clicked the button `action_id` on `message`."""
    body = copy.deepcopy(_example("interactivity/block_actions_button_in_message.json"))
    body["user"].update(id=user, username=user.lower(), name=user.lower())
    body["channel"]["id"] = channel
    body["container"].update(message_ts=message["ts"], channel_id=channel)
    body["message"] = message
    body["trigger_id"] = trigger_id
    clicked = next(e for b in message.get("blocks", []) if b.get("type") == "actions"
                   for e in b["elements"] if e["action_id"] == action_id)
    body["actions"] = [{**clicked, "block_id": "x", "action_ts": f"{time.time():.6f}"}]
    body["actions"][0]["value"] = value
    return body


def view_submission(*, view: dict[str, Any], user: str, values: dict[str, Any]) -> dict[str, Any]:
    """A view_submission payload for a modal the bot opened (`view` as views.open was given it)."""
    body = copy.deepcopy(_example("interactivity/view_submission.json"))
    body["user"].update(id=user, username=user.lower(), name=user.lower())
    body["view"].update(callback_id=view["callback_id"], private_metadata=view.get("private_metadata", ""),
                        blocks=view["blocks"], title=view["title"], state={"values": values})
    return body


def form_body(payload: dict[str, Any]) -> str:
    """Interactivity payloads come form-encoded: payload=<url-encoded JSON>."""
    return urlencode({"payload": json.dumps(payload)})
