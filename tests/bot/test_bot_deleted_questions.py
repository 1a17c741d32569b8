"""A question its asker deletes in a DM: not answered once deleted, its review closed undecided;
an answer already shown, or a decision already taken, stands."""
from __future__ import annotations

import copy
import logging
import threading

import pytest
import slack_payloads
from bot_support import (ASKER, BOT_USER, LAPTOP_ANSWER, REVIEW_CHANNEL, REVIEWER, SALARY_DRAFT, SALARY_QUESTION,
                         SlackBot, rows)
from support.polling import wait_until
from support.scripted_model import ScriptedModel

from bot import blocks, review_view
from core import curation, db
from core.agent import run


def _deleted_note(bot: SlackBot, ts: str, *, count: int) -> None:
    """The placeholder in the deleted question's thread, updated `count` times, ends as the note."""
    assert bot.reply("DASKER", ts, count=count).shown_text == blocks.QUESTION_DELETED


def test_a_dm_question_deleted_while_waiting_for_review_is_withdrawn_and_its_card_closes(
        bot: SlackBot, model: ScriptedModel) -> None:
    model.reply = SALARY_DRAFT
    ts = bot.dm(SALARY_QUESTION)
    assert "A reviewer is checking this answer" in bot.reply("DASKER", ts).shown_text
    card = bot.card()
    wait_until(lambda: rows("SELECT id FROM slack_answers WHERE review_ts IS NOT NULL AND question IS NULL"),
               what="the card up and the question done")
    as_first_posted = copy.deepcopy(bot.message_of(card))
    bot.click(card, review_view.REJECT, user=REVIEWER)   # a reviewer starts typing a reason
    modal = bot.modal(review_view.REJECT_MODAL)

    bot.delete(ts)

    _deleted_note(bot, ts, count=2)
    [closed] = bot.slack.wait_for("chat.update", lambda c: c.args["channel"] == REVIEW_CHANNEL)
    assert not closed.action_values()
    assert f"<@{ASKER}> deleted the question on <!date^" in closed.shown_text
    assert review_view.CARD_TITLES["withdrawn"] in closed.shown_text
    [row] = rows("SELECT a.id, a.status, r.status AS review, r.decided_by FROM answers a"
                 " JOIN reviews r ON r.answer_id = a.id")
    assert (row["status"], row["review"], row["decided_by"]) == ("withdrawn", "withdrawn", ASKER)

    # A reviewer who still had the old card open is told why nothing happens.
    bot.click(as_first_posted, review_view.APPROVE, user=REVIEWER, channel=REVIEW_CHANNEL)
    bot.ephemeral(REVIEWER, "The asker deleted the question of review")
    bot.click(as_first_posted, review_view.EDIT, user=REVIEWER, channel=REVIEW_CHANNEL)
    bot.ephemeral(REVIEWER, review_view.WITHDRAWN)   # said before any modal opens
    shown = bot.submit(modal, {"reason": {"reason": {"type": "plain_text_input", "value": "Bands are private."}}},
                       user=REVIEWER).json()
    assert shown["response_action"] == "update" and "submit" not in shown["view"]
    assert review_view.WITHDRAWN in str(shown["view"]["blocks"]) and "Bands are private." in str(shown["view"])
    review_id = int(rows("SELECT id FROM reviews")[0]["id"])
    with pytest.raises(run.ReviewWithdrawn, match="asker deleted the question"):   # the dashboard and CLI
        run.decide(review_id, {"action": "approve", "reviewer": "ann"})
    with pytest.raises(ValueError, match="approve, edit or reject, not 'withdraw'"):   # the asker's, not theirs
        run.decide(review_id, {"action": "withdraw", "reviewer": "ann"})
    assert not rows("SELECT id FROM deliveries")
    assert not bot.slack.calls_to("chat.postMessage", lambda c: c.args.get("thread_ts") == ts)[1:]
    with db.connection() as conn:   # never curated into training data
        assert row["id"] not in [r.answer_id for r in curation.list_answers(conn)]


def _deleted_while_drafting(bot: SlackBot, model: ScriptedModel, question: str) -> str:
    """DM `question`; the asker deletes it while the agent drafts its answer. Returns its ts."""
    drafting, deleted, answer_as_scripted = threading.Event(), threading.Event(), model.chat

    def held_chat(*args: object, **kwargs: object) -> object:
        drafting.set()
        deleted.wait(30)
        return answer_as_scripted(*args, **kwargs)  # type: ignore[arg-type]

    model.chat = held_chat  # type: ignore[method-assign]
    ts = bot.dm(question)
    assert drafting.wait(30)
    bot.delete(ts)
    wait_until(lambda: rows("SELECT id FROM slack_answers WHERE deleted_at IS NOT NULL"), what="the deletion noted")
    deleted.set()
    return ts


