"""Block Kit for the asker's thread: placeholder, answer with sources and 👍/👎, notes, the 👎 modal.

Pure functions: text in, JSON-ready dicts out. Slack's limits are kept here: a section's text is
at most 3000 characters, a message at most 50 blocks and about 12,000 characters of text in all
(undocumented: past it Slack answers `msg_blocks_too_long`), a context block at most 10 elements."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core import feedback

SECTION_CHARS = 3000
MAX_BLOCKS = 50
MESSAGE_CHARS = 11_000   # text in one message's blocks, with room below Slack's ~12,000
CONTEXT_ELEMENTS = 10
SOURCE_CHARS = 400       # one source in the sources line, link included: ten stay under 4,000
FALLBACK_CHARS = 3000

# Action ids and callback ids: Bolt routes on these.
RATE_UP = "rate_up"
RATE_DOWN = "rate_down"
FEEDBACK_MODAL = "feedback_down"
FEEDBACK_TITLE = "Improve this answer"

PLACEHOLDER = "Looking through the docs…"
APOLOGY = ("Sorry, something went wrong while I was answering and I couldn't finish. "
           "The error has been logged for the team; please try again in a few minutes.")
SHARED_CHANNEL = ("I don't answer in channels shared with other organisations: my answers come from our "
                  "internal documents, and people outside the company read this channel. Ask me in a direct "
                  "message or in one of our own channels.")
EDIT_NOT_ANSWERED = ("I answer a question as it was first asked; your edit isn't read again. To ask the "
                     "corrected question, mention me again in this thread.")
SHARED_DM = ("I only answer people of our own organisation: my answers come from our internal documents.")
QUESTION_DELETED = "You deleted your question, so I won't answer it."
THANKS_UP = "Thanks! Glad it helped."
THANKS_DOWN = "Thanks for telling us. Your feedback goes to the people who improve these answers."
ANSWER_GONE = "This answer has since been deleted, so nothing was recorded."

REASON_LABELS: dict[feedback.DownReason, str] = {
    "wrong": "It's wrong",
    "outdated": "It's outdated",
    "incomplete": "It's incomplete",
    "unclear": "It's unclear",
    "other": "Something else",
}

Block = dict[str, Any]
_CITATION = re.compile(r"\[(\d+)\]")
_BOLD = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)


@dataclass(frozen=True)
class Message:
    """One Slack message: `text` is the notification fallback, `blocks` what is shown."""

    text: str
    blocks: list[Block]


@dataclass(frozen=True)
class FeedbackForm:
    reason: feedback.DownReason
    suggested_answer: str | None
    comment: str | None


def escape(text: str) -> str:
    """Slack's three control characters as entities, so text from documents never becomes markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str | None, label: str, *, escaped: bool = False) -> str:
    """A mrkdwn link for http(s) urls; other urls (file paths) just show the escaped label
    (`escaped`: the label is escaped already)."""
    shown = label if escaped else escape(label)
    if not url or not url.lower().startswith(("http://", "https://")):
        return shown
    safe = re.sub(r"[<>|\s]", lambda m: f"%{ord(m.group()):02X}", url.replace("&", "&amp;"))
    return f"<{safe}|{shown}>"


def split_text(text: str, limit: int = SECTION_CHARS) -> list[str]:
    """Cut (already escaped) text into pieces of at most `limit` characters, at a paragraph,
    line, sentence or word boundary where one is near, never inside an entity like `&amp;`."""
    chunks: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = _cut_point(rest, limit)
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        chunks.append(rest)
    return chunks


def _cut_point(text: str, limit: int) -> int:
    window = text[:limit]
    for sep in ("\n\n", "\n", ". ", " "):
        at = window.rfind(sep)
        if at > limit // 2:
            return at + len(sep)
    amp = window.rfind("&", limit - 5)  # the longest entity, "&amp;", has five characters
    return amp if amp > 0 and ";" not in window[amp:] else limit


def to_mrkdwn(text: str) -> str:
    """Markdown's **bold** is Slack's *bold*; the rest of what models write reads fine."""
    return _BOLD.sub(r"*\1*", text)


def section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def sections(text: str) -> list[Block]:
    """Escaped text as as many sections as it needs."""
    return [section(chunk) for chunk in split_text(escape(text))] or [section("…")]


def clip(text: str, limit: int = FALLBACK_CHARS) -> str:
    """`text` escaped and cut to at most `limit` characters at a boundary (never mid-entity)."""
    chunks = split_text(escape(text), max(limit - 1, 10))
    if not chunks:
        return "…"
    return chunks[0] if len(chunks) == 1 else f"{chunks[0]}…"


def placeholder() -> Message:
    return Message(text=PLACEHOLDER, blocks=[{"type": "context", "elements": [
        {"type": "mrkdwn", "text": f":hourglass_flowing_sand: {PLACEHOLDER}"}]}])


def note(text: str) -> Message:
    """A plain reply without buttons: a refusal, the review note, a reviewer's rejection."""
    return Message(text=clip(text), blocks=sections(text))


def apology() -> Message:
    return note(APOLOGY)


def cited(text: str) -> set[int]:
    return {int(n) for n in _CITATION.findall(text)}


