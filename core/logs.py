"""Logging for every process: JSON lines when not on a terminal, readable lines when on one;
each record carries the answer and thread it is about; tokens and secrets never reach the output."""
from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.config import Settings, get_settings

answer_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("answer_id", default=None)
thread_key: contextvars.ContextVar[str | None] = contextvars.ContextVar("thread_key", default=None)

# Shapes of credentials, whatever their source: Slack, OpenAI-style, GitHub, Hugging Face, AWS,
# bearer headers.
_SECRET_SHAPES = re.compile(
    r"xox[abposr]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|hf_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|(?<=Bearer )[A-Za-z0-9._~+/=-]{16,}"
)
# A password in a connection string: a URL's user:PASSWORD@, or a conninfo keyword (password=...).
# The password runs to the last @ before the host (an unescaped @ or # in it must not end it).
_URL_PASSWORD = re.compile(r"(?<=://)([^:/@\s]+):\S*?@(?=[^@\s/?\"',;)]*(?:[/?\s\"',;)]|$))")
_KEYWORD_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('[^']*'|[^\s']+)")


def without_passwords(text: str) -> str:
    """`text` with every connection-string password shown as ***, the user and host kept."""
    return _KEYWORD_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", text))


@contextmanager
def bound(*, answer: int | None = None, thread: str | None = None) -> Iterator[None]:
    """Within the block, every log record names this answer and thread."""
    tokens = [answer_id.set(answer) if answer is not None else None,
              thread_key.set(thread) if thread is not None else None]
    try:
        yield
    finally:
        for var, token in zip((answer_id, thread_key), tokens):
            if token is not None:
                var.reset(token)  # type: ignore[attr-defined]


class Redactor(logging.Filter):
    """Masks credential shapes and the configured secret values in the message and traceback."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 6]

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return _SECRET_SHAPES.sub("[redacted]", without_passwords(text))

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        record.answer_id = answer_id.get()
        record.thread_key = thread_key.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        for key in ("answer_id", "thread_key"):
            if getattr(record, key, None) is not None:
                entry[key] = getattr(record, key)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        where = f" [answer {record.answer_id}]" if getattr(record, "answer_id", None) is not None else ""
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname} {record.name}{where}: {record.getMessage()}"
        return f"{line}\n{record.exc_text}" if record.exc_text else line


def configured_secrets(settings: Settings) -> list[str]:
    values = [settings.database_url, settings.llm_api_key, settings.slack_bot_token, settings.slack_app_token,
              settings.slack_signing_secret, settings.dashboard_password_hash]
    return [v.get_secret_value() for v in values if v is not None]


def setup(level: int = logging.INFO, *, json_lines: bool | None = None, stream: object = None) -> None:
    """Configure the root logger once per process (replacing any earlier handler of ours)."""
    stream = stream or sys.stderr
    if json_lines is None:
        json_lines = not getattr(stream, "isatty", lambda: False)()
    handler = logging.StreamHandler(stream)  # type: ignore[arg-type]
    handler.addFilter(Redactor(configured_secrets(get_settings())))
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.set_name("flywheel")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "flywheel"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING if level >= logging.INFO else level)  # libraries: warnings only
    logging.getLogger("core").setLevel(level)
    for name in ("bot", "dashboard", "trainer"):
        logging.getLogger(name).setLevel(level)


def tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a log file another process writes ("" if there is none yet)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
