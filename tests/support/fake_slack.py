"""Slack's Web API as a local HTTP server: records every call and answers in Slack's response
shapes (errors are HTTP 200 with ok: false; rate limits are 429 with Retry-After), so the bot's
real `slack_sdk.WebClient` talks to it through `base_url`. It also checks what Slack itself
would refuse (too many blocks, too long a section, updating a message that does not exist)."""
from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-1-test-token"   # Socket Mode's app-level token: apps.connections.open only


@dataclass(frozen=True)
class Call:
    method: str
    args: dict[str, Any]
    token: str | None
    status: int
    response: dict[str, Any]

    @property
    def blocks(self) -> list[dict[str, Any]]:
        return self.args.get("blocks") or []

    @property
    def shown_text(self) -> str:
        """Everything a person would read: the text of every block, or the plain text."""
        parts: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
                    parts.append(node["text"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(self.blocks)
        return "\n".join(parts) if parts else str(self.args.get("text") or "")

    def action_values(self) -> dict[str, str]:
        """action_id -> value of every button shown."""
        return {e["action_id"]: e.get("value", "") for b in self.blocks if b.get("type") == "actions"
                for e in b["elements"]}


@dataclass
class _Scripted:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeSlack:
    bot_user_id: str = "UBOT"
    bot_id: str = "BBOT"
    team_id: str = "T111"
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    missing_channels: set[str] = field(default_factory=set)
    refused_threads: dict[str, str] = field(default_factory=dict)   # thread ts -> the error every post there gets
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    url: str = ""

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        self._scripted: dict[str, list[_Scripted]] = {}
        self._drops: dict[str, int] = {}
        self._ts = itertools.count(1)

    # -- scripting and inspection ------------------------------------------------------------

    def fail_next(self, method: str, *, status: int = 200, body: dict[str, Any] | None = None,
                  headers: dict[str, str] | None = None) -> None:
        """The next call of `method` gets this answer instead (e.g. 429 with Retry-After)."""
        self._scripted.setdefault(method, []).append(
            _Scripted(status, body or {"ok": False, "error": "ratelimited"}, headers or {}))

    def drop_next(self, method: str, times: int = 1) -> None:
        """The next `times` calls of `method` get no answer: the connection is closed once the
        request is read, before Slack acts on it (a reset on the way in; nothing is posted)."""
        with self._changed:
            self._drops[method] = self._drops.get(method, 0) + times

    def _take_drop(self, method: str) -> bool:
        with self._changed:
            if not self._drops.get(method):
                return False
            self._drops[method] -= 1
            return True

    def calls_to(self, method: str, where: Callable[[Call], bool] | None = None) -> list[Call]:
        with self._changed:
            return [c for c in self.calls if c.method == method and (where is None or where(c))]

    def wait_for(self, method: str, where: Callable[[Call], bool] | None = None, *, count: int = 1,
                 timeout_s: float = 30.0) -> list[Call]:
        """Block until `count` calls of `method` match `where`; fail with what was seen."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = [c for c in self.calls if c.method == method and (where is None or where(c))]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = "\n".join(f"  {c.method} {json.dumps(c.args)[:300]}" for c in self.calls)
                    raise AssertionError(f"no {count} matching {method} call(s) within {timeout_s}s; calls:\n{seen}")
                self._changed.wait(left)

    # -- the API -----------------------------------------------------------------------------

    def _answer(self, method: str, args: dict[str, Any], token: str | None) -> tuple[int, dict[str, str], dict]:
        with self._changed:
            status, headers, body = self._respond(method, args, token)
            self.calls.append(Call(method, args, token, status, body))
            self._changed.notify_all()
            return status, headers, body

    def _respond(self, method: str, args: dict[str, Any], token: str | None) -> tuple[int, dict[str, str], dict]:
        scripted = self._scripted.get(method)
        if scripted:
            s = scripted.pop(0)
            return s.status, s.headers, s.body
        if token != (APP_TOKEN if method == "apps.connections.open" else TOKEN):
            return 200, {}, {"ok": False, "error": "not_authed" if token is None else "invalid_auth"}
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {}, {"ok": False, "error": "unknown_method"}
        return 200, {}, handler(args)

    def _new_ts(self) -> str:
        n = next(self._ts)
        return f"{1_700_000_000 + n}.{n:06d}"

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": "https://flywheel-test.slack.com/", "team": "Flywheel Test",
                "user": "flywheel", "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id}

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"wss://wss-primary.slack.com/link/?ticket={next(self._ts)}&app_id=A111"}

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:  # noqa: N802  (Slack's name)
        channel = args.get("channel")
        if not channel or channel in self.missing_channels:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        if error := _invalid_blocks(args.get("blocks")):
            return {"ok": False, "error": "invalid_blocks", "errors": [error]}
        if _too_long(args.get("blocks")):
            return {"ok": False, "error": "msg_blocks_too_long"}
        if args.get("thread_ts") in self.refused_threads:
            return {"ok": False, "error": self.refused_threads[args["thread_ts"]]}
        ts = self._new_ts()
        message = {"bot_id": self.bot_id, "type": "message", "text": args.get("text", ""), "user": self.bot_user_id,
                   "ts": ts, "team": self.team_id, "blocks": args.get("blocks") or []}
        if args.get("thread_ts"):
            message["thread_ts"] = args["thread_ts"]
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        key = (args.get("channel"), args.get("ts"))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        if error := _invalid_blocks(args.get("blocks")):
            return {"ok": False, "error": "invalid_blocks", "errors": [error]}
        if _too_long(args.get("blocks")):
            return {"ok": False, "error": "msg_blocks_too_long"}
        message = self.messages[key]  # type: ignore[index]
        message.update(text=args.get("text", ""), blocks=args.get("blocks") or [])
        return {"ok": True, "channel": key[0], "ts": key[1], "text": message["text"],
                "message": {"text": message["text"], "user": self.bot_user_id, "blocks": message["blocks"]}}

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        if not args.get("channel") or args["channel"] in self.missing_channels:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("user"):
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "message_ts": self._new_ts()}

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        view = args.get("view")
        if not args.get("trigger_id") or not isinstance(view, dict):
            return {"ok": False, "error": "invalid_arguments"}
        if len(view.get("title", {}).get("text", "")) > 24 or len(view.get("blocks", [])) > 100:
            return {"ok": False, "error": "invalid_arguments"}
        if error := _invalid_blocks(view.get("blocks")):
            return {"ok": False, "error": "invalid_arguments", "errors": [error]}
        n = next(self._ts)
        return {"ok": True, "view": {**view, "id": f"V{n:08d}", "team_id": self.team_id, "state": {"values": {}},
                                     "hash": f"{n}.hash", "root_view_id": f"V{n:08d}", "app_id": "A111",
                                     "bot_id": self.bot_id}}

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        group = args.get("usergroup")
        if group not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": self.usergroups[group]}

    # -- serving -----------------------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[FakeSlack]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
                parts = urlsplit(self.path)
                method = parts.path.rsplit("/", 1)[-1]
                raw = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                args: dict[str, Any] = dict(parse_qsl(parts.query))
                if "json" in (self.headers.get("content-type") or ""):
                    args.update(json.loads(raw or "{}"))
                else:
                    args.update(parse_qsl(raw))
                for key in ("blocks", "view"):  # form-encoded calls send these as JSON strings
                    if isinstance(args.get(key), str):
                        args[key] = json.loads(args[key])
                if outer._take_drop(method):
                    self.close_connection = True
                    return
                auth = self.headers.get("authorization") or ""
                token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.pop("token", None)
                status, headers, body = outer._answer(method, args, token)
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"content-type": "application/json; charset=utf-8", **headers}.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}/api/"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


def _invalid_blocks(blocks: Any) -> str | None:
    """The limits Slack enforces that a bot most easily breaks."""
    if blocks is None:
        return None
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "must be at most 50 blocks"
    for i, block in enumerate(blocks):
        text = (block.get("text") or {}).get("text") if isinstance(block.get("text"), dict) else None
        if block.get("type") == "section" and text is not None and not 0 < len(text) <= 3000:
            return f"blocks[{i}].text must be 1-3000 characters"
        if block.get("type") == "header" and len(text or "") > 150:
            return f"blocks[{i}].text must be at most 150 characters"
        if block.get("type") == "context" and not 0 < len(block.get("elements", [])) <= 10:
            return f"blocks[{i}].elements must be 1-10"
        if block.get("type") == "section" and len(block.get("fields", [])) > 10:
            return f"blocks[{i}].fields must be at most 10"
        if block.get("type") == "actions" and not 0 < len(block.get("elements", [])) <= 25:
            return f"blocks[{i}].elements must be 1-25"
    return None


def _too_long(blocks: Any) -> bool:
    """Slack's undocumented limit on a message's text in all its blocks (bolt-js issue 2509:
    refused from about 12,000 characters)."""
    def chars(node: Any) -> int:
        if isinstance(node, dict):
            return sum(len(v) if k == "text" and isinstance(v, str) else chars(v) for k, v in node.items())
        return sum(chars(item) for item in node) if isinstance(node, list) else 0
    return blocks is not None and chars(blocks) > 12_000
