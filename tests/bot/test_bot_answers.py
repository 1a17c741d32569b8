"""Questions in Slack: mention or DM -> placeholder -> the answer in the thread, once."""
from __future__ import annotations

import threading

import psycopg
import pytest
import slack_payloads
from bot_support import (ASKER, BOT_USER, REVIEW_CHANNEL, SALARY_DRAFT, SALARY_QUESTION, SlackBot,
                         count_delivery_rounds, rows)
from support.polling import wait_until
from support.scripted_model import ScriptedModel

from bot import answering, blocks, deliveries, store
from bot.answering import ORPHANED_AFTER_S
from bot.deliveries import DeliveryLoop
from bot.deps import AGENT_RUNS, Deps
from core import db
from core.agent import prompts, run


def test_mention_gets_placeholder_then_answer_with_sources_and_feedback_buttons(bot: SlackBot) -> None:
    ts = bot.mention("How do I get a new laptop?", channel="CGENERAL")

    placeholder = bot.placeholder("CGENERAL", ts)
    assert placeholder.args["text"] == blocks.PLACEHOLDER
    answer = bot.reply("CGENERAL", ts)

    # mrkdwn control characters from the answer are escaped; citations stay numbered
    assert "Hardware &gt; Laptop request [1]" in answer.shown_text
    sources = next(b for b in answer.blocks if b.get("block_id") == "sources")
    assert sources["elements"][0]["text"] == (
        "[1] <https://handbook.example/it?section=laptops&amp;lang=en|Laptop requests › Getting a new laptop>")
    [row] = rows("SELECT a.id, a.status, a.surface, a.user_id, a.thread_key, s.reply_ts FROM answers a"
                 " JOIN slack_answers s ON s.answer_id = a.id")
    assert answer.action_values() == {blocks.RATE_UP: str(row["id"]), blocks.RATE_DOWN: str(row["id"])}
    assert row["status"] == "delivered" and row["surface"] == "slack" and row["user_id"] == ASKER
    assert row["thread_key"] == f"slack:CGENERAL:{ts}" and row["reply_ts"] == placeholder.response["ts"]


def test_follow_up_in_the_thread_shares_the_conversation(bot: SlackBot, model: ScriptedModel) -> None:
    ts = bot.mention("How do I get a new laptop?", channel="CGENERAL")
    bot.reply("CGENERAL", ts)
    bot.mention("And how long does delivery take?", channel="CGENERAL", thread_ts=ts)
    bot.slack.wait_for("chat.update", lambda c: c.args["channel"] == "CGENERAL", count=2)

    keys = rows("SELECT thread_key FROM answers ORDER BY id")
    assert [k["thread_key"] for k in keys] == [f"slack:CGENERAL:{ts}"] * 2
    # the model saw the first turn as history in the second
    assert any(m.content == "How do I get a new laptop?" for m in model.calls[-1])


def test_direct_message_is_answered_in_its_thread(bot: SlackBot) -> None:
    ts = bot.dm("How do I get a new laptop?", channel="DASKER")
    answer = bot.reply("DASKER", ts)
    assert "Laptop request" in answer.shown_text and blocks.RATE_UP in answer.action_values()


def _mention_in_a_shared_channel(bot: SlackBot, text: str) -> str:
    """An @mention in a Slack Connect channel, by someone of the other organisation."""
    return bot.mention(text, user="UOUTSIDE1", channel="CSHARED", shared=True)


def test_a_channel_shared_with_another_organisation_gets_a_note_not_an_answer_from_internal_documents(
        bot: SlackBot, model: ScriptedModel) -> None:
    ts = _mention_in_a_shared_channel(bot, "How do I get a new laptop?")
    [note] = bot.slack.wait_for("chat.postMessage", lambda c: c.args["channel"] == "CSHARED")
    assert note.args["thread_ts"] == ts and note.shown_text == blocks.SHARED_CHANNEL and not note.action_values()
    assert rows("SELECT id FROM answers") == [] and model.calls == []   # nothing searched, asked or kept
    bot.dm("How do I get a new laptop?", user="UOUTSIDE1", channel="DOUTSIDE", shared=True)   # another organisation's
    [note] = bot.slack.wait_for("chat.postMessage", lambda c: c.args["channel"] == "DOUTSIDE")
    assert note.shown_text == blocks.SHARED_DM and rows("SELECT id FROM answers") == []
    assert "Laptop request" in bot.reply("DASKER", bot.dm("How do I get a new laptop?")).shown_text   # staff's DMs are


