"""Starting the bot: the manifest, the mode chosen from the settings, and a clear word when
Slack is not configured."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot import app, serve
from core.config import Settings, get_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_slack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)   # no .env from the working tree
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_without_tokens_main_says_how_to_configure_slack_and_exits_0(no_slack: None,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert app.main([]) == 0
    out = capsys.readouterr().out
    assert "Slack is not configured" in out
    for hint in ("bot/manifest.yml", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET",
                 "FLYWHEEL_REVIEW_CHANNEL", "FLYWHEEL_REVIEWERS", "FLYWHEEL_REVIEWER_GROUP"):
        assert hint in out


def test_bot_token_alone_is_not_enough_and_says_what_is_missing(no_slack: None, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    assert app.main([]) == 0
    assert "neither SLACK_APP_TOKEN (Socket Mode) nor SLACK_SIGNING_SECRET" in capsys.readouterr().out


def test_python_m_bot_without_tokens_exits_0_with_the_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Slack is not configured" in done.stdout


@pytest.mark.parametrize(("env", "mode"), [
    ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}, "socket"),
    ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1", "SLACK_SIGNING_SECRET": "s"}, "socket"),
    ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}, "http"),
    ({"SLACK_APP_TOKEN": "xapp-1"}, None),
])
def test_socket_mode_is_the_default_and_http_needs_the_signing_secret(
        no_slack: None, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], mode: str | None) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert serve.mode(Settings()) == mode


def test_web_client_uses_the_configured_api_url_and_honours_rate_limits(no_slack: None,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9/api/")
    client = serve.web_client(Settings())
    assert client.base_url == "http://127.0.0.1:9/api/"
    assert any(isinstance(h, RateLimitErrorRetryHandler) for h in client.retry_handlers)


def test_manifest_asks_for_the_events_scopes_interactivity_and_socket_mode_the_bot_uses() -> None:
    manifest = yaml.safe_load((ROOT / "bot" / "manifest.yml").read_text())
    settings = manifest["settings"]
    assert settings["event_subscriptions"]["bot_events"] == ["app_mention", "message.im"]
    assert settings["interactivity"]["is_enabled"] is True and settings["socket_mode_enabled"] is True
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {"app_mentions:read", "im:history", "chat:write",
                                                              "usergroups:read"}
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True   # people can DM it
