"""The outbox: a decided answer is posted in the asker's thread once, however Slack answers the
first try; a refusal for good is final; a row that keeps failing is given up, not tried forever;
a decision whose deciding process died is still applied."""
from __future__ import annotations

from collections.abc import Callable

import pytest
from bot_support import (ASKER, REVIEW_CHANNEL, SALARY_DRAFT, SALARY_QUESTION, SlackBot, count_delivery_rounds,
                         pending_review, rows)
from support.polling import wait_until
from support.fake_slack import Call
from support.scripted_model import ScriptedModel

from bot import deliveries
from bot.deliveries import DeliveryLoop
from core import db, feedback
from core.agent import run


@pytest.fixture
def quick_rounds(bot: SlackBot) -> SlackBot:
    """The bot with a delivery loop that comes round as soon as it can (it still waits up to
    0.5 s for a notification) instead of every 30 s."""
    bot.loop.stop()
    bot.loop = DeliveryLoop(bot.deps, poll_s=0.1).start()
    return bot


@pytest.fixture
def more_rounds(quick_rounds: SlackBot, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Wait until the bot's delivery loop has come round again (twice)."""
    after = count_delivery_rounds(monkeypatch)
    return lambda: after(quick_rounds.deps)


def _is_answer(ts: str) -> Callable[[Call], bool]:
    """A try at posting the reviewed answer in the asker's thread (refused or not)."""
    return lambda c: c.args.get("thread_ts") == ts and "People team" in c.shown_text


def _answer_posts(bot: SlackBot, ts: str) -> list[Call]:
    return bot.slack.calls_to("chat.postMessage", _is_answer(ts))


def _posted(bot: SlackBot, ts: str) -> Call:
    """Wait for the answer to be posted in the asker's thread."""
    return bot.slack.wait_for("chat.postMessage", lambda c: _is_answer(ts)(c) and c.response["ok"])[0]


def _approve_outside_slack(bot: SlackBot) -> None:
    review_id = int(rows("SELECT id FROM reviews")[0]["id"])
    assert run.decide(review_id, {"action": "approve", "reviewer": "alice@northwind.example"}, context=bot.context()) is not None


def _outbox() -> list[dict]:
    return rows("SELECT delivered_at IS NOT NULL AS taken, failed_attempts FROM deliveries")


@pytest.mark.parametrize(("status", "error", "refusals"), [
    (429, "ratelimited", 4),        # the first try and each of the client's three retries
    (200, "internal_error", 1),
])
def test_delivery_slack_refuses_for_a_passing_reason_is_posted_once_on_a_later_round(
        quick_rounds: SlackBot, more_rounds: Callable[[], None], model: ScriptedModel, status: int, error: str,
        refusals: int) -> None:
    bot = quick_rounds
    ts, _ = pending_review(bot, model)
    for _ in range(refusals):
        bot.slack.fail_next("chat.postMessage", status=status, headers={"Retry-After": "0"},
                            body={"ok": False, "error": error})
    _approve_outside_slack(bot)

    _posted(bot, ts)
    wait_until(lambda: rows("SELECT delivered_ts FROM slack_answers WHERE delivered_ts IS NOT NULL"),
               what="the delivery recorded")
    more_rounds()   # nothing is posted again
    assert [c.response["ok"] for c in _answer_posts(bot, ts)] == [False] * refusals + [True]
    assert _outbox() == [{"taken": True, "failed_attempts": 1}]


def test_delivery_the_network_drops_is_counted_and_posted_once_on_a_later_round(
        quick_rounds: SlackBot, more_rounds: Callable[[], None], model: ScriptedModel) -> None:
    bot = quick_rounds
    ts, _ = pending_review(bot, model)
    bot.slack.drop_next("chat.postMessage", times=2)   # the first try and the client's one retry on a reset
    _approve_outside_slack(bot)

    _posted(bot, ts)
    more_rounds()   # nothing is posted again
    assert [c.response["ok"] for c in _answer_posts(bot, ts)] == [True]
    assert _outbox() == [{"taken": True, "failed_attempts": 1}]   # counted: a dead network is given up in time


def test_a_long_answer_edited_in_the_dashboard_reaches_the_asker_in_messages_slack_accepts(
        bot: SlackBot, model: ScriptedModel) -> None:
    ts, card = pending_review(bot, model)
    edited = "Salary bands are reviewed each March by the People team, with the budget. " * 300   # 22,800
    review_id = int(rows("SELECT id FROM reviews")[0]["id"])
    run.decide(review_id, {"action": "edit", "reviewer": "alice@northwind.example", "text": edited},
               context=bot.context())

    posts = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == ts and "People team"
                               in c.shown_text and c.response["ok"], count=3)
    assert not bot.slack.calls_to("chat.postMessage", lambda c: not c.response["ok"])   # no msg_blocks_too_long
    assert "".join(p.shown_text for p in posts).count("People team") == 300
    [redrawn] = bot.slack.wait_for("chat.update", lambda c: c.args["ts"] == card.response["ts"])
    assert redrawn.response["ok"] and "whole text is in the dashboard" in redrawn.shown_text