@pytest.fixture
def shared_channels_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_ANSWER_IN_SHARED_CHANNELS", "true")


def test_shared_channels_are_answered_where_the_company_allows_it(shared_channels_answered: None,
                                                                  bot: SlackBot) -> None:
    ts = _mention_in_a_shared_channel(bot, "How do I get a new laptop?")
    assert "Laptop request" in bot.reply("CSHARED", ts).shown_text


def test_a_question_with_a_nul_or_half_a_surrogate_pair_is_answered(bot: SlackBot) -> None:
    ts = bot.mention("How do I get a new laptop?\x00 caf\udce9", channel="CGENERAL")
    assert "Laptop request" in bot.reply("CGENERAL", ts).shown_text
    assert rows("SELECT question FROM answers") == [{"question": "How do I get a new laptop? caf\ufffd"}]


def test_edits_bot_messages_and_other_message_events_are_not_answered(bot: SlackBot) -> None:
    bot.dm("How do I get a new laptop?", subtype="message_changed")
    bot.dm("How do I get a new laptop?", bot_id="B999")
    ts = bot.dm("How do I get a new laptop?")   # a real one, to know the others were processed first
    bot.reply("DASKER", ts)
    assert len(bot.slack.calls_to("chat.postMessage")) == 1
    assert len(rows("SELECT id FROM answers")) == 1


def test_an_edited_question_already_answered_gets_a_word_to_its_asker_not_a_second_answer(
        bot: SlackBot, model: ScriptedModel) -> None:
    ts = bot.mention("How do I get a new laptp?", channel="CGENERAL")
    bot.reply("CGENERAL", ts)
    # The asker fixes the typo: Slack sends the @mention again, as a new event marked edited.
    edited = slack_payloads.app_mention(text="How do I get a new laptop?", user=ASKER, channel="CGENERAL", ts=ts,
                                        event_id="EvEDITED1", bot_user_id=BOT_USER)
    edited["event"]["edited"] = {"user": ASKER, "ts": bot.next_ts()}
    bot.send_event(edited)
    [told] = bot.slack.wait_for("chat.postEphemeral", lambda c: c.args["user"] == ASKER)
    assert told.args["text"] == blocks.EDIT_NOT_ANSWERED and told.args["thread_ts"] == ts
    assert len(rows("SELECT id FROM answers")) == 1 and len(model.calls) == 1


def test_event_retry_is_not_answered_twice(bot: SlackBot) -> None:
    ts = bot.mention("How do I get a new laptop?", event_id="EvRETRY1")
    # Slack thought the first delivery timed out and sends the same event again
    bot.send_event(_same_mention(ts), retry_num=1)
    bot.send_event(_same_mention(ts), retry_num=2)
    bot.reply("CGENERAL", ts)

    assert len(bot.slack.calls_to("chat.postMessage", lambda c: c.args.get("thread_ts") == ts)) == 1
    assert len(rows("SELECT id FROM answers")) == 1
    assert rows("SELECT event_id FROM slack_events") == [{"event_id": "EvRETRY1"}]


def _same_mention(ts: str) -> dict:
    return slack_payloads.app_mention(text="How do I get a new laptop?", user=ASKER, channel="CGENERAL", ts=ts,
                                      event_id="EvRETRY1", bot_user_id=BOT_USER)


