"""From a Slack message to an answer in its thread: placeholder, agent run, answer or review.

The listener thread only records the question and posts the placeholder; the agent runs on the
bot's worker pool, so Bolt's threads stay free to acknowledge the next request at once."""
from __future__ import annotations

import html
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient

from bot import blocks, notices, posting, reviews, store
from bot.deps import Deps
from core import db, feedback
from core.agent import run
from core.knowledge.parse import storable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Question:
    channel_id: str
    user_id: str
    text: str
    ts: str
    thread_ts: str
    event_id: str | None
    edited: bool = False   # Slack sends an @mention again when its message is edited

    @property
    def thread_key(self) -> str:
        return thread_key(self.channel_id, self.thread_ts)


def thread_key(channel_id: str, thread_ts: str) -> str:
    """The agent's thread: one per Slack thread, so follow-ups share the history."""
    return f"slack:{channel_id}:{thread_ts}"


def question_from_event(event: dict[str, Any], event_id: str | None, bot_user_id: str | None) -> Question | None:
    """The question in an app_mention or message event, without the bot's own mention and with
    Slack's entities (&amp; &lt; &gt;) turned back into text. None when it has no author or
    comes from a bot (two bots answering each other never stop)."""
    user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
    if not (user and channel and ts) or event.get("bot_id"):
        return None
    text = event.get("text") or ""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", " ", text)
    text = storable(html.unescape(re.sub(r"[ \t]+", " ", text)).strip())   # as Postgres can keep it
    return Question(channel_id=channel, user_id=user, text=text, ts=ts,
                    thread_ts=event.get("thread_ts") or ts, event_id=event_id, edited=bool(event.get("edited")))


# A bot process notes it is alive every `HEARTBEAT_S` (`Heartbeat`); one silent this long has
# stopped, and the questions it was answering are taken over.
ORPHANED_AFTER_S = 120.0
HEARTBEAT_S = 20.0

# Message subtypes that are a person writing: with a file attached (the text is the question),
# or a thread reply also sent to the conversation. Edits, deletions, bots, joins are not.
QUESTION_SUBTYPES = frozenset({"file_share", "thread_broadcast"})


class Heartbeat:
    """A thread that notes the bot process alive every `HEARTBEAT_S`, whatever else it is busy
    with (a delivery round waiting on a slow Slack, answers finishing at shutdown), so that no
    other process takes over the questions it is answering."""

    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _beat(self) -> None:
        while True:
            try:
                with db.connection() as conn:
                    store.note_alive(conn, self.process_id)
            except Exception:
                logger.exception("could not note this bot process alive; trying again in %.0fs", HEARTBEAT_S)
            if self._stop.wait(HEARTBEAT_S):
                return


def is_direct_question(event: dict[str, Any]) -> bool:
    """A person's new message with some text in a DM with the bot: not an edit, a deletion, a
    join, a bot, or a file sent without a word."""
    subtype = event.get("subtype")
    return (event.get("channel_type") == "im" and (not subtype or subtype in QUESTION_SUBTYPES)
            and not event.get("bot_id") and bool(event.get("user")) and bool((event.get("text") or "").strip()))


def take_up(question: Question, client: WebClient, deps: Deps, *, shared_channel: bool = False) -> None:
    """Record the question (once per message), post the placeholder, and queue the agent run.
    In a channel shared with another organisation (Slack Connect: `shared_channel`), unless
    `answer_in_shared_channels`, only say why it is not answered; nothing is recorded or searched."""
    if shared_channel and not deps.settings.answer_in_shared_channels:
        logger.info("question in the externally shared channel %s declined", question.channel_id)
        try:
            dm = question.channel_id.startswith("D")   # someone of the other organisation, in a DM
            posting.post(client, channel=question.channel_id, thread_ts=question.thread_ts,
                         message=blocks.note(blocks.SHARED_DM if dm else blocks.SHARED_CHANNEL))
        except Exception:
            logger.exception("could not post the shared-channel note in %s", question.channel_id)
        return
    try:
        with db.connection() as conn:
            row_id = store.open_question(conn, channel_id=question.channel_id, question_ts=question.ts,
                                         thread_ts=question.thread_ts, user_id=question.user_id,
                                         event_id=question.event_id, question=question.text, owner=deps.process_id)
    except Exception:
        logger.exception("could not record a question in %s", question.channel_id)
        _apologise(question, None, client, deps)
        return
    if row_id is None:
        logger.info("message %s in %s was already taken up", question.ts, question.channel_id)
        if question.edited:   # a corrected question: say the edit is not answered, rather than nothing
            notices.tell(client, channel=question.channel_id, user=question.user_id, text=blocks.EDIT_NOT_ANSWERED,
                         thread_ts=question.thread_ts)
        return
    reply_ts: str | None = None
    try:
        reply_ts = posting.post(client, channel=question.channel_id, thread_ts=question.thread_ts,
                                message=blocks.placeholder())
        with db.connection() as conn:
            store.set_reply(conn, row_id, reply_ts)
    except Exception:
        # Still answer: the answer is posted instead of replacing the placeholder.
        logger.exception("could not post the placeholder in %s", question.channel_id)
    _answer_later(question, row_id, reply_ts, client, deps)


