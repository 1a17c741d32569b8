"""Running the bot: the Slack Web API client, Socket Mode or an HTTP server, and the message
shown when Slack is not configured."""
from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from typing import Any, Literal, NamedTuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.http_retry import HttpRequest, HttpResponse, RetryState, default_retry_handlers
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler, ServerErrorRetryHandler

from bot.answering import Heartbeat
from bot.deliveries import DeliveryLoop
from bot.deps import Deps
from core.config import Settings

logger = logging.getLogger(__name__)

Mode = Literal["socket", "http"]
EVENTS_PATH = "/slack/events"

HOW_TO = """\
To connect Flywheel to Slack:
  1. Create a Slack app from bot/manifest.yml (https://api.slack.com/apps > Create New App >
     From a manifest) and install it to your workspace.
  2. Set SLACK_BOT_TOKEN (xoxb-..., from OAuth & Permissions) and one of
       SLACK_APP_TOKEN (xapp-..., an app-level token with connections:write) for Socket Mode, the default;
       SLACK_SIGNING_SECRET (from Basic Information) for HTTP events on port {port}, path {path}.
  3. Set FLYWHEEL_REVIEW_CHANNEL (the channel id for review cards; invite the bot there) and
     FLYWHEEL_REVIEWERS='["U0123ABCD"]' and/or FLYWHEEL_REVIEWER_GROUP (a user group id).
  Put them in .env or the environment and start the bot again."""


def mode(settings: Settings) -> Mode | None:
    """Socket Mode when an app token is set, else HTTP when a signing secret is; None: not configured."""
    if settings.slack_bot_token is None:
        return None
    if settings.slack_app_token is not None:
        return "socket"
    if settings.slack_signing_secret is not None:
        return "http"
    return None


def not_configured(settings: Settings) -> str:
    """What is missing, and how to set it up."""
    if settings.slack_bot_token is None:
        missing = "Slack is not configured (no SLACK_BOT_TOKEN), so the Flywheel bot is not running."
    else:
        missing = ("SLACK_BOT_TOKEN is set, but neither SLACK_APP_TOKEN (Socket Mode) nor "
                   "SLACK_SIGNING_SECRET (HTTP events) is, so the Flywheel bot is not running.")
    return f"{missing}\nEverything else works without it.\n{HOW_TO.format(port=settings.bot_port, path=EVENTS_PATH)}"


class UpdateServerErrorRetryHandler(ServerErrorRetryHandler):
    """A 500 or 503 from chat.update, tried again: an update is safe to repeat. A post is not
    (Slack may answer 500 after posting): its caller decides (the outbox tries it on a later round)."""

    def _can_retry(self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        return request.url.endswith("/chat.update") and super()._can_retry(
            state=state, request=request, response=response, error=error)


def web_client(settings: Settings) -> WebClient:
    """The Web API client: `SLACK_API_URL` as base url (tests point it at a fake); 429s retried
    after Slack's Retry-After, and an update Slack answered 500 or 503 twice with backoff (a
    finished answer would be replaced by an apology)."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    return WebClient(token=token, base_url=settings.slack_api_url,
                     retry_handlers=[*default_retry_handlers(), RateLimitErrorRetryHandler(max_retry_count=3),
                                     UpdateServerErrorRetryHandler(max_retry_count=2)])


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # The standard library's listen backlog of 5 turns away bursts of Slack events (measured:
    # ack p99 1.1 s at 20 concurrent, 0.2 s with this); the kernel caps it at somaxconn anyway.
    request_queue_size = 128


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (http.server's signature)
        logger.debug(format, *args)


def http_server(app: App, *, host: str = "0.0.0.0", port: int = 3000) -> WSGIServer:  # noqa: S104
    """Bolt's WSGI adapter on a threaded server from the standard library: each request gets
    a thread, so one slow acknowledgement never holds up the next."""
    return make_server(host, port, _refusing_large_bodies(SlackRequestHandler(app, path=EVENTS_PATH)),
                       server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)


# Slack's largest requests (a modal's view with what was typed in it) are far below this.
MAX_BODY_BYTES = 1 << 20


def _refusing_large_bodies(handler: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """A 413 for a body over MAX_BODY_BYTES before anything reads it: Bolt reads the whole body
    into memory to check its signature, so anyone could otherwise make the bot hold gigabytes."""
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        declared = str(environ.get("CONTENT_LENGTH") or "0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            start_response("413 Content Too Large", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"The request body is over {MAX_BODY_BYTES:,} bytes.\n".encode()]
        return handler(environ, start_response)
    return app


def run(app: App, deps: Deps) -> None:
    """Serve until stopped, with the delivery loop alongside. SIGTERM (honcho, docker, systemd)
    unwinds like Ctrl-C: answers under way are finished before the process ends, and questions
    not yet begun are kept and answered at the next start."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    settings = deps.settings
    with alongside(deps):
        if mode(settings) == "socket":
            assert settings.slack_app_token is not None
            logger.info("Flywheel bot connecting to Slack in Socket Mode")
            SocketModeHandler(app, settings.slack_app_token.get_secret_value(), web_client=deps.client).start()
        else:
            with http_server(app, port=settings.bot_port) as server:
                logger.info("Flywheel bot listening for Slack events on :%s%s", settings.bot_port, EVENTS_PATH)
                server.serve_forever()


class Beside(NamedTuple):
    """What `alongside` runs."""

    loop: DeliveryLoop
    heartbeat: Heartbeat


@contextmanager
def alongside(deps: Deps) -> Iterator[Beside]:
    """What runs beside the Slack handler: the heartbeat, and the delivery loop (which also takes
    up questions a stopped bot left waiting). On the way out the loop stops, the answers under
    way finish, and only then the heartbeat: until they are finished, they are this process's."""
    heartbeat = Heartbeat(deps.process_id).start()
    loop = DeliveryLoop(deps).start()
    try:
        yield Beside(loop, heartbeat)
    finally:
        loop.stop()
        deps.close()
        heartbeat.stop()


def idle() -> int:
    """Stay up doing nothing (under honcho, a process that exits stops all the others)."""
    threading.Event().wait()
    return 0