def test_agent_failure_leaves_an_apology_in_the_thread(bot: SlackBot, model: ScriptedModel) -> None:
    model.error = RuntimeError("the model server fell over")
    ts = bot.mention("How do I get a new laptop?")
    reply = bot.reply("CGENERAL", ts)

    assert blocks.APOLOGY in reply.shown_text and not reply.action_values()
    [row] = wait_until(lambda: rows("SELECT a.status, a.error FROM answers a JOIN slack_answers s"
                                    " ON s.answer_id = a.id"), what="the failed answer linked to its thread")
    assert row["status"] == "failed" and "fell over" in row["error"]


def test_with_the_database_down_slack_gets_its_ack_and_the_asker_one_apology(
        bot: SlackBot, monkeypatch: pytest.MonkeyPatch) -> None:
    def database_down(*args: object, **kwargs: object) -> None:
        raise psycopg.OperationalError("connection failed: Connection refused")

    ts = bot.next_ts()
    event = slack_payloads.app_mention(text="How do I get a new laptop?", user=ASKER, channel="CGENERAL", ts=ts,
                                       event_id="EvDOWN1", bot_user_id=BOT_USER)
    with monkeypatch.context() as down:
        down.setattr(store, "record_event", database_down)
        down.setattr(store, "open_question", database_down)
        bot.send_event(event)   # answered 200 (send_event checks): Slack would otherwise send it again and again
        bot.send_event(event, retry_num=1)   # sent again all the same (the first took over 3 s)
        [apology] = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == ts)
        assert apology.shown_text == blocks.APOLOGY
    # The database is back: a question asked now is answered, after the two above.
    bot.reply("CGENERAL", bot.mention("How do I get a new laptop?"))
    assert len(bot.slack.calls_to("chat.postMessage", lambda c: c.args.get("thread_ts") == ts)) == 1


def test_nothing_found_is_a_note_without_buttons(bot: SlackBot) -> None:
    ts = bot.mention("What is the capital of Mongolia's stock exchange index?")
    reply = bot.reply("CGENERAL", ts)
    assert "couldn't find this" in reply.shown_text and not reply.action_values()
    assert prompts.NOT_FOUND.split("{")[0].strip() in reply.shown_text


@pytest.mark.parametrize(("status", "error"), [(429, "ratelimited"), (503, "service_unavailable"), (500, "fatal_error")])
def test_an_update_slack_is_too_busy_for_is_retried_not_replaced_by_an_apology(
        bot: SlackBot, status: int, error: str) -> None:
    bot.slack.fail_next("chat.update", status=status, headers={"Retry-After": "0"}, body={"ok": False, "error": error})
    ts = bot.mention("How do I get a new laptop?")
    reply = bot.reply("CGENERAL", ts, count=2)
    assert reply.status == 200 and "Laptop request" in reply.shown_text


def test_a_post_slack_answered_500_is_not_sent_again_it_may_have_been_posted(bot: SlackBot) -> None:
    bot.slack.fail_next("chat.postMessage", status=500, body={"ok": False, "error": "fatal_error"})   # the placeholder
    ts = bot.mention("How do I get a new laptop?")
    answer = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == ts and c.response["ok"])[0]
    assert "Laptop request" in answer.shown_text   # posted in place of the placeholder, which was not tried again
    assert [c.status for c in bot.slack.calls_to("chat.postMessage", lambda c: c.args.get("thread_ts") == ts)] == [500, 200]


def test_placeholder_that_cannot_be_updated_is_replaced_by_a_new_message(bot: SlackBot) -> None:
    bot.slack.fail_next("chat.update", body={"ok": False, "error": "message_not_found"})  # someone deleted it
    ts = bot.mention("How do I get a new laptop?")
    answer = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == ts, count=2)[-1]
    assert "Laptop request" in answer.shown_text and blocks.RATE_UP in answer.action_values()