def answer_waiting(client: WebClient, deps: Deps) -> int:
    """Answer the questions a stopped bot took up but had not finished: kept by one that stopped
    cleanly, or in progress in one killed (silent for `ORPHANED_AFTER_S`); returns how many."""
    with db.connection() as conn:
        store.note_alive(conn, deps.process_id)   # never this process's own questions, whatever its heartbeat
        orphaned = store.release_orphans(conn, ORPHANED_AFTER_S)
        # The agent's runs that stopped with their process: exactly those, not others in their threads.
        feedback.fail_running(conn, [a for a in orphaned if a is not None],
                              error="the bot process answering it stopped; asked again")
        waiting = store.take_waiting(conn, deps.process_id)
    if orphaned:
        logger.warning("%d questions were in progress in a bot process that stopped without finishing them",
                       len(orphaned))
    for row, text in waiting:
        question = Question(channel_id=row.channel_id, user_id=row.user_id, text=text, ts=row.question_ts,
                            thread_ts=row.thread_ts, event_id=row.event_id)
        # A process that stopped after the agent answered leaves that answer to show, not to ask again.
        _answer_later(question, row.id, row.reply_ts, client, deps, earlier=row.answer_id)
    if waiting:
        logger.info("answering %d questions left waiting when the bot last stopped", len(waiting))
    return len(waiting)


def _answer_later(question: Question, row_id: int, reply_ts: str | None, client: WebClient, deps: Deps, *,
                  earlier: int | None = None) -> None:
    def keep_for_next_start() -> None:
        try:
            with db.connection() as conn:
                store.keep_waiting(conn, row_id)
        except Exception:
            logger.exception("could not hand on a waiting question from %s; it is taken over once this "
                             "process has gone silent", question.channel_id)

    deps.run_later(question.thread_key, question.user_id,
                   lambda: answer(question, row_id, reply_ts, client, deps, earlier=earlier),
                   if_not_started=keep_for_next_start)


def answer(question: Question, row_id: int, reply_ts: str | None, client: WebClient, deps: Deps, *,
           earlier: int | None = None) -> None:
    """Run the agent and show what came of it; with `earlier` (the answer a stopped process
    recorded for this question), show that unless there is nothing to show. Any failure leaves
    an apology, never silence."""
    try:
        _answer(question, row_id, reply_ts, client, deps, earlier)
    finally:
        with db.connection() as conn:
            store.finish_question(conn, row_id, deps.process_id)
    # Deleted while its answer was being shown (after the check before showing): the note and a
    # review card posted since say so.
    withdraw_if_deleted(row_id, client, deps)


def question_deleted(channel_id: str, question_ts: str, asker: str | None, client: WebClient, deps: Deps) -> None:
    """The asker deleted a question (a DM; Slack sends no deletions of channel messages the bot
    only hears mentioned in): one still to be answered is not, a draft waiting for review is
    withdrawn. An answer already shown stays, as does a reviewer's decision made before. With
    `asker` (who wrote the deleted message), a deletion that arrives before its question (Slack
    delivering the question late, on a retry) keeps the question from being taken up at all."""
    with db.connection() as conn:
        where = store.mark_deleted(conn, channel_id, question_ts, asker)
    if where is not None:
        withdraw_if_deleted(where.id, client, deps)
        logger.info("the question at %s in %s was deleted by its asker (answer %s)", question_ts, channel_id,
                    where.answer_id)


