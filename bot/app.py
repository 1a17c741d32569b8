"""The Slack bot's entry point: build the Bolt app, register listeners, start Socket Mode or HTTP."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from slack_bolt import App

from bot import deps as deps_, serve
from bot.listeners import register
from core import db, logs, metrics
from core.config import get_settings


def build_app(deps: deps_.Deps) -> App:
    """The Bolt app (HTTP requests are verified with the signing secret; Socket Mode needs none)."""
    secret = deps.settings.slack_signing_secret
    app = App(client=deps.client, signing_secret=secret.get_secret_value() if secret else "", name="flywheel",
              listener_executor=ThreadPoolExecutor(max_workers=16, thread_name_prefix="bolt"))
    app.use(deps_.middleware(deps))
    register(app)
    return app


def main(argv: list[str] | None = None) -> int:
    logs.setup(logging.INFO)
    settings = get_settings()
    if serve.mode(settings) is None:
        print(serve.not_configured(settings), flush=True)
        return serve.idle() if "--idle-if-unconfigured" in (argv or []) else 0
    if settings.bot_metrics_port:
        metrics.start_exporter(settings.bot_metrics_port, db.database_url())
    deps = deps_.Deps(settings=settings, client=serve.web_client(settings))
    serve.run(build_app(deps), deps)
    return 0