def test_a_dm_question_deleted_while_the_agent_drafts_it_is_never_answered(
        bot: SlackBot, model: ScriptedModel) -> None:
    ts = _deleted_while_drafting(bot, model, "How do I get a new laptop?")

    _deleted_note(bot, ts, count=1)
    wait_until(lambda: rows("SELECT id FROM slack_answers WHERE question IS NULL"), what="the question done")
    assert [r["status"] for r in rows("SELECT status FROM answers")] == ["withdrawn"]
    assert not bot.slack.calls_to("chat.update", lambda c: "Laptop request" in c.shown_text)


def test_a_deleted_sensitive_question_still_drafting_gets_no_review_card(bot: SlackBot, model: ScriptedModel) -> None:
    model.reply = SALARY_DRAFT
    ts = _deleted_while_drafting(bot, model, SALARY_QUESTION)

    _deleted_note(bot, ts, count=1)
    wait_until(lambda: rows("SELECT id FROM slack_answers WHERE question IS NULL"), what="the question done")
    assert rows("SELECT a.status, r.status AS review FROM answers a JOIN reviews r ON r.answer_id = a.id") == [
        {"status": "withdrawn", "review": "withdrawn"}]
    assert not bot.slack.calls_to("chat.postMessage", lambda c: c.args["channel"] == REVIEW_CHANNEL)


def _deletions_handled(caplog: pytest.LogCaptureFixture, count: int) -> None:
    wait_until(lambda: sum("deleted by its asker" in r.getMessage() for r in caplog.records) >= count,
               what=f"{count} deletions handled")


def test_deleting_a_question_already_answered_or_decided_changes_nothing(
        bot: SlackBot, model: ScriptedModel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.answering")
    answered = bot.dm("How do I get a new laptop?")
    shown = bot.reply("DASKER", answered)
    model.reply = SALARY_DRAFT
    decided = bot.dm(SALARY_QUESTION)
    bot.reply("DASKER", decided)
    card = bot.card()
    bot.click(card, review_view.APPROVE, user=REVIEWER)
    [sent] = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == decided
                                and "People team" in c.shown_text)

    bot.delete(answered)
    bot.delete(decided)
    _deletions_handled(caplog, 2)
    assert len(rows("SELECT id FROM slack_answers WHERE deleted_at IS NOT NULL")) == 2
    assert sorted(r["status"] for r in rows("SELECT status FROM answers")) == ["delivered", "delivered"]
    assert rows("SELECT status FROM reviews") == [{"status": "approved"}]
    assert bot.message_of(shown)["text"] == shown.args["text"]   # the answer stays as it was shown
    assert "People team" in bot.message_of(sent)["text"]
    assert not bot.slack.calls_to("chat.update", lambda c: c.shown_text == blocks.QUESTION_DELETED)


def test_a_question_whose_deletion_arrives_first_is_never_taken_up(
        bot: SlackBot, caplog: pytest.LogCaptureFixture) -> None:
    # Slack delivered the deletion, then retried the question's own event late.
    caplog.set_level(logging.INFO, logger="bot.answering")
    ts = bot.next_ts()
    bot.delete(ts)
    _deletions_handled(caplog, 1)
    bot.send_event(slack_payloads.direct_message(text="How do I get a new laptop?", user=ASKER, channel="DASKER",
                                                 ts=ts, event_id=f"Ev{ts}", bot_user_id=BOT_USER), retry_num=1)
    wait_until(lambda: any("already taken up" in r.getMessage() for r in caplog.records), what="the question seen")
    assert not rows("SELECT id FROM answers")
    assert not bot.slack.calls_to("chat.postMessage")


def test_a_thread_whose_follow_up_was_withdrawn_answers_the_next_without_it(
        bot: SlackBot, model: ScriptedModel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.answering")
    first = bot.dm("How do I get a new laptop?")
    bot.reply("DASKER", first)
    model.reply = SALARY_DRAFT
    follow_up = bot.dm(SALARY_QUESTION, thread_ts=first)
    bot.card()
    bot.delete(follow_up)
    _deletions_handled(caplog, 1)

    model.reply = LAPTOP_ANSWER
    bot.dm("And how long does delivery take?", thread_ts=first)
    [_, _, third] = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == first, count=3)
    [shown] = bot.slack.wait_for("chat.update", lambda c: c.args["ts"] == third.response["ts"])
    assert "Laptop request" in shown.shown_text   # not turned away as waiting on a review
    assert [r["status"] for r in rows("SELECT status FROM answers ORDER BY id")] == [
        "delivered", "withdrawn", "delivered"]
    remembered = " ".join(m.content for m in model.calls[-1])
    assert "How do I get a new laptop?" in remembered and SALARY_QUESTION not in remembered
