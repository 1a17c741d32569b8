"""Block Kit for reviewers: the review card (pending or decided) and the edit and reject modals.

Pure functions over `core.feedback` records, so the card looks the same whoever renders it: the
listener that took the decision or the delivery loop after a decision in the dashboard."""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from bot import blocks
from bot.blocks import Block, Message
from core import feedback

APPROVE = "approve_review"
EDIT = "edit_review"
REJECT = "reject_review"
EDIT_MODAL = "edit_review_submit"
REJECT_MODAL = "reject_review_submit"

ONLY_REVIEWERS = "Only reviewers can do this."
ALREADY_DECIDED = "This review was already decided, so nothing changed."
WITHDRAWN = "The asker deleted this question, so it needs no review; nothing was sent."
DECISION_FAILED = "Sorry, recording that decision failed; the review is still open. Please try again."
EMPTY_EDIT = "The answer can't be empty."
EMPTY_REASON = "Please say why, for the record."
RESTRICTED_DRAFT = (":lock: Drafted from documents not everyone in this channel may see, so the draft and its "
                    "sources are only on the dashboard's *Reviews* page (review #{review_id}): decide it there.")
RESTRICTED_EDIT = ("This draft comes from documents not everyone in the review channel may see: edit, approve or "
                   "reject it on the dashboard's *Reviews* page.")
TOO_LONG_TO_EDIT = ("This draft is {chars:,} characters long, more than Slack lets you edit here ({limit:,}). "
                    "Edit it in the dashboard's *Reviews* page, or approve or reject it as it is from the card.")

_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_CUT = "_… cut here; the whole text is in the dashboard's Reviews page._"
_EDITED_CHARS = 2500   # of an edited answer, on a decided card (the draft gets what is left)


def who(user: str | None) -> str:
    """A Slack user id as a mention; someone from the dashboard or CLI by name."""
    if not user:
        return "someone"
    return f"<@{user}>" if _SLACK_USER.match(user) else blocks.escape(user)


def where(channel_id: str | None) -> str:
    if not channel_id:
        return "outside Slack"
    return "a direct message" if channel_id.startswith("D") else f"<#{channel_id}>"


_DONE = {"approved": "approved", "edited": "edited and approved", "rejected": "rejected"}


def already_decided(review: feedback.Review | None, clicker: str) -> str:
    """What a reviewer hears who clicks on a decided review: their own earlier click, or whose."""
    if review is not None and review.status == "withdrawn":
        return WITHDRAWN
    if review is None or review.status not in _DONE:
        return ALREADY_DECIDED
    if review.decided_by == clicker:
        return f"You already {_DONE[review.status]} this answer; your first click counted."
    return f"{who(review.decided_by)} already {_DONE[review.status]} this answer, so nothing changed."


CARD_TITLES = {"pending": "Answer waiting for review", "approved": "Answer approved",
               "edited": "Answer edited and approved", "rejected": "Answer rejected",
               "withdrawn": "Question deleted by the asker"}


