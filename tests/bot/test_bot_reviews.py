"""Drafts that need a person: the card, reviewers' decisions, and the result in the asker's thread."""
from __future__ import annotations

import copy
import threading

import psycopg
import pytest
from bot_support import (ASKER, GROUP, GROUP_MEMBER, OUTSIDER, REVIEW_CHANNEL, REVIEWER, SALARY_DRAFT,
                         SALARY_QUESTION, SlackBot, pending_review, rows, wait_until)
from support.fake_slack import Call
from support.scripted_model import ScriptedModel

from bot import blocks, review_view, reviews, store
from bot.deliveries import DeliveryLoop
from core import db, feedback
from core.agent import graph, run
from core.knowledge import store as store_of_documents


def _review_id() -> int:
    return int(rows("SELECT id FROM reviews")[0]["id"])


def _results(bot: SlackBot, ts: str) -> list[Call]:
    """What the bot posted in the asker's thread besides the placeholder."""
    return bot.slack.calls_to("chat.postMessage", lambda c: c.args.get("thread_ts") == ts)[1:]


def _card_update(bot: SlackBot, card: Call) -> Call:
    return bot.slack.wait_for("chat.update", lambda c: c.args["channel"] == REVIEW_CHANNEL
                              and c.args["ts"] == card.response["ts"])[0]


def test_card_shows_question_asker_channel_draft_sources_confidence_reason_and_buttons(
        bot: SlackBot, model: ScriptedModel) -> None:
    _, card = pending_review(bot, model)
    text = card.shown_text
    assert SALARY_QUESTION in text and f"<@{ASKER}>" in text and "<#CGENERAL>" in text
    assert SALARY_DRAFT in text and "Salary bands › How salary bands work" in text
    assert "touches a sensitive topic (salary)" in text and "*Confidence*\n" in text
    review_id = str(_review_id())
    assert card.action_values() == {review_view.APPROVE: review_id, review_view.EDIT: review_id,
                                    review_view.REJECT: review_id}
    assert rows("SELECT review_channel_id, review_ts FROM slack_answers") == [
        {"review_channel_id": REVIEW_CHANNEL, "review_ts": card.response["ts"]}]


def test_reviewer_approves_and_asker_gets_the_draft_with_feedback_buttons_once(
        bot: SlackBot, model: ScriptedModel) -> None:
    ts, card = pending_review(bot, model)
    bot.click(card, review_view.APPROVE, user=REVIEWER)

    [result] = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == ts
                                  and "People team" in c.shown_text)
    answer_id = rows("SELECT answer_id FROM reviews")[0]["answer_id"]
    assert result.args["channel"] == "CGENERAL"
    assert result.action_values() == {blocks.RATE_UP: str(answer_id), blocks.RATE_DOWN: str(answer_id)}
    updated = _card_update(bot, card)
    assert not updated.action_values() and f"Approved by <@{REVIEWER}> on <!date^" in updated.shown_text
    [review] = rows("SELECT status, decided_by FROM reviews")
    assert review == {"status": "approved", "decided_by": REVIEWER}
    # the outbox row is marked sent when the posting transaction commits, just after the posts
    wait_until(lambda: rows("SELECT id FROM deliveries WHERE delivered_at IS NOT NULL"), what="delivery marked sent")
    assert rows("SELECT delivered_ts FROM slack_answers") == [{"delivered_ts": result.response["ts"]}]
    assert len(_results(bot, ts)) == 1


def test_group_member_edits_the_draft_in_a_prefilled_modal_and_asker_gets_the_edit(
        bot: SlackBot, model: ScriptedModel) -> None:
    ts, card = pending_review(bot, model)
    bot.click(card, review_view.EDIT, user=GROUP_MEMBER)
    modal = bot.modal(review_view.EDIT_MODAL)
    assert modal["private_metadata"] == str(_review_id())
    assert modal["blocks"][0]["element"]["initial_value"] == SALARY_DRAFT

    edited = "Bands are reviewed every March; ask your manager for yours [1]."
    bot.submit(modal, {"answer": {"answer": {"type": "plain_text_input", "value": edited}}}, user=GROUP_MEMBER)

    [result] = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == ts
                                  and "ask your manager" in c.shown_text)
    assert blocks.RATE_UP in result.action_values()
    updated = _card_update(bot, card)
    assert f"Edited and approved by <@{GROUP_MEMBER}>" in updated.shown_text and edited in updated.shown_text
    assert rows("SELECT status, decided_by, edited_text FROM reviews") == [
        {"status": "edited", "decided_by": GROUP_MEMBER, "edited_text": edited}]
    # The click and the submission both checked the group: Slack was asked once (about 20 such calls a minute).
    assert len(bot.slack.calls_to("usergroups.users.list")) == 1
    assert rows("SELECT final_answer FROM answers") == [{"final_answer": edited}]


