"""👍 / 👎 on answers: one vote per person and answer, the 👎 modal's reason and correction."""
from __future__ import annotations

import psycopg
import pytest
from bot_support import ASKER, OUTSIDER, SlackBot, rows
from support.fake_slack import Call
from support.polling import wait_until

from bot import blocks, notices
from core import db, feedback


def _answered(bot: SlackBot) -> tuple[int, Call, str]:
    ts = bot.mention("How do I get a new laptop?", channel="CGENERAL")
    answer = bot.reply("CGENERAL", ts)
    return int(answer.action_values()[blocks.RATE_UP]), answer, ts


def _votes() -> list[dict]:
    return rows("SELECT answer_id, user_id, rating, reason, comment, suggested_answer FROM feedback ORDER BY id")


def _reasons(reason: str, correct: str | None = None, comment: str | None = None) -> dict:
    return {"reason": {"reason": {"type": "radio_buttons", "selected_option": {
                "text": {"type": "plain_text", "text": blocks.REASON_LABELS[reason]}, "value": reason}}},
            "correct": {"correct": {"type": "plain_text_input", "value": correct}},
            "comment": {"comment": {"type": "plain_text_input", "value": comment}}}


def test_thumbs_up_then_down_with_reason_leaves_one_row_with_the_last_vote(bot: SlackBot) -> None:
    answer_id, answer, ts = _answered(bot)

    bot.click(answer, blocks.RATE_UP, user=ASKER)
    thanks = bot.ephemeral(ASKER, blocks.THANKS_UP)
    assert thanks.args["channel"] == "CGENERAL" and thanks.args["thread_ts"] == ts
    assert _votes() == [{"answer_id": answer_id, "user_id": ASKER, "rating": "up", "reason": None,
                         "comment": None, "suggested_answer": None}]

    bot.click(answer, blocks.RATE_DOWN, user=ASKER)
    modal = bot.modal(blocks.FEEDBACK_MODAL)
    assert modal["private_metadata"] == str(answer_id)
    assert [r["rating"] for r in _votes()] == ["down"]   # counted at the click, before the modal is sent

    response = bot.submit(modal, _reasons("outdated", correct="Order in the new ServiceDesk portal."), user=ASKER)
    assert response.json()["response_action"] == "update"   # recorded before the modal turns into thanks
    assert blocks.THANKS_DOWN in str(response.json()["view"]["blocks"])
    assert _votes() == [{"answer_id": answer_id, "user_id": ASKER, "rating": "down", "reason": "outdated",
                         "comment": None, "suggested_answer": "Order in the new ServiceDesk portal."}]


def test_each_person_has_their_own_vote(bot: SlackBot) -> None:
    _, answer, _ = _answered(bot)
    bot.click(answer, blocks.RATE_UP, user=ASKER)
    bot.click(answer, blocks.RATE_UP, user=OUTSIDER)
    bot.click(answer, blocks.RATE_UP, user=ASKER)
    bot.slack.wait_for("chat.postEphemeral", lambda c: c.args["text"] == blocks.THANKS_UP, count=3)
    assert sorted((v["user_id"], v["rating"]) for v in _votes()) == [(ASKER, "up"), (OUTSIDER, "up")]


def test_second_thumbs_down_keeps_and_shows_the_earlier_reason(bot: SlackBot) -> None:
    _, answer, _ = _answered(bot)
    bot.click(answer, blocks.RATE_DOWN, user=ASKER)
    bot.submit(bot.modal(blocks.FEEDBACK_MODAL), _reasons("incomplete", comment="no price"), user=ASKER)
    wait_until(lambda: _votes()[0]["reason"] == "incomplete", what="the reason recorded")

    bot.click(answer, blocks.RATE_DOWN, user=ASKER)
    again = bot.modal(blocks.FEEDBACK_MODAL, count=2)
    assert again["blocks"][0]["element"]["initial_option"]["value"] == "incomplete"
    assert again["blocks"][2]["element"]["initial_value"] == "no price"
    assert _votes()[0]["reason"] == "incomplete"


def test_thumbs_down_details_that_cannot_be_recorded_keep_the_modal_open_to_send_again(
        bot: SlackBot, monkeypatch: pytest.MonkeyPatch) -> None:
    _, answer, _ = _answered(bot)
    bot.click(answer, blocks.RATE_DOWN, user=ASKER)
    modal = bot.modal(blocks.FEEDBACK_MODAL)
    record_rating = feedback.record_rating

    def database_gone(*args: object, **kwargs: object) -> None:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(feedback, "record_rating", database_gone)
    details = _reasons("wrong", correct="Ask IT in #help-it.")
    refused = bot.submit(modal, details, user=ASKER).json()
    assert refused == {"response_action": "errors", "errors": {"reason": notices.SORRY}}
    assert _votes()[0]["reason"] is None

    monkeypatch.setattr(feedback, "record_rating", record_rating)
    assert bot.submit(modal, details, user=ASKER).json()["response_action"] == "update"
    assert (_votes()[0]["reason"], _votes()[0]["suggested_answer"]) == ("wrong", "Ask IT in #help-it.")


def test_thumbs_down_details_on_an_answer_since_deleted_say_so_in_the_modal(bot: SlackBot) -> None:
    answer_id, answer, _ = _answered(bot)
    bot.click(answer, blocks.RATE_DOWN, user=ASKER)
    modal = bot.modal(blocks.FEEDBACK_MODAL)
    with db.connection() as conn:
        conn.execute("DELETE FROM answers WHERE id = %s", (answer_id,))

    told = bot.submit(modal, _reasons("wrong"), user=ASKER).json()
    assert told["response_action"] == "update" and blocks.ANSWER_GONE in str(told["view"]["blocks"])
    assert "submit" not in told["view"]


def test_a_vote_on_an_answer_since_deleted_tells_the_voter(bot: SlackBot) -> None:
    answer_id, answer, _ = _answered(bot)
    with db.connection() as conn:
        conn.execute("DELETE FROM answers WHERE id = %s", (answer_id,))
    bot.click(answer, blocks.RATE_UP, user=ASKER)
    bot.click(answer, blocks.RATE_DOWN, user=OUTSIDER)
    bot.ephemeral(ASKER, blocks.ANSWER_GONE)
    bot.ephemeral(OUTSIDER, blocks.ANSWER_GONE)
    assert _votes() == [] and not bot.slack.calls_to("views.open")