def review_card(review: feedback.Review, answer: feedback.Answer, earlier: feedback.Answer | None = None,
                *, show_restricted: bool = False) -> Message:
    """The card in the reviewers' channel: buttons while pending, who decided and when after;
    with `earlier`, the turn before a follow-up, which the question may only make sense with.
    A draft from documents not everyone may see shows without its text, sources or buttons (it
    is decided on the dashboard), unless `show_restricted` (the review channel may read them)."""
    confidence = "n/a" if answer.confidence is None else f"{answer.confidence:.2f}"
    title = CARD_TITLES[review.status]   # a reviewer scanning the channel sees what is still open
    hidden = answer.restricted and not show_restricted
    out: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": True}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Asked by*\n{who(answer.user_id)}"},
            {"type": "mrkdwn", "text": f"*In*\n{where(answer.channel_id)}"},
            {"type": "mrkdwn", "text": f"*Confidence*\n{confidence}"},
            {"type": "mrkdwn", "text": f"*Why it needs review*\n{blocks.clip(review.reason, 1000)}"},
        ]},
        *([_earlier(earlier, show_restricted)] if earlier is not None else []),
        blocks.section(f"*Question*\n{blocks.clip(answer.question, 2000)}"),
    ]
    lead = "Review needed" if review.status == "pending" else title
    text = f"{lead}: {blocks.clip(answer.question, 200)}"
    if hidden:
        return Message(text=text, blocks=[*out, blocks.section(RESTRICTED_DRAFT.format(review_id=review.id)),
                                          {"type": "divider"}, *_decision(review, with_edit=False)])
    sources = blocks.sources_block(answer.sources, answer.draft or "")
    after: list[Block] = [*([sources] if sources is not None else []), {"type": "divider"},
                          *([_buttons(review.id)] if review.status == "pending" else _decision(review))]
    out.append(blocks.section("*Draft answer*"))
    room = blocks.MESSAGE_CHARS - blocks.text_chars(out + after)   # the draft gets what one message has left
    return Message(text=text, blocks=[*out, *_limited(answer.draft or "(no draft)", room), *after])


def _earlier(earlier: feedback.Answer, show_restricted: bool) -> Block:
    said = earlier.final_answer or earlier.draft or "(no answer)"
    if earlier.restricted and not show_restricted:
        said = "_(drafted from restricted documents: on the dashboard)_"
    return _context(f"*Earlier in this thread*\n*Q:* {blocks.clip(earlier.question, 300)}\n"
                    f"*A:* {blocks.clip(said, 700)}")


def _limited(text: str, max_chars: int) -> list[Block]:
    """`text` as sections of at most `max_chars` characters in all, cut with a pointer to the
    dashboard when longer."""
    parts = blocks.sections(blocks.to_mrkdwn(text))
    if blocks.text_chars(parts) <= max_chars:
        return parts
    kept = blocks.clip(blocks.to_mrkdwn(text), max(max_chars - len(_CUT), 0))
    return [*(blocks.section(chunk) for chunk in blocks.split_text(kept)), blocks.section(_CUT)]


def _buttons(review_id: int) -> Block:
    value = str(review_id)
    return {"type": "actions", "block_id": "review", "elements": [
        {"type": "button", "action_id": APPROVE, "value": value, "style": "primary",
         "text": {"type": "plain_text", "text": "Approve"}},
        {"type": "button", "action_id": EDIT, "value": value,
         "text": {"type": "plain_text", "text": "Edit & approve"}},
        {"type": "button", "action_id": REJECT, "value": value, "style": "danger",
         "text": {"type": "plain_text", "text": "Reject"}},
    ]}


def _decision(review: feedback.Review, *, with_edit: bool = True) -> list[Block]:
    """Who decided, when, and how; nothing while the review is pending."""
    when = _date(review)
    if review.status == "pending":
        return []
    if review.status == "approved":
        line = f":white_check_mark: Approved by {who(review.decided_by)} {when}"
        return [_context(line)]
    if review.status == "withdrawn":
        return [_context(f":wastebasket: {who(review.decided_by)} deleted the question {when}: it needs no review, "
                         "and nothing was sent.")]
    if review.status == "edited":
        if not with_edit:
            return [_context(f":pencil2: Edited and approved by {who(review.decided_by)} {when}")]
        line = f":pencil2: Edited and approved by {who(review.decided_by)} {when}. Sent instead of the draft:"
        return [_context(line), *_limited(review.edited_text or "", _EDITED_CHARS)]
    reason = blocks.clip(review.reject_reason or "", 2000)
    return [_context(f":no_entry: Rejected by {who(review.decided_by)} {when}. Reason: {reason}")]


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[: blocks.SECTION_CHARS]}]}


def _date(review: feedback.Review) -> str:
    return "" if review.decided_at is None else _when(review.decided_at)