def withdraw_if_deleted(row_id: int, client: WebClient, deps: Deps, *, unseen: bool = False) -> bool:
    """Whether the asker deleted this question. If so, its answer is withdrawn (`feedback.withdraw`:
    a draft waiting for review; with `unseen`, from a process that has shown nothing of it, any
    answer not decided by a reviewer), and, once withdrawn or when nothing was shown, the
    placeholder or review note says so, as does the review card."""
    with db.connection() as conn:
        where = store.get(conn, row_id)
        if where is None or where.deleted_at is None:
            return False
        if where.answer_id is not None:
            feedback.withdraw(conn, where.answer_id, by=where.user_id, unseen=unseen)
        answer = feedback.get_answer(conn, where.answer_id) if where.answer_id is not None else None
    if answer is None and not unseen:   # still being answered: the process answering it sees this before showing
        return True
    if answer is not None and answer.status != "withdrawn":   # shown, or decided first: it stands
        return True
    try:
        if where.reply_ts:
            posting.replace(client, deps.throttle, channel=where.channel_id, ts=where.reply_ts,
                            message=blocks.note(blocks.QUESTION_DELETED))
        if answer is not None and where.review_ts:
            with db.connection() as conn:
                reviews.redraw_card(client, deps.throttle, conn, where, answer, deps.settings)
    except Exception:   # withdrawn all the same: the messages only lag behind
        logger.exception("could not show that the question in %s was deleted", where.channel_id)
    return True


def _answer(question: Question, row_id: int, reply_ts: str | None, client: WebClient, deps: Deps,
            earlier: int | None) -> None:
    # An answer a stopped process recorded may have been shown: only this process's own is unseen.
    if withdraw_if_deleted(row_id, client, deps, unseen=earlier is None):
        return
    try:
        outcome = run.outcome_as_asked(earlier) if earlier is not None else None
    except Exception:
        logger.exception("could not read answer %s again; the agent answers the question again", earlier)
        outcome = None
    fresh = outcome is None
    if fresh:
        outcome = _ask(question, row_id, reply_ts, client, deps)
    if outcome is None:
        return
    try:
        _show(question, row_id, reply_ts, outcome, client, deps, unseen=fresh)
    except Exception:
        logger.exception("showing answer %s in %s failed", outcome.answer_id, question.channel_id)
        _apologise(question, reply_ts, client, deps)


def _ask(question: Question, row_id: int, reply_ts: str | None, client: WebClient, deps: Deps) -> run.Outcome | None:
    """The agent's outcome, or None when it failed (and the asker was apologised to). The answer
    is linked to the question as it is recorded, before the agent runs."""
    try:
        outcome = run.ask(question.text,
                          run.Asker(surface="slack", user_id=question.user_id,
                                    channel_id=question.channel_id, thread_key=question.thread_key),
                          context=deps.agent_context(),
                          on_recorded=lambda conn, answer_id: store.link_answer(conn, row_id, answer_id))
    except Exception:   # run.AgentFailed, or the database failing around it
        logger.exception("answering a question in %s failed", question.channel_id)
        _apologise(question, reply_ts, client, deps)
        return None
    return outcome


def _show(question: Question, row_id: int, reply_ts: str | None, outcome: run.Outcome, client: WebClient,
          deps: Deps, *, unseen: bool) -> None:
    if withdraw_if_deleted(row_id, client, deps, unseen=unseen):   # while the agent was answering
        return
    if outcome.status == "delivered":
        messages = blocks.answer_messages(outcome.answer_id, outcome.text, outcome.sources)
    else:  # waiting for a reviewer, or declined (not found, guard): a note without buttons
        messages = [blocks.note(outcome.text)]
    shown = posting.show(client, deps.throttle, channel=question.channel_id, thread_ts=question.thread_ts,
                         ts=reply_ts, messages=messages)
    if shown is not None and shown != reply_ts:   # posted anew: a bot taking over edits it, not posts again
        with db.connection() as conn:
            store.set_reply(conn, row_id, shown)
    if outcome.status == "pending_review" and outcome.review_id is not None:
        reviews.post_card(client, deps.settings, outcome.review_id)
        if outcome.text == run.REVIEW_WAIT and (shown or reply_ts):
            _unless_decided_meanwhile(question, shown or reply_ts, outcome, client, deps)  # type: ignore[arg-type]


def _unless_decided_meanwhile(question: Question, note_ts: str, outcome: run.Outcome, client: WebClient,
                              deps: Deps) -> None:
    """Decided (in the dashboard) before the review note was up, the delivery updated a note that
    was not there yet: say now that the decision follows. A failure here leaves the note as it is."""
    try:
        now = run.outcome_as_asked(outcome.answer_id)
        if now is not None and now.text == run.REVIEW_DONE:
            posting.replace(client, deps.throttle, channel=question.channel_id, ts=note_ts,
                            message=blocks.note(run.REVIEW_DONE))
    except Exception:
        logger.exception("could not check the review of answer %s again", outcome.answer_id)


def _apologise(question: Question, reply_ts: str | None, client: WebClient, deps: Deps) -> None:
    try:
        posting.show(client, deps.throttle, channel=question.channel_id, thread_ts=question.thread_ts,
                     ts=reply_ts, messages=[blocks.apology()])
    except Exception:
        logger.exception("could not even apologise in %s", question.channel_id)