def sources_block(sources: Sequence[Mapping[str, Any]], text: str = "") -> Block | None:
    """The sources the answer cites (all of them if it cites none), numbered as in the text."""
    numbers = cited(text)
    shown = [s for s in sources if s.get("n") in numbers] or list(sources)
    if not shown:
        return None
    elements = []
    for s in shown[:CONTEXT_ELEMENTS]:
        title = str(s.get("title") or "untitled")
        label = clip(f"{title} › {s['heading']}" if s.get("heading") else title, SOURCE_CHARS // 2)
        linked = link(s.get("url"), label, escaped=True)
        shown_as = linked if len(linked) <= SOURCE_CHARS else label   # a link too long to show is left out
        elements.append({"type": "mrkdwn", "text": f"[{s.get('n', '?')}] {shown_as}"})
    return {"type": "context", "block_id": "sources", "elements": elements}


def feedback_actions(answer_id: int) -> Block:
    value = str(answer_id)
    return {"type": "actions", "block_id": "feedback", "elements": [
        {"type": "button", "action_id": RATE_UP, "value": value,
         "text": {"type": "plain_text", "text": "👍 Helpful", "emoji": True}},
        {"type": "button", "action_id": RATE_DOWN, "value": value,
         "text": {"type": "plain_text", "text": "👎 Not helpful", "emoji": True}},
    ]}


def answer_messages(answer_id: int, text: str, sources: Sequence[Mapping[str, Any]]) -> list[Message]:
    """An answer as one message (or, past what one message holds, several): text sections, then
    the sources and the 👍/👎 buttons on the last one."""
    body = [section(chunk) for chunk in split_text(escape(to_mrkdwn(text)))] or [section("…")]
    tail = [b for b in (sources_block(sources, text),) if b is not None] + [feedback_actions(answer_id)]
    groups: list[list[Block]] = [[]]
    for block in body:
        if len(groups[-1]) == MAX_BLOCKS or text_chars([*groups[-1], block]) > MESSAGE_CHARS:
            groups.append([])
        groups[-1].append(block)
    if len(groups[-1]) + len(tail) > MAX_BLOCKS or text_chars(groups[-1] + tail) > MESSAGE_CHARS:
        groups.append([])
    groups[-1].extend(tail)
    return [Message(text=_group_fallback(g), blocks=g) for g in groups]


def text_chars(blocks: Sequence[Any]) -> int:
    """The characters of text in `blocks`, as Slack counts them against a message's limit."""
    def count(node: Any) -> int:
        if isinstance(node, Mapping):
            return sum(len(v) if k == "text" and isinstance(v, str) else count(v) for k, v in node.items())
        if isinstance(node, list):
            return sum(count(item) for item in node)
        return 0
    return count(list(blocks))


def _group_fallback(group: list[Block]) -> str:
    first = next((b["text"]["text"] for b in group if b["type"] == "section"), "Sources and feedback")
    return first[:FALLBACK_CHARS]


def feedback_modal(answer_id: int, previous: feedback.Feedback | None = None) -> dict[str, Any]:
    """The 👎 modal: what was wrong, and optionally the right answer. The answer id travels in
    `private_metadata`; nothing else is trusted from the view."""
    option = {r: {"text": {"type": "plain_text", "text": label}, "value": r} for r, label in REASON_LABELS.items()}
    reason_element: Block = {"type": "radio_buttons", "action_id": "reason", "options": list(option.values())}
    if previous is not None and previous.reason in option:
        reason_element["initial_option"] = option[previous.reason]
    return {
        "type": "modal",
        "callback_id": FEEDBACK_MODAL,
        "private_metadata": str(answer_id),
        "title": {"type": "plain_text", "text": FEEDBACK_TITLE},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "input", "block_id": "reason", "element": reason_element,
             "label": {"type": "plain_text", "text": "What was wrong?"}},
            _text_input("correct", "The correct answer (optional)", multiline=True,
                         initial=previous.suggested_answer if previous else None),
            _text_input("comment", "Anything else? (optional)", multiline=False,
                        initial=previous.comment if previous else None),
        ],
    }


def closing_modal(title: str, content: Sequence[Block], **fields: Any) -> dict[str, Any]:
    """A modal with nothing to submit: `content` and a Close button (a thank-you, a refusal)."""
    return {"type": "modal", "title": {"type": "plain_text", "text": title},
            "close": {"type": "plain_text", "text": "Close"}, "blocks": list(content), **fields}


def _text_input(block_id: str, label: str, *, multiline: bool, initial: str | None) -> Block:
    element: Block = {"type": "plain_text_input", "action_id": block_id, "multiline": multiline,
                      "max_length": SECTION_CHARS}
    if initial:
        element["initial_value"] = initial[:SECTION_CHARS]
    return {"type": "input", "block_id": block_id, "optional": True, "element": element,
            "label": {"type": "plain_text", "text": label}}


def read_feedback_form(values: Mapping[str, Any]) -> FeedbackForm:
    """The submitted 👎 modal's `view.state.values`. An unknown reason counts as "other"."""
    picked = ((values.get("reason") or {}).get("reason") or {}).get("selected_option") or {}
    reason = picked.get("value")
    return FeedbackForm(
        reason=reason if reason in REASON_LABELS else "other",
        suggested_answer=_input_value(values, "correct"),
        comment=_input_value(values, "comment"),
    )


def _input_value(values: Mapping[str, Any], block_id: str) -> str | None:
    value = ((values.get(block_id) or {}).get(block_id) or {}).get("value")
    return (value.strip() or None) if isinstance(value, str) else None