def _reviewers_told_undelivered(bot: SlackBot, card: Call, why: str) -> None:
    """The card shows the decision without buttons, and its thread says the asker never got it."""
    card_ts = card.response["ts"]
    [told] = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == card_ts)
    assert "never got the approved answer" in told.shown_text and why in told.shown_text
    assert f"<@{ASKER}>" in told.shown_text
    redrawn = bot.slack.wait_for("chat.update", lambda c: c.args["ts"] == card_ts)[-1]   # (each failed round too)
    assert "Approved by alice@northwind.example" in redrawn.shown_text and not redrawn.action_values()


def test_delivery_to_a_channel_slack_says_is_gone_is_not_retried_and_the_reviewers_are_told(
        quick_rounds: SlackBot, more_rounds: Callable[[], None], model: ScriptedModel,
        caplog: pytest.LogCaptureFixture) -> None:
    bot = quick_rounds
    ts, card = pending_review(bot, model)
    bot.slack.missing_channels.add("CGENERAL")   # archived or deleted since the question
    _approve_outside_slack(bot)

    wait_until(lambda: any("refused the answer" in r.getMessage() and "not retrying" in r.getMessage()
                           for r in caplog.records), what="the refusal logged")
    _reviewers_told_undelivered(bot, card, "channel_not_found")
    more_rounds()
    assert len(_answer_posts(bot, ts)) == 1
    assert _outbox() == [{"taken": True, "failed_attempts": None}]