def test_reviewer_rejects_with_a_reason_and_asker_is_told_a_person_will_follow_up(
        bot: SlackBot, model: ScriptedModel) -> None:
    ts, card = pending_review(bot, model)
    bot.click(card, review_view.REJECT, user=REVIEWER)
    modal = bot.modal(review_view.REJECT_MODAL)
    bot.submit(modal, {"reason": {"reason": {"type": "plain_text_input", "value": "bands are confidential"}}},
               user=REVIEWER)

    [result] = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == ts
                                  and "A person will follow up" in c.shown_text)
    assert not result.action_values() and "People team" not in result.shown_text
    updated = _card_update(bot, card)
    assert f"Rejected by <@{REVIEWER}>" in updated.shown_text and "bands are confidential" in updated.shown_text
    assert rows("SELECT status, reject_reason FROM reviews") == [
        {"status": "rejected", "reject_reason": "bands are confidential"}]
    # The review note above no longer promises the answer "once it's approved".
    note_ts = bot.placeholder("CGENERAL", ts).response["ts"]
    [note] = bot.slack.wait_for("chat.update", lambda c: c.args["ts"] == note_ts and c.shown_text == run.REVIEW_DONE)
    assert not note.action_values()


def test_the_card_of_a_follow_up_shows_the_turn_it_follows(bot: SlackBot, model: ScriptedModel) -> None:
    first = bot.mention("How do I get a new laptop?", channel="CGENERAL")
    bot.reply("CGENERAL", first)
    model.reply = SALARY_DRAFT
    bot.mention(SALARY_QUESTION, channel="CGENERAL", thread_ts=first)   # the follow-up goes to review
    card = bot.card()
    earlier = next(b for b in card.blocks if "Earlier in this thread" in str(b))
    assert "How do I get a new laptop?" in str(earlier)
    assert str(card.blocks).index("Earlier in this thread") < str(card.blocks).index(SALARY_QUESTION)


def test_a_draft_from_a_channels_own_documents_is_decided_on_the_dashboard_not_shown_to_the_review_channel(
        bot: SlackBot, model: ScriptedModel) -> None:
    with db.connection() as conn:   # the pay document: for #general only
        [(doc_id, _)] = [(d.id, d.source) for d in store_of_documents.list_documents(conn) if "salary" in d.source]
        store_of_documents.set_visibility(conn, doc_id, ["CGENERAL"], [])
    ts, card = pending_review(bot, model)
    assert SALARY_DRAFT not in card.shown_text and "Salary bands" not in card.shown_text
    assert SALARY_QUESTION in card.shown_text and not card.action_values()
    with db.connection() as conn:   # a card drawn before the rule, with its buttons
        review = feedback.get_review(conn, _review_id())
        drawn = review_view.review_card(review, feedback.get_answer(conn, review.answer_id), show_restricted=True)
    bot.click({**bot.message_of(card), "blocks": drawn.blocks}, review_view.EDIT, user=REVIEWER,
              channel=REVIEW_CHANNEL)
    [told] = bot.slack.wait_for("chat.postEphemeral", lambda c: c.args["user"] == REVIEWER)
    assert told.args["text"] == review_view.RESTRICTED_EDIT and not bot.slack.calls_to("views.open")

    decided = run.decide(_review_id(), {"action": "edit", "reviewer": "alice@northwind.example",
                                        "text": "Bands are set by the People team [1]."}, context=bot.context())
    assert decided is not None   # on the dashboard: the asker gets it, the card says who, not what
    bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == ts and "People team" in c.shown_text)
    updated = _card_update(bot, card)
    assert "Edited and approved by alice@northwind.example" in updated.shown_text
    assert "People team" not in updated.shown_text


def test_edit_or_reject_on_a_decided_review_says_so_before_any_modal(bot: SlackBot, model: ScriptedModel) -> None:
    _, card = pending_review(bot, model)
    with_buttons = copy.deepcopy(bot.message_of(card))  # as a second reviewer still sees it, not redrawn yet
    run.decide(_review_id(), {"action": "approve", "reviewer": "alice@northwind.example"}, context=bot.context())
    for action in (review_view.EDIT, review_view.REJECT):
        bot.click(with_buttons, action, user=REVIEWER, channel=REVIEW_CHANNEL)
    told = bot.slack.wait_for("chat.postEphemeral", lambda c: c.args["user"] == REVIEWER, count=2)
    assert [c.args["text"] for c in told] == ["alice@northwind.example already approved this answer, so nothing "
                                              "changed."] * 2
    assert not bot.slack.calls_to("views.open")  # no reason typed for nothing


