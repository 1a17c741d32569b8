"""What the bot tests share besides fixtures: who is who, the running bot as a test drives it,
and waiting on what the bot writes. (Imported by name; `from conftest import` would pick up
whichever conftest module pytest imported first.)"""
from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from bot.answering import Heartbeat
from bot.deliveries import DeliveryLoop
from bot.deps import Deps
from core import db
from core.agent.state import AgentContext
from support.fake_slack import Call, FakeSlack
from support.polling import wait_until
from support.scripted_model import ScriptedModel

import slack_payloads

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_USER = "UBOT"
ASKER = "UASK"
REVIEWER = "UREV"
GROUP = "S0REVIEW"
GROUP_MEMBER = "UGRP"
OUTSIDER = "UOUT"
REVIEW_CHANNEL = "CREVIEW"
HANDBOOK_URL = "https://handbook.example/it?section=laptops&lang=en"

LAPTOP_ANSWER = "New laptops are ordered through the IT portal under Hardware > Laptop request [1]."
SALARY_QUESTION = "When are salary bands reviewed?"
SALARY_DRAFT = "Salary bands are reviewed each March by the People team [1]."


@dataclass
class SlackBot:
    """The bot under test: its HTTP address, the fake Slack it talks to, and helpers that send
    it what Slack would."""

    url: str
    slack: FakeSlack
    deps: Deps
    context: Callable[[], AgentContext]
    loop: DeliveryLoop
    heartbeat: Heartbeat
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def next_ts(self) -> str:
        n = next(self._ids)
        return f"{1_600_000_000 + n}.{n:06d}"

    def post(self, body: str, *, content_type: str = "application/json", timestamp: int | None = None,
             secret: str = SECRET, headers: dict[str, str] | None = None) -> httpx.Response:
        signed = slack_payloads.signed_headers(body, secret, timestamp=timestamp, content_type=content_type)
        return httpx.post(self.url, content=body.encode(), headers={**signed, **(headers or {})}, timeout=30)

    def send_event(self, envelope: dict[str, Any], *, retry_num: int | None = None) -> httpx.Response:
        headers = {"x-slack-retry-num": str(retry_num), "x-slack-retry-reason": "http_timeout"} if retry_num else None
        response = self.post(json.dumps(envelope), headers=headers)
        assert response.status_code == 200, response.text
        return response

    def mention(self, text: str, *, user: str = ASKER, channel: str = "CGENERAL", thread_ts: str | None = None,
                event_id: str | None = None, retry_num: int | None = None, shared: bool = False) -> str:
        """@mention the bot; returns the message ts (the thread the answer goes to, if top-level).
        `shared`: in a channel shared with another organisation (Slack Connect)."""
        ts = self.next_ts()
        envelope = slack_payloads.app_mention(text=text, user=user, channel=channel, ts=ts,
                                              event_id=event_id or f"Ev{ts}", bot_user_id=BOT_USER, thread_ts=thread_ts)
        self.send_event({**envelope, "is_ext_shared_channel": shared}, retry_num=retry_num)
        return ts

    def dm(self, text: str, *, user: str = ASKER, channel: str = "DASKER", thread_ts: str | None = None,
           shared: bool = False, **extra: Any) -> str:
        ts = self.next_ts()
        envelope = slack_payloads.direct_message(text=text, user=user, channel=channel, ts=ts, event_id=f"Ev{ts}",
                                                 bot_user_id=BOT_USER, thread_ts=thread_ts, **extra)
        self.send_event({**envelope, "is_ext_shared_channel": shared})
        return ts

    def delete(self, ts: str, *, user: str = ASKER, channel: str = "DASKER") -> None:
        """`user` deletes their message `ts` in a DM with the bot."""
        now = self.next_ts()
        self.send_event(slack_payloads.message_deleted(user=user, channel=channel, deleted_ts=ts, ts=now,
                                                       event_id=f"Ev{now}", bot_user_id=BOT_USER))

    def click(self, message: Call | dict[str, Any], action_id: str, *, user: str, channel: str | None = None,
              value: str | None = None) -> httpx.Response:
        """`user` clicks a button on a message the bot posted (or updated)."""
        shown = self.message_of(message) if isinstance(message, Call) else message
        channel = channel or (message.args["channel"] if isinstance(message, Call) else "C?")
        buttons = {e["action_id"]: e for b in shown["blocks"] if b.get("type") == "actions" for e in b["elements"]}
        payload = slack_payloads.block_action(action_id=action_id, value=value or buttons[action_id]["value"],
                                              user=user, channel=channel, message=shown)
        response = self.post(slack_payloads.form_body(payload), content_type="application/x-www-form-urlencoded")
        assert response.status_code == 200, response.text
        return response

    def submit(self, view: dict[str, Any], values: dict[str, Any], *, user: str) -> httpx.Response:
        payload = slack_payloads.view_submission(view=view, user=user, values=values)
        response = self.post(slack_payloads.form_body(payload), content_type="application/x-www-form-urlencoded")
        assert response.status_code == 200, response.text
        return response

    def message_of(self, call: Call) -> dict[str, Any]:
        """The message as Slack holds it now (after any updates), with its ts."""
        return self.slack.messages[(call.args["channel"], call.args.get("ts") or call.response["ts"])]

    # -- waiting on what the bot does --------------------------------------------------------

    def placeholder(self, channel: str, thread_ts: str) -> Call:
        return self.slack.wait_for("chat.postMessage", lambda c: c.args["channel"] == channel
                                   and c.args.get("thread_ts") == thread_ts)[0]

    def reply(self, channel: str, thread_ts: str, *, count: int = 1) -> Call:
        """The placeholder's replacement (chat.update), once the agent has answered."""
        placeholder = self.placeholder(channel, thread_ts)
        ts = placeholder.response["ts"]
        return self.slack.wait_for("chat.update", lambda c: c.args["channel"] == channel and c.args["ts"] == ts,
                                   count=count)[-1]

    def card(self) -> Call:
        return self.slack.wait_for("chat.postMessage", lambda c: c.args["channel"] == REVIEW_CHANNEL)[0]

    def modal(self, callback_id: str, *, count: int = 1) -> dict[str, Any]:
        return self.slack.wait_for("views.open", lambda c: c.args["view"]["callback_id"] == callback_id,
                                   count=count)[-1].args["view"]

    def ephemeral(self, user: str, text: str) -> Call:
        return self.slack.wait_for("chat.postEphemeral", lambda c: c.args["user"] == user and text in c.args["text"])[0]