def test_delivery_slack_keeps_refusing_is_given_up_after_max_attempts_and_the_reviewers_are_told(
        quick_rounds: SlackBot, more_rounds: Callable[[], None], model: ScriptedModel,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = quick_rounds
    monkeypatch.setattr(deliveries, "MAX_ATTEMPTS", 3)
    ts, card = pending_review(bot, model)
    for _ in range(3):
        bot.slack.fail_next("chat.postMessage", body={"ok": False, "error": "service_unavailable"})
    _approve_outside_slack(bot)

    wait_until(lambda: any("giving up on the answer" in r.getMessage() for r in caplog.records),
               what="the delivery given up")
    _reviewers_told_undelivered(bot, card, "failed 3 times (`service_unavailable`)")
    more_rounds()
    assert [c.response["ok"] for c in _answer_posts(bot, ts)] == [False] * 3
    assert _outbox() == [{"taken": True, "failed_attempts": 3}]


def test_a_delivery_whose_thread_is_not_on_record_is_given_up_without_holding_back_the_next(
        quick_rounds: SlackBot, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    bot = quick_rounds
    monkeypatch.setattr(deliveries, "MAX_ATTEMPTS", 1000)   # it is not a passing failure: no rounds to count
    ts, _ = pending_review(bot, model)
    with db.connection() as conn:   # a decided answer whose Slack question the bot has no record of
        lost = feedback.create_answer(conn, thread_key="slack:CGONE:1.1", surface="slack", question="Lost?")
        feedback.queue_delivery(conn, lost, "answer", "An answer nobody can be shown.")
    _approve_outside_slack(bot)

    _posted(bot, ts)
    wait_until(lambda: all(row["taken"] for row in _outbox()), what="both deliveries taken")
    assert any(f"answer for answer {lost} is not posted" in r.getMessage() for r in caplog.records)
    assert bot.slack.calls_to("chat.postMessage", lambda c: c.args["channel"] == "CGONE") == []


def test_a_review_note_that_cannot_be_updated_still_leaves_the_card_redrawn(
        quick_rounds: SlackBot, model: ScriptedModel) -> None:
    bot = quick_rounds
    ts, card = pending_review(bot, model)
    bot.slack.fail_next("chat.update", body={"ok": False, "error": "cant_update_message"})   # the note, first
    _approve_outside_slack(bot)
    _posted(bot, ts)
    [redrawn] = bot.slack.wait_for("chat.update", lambda c: c.args["ts"] == card.response["ts"] and c.response["ok"])
    assert "Approved by alice@northwind.example" in redrawn.shown_text and not redrawn.action_values()


def test_decision_recorded_by_a_process_that_died_before_resuming_is_posted_by_the_delivery_loop(
        bot: SlackBot, model: ScriptedModel) -> None:
    ts, card = pending_review(bot, model)
    review_id = int(rows("SELECT id FROM reviews")[0]["id"])
    with db.connection() as conn:   # what `run.decide` had done when its process was killed
        feedback.claim_review(conn, review_id, status="approved", decided_by="alice@northwind.example")
        conn.execute("UPDATE reviews SET decided_at = now() - interval '1 hour'")
    bot.loop.stop()
    bot.loop = DeliveryLoop(bot.deps).start()   # e.g. the bot starting again

    _posted(bot, ts)
    assert rows("SELECT status FROM answers") == [{"status": "delivered"}]
    bot.slack.wait_for("chat.update", lambda c: c.args["ts"] == card.response["ts"]
                       and "Approved by alice@northwind.example" in c.shown_text)


def test_a_thread_slack_keeps_refusing_does_not_hold_back_the_decisions_after_it(
        quick_rounds: SlackBot, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = quick_rounds
    monkeypatch.setattr(deliveries, "MAX_ATTEMPTS", 1000)   # ten minutes or more of rounds, in production
    stuck_ts, _ = pending_review(bot, model)
    bot.slack.refused_threads[stuck_ts] = "internal_error"   # a passing reason, again and again
    first, = (int(r["id"]) for r in rows("SELECT id FROM reviews"))
    run.decide(first, {"action": "approve", "reviewer": "alice@northwind.example"}, context=bot.context())
    wait_until(lambda: rows("SELECT 1 FROM deliveries WHERE failed_attempts >= 2"), what="the first refused twice")

    ts, _ = pending_review(bot, model)
    [second] = (int(r["id"]) for r in rows("SELECT id FROM reviews WHERE id <> %(f)s", f=first))
    run.decide(second, {"action": "approve", "reviewer": "alice@northwind.example"}, context=bot.context())
    _posted(bot, ts)
    assert not [c for c in _answer_posts(bot, stuck_ts) if c.response["ok"]]


def test_a_review_card_slack_refused_is_posted_on_a_later_round_once(
        quick_rounds: SlackBot, more_rounds: Callable[[], None], model: ScriptedModel) -> None:
    bot = quick_rounds
    bot.slack.missing_channels.add(REVIEW_CHANNEL)   # the bot not yet invited there, say
    model.reply = SALARY_DRAFT
    ts = bot.mention(SALARY_QUESTION, channel="CGENERAL")
    assert bot.reply("CGENERAL", ts).shown_text == run.REVIEW_WAIT   # the asker keeps the note, not an apology
    bot.slack.wait_for("chat.postMessage", lambda c: c.args["channel"] == REVIEW_CHANNEL and not c.response["ok"])

    bot.slack.missing_channels.discard(REVIEW_CHANNEL)   # invited now
    [card] = bot.slack.wait_for("chat.postMessage", lambda c: c.args["channel"] == REVIEW_CHANNEL and c.response["ok"])
    assert SALARY_QUESTION in card.shown_text and card.action_values()
    wait_until(lambda: rows("SELECT review_ts FROM slack_answers WHERE review_ts IS NOT NULL"), what="the card recorded")
    more_rounds()
    assert len(bot.slack.calls_to("chat.postMessage", lambda c: c.args["channel"] == REVIEW_CHANNEL
                                  and c.response["ok"])) == 1


def test_two_bot_processes_post_a_missing_review_card_once(
        bot: SlackBot, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from bot import posting, reviews

    bot.loop.stop()   # the two below are the processes' delivery rounds
    bot.slack.missing_channels.add(REVIEW_CHANNEL)
    model.reply = SALARY_DRAFT
    ts = bot.mention(SALARY_QUESTION, channel="CGENERAL")
    assert bot.reply("CGENERAL", ts).shown_text == run.REVIEW_WAIT
    wait_until(lambda: rows("SELECT 1 FROM slack_answers WHERE question IS NULL"), what="the question done with")
    bot.slack.missing_channels.discard(REVIEW_CHANNEL)

    first_posting, second_done, post = threading.Event(), threading.Event(), posting.post

    def slow_first_post(*args: object, **kwargs: object) -> str:
        if threading.current_thread().name == "first":
            first_posting.set()
            second_done.wait(10)   # the other process's round runs while this one is posting
        return post(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(posting, "post", slow_first_post)
    first = threading.Thread(target=reviews.post_missing_cards, args=(bot.deps.client, bot.deps.settings), name="first")
    first.start()
    assert first_posting.wait(30)
    reviews.post_missing_cards(bot.deps.client, bot.deps.settings)   # the second process
    second_done.set()
    first.join(30)
    cards = bot.slack.calls_to("chat.postMessage", lambda c: c.args["channel"] == REVIEW_CHANNEL and c.response["ok"])
    assert len(cards) == 1
    assert rows("SELECT review_ts FROM slack_answers") == [{"review_ts": cards[0].response["ts"]}]


def test_a_review_card_slack_could_not_be_reached_for_leaves_the_note_and_is_posted_later(
        quick_rounds: SlackBot, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    from urllib.error import URLError

    from bot import posting

    bot, post, failed = quick_rounds, posting.post, []

    def network_down_once(client: object, *, channel: str, **kwargs: object) -> str:
        if channel == REVIEW_CHANNEL and not failed:
            failed.append(channel)
            raise URLError("connection reset by peer")
        return post(client, channel=channel, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(posting, "post", network_down_once)
    model.reply = SALARY_DRAFT
    ts = bot.mention(SALARY_QUESTION, channel="CGENERAL")
    bot.slack.wait_for("chat.postMessage", lambda c: c.args["channel"] == REVIEW_CHANNEL and c.response["ok"])
    assert failed and bot.reply("CGENERAL", ts).shown_text == run.REVIEW_WAIT   # the note, not an apology
    note_ts = bot.placeholder("CGENERAL", ts).response["ts"]
    assert all(c.shown_text == run.REVIEW_WAIT for c in bot.slack.calls_to("chat.update", lambda c: c.args["ts"] == note_ts))