@pytest.mark.parametrize(("modal_id", "action", "values"), [
    (review_view.EDIT_MODAL, review_view.EDIT, {"answer": {"answer": {"type": "plain_text_input",
                                                                       "value": "Bands: every March."}}}),
    (review_view.REJECT_MODAL, review_view.REJECT, {"reason": {"reason": {"type": "plain_text_input",
                                                                           "value": "Bands: every March."}}}),
])
def test_modal_submitted_after_another_reviewer_decided_says_who_and_shows_the_text_written(
        bot: SlackBot, model: ScriptedModel, modal_id: str, action: str, values: dict) -> None:
    ts, card = pending_review(bot, model)
    bot.click(card, action, user=REVIEWER)
    modal = bot.modal(modal_id)
    run.decide(_review_id(), {"action": "approve", "reviewer": GROUP_MEMBER}, context=bot.context())

    shown = bot.submit(modal, values, user=REVIEWER).json()
    assert shown["response_action"] == "update" and "submit" not in shown["view"]
    text = str(shown["view"]["blocks"])
    assert review_view.ALREADY_DECIDED in text and f"Approved by <@{GROUP_MEMBER}>" in text
    assert "Bands: every March." in text   # what they wrote is there to copy
    assert rows("SELECT status, decided_by FROM reviews") == [{"status": "approved", "decided_by": GROUP_MEMBER}]
    assert not bot.slack.calls_to("chat.postEphemeral", lambda c: c.args["user"] == REVIEWER)


def test_empty_edited_answer_is_refused_in_the_modal(bot: SlackBot, model: ScriptedModel) -> None:
    _, card = pending_review(bot, model)
    bot.click(card, review_view.EDIT, user=REVIEWER)
    modal = bot.modal(review_view.EDIT_MODAL)
    response = bot.submit(modal, {"answer": {"answer": {"type": "plain_text_input", "value": "   "}}}, user=REVIEWER)
    assert response.json() == {"response_action": "errors", "errors": {"answer": review_view.EMPTY_EDIT}}
    assert rows("SELECT status FROM reviews") == [{"status": "pending"}]


def test_reviewer_is_told_when_a_modal_decision_cannot_be_recorded(
        bot: SlackBot, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    _, card = pending_review(bot, model)
    bot.click(card, review_view.EDIT, user=REVIEWER)
    modal = bot.modal(review_view.EDIT_MODAL)

    def database_gone(*args: object) -> None:
        raise psycopg.OperationalError("the database went away")

    monkeypatch.setattr(store, "for_review", database_gone)   # the modal is closed by then
    bot.submit(modal, {"answer": {"answer": {"type": "plain_text_input", "value": "Bands: March."}}}, user=REVIEWER)

    told = bot.ephemeral(REVIEWER, review_view.DECISION_FAILED)
    assert told.args["channel"] == REVIEW_CHANNEL
    assert rows("SELECT status FROM reviews") == [{"status": "pending"}]


def test_non_reviewer_is_refused_privately_and_nothing_changes(bot: SlackBot, model: ScriptedModel) -> None:
    ts, card = pending_review(bot, model)
    for action in (review_view.APPROVE, review_view.EDIT, review_view.REJECT):
        bot.click(card, action, user=OUTSIDER)
    refusals = bot.slack.wait_for("chat.postEphemeral", lambda c: c.args["user"] == OUTSIDER, count=3)
    assert all(c.args["text"] == review_view.ONLY_REVIEWERS and c.args["channel"] == REVIEW_CHANNEL
               for c in refusals)
    # a modal submitted by someone who is not (or no longer) a reviewer is refused in the modal
    response = bot.submit(review_view.edit_modal(_review_id(), "x"),
                          {"answer": {"answer": {"type": "plain_text_input", "value": "sneaky"}}}, user=OUTSIDER)
    assert response.json()["errors"] == {"answer": review_view.ONLY_REVIEWERS}

    assert not bot.slack.calls_to("views.open")
    assert rows("SELECT status FROM reviews") == [{"status": "pending"}]
    assert not rows("SELECT id FROM deliveries") and not _results(bot, ts)


def test_refusal_on_a_card_with_replies_is_shown_beside_the_card_not_hidden_in_its_thread(
        bot: SlackBot, model: ScriptedModel) -> None:
    _, card = pending_review(bot, model)
    with_replies = {**bot.message_of(card), "thread_ts": card.response["ts"]}   # as Slack shows a thread's parent
    bot.click(with_replies, review_view.APPROVE, user=OUTSIDER, channel=REVIEW_CHANNEL)
    [refusal] = bot.slack.wait_for("chat.postEphemeral", lambda c: c.args["user"] == OUTSIDER)
    assert refusal.args["text"] == review_view.ONLY_REVIEWERS and refusal.args.get("thread_ts") is None


def test_two_fast_approve_clicks_deliver_once(bot: SlackBot, model: ScriptedModel) -> None:
    ts, card = pending_review(bot, model)
    clicks = [threading.Thread(target=bot.click, args=(card, review_view.APPROVE), kwargs={"user": REVIEWER})
              for _ in range(2)]
    for click in clicks:
        click.start()
    for click in clicks:
        click.join()

    bot.ephemeral(REVIEWER, "You already approved this answer; your first click counted.")   # the second click
    bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == ts and "People team" in c.shown_text)
    _card_update(bot, card)
    assert len(_results(bot, ts)) == 1
    assert len(bot.slack.calls_to("chat.update", lambda c: c.args["channel"] == REVIEW_CHANNEL)) == 1


