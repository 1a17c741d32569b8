"""Text from answers and documents shown as Streamlit Markdown: escaped, so a question can never
format (or link) the page, and with personal data highlighted."""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

from core import pii

# ASCII punctuation that Markdown, Streamlit's directives (`:red[...]`, `:smile:`), LaTeX ($) or
# autolinks (e-mail addresses, URLs) could read as syntax. CommonMark lets any of it be escaped
# with a backslash.
_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>$~:=@/])")


def count(n: int, noun: str) -> str:
    """`n` and the noun, singular for one: "1 answer", "3 answers"."""
    return f"{n:,} {noun if n == 1 else noun + 's'}"


def when(moment: dt.datetime) -> str:
    """A time as the pages show it, in the zone it was read in (`FLYWHEEL_TIMEZONE`), named."""
    return f"{moment:%Y-%m-%d %H:%M %Z}"


def escape(text: str) -> str:
    """`text` as Markdown that renders as exactly these characters, line breaks kept."""
    return _SPECIAL.sub(r"\\\1", text).replace("\n", "  \n")


def highlight_pii(text: str) -> str:
    """Escaped Markdown with each piece of personal data on a red background."""
    parts: list[str] = []
    last = 0
    for span in pii.find_pii(text):
        parts += [escape(text[last:span.start]), f":red-background[{escape(span.text)}]"]
        last = span.end
    parts.append(escape(text[last:]))
    return "".join(parts)


def has_pii(*texts: str | None) -> bool:
    return any(pii.find_pii(t) for t in texts if t)


def source_line(source: dict[str, Any]) -> str:
    """One recorded source as the detail views list it: "[1] Title › Heading (0.82)", linked."""
    where = source.get("title") or "untitled"
    if source.get("heading"):
        where = f"{where} › {source['heading']}"
    score = source.get("dense_score")
    label = f"\\[{source.get('n', '?')}\\] {escape(where)}" + (f" ({score:.2f})" if score is not None else "")
    url = source.get("url")
    return f"{label} — {escape(url)}" if url else label