def pending_review(bot: SlackBot, model: ScriptedModel) -> tuple[str, Call]:
    """Ask something sensitive: the asker is told a reviewer is checking; the card goes out.
    Returns the question's ts (its thread) and the card."""
    model.reply = SALARY_DRAFT
    ts = bot.mention(SALARY_QUESTION, channel="CGENERAL")
    note = bot.reply("CGENERAL", ts)
    assert "A reviewer is checking this answer" in note.shown_text and not note.action_values()
    card = bot.card()
    wait_until(lambda: rows("SELECT review_ts FROM slack_answers WHERE review_ts IS NOT NULL"),
               what="the card's place recorded")
    return ts, card


def rows(query: str, **params: Any) -> list[dict[str, Any]]:
    with db.connection() as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def count_delivery_rounds(monkeypatch: pytest.MonkeyPatch) -> Callable[[Deps], None]:
    """Count each delivery loop's rounds (a round drains the outbox once; a reviewer's click,
    which drains too, is not one). The function returned waits until the loop of `deps` has
    begun two more rounds, so at least one ran whole: what a test checks then was not done again
    by a later round."""
    rounds: dict[int, int] = {}
    drain = DeliveryLoop._drain

    def counted(loop: DeliveryLoop) -> None:
        rounds[id(loop.deps)] = rounds.get(id(loop.deps), 0) + 1
        drain(loop)

    monkeypatch.setattr(DeliveryLoop, "_drain", counted)

    def after_two_more_rounds(deps: Deps) -> None:
        seen = rounds.get(id(deps), 0)
        wait_until(lambda: rounds.get(id(deps), 0) >= seen + 2, what="two more rounds of the delivery loop")

    return after_two_more_rounds