def test_a_decision_slack_will_not_post_yet_still_closes_the_card_at_once(bot: SlackBot, model: ScriptedModel) -> None:
    ts, card = pending_review(bot, model)
    bot.slack.fail_next("chat.postMessage", body={"ok": False, "error": "service_unavailable"})   # the answer's post
    bot.click(card, review_view.APPROVE, user=REVIEWER)

    updated = _card_update(bot, card)   # other reviewers see it decided while the delivery waits for a later round
    assert f"Approved by <@{REVIEWER}>" in updated.shown_text and not updated.action_values()
    assert rows("SELECT failed_attempts FROM deliveries") == [{"failed_attempts": 1}]


def test_decision_taken_outside_slack_is_posted_by_the_delivery_loop(bot: SlackBot, model: ScriptedModel) -> None:
    ts, card = pending_review(bot, model)
    graph.reset_graphs()   # as if the dashboard were another process: the thread resumes from Postgres
    decided = run.decide(_review_id(), {"action": "approve", "reviewer": "alice@northwind.example"},
                         context=bot.context())
    assert decided is not None

    [result] = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == ts
                                  and "People team" in c.shown_text)
    assert blocks.RATE_DOWN in result.action_values()
    assert "Approved by alice@northwind.example" in _card_update(bot, card).shown_text


def test_decisions_queued_while_the_bot_was_down_are_posted_when_it_starts(
        bot: SlackBot, model: ScriptedModel) -> None:
    ts, _ = pending_review(bot, model)
    bot.loop.stop()
    run.decide(_review_id(), {"action": "reject", "reviewer": "cli", "reason": "not for chat"},
               context=bot.context())
    assert rows("SELECT delivered_at FROM deliveries") == [{"delivered_at": None}]

    bot.loop = DeliveryLoop(bot.deps).start()
    bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == ts
                       and "A person will follow up" in c.shown_text)
    wait_until(lambda: rows("SELECT delivered_at FROM deliveries WHERE delivered_at IS NOT NULL"),
               what="the delivery marked as sent")


@pytest.mark.parametrize(("channel", "logged"), [("", "no review channel is configured"),
                                                  ("CMISSING", "could not post the card")])
def test_review_without_a_usable_channel_still_tells_the_asker(
        bot: SlackBot, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        channel: str, logged: str) -> None:
    bot.slack.missing_channels.add("CMISSING")
    monkeypatch.setattr(bot.deps.settings, "review_channel", channel)
    model.reply = SALARY_DRAFT
    ts = bot.mention(SALARY_QUESTION)
    assert "A reviewer is checking this answer" in bot.reply("CGENERAL", ts).shown_text
    wait_until(lambda: any(logged in r.getMessage() for r in caplog.records), what=logged)

    assert len(bot.slack.calls_to("chat.update")) == 1   # no apology: the review waits in the dashboard
    assert rows("SELECT status FROM reviews") == [{"status": "pending"}]
    assert rows("SELECT review_ts FROM slack_answers") == [{"review_ts": None}]