def _when(at: dt.datetime) -> str:
    """A moment as Slack shows it in each reader's time zone (with a UTC fallback)."""
    epoch = int(at.timestamp())
    return f"on <!date^{epoch}^{{date_short_pretty}} at {{time}}|{at.astimezone(dt.UTC):%Y-%m-%d %H:%M UTC}>"


def reminder(put_to_review: dt.datetime, reviewer_group: str = "") -> Message:
    """Said in the thread of a card still waiting for a decision long after it went up."""
    group = f"<!subteam^{reviewer_group}> " if reviewer_group else ""
    text = (f":alarm_clock: {group}Still waiting for a decision: this answer was put to review "
            f"{_when(put_to_review)}, and its asker is waiting.")
    return Message(text=text, blocks=[blocks.section(text)])


def undelivered(answer: feedback.Answer, kind: feedback.DeliveryKind, why: str) -> Message:
    """Said under a decided card when the asker never got the answer (`kind` "answer") or the
    note that it was rejected ("refusal"); `why` is plain text."""
    what = "the approved answer" if kind == "answer" else "the note that a person will follow up"
    text = (f":warning: {who(answer.user_id)} never got {what}: {blocks.escape(why)}. "
            "Please reach them another way.")
    return Message(text=text, blocks=[blocks.section(text)])


def decided_meanwhile(review: feedback.Review | None, typed: str) -> dict[str, Any]:
    """What a submitted edit or reject modal becomes when the review was decided (or deleted)
    while the reviewer typed: who decided, and what the reviewer wrote, to copy, not lost."""
    said = _decision(review) if review is not None else [blocks.section("This review no longer exists.")]
    withdrawn = review is not None and review.status == "withdrawn"
    return blocks.closing_modal("Question deleted" if withdrawn else "Already decided",
                                [blocks.section(WITHDRAWN if withdrawn else ALREADY_DECIDED), *said,
                                 blocks.section("*What you wrote* (not sent):"), *blocks.sections(typed)])


def edit_modal(review_id: int, draft: str) -> dict[str, Any]:
    """Edit & approve: the draft, prefilled, becomes the answer the asker gets. A draft longer
    than Slack's text input holds is never offered cut short: the modal says to edit it in the
    dashboard and has nothing to submit."""
    title, ids = "Edit & approve", {"callback_id": EDIT_MODAL, "private_metadata": str(review_id)}
    if len(draft) > blocks.SECTION_CHARS:
        text = TOO_LONG_TO_EDIT.format(chars=len(draft), limit=blocks.SECTION_CHARS)
        return blocks.closing_modal(title, [blocks.section(text)], **ids)
    return {"type": "modal", "title": {"type": "plain_text", "text": title}, **ids,
            "submit": {"type": "plain_text", "text": "Approve"},
            "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": [{"type": "input", "block_id": "answer",
                        "label": {"type": "plain_text", "text": "Answer to send"},
                        "element": {"type": "plain_text_input", "action_id": "answer", "multiline": True,
                                    "max_length": blocks.SECTION_CHARS, "initial_value": draft}}]}


def reject_modal(review_id: int) -> dict[str, Any]:
    return {
        "type": "modal", "callback_id": REJECT_MODAL, "private_metadata": str(review_id),
        "title": {"type": "plain_text", "text": "Reject the draft"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text":
                "The asker is told that a person will follow up. Your reason stays with the review."}},
            {"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Why?"},
             "element": {"type": "plain_text_input", "action_id": "reason", "multiline": True,
                         "max_length": 2000}},
        ],
    }


def read_modal_text(values: Mapping[str, Any], block_id: str) -> str:
    """The text a reviewer typed into the modal's one input (`answer` or `reason`)."""
    value = ((values.get(block_id) or {}).get(block_id) or {}).get("value")
    return value.strip() if isinstance(value, str) else ""
