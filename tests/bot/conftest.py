"""The real Bolt app over HTTP, fed signed requests; Slack's Web API faked at the wire."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import serve  # noqa: E402
from bot.app import build_app  # noqa: E402
from bot.deps import Deps  # noqa: E402
from core import db  # noqa: E402
from core.agent.state import AgentContext  # noqa: E402
from core.config import get_settings  # noqa: E402
from core.knowledge import ingest  # noqa: E402
from support.fake_slack import TOKEN, FakeSlack  # noqa: E402
from support.handbook import LAPTOPS, PAY  # noqa: E402
from support.scripted_model import ScriptedModel  # noqa: E402

from bot_support import (BOT_USER, GROUP, GROUP_MEMBER, HANDBOOK_URL, LAPTOP_ANSWER, REVIEW_CHANNEL, REVIEWER,  # noqa: E402
                         SECRET, SlackBot)



@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(bot_user_id=BOT_USER, usergroups={GROUP: [GROUP_MEMBER]}).running() as fake:
        yield fake


@pytest.fixture
def handbook(database_url: str, tmp_path: Path) -> Path:
    folder = tmp_path / "handbook"
    folder.mkdir()
    (folder / "laptops.md").write_text(LAPTOPS)
    (folder / "salary.md").write_text(PAY)
    report = ingest.ingest_paths([folder])
    assert not report.failed, report.summary()
    with db.connection() as conn:  # Markdown files carry no link; give one a link with an & in it
        conn.execute("UPDATE documents SET url = %(u)s WHERE title = 'Laptop requests'", {"u": HANDBOOK_URL})
    return folder


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel(reply=LAPTOP_ANSWER)


@pytest.fixture
def bot_settings(database_url: str, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    monkeypatch.setenv("SLACK_API_URL", slack.url)
    monkeypatch.setenv("FLYWHEEL_REVIEW_CHANNEL", REVIEW_CHANNEL)
    monkeypatch.setenv("FLYWHEEL_REVIEWERS", json.dumps([REVIEWER]))
    monkeypatch.setenv("FLYWHEEL_REVIEWER_GROUP", GROUP)
    get_settings.cache_clear()


@pytest.fixture
def bot(bot_settings: None, handbook: Path, slack: FakeSlack, model: ScriptedModel) -> Iterator[SlackBot]:
    """The bot as `python -m bot` runs it in HTTP mode: Bolt's WSGI adapter on a threaded
    server, with the heartbeat and the delivery loop alongside (`serve.alongside`)."""
    settings = get_settings()

    def context() -> AgentContext:
        return AgentContext(settings=settings, generator=model)

    deps = Deps(settings=settings, client=serve.web_client(settings), agent_context=context)
    app = build_app(deps)
    server = serve.http_server(app, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    with serve.alongside(deps) as beside:
        under_test = SlackBot(url=f"http://127.0.0.1:{server.server_address[1]}{serve.EVENTS_PATH}", slack=slack,
                              deps=deps, context=context, loop=beside.loop, heartbeat=beside.heartbeat)
        try:
            yield under_test
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
            under_test.loop.stop()   # the one running now (a test may have restarted it)