def test_a_decision_made_before_the_review_note_is_up_leaves_no_promise_above_it(
        bot: SlackBot, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    # A reviewer in the dashboard decides in the moment between the agent pausing and the bot
    # showing its note: the delivery comes first, and updates a note that is not there yet.
    asked = run.ask

    def decided_at_once(*args: object, **kwargs: object) -> run.Outcome:
        outcome = asked(*args, **kwargs)  # type: ignore[arg-type]
        run.decide(outcome.review_id, {"action": "approve", "reviewer": "alice@northwind.example"},  # type: ignore[arg-type]
                   context=bot.context())
        bot.slack.wait_for("chat.update", lambda c: c.shown_text == run.REVIEW_DONE)   # the delivery's update
        return outcome

    monkeypatch.setattr(run, "ask", decided_at_once)
    model.reply = SALARY_DRAFT
    ts = bot.mention(SALARY_QUESTION, channel="CGENERAL")
    bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == ts and "People team" in c.shown_text)
    bot.card()   # posted after the review note
    note_ts = bot.placeholder("CGENERAL", ts).response["ts"]
    wait_until(lambda: bot.slack.calls_to("chat.update", lambda c: c.args["ts"] == note_ts)[-1].shown_text
               == run.REVIEW_DONE, what="the note saying the decision follows, last")


def test_a_failure_reading_the_review_again_leaves_the_review_note_not_an_apology(
        bot: SlackBot, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    def database_hiccup(answer_id: int) -> None:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(run, "outcome_as_asked", database_hiccup)
    ts, card = pending_review(bot, model)
    wait_until(lambda: rows("SELECT 1 FROM slack_answers WHERE question IS NULL"), what="the question done with")
    note_ts = bot.placeholder("CGENERAL", ts).response["ts"]
    assert [c.shown_text for c in bot.slack.calls_to("chat.update", lambda c: c.args["ts"] == note_ts)] == [run.REVIEW_WAIT]


def _hours_pass(hours: int) -> None:
    """As if `hours` had passed since the card went up (or its last reminder)."""
    with db.connection() as conn:
        conn.execute("UPDATE reviews SET created_at = created_at - make_interval(hours => %(h)s),"
                     " reminder_from = reminder_from - make_interval(hours => %(h)s)", {"h": hours})


def _reminders(bot: SlackBot, card: Call) -> list[Call]:
    return bot.slack.calls_to("chat.postMessage", lambda c: c.args.get("thread_ts") == card.response["ts"])


def test_a_review_left_pending_gets_one_reminder_per_interval_naming_the_reviewer_group(
        bot: SlackBot, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DeliveryLoop, "_remind_overdue_reviews", lambda loop: None)   # this test reminds
    _, card = pending_review(bot, model)
    settings, client = bot.deps.settings, bot.deps.client
    assert settings.review_reminder_hours == 4 and settings.reviewer_group == GROUP
    _hours_pass(3)
    assert reviews.remind_overdue(client, settings) == 0

    _hours_pass(2)
    assert reviews.remind_overdue(client, settings.model_copy(update={"review_reminder_hours": 0})) == 0   # off
    assert reviews.remind_overdue(client, settings) == 1
    [reminder] = _reminders(bot, card)
    assert reminder.args["channel"] == REVIEW_CHANNEL
    assert f"<!subteam^{GROUP}> Still waiting for a decision: this answer was put to review on <!date^" \
        in reminder.shown_text
    assert reviews.remind_overdue(client, settings) == 0   # not again within the interval

    _hours_pass(4)   # a card Slack refuses to thread under is tried again an interval later, not each round
    bot.slack.refused_threads[card.response["ts"]] = "thread_not_found"
    assert reviews.remind_overdue(client, settings) == 0
    assert reviews.remind_overdue(client, settings) == 0 and len(_reminders(bot, card)) == 2
    del bot.slack.refused_threads[card.response["ts"]]
    _hours_pass(4)
    assert reviews.remind_overdue(client, settings) == 1

    bot.click(card, review_view.APPROVE, user=REVIEWER)   # a decided review is never reminded
    wait_until(lambda: rows("SELECT status FROM reviews") == [{"status": "approved"}], what="the decision")
    _hours_pass(8)
    assert reviews.remind_overdue(client, settings) == 0


def test_the_delivery_loop_posts_the_reminders(bot: SlackBot, model: ScriptedModel) -> None:
    _, card = pending_review(bot, model)
    bot.loop.stop()
    _hours_pass(5)
    bot.loop = DeliveryLoop(bot.deps, poll_s=0.2).start()
    [reminder] = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == card.response["ts"])
    assert "Still waiting for a decision" in reminder.shown_text
