"""Requests that do not come from Slack are refused; Slack's URL check is answered."""
from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest
import slack_payloads
from bot_support import ASKER, BOT_USER, SECRET, SlackBot, rows
from slack_bolt import BoltRequest
from support.fake_slack import FakeSlack
from support.scripted_model import ScriptedModel

from bot import serve
from bot.app import build_app
from bot.deps import Deps
from core.agent.state import AgentContext
from core.config import get_settings


def _mention_body(bot: SlackBot) -> str:
    return json.dumps(slack_payloads.app_mention(text="How do I get a new laptop?", user=ASKER, channel="CGENERAL",
                                                 ts=bot.next_ts(), event_id="EvFORGED", bot_user_id=BOT_USER))


def test_bad_signature_is_rejected(bot: SlackBot) -> None:
    response = bot.post(_mention_body(bot), secret="not-the-signing-secret")
    assert response.status_code == 401
    assert not bot.slack.calls_to("chat.postMessage") and not rows("SELECT event_id FROM slack_events")


def test_stale_timestamp_is_rejected_even_when_correctly_signed(bot: SlackBot) -> None:
    response = bot.post(_mention_body(bot), timestamp=int(time.time()) - 6 * 60)
    assert response.status_code == 401
    assert not bot.slack.calls_to("chat.postMessage") and not rows("SELECT event_id FROM slack_events")


def test_tampered_body_is_rejected(bot: SlackBot) -> None:
    body = _mention_body(bot)
    headers = slack_payloads.signed_headers(body, SECRET)
    response = httpx.post(bot.url, content=body.replace("laptop", "salary").encode(), headers=headers, timeout=30)
    assert response.status_code == 401


def test_a_body_too_large_for_any_slack_request_is_refused_before_it_is_read(bot: SlackBot) -> None:
    url = urllib.parse.urlsplit(bot.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.putrequest("POST", url.path)   # says a gigabyte follows; none is sent
    connection.putheader("Content-Length", str(10**9))
    connection.putheader("Content-Type", "application/json")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "over 1,048,576 bytes" in response.read().decode()
    connection.close()
    assert bot.post(_mention_body(bot)).status_code == 200   # the next request is served as ever


def test_url_verification_challenge_is_answered(bot: SlackBot) -> None:
    challenge = json.loads((slack_payloads.CONTRACTS / "events" / "url_verification.json").read_text())
    response = bot.post(json.dumps(challenge))
    assert response.status_code == 200 and response.json() == {"challenge": challenge["challenge"]}


def test_socket_mode_requests_need_no_signing_secret(bot_settings: None, handbook: Path, slack: FakeSlack,
                                                    model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1-test")
    get_settings.cache_clear()
    settings = get_settings()
    assert serve.mode(settings) == "socket"
    deps = Deps(settings=settings, client=serve.web_client(settings),
                agent_context=lambda: AgentContext(settings=settings, generator=model))
    app = build_app(deps)
    try:
        envelope = slack_payloads.app_mention(text="How do I get a new laptop?", user=ASKER, channel="CSOCK",
                                              ts="1600000001.000001", event_id="EvSOCK", bot_user_id=BOT_USER)
        # what Bolt's SocketModeHandler hands the app for each envelope it receives
        assert app.dispatch(BoltRequest(body=envelope, mode="socket_mode")).status == 200
        answer = slack.wait_for("chat.update", lambda c: c.args["channel"] == "CSOCK")[0]
        assert "Laptop request" in answer.shown_text
    finally:
        deps.close()