def test_questions_not_begun_when_the_bot_stops_are_answered_when_it_starts_again(
        bot: SlackBot, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    held, started = threading.Event(), threading.Semaphore(0)
    answer_as_scripted = model.chat

    def held_chat(*args: object, **kwargs: object) -> object:
        started.release()
        held.wait(30)
        return answer_as_scripted(*args, **kwargs)  # type: ignore[arg-type]

    model.chat = held_chat  # type: ignore[method-assign]
    asked = []
    for i in range(AGENT_RUNS):  # one at a time, so that these are the runs under way (an asker each)
        asked.append(bot.mention(f"How do I get a new laptop? ({i})", channel="CGENERAL", user=f"UASK{i}"))
        assert started.acquire(timeout=30), f"agent run {i} under way"
    asked.append(bot.mention(f"How do I get a new laptop? ({AGENT_RUNS})", channel="CGENERAL"))
    bot.placeholder("CGENERAL", asked[-1])  # taken up, waiting for a free agent run

    bot.loop.stop()  # what SIGTERM does (bot.serve.run): stop the loop, finish the runs under way
    stopping = threading.Thread(target=bot.deps.close)
    stopping.start()
    [kept] = wait_until(lambda: rows("SELECT question_ts, question FROM slack_answers"
                                     " WHERE question IS NOT NULL AND owner IS NULL"), what="the waiting question kept")
    held.set()
    stopping.join(timeout=30)
    assert kept == {"question_ts": asked[-1], "question": f"How do I get a new laptop? ({AGENT_RUNS})"}
    assert len(rows("SELECT id FROM answers")) == AGENT_RUNS and not bot.slack.calls_to(
        "chat.update", lambda c: c.args["ts"] == bot.placeholder("CGENERAL", asked[-1]).response["ts"])

    # A bot starts (or one still running wakes up): its loop takes the question up.
    restarted = Deps(settings=bot.deps.settings, client=bot.deps.client, agent_context=bot.context)
    after_two_more_rounds = count_delivery_rounds(monkeypatch)
    loop = DeliveryLoop(restarted, poll_s=0.5).start()
    try:
        reply = bot.reply("CGENERAL", asked[-1])  # the placeholder it left becomes the answer
        after_two_more_rounds(restarted)  # it must not answer again
    finally:
        loop.stop()
        restarted.close()
    assert "Laptop request" in reply.shown_text
    assert rows("SELECT question FROM slack_answers WHERE question_ts = %(ts)s", ts=asked[-1]) == [
        {"question": None}]
    assert len(rows("SELECT id FROM answers")) == AGENT_RUNS + 1


def test_an_askers_flood_of_questions_does_not_keep_others_waiting(bot: SlackBot, model: ScriptedModel) -> None:
    flooding, answer_as_scripted = threading.Event(), model.chat

    def slow_for_the_flood(messages: list, **kwargs: object) -> object:
        if any("Flood" in m.content for m in messages):
            flooding.wait(30)
        return answer_as_scripted(messages, **kwargs)  # type: ignore[arg-type]

    model.chat = slow_for_the_flood  # type: ignore[method-assign]
    try:
        flood = [bot.dm(f"Flood question {i}: how do I get a new laptop?") for i in range(AGENT_RUNS + 1)]
        wait_until(lambda: len(rows("SELECT id FROM answers")) == 1, what="the first of the flood under way")
        other = bot.dm("How do I get a new laptop?", user="UOTHER", channel="DOTHER")
        assert "Laptop request" in bot.reply("DOTHER", other).shown_text   # answered while the flood waits
        assert len(rows("SELECT id FROM answers WHERE user_id = %(u)s", u=ASKER)) == 1
    finally:
        flooding.set()
    for ts in flood:   # then the whole flood, none lost
        assert "Laptop request" in bot.reply("DASKER", ts).shown_text


def test_a_question_is_linked_to_its_answer_before_the_agent_runs(bot: SlackBot, model: ScriptedModel) -> None:
    # So a decision, or a bot taking the question over, always finds where the answer belongs.
    held, answer_as_scripted = threading.Event(), model.chat

    def held_chat(*args: object, **kwargs: object) -> object:
        held.wait(30)
        return answer_as_scripted(*args, **kwargs)  # type: ignore[arg-type]

    model.chat = held_chat  # type: ignore[method-assign]
    try:
        bot.mention("How do I get a new laptop?", channel="CGENERAL")
        [linked] = wait_until(lambda: rows("SELECT s.answer_id FROM slack_answers s JOIN answers a"
                                           " ON a.id = s.answer_id WHERE a.status = 'running'"), what="the link")
        assert linked["answer_id"] == rows("SELECT id FROM answers")[0]["id"]
    finally:
        held.set()


def test_a_question_in_progress_in_a_killed_bot_is_answered_by_one_still_running(
        bot: SlackBot, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    held = threading.Event()
    answer_as_scripted = model.chat

    def never_returns(*args: object, **kwargs: object) -> object:  # the process dies in the model call
        held.wait(60)
        return answer_as_scripted(*args, **kwargs)  # type: ignore[arg-type]

    model.chat = never_returns  # type: ignore[method-assign]
    ts = bot.mention("How do I get a new laptop?", channel="CGENERAL")
    placeholder = bot.placeholder("CGENERAL", ts).response["ts"]
    wait_until(lambda: rows("SELECT id FROM answers"), what="the agent run under way")
    _kill(bot)
    model.chat = answer_as_scripted  # type: ignore[method-assign]

    survivor = Deps(settings=bot.deps.settings, client=bot.deps.client, agent_context=bot.context)
    after_two_more_rounds = count_delivery_rounds(monkeypatch)
    loop = DeliveryLoop(survivor, poll_s=0.5).start()
    try:
        reply = bot.reply("CGENERAL", ts)  # the placeholder becomes the answer
        assert reply.args["ts"] == placeholder and "Laptop request" in reply.shown_text
        assert [r["status"] for r in rows("SELECT status FROM answers ORDER BY id")] == ["failed", "delivered"]
        after_two_more_rounds(survivor)  # it is answered once
        assert len(bot.slack.calls_to("chat.update", lambda c: c.args["ts"] == placeholder)) == 1
    finally:
        loop.stop()
        survivor.close()
        held.set()
    assert rows("SELECT question, owner FROM slack_answers") == [{"question": None, "owner": None}]


def _dies_at(monkeypatch: pytest.MonkeyPatch, module: object, name: str,
             calls: int = 1) -> tuple[threading.Event, threading.Event]:
    """The bot process dies in its first `calls` calls of `module.name`: they never return (when
    the test releases them, they fail). Returns (all reached, release)."""
    reached, release = threading.Event(), threading.Event()
    real = getattr(module, name)
    dying = iter(range(calls))
    lock = threading.Lock()

    def first_call_dies(*args: object, **kwargs: object) -> object:
        with lock:
            dies = next(dying, None)
        if dies is None:
            return real(*args, **kwargs)
        if dies == calls - 1:
            reached.set()
        release.wait(60)
        raise RuntimeError("this process was killed")

    monkeypatch.setattr(module, name, first_call_dies)
    return reached, release


def _kill(bot: SlackBot) -> None:
    bot.heartbeat.stop()  # no more signs of life, and after ORPHANED_AFTER_S it counts as gone
    bot.loop.stop()
    rows("UPDATE bot_processes SET seen_at = now() - make_interval(secs => %(s)s) WHERE id = %(p)s RETURNING id",
         s=ORPHANED_AFTER_S + 1, p=bot.deps.process_id)


def _survivor(bot: SlackBot) -> Deps:
    return Deps(settings=bot.deps.settings, client=bot.deps.client, agent_context=bot.context)


@pytest.mark.parametrize("sensitive", [False, True], ids=["answered", "sent-to-review"])
def test_an_answer_a_killed_bot_got_but_never_showed_is_shown_not_asked_again(
        bot: SlackBot, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch, sensitive: bool) -> None:
    reached, release = _dies_at(monkeypatch, answering, "_show")
    if sensitive:
        model.reply = SALARY_DRAFT
    ts = bot.mention(SALARY_QUESTION if sensitive else "How do I get a new laptop?", channel="CGENERAL")
    placeholder = bot.placeholder("CGENERAL", ts).response["ts"]
    assert reached.wait(30)  # the agent has answered; the process dies before showing it
    _kill(bot)
    asked = len(model.calls)

    survivor = _survivor(bot)
    after_two_more_rounds = count_delivery_rounds(monkeypatch)
    loop = DeliveryLoop(survivor, poll_s=0.5).start()
    try:
        reply = bot.reply("CGENERAL", ts)  # the placeholder becomes what the agent said
        after_two_more_rounds(survivor)
    finally:
        loop.stop()
        survivor.close()
        release.set()
    assert reply.args["ts"] == placeholder
    [answer] = rows("SELECT a.id, a.status FROM answers a JOIN slack_answers s ON s.answer_id = a.id")
    assert len(model.calls) == asked and len(rows("SELECT id FROM answers")) == 1   # not asked again
    if sensitive:
        assert "A reviewer is checking this answer" in reply.shown_text and answer["status"] == "pending_review"
        assert "Salary bands are reviewed" in bot.card().shown_text
        assert rows("SELECT review_ts FROM slack_answers")[0]["review_ts"] is not None
    else:
        assert "Laptop request" in reply.shown_text and answer["status"] == "delivered"
        assert reply.action_values()[blocks.RATE_UP] == str(answer["id"])


def test_a_killed_bot_that_had_posted_the_review_card_leaves_one_card(
        bot: SlackBot, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    reached, release = _dies_at(monkeypatch, store, "finish_question")
    model.reply = SALARY_DRAFT
    ts = bot.mention(SALARY_QUESTION, channel="CGENERAL")
    assert "A reviewer is checking" in bot.reply("CGENERAL", ts).shown_text
    assert reached.wait(30)  # note and card posted; the process dies before noting it is done
    bot.card()
    _kill(bot)

    survivor = _survivor(bot)
    after_two_more_rounds = count_delivery_rounds(monkeypatch)
    loop = DeliveryLoop(survivor, poll_s=0.5).start()
    try:
        wait_until(lambda: rows("SELECT 1 FROM slack_answers WHERE question IS NULL"), what="the question taken over")
        after_two_more_rounds(survivor)
    finally:
        loop.stop()
        survivor.close()
        release.set()
    assert len(bot.slack.calls_to("chat.postMessage", lambda c: c.args["channel"] == REVIEW_CHANNEL)) == 1
    assert len(rows("SELECT id FROM answers")) == 1 and len(rows("SELECT id FROM reviews")) == 1


def test_a_review_decided_before_the_question_was_taken_over_is_delivered_under_a_note_saying_so(
        bot: SlackBot, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    reached, release = _dies_at(monkeypatch, answering, "_show")
    model.reply = SALARY_DRAFT
    ts = bot.mention(SALARY_QUESTION, channel="CGENERAL")
    assert reached.wait(30)
    _kill(bot)
    [review] = rows("SELECT id FROM reviews")   # no card; a reviewer finds it in the dashboard
    assert run.decide(review["id"], {"action": "approve", "reviewer": "alice@northwind.example"},
                      context=bot.context()) is not None

    survivor = _survivor(bot)
    loop = DeliveryLoop(survivor, poll_s=0.5).start()
    try:
        note = bot.reply("CGENERAL", ts)
        [answer] = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == ts
                                      and "People team" in c.shown_text)
    finally:
        loop.stop()
        survivor.close()
        release.set()
    assert note.shown_text == run.REVIEW_DONE and answer.action_values()
    assert bot.slack.calls_to("chat.postMessage", lambda c: c.args["channel"] == REVIEW_CHANNEL) == []


def test_the_same_question_asked_twice_in_a_thread_keeps_an_answer_each_when_taken_over(
        bot: SlackBot, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    reached, release = _dies_at(monkeypatch, answering, "_show")
    first = bot.mention("How do I get a new laptop?", channel="CGENERAL")
    again = bot.mention("How do I get a new laptop?", channel="CGENERAL", thread_ts=first)   # asked again, impatient
    assert reached.wait(30)   # the first answered; the process dies showing it, the second waiting its turn
    bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == first   # both taken up by it
                       and "Looking through the docs" in c.shown_text, count=2)
    _kill(bot)

    survivor = _survivor(bot)
    loop = DeliveryLoop(survivor, poll_s=0.5).start()
    try:
        wait_until(lambda: rows("SELECT id FROM slack_answers WHERE question IS NULL AND answer_id IS NOT NULL")
                   [1:], what="both questions shown")
        apologies = bot.slack.calls_to("chat.update", lambda c: "went wrong" in c.shown_text)
    finally:
        loop.stop()
        survivor.close()
        release.set()   # (the dead process's calls now fail, and apologise: not what this test is about)
    linked = rows("SELECT question_ts, answer_id FROM slack_answers ORDER BY id")
    assert [r["question_ts"] for r in linked] == [first, again]
    assert sorted(r["answer_id"] for r in linked) == [r["id"] for r in rows("SELECT id FROM answers ORDER BY id")]
    assert len(model.calls) == 2 and apologies == []


def test_an_answer_posted_in_place_of_a_failed_placeholder_is_edited_not_posted_again_when_taken_over(
        bot: SlackBot, monkeypatch: pytest.MonkeyPatch) -> None:
    reached, release = _dies_at(monkeypatch, store, "finish_question")
    bot.slack.fail_next("chat.postMessage", body={"ok": False, "error": "internal_error"})   # the placeholder
    ts = bot.mention("How do I get a new laptop?", channel="CGENERAL")
    [posted] = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") == ts and c.response["ok"])
    assert reached.wait(30)   # the answer is shown; the process dies before noting it is done
    _kill(bot)

    survivor = _survivor(bot)
    loop = DeliveryLoop(survivor, poll_s=0.5).start()
    try:
        [edited] = bot.slack.wait_for("chat.update", lambda c: c.args["ts"] == posted.response["ts"])
    finally:
        loop.stop()
        survivor.close()
        release.set()
    assert "Laptop request" in edited.shown_text
    assert len(bot.slack.calls_to("chat.postMessage", lambda c: c.args.get("thread_ts") == ts and c.response["ok"])) == 1


def test_a_bot_whose_delivery_round_is_stuck_on_slack_is_still_alive_and_keeps_its_questions(
        bot: SlackBot, monkeypatch: pytest.MonkeyPatch) -> None:
    stuck, slack_answers = threading.Event(), threading.Event()

    def stuck_on_slack(deps: Deps) -> None:   # a backlog, Slack slow
        stuck.set()
        slack_answers.wait(60)

    monkeypatch.setattr(answering, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(deliveries, "drain", stuck_on_slack)
    bot.loop.stop()
    bot.loop = DeliveryLoop(bot.deps, poll_s=0.1).start()
    heartbeat = answering.Heartbeat(bot.deps.process_id).start()   # as `serve.alongside` runs them
    try:
        with db.connection() as conn:
            store.open_question(conn, channel_id="CGENERAL", question_ts="1.1", thread_ts="1.1", user_id=ASKER,
                                event_id=None, question="How do I get a new laptop?", owner=bot.deps.process_id)
        assert stuck.wait(30)
        noted_since = "SELECT 1 FROM bot_processes WHERE id = %(p)s AND seen_at > %(t)s + interval '1 second'"
        stuck_at = rows("SELECT now() AS t")[0]["t"]
        wait_until(lambda: rows(noted_since, p=bot.deps.process_id, t=stuck_at), what="a sign of life while stuck")
        with db.connection() as conn:
            assert store.release_orphans(conn, silent_for_s=5.0) == []   # another process finds it alive (25 beats)
    finally:
        slack_answers.set()
        heartbeat.stop()


def test_a_question_arriving_while_the_bot_stops_is_kept_for_the_next_start(bot: SlackBot) -> None:
    bot.deps.close()
    ts = bot.mention("How do I get a new laptop?", channel="CGENERAL")
    bot.placeholder("CGENERAL", ts)
    assert wait_until(lambda: rows("SELECT question FROM slack_answers WHERE question_ts = %(ts)s"
                                   " AND question IS NOT NULL AND owner IS NULL", ts=ts), what="the question kept")
