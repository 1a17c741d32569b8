"""Block Kit builders, the throttle and the question parser: pure pieces, called directly."""
from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from bot import answering, blocks, review_view
from bot.throttle import UpdateThrottle
from core import feedback

SOURCES = [
    {"n": 1, "title": "Laptops", "heading": "Ordering", "url": "https://wiki.example/it?a=1&b=2"},
    {"n": 2, "title": "Travel <internal>", "heading": "", "url": None},
    {"n": 3, "title": "Pay", "heading": "Bands", "url": "file:///srv/pay.md"},
]


def _answer(**overrides: object) -> feedback.Answer:
    values: dict = dict(id=7, thread_key="slack:C1:1.1", surface="slack", user_id="UASK", channel_id="C1",
                        question="Is R&D's <budget> public?", status="pending_review", route="review",
                        route_reason="touches a sensitive topic (salary)", draft="Yes, see the wiki [1].",
                        final_answer=None, confidence=0.42, sources=SOURCES[:1], model="m", adapter_id=None,
                        timings={}, error=None, created_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    values.update(overrides)
    return feedback.Answer(**values)


def _review(**overrides: object) -> feedback.Review:
    values: dict = dict(id=3, answer_id=7, reason="touches a sensitive topic (salary)", status="pending",
                        decided_by=None, decided_at=None, edited_text=None, reject_reason=None,
                        created_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    values.update(overrides)
    return feedback.Review(**values)


def test_escape_turns_slack_control_characters_into_entities() -> None:
    assert blocks.escape("a < b && c > d <@U1> <!channel>") == \
        "a &lt; b &amp;&amp; c &gt; d &lt;@U1&gt; &lt;!channel&gt;"


def test_long_text_splits_at_boundaries_within_the_section_limit_and_never_inside_an_entity() -> None:
    text = blocks.escape(("R&D " * 400 + "\n\n") * 4 + "x" * 7000 + "&" * 3000)
    chunks = blocks.split_text(text)
    assert all(0 < len(c) <= blocks.SECTION_CHARS for c in chunks)
    assert all(not c.endswith(("&", "&a", "&am", "&amp")) for c in chunks)
    assert "".join(chunks).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")
    assert chunks[0].endswith("R&amp;D")   # cut at the paragraph break, not mid-word


def test_answer_has_sections_cited_sources_and_feedback_buttons_with_the_answer_id() -> None:
    [message] = blocks.answer_messages(42, "Use **the portal** [1]. Ask <#it> & wait [1].", SOURCES)
    section, sources, actions = message.blocks
    assert section["text"]["text"] == "Use *the portal* [1]. Ask &lt;#it&gt; &amp; wait [1]."
    assert [e["text"] for e in sources["elements"]] == [
        "[1] <https://wiki.example/it?a=1&amp;b=2|Laptops › Ordering>"]   # only what is cited
    assert [(e["action_id"], e["value"]) for e in actions["elements"]] == [
        (blocks.RATE_UP, "42"), (blocks.RATE_DOWN, "42")]


def test_uncited_answer_lists_all_sources_and_links_only_web_urls() -> None:
    [message] = blocks.answer_messages(1, "No citations here.", SOURCES)
    assert [e["text"] for e in message.blocks[1]["elements"]] == [
        "[1] <https://wiki.example/it?a=1&amp;b=2|Laptops › Ordering>",
        "[2] Travel &lt;internal&gt;",
        "[3] Pay › Bands",
    ]


def test_link_cannot_break_out_of_its_markup() -> None:
    assert blocks.link("https://x.example/a b|c>d", "T") == "<https://x.example/a%20b%7Cc%3Ed|T>"


def test_very_long_answer_spreads_over_messages_of_at_most_50_blocks_buttons_on_the_last() -> None:
    text = "\n\n".join(f"Paragraph {i}: " + "word " * 550 for i in range(120))
    messages = blocks.answer_messages(9, text, SOURCES)
    assert len(messages) == 40   # a ~2,760-character section a paragraph: three fit under Slack's ~12,000
    assert all(len(m.blocks) <= blocks.MAX_BLOCKS and blocks.text_chars(m.blocks) <= blocks.MESSAGE_CHARS
               for m in messages)
    shown = " ".join(b["text"]["text"] for m in messages for b in m.blocks if b["type"] == "section")
    assert shown.split() == blocks.escape(text).split()   # every word, once, in order
    assert all(len(b["text"]["text"]) <= blocks.SECTION_CHARS for m in messages for b in m.blocks
               if b["type"] == "section")
    assert [b["type"] for b in messages[-1].blocks][-2:] == ["context", "actions"]
    assert not any(b["type"] == "actions" for m in messages[:-1] for b in m.blocks)
    assert all(0 < len(m.text) <= blocks.FALLBACK_CHARS for m in messages)


def test_feedback_modal_carries_only_the_answer_id_and_offers_every_reason() -> None:
    modal = blocks.feedback_modal(42)
    assert modal["callback_id"] == blocks.FEEDBACK_MODAL and modal["private_metadata"] == "42"
    assert [o["value"] for o in modal["blocks"][0]["element"]["options"]] == list(feedback.DOWN_REASONS)
    assert len(modal["title"]["text"]) <= 24


def test_feedback_form_reads_reason_and_optional_texts() -> None:
    values = {"reason": {"reason": {"selected_option": {"value": "unclear"}}},
              "correct": {"correct": {"value": "  It is on floor 2.  "}}, "comment": {"comment": {"value": None}}}
    assert blocks.read_feedback_form(values) == blocks.FeedbackForm("unclear", "It is on floor 2.", None)
    assert blocks.read_feedback_form({}).reason == "other"


def test_pending_card_has_the_facts_and_three_buttons_with_the_review_id() -> None:
    card = review_view.review_card(_review(), _answer())
    text = str(card.blocks)
    assert "Is R&amp;D's &lt;budget&gt; public?" in text and "<@UASK>" in text and "<#C1>" in text
    assert "0.42" in text and "touches a sensitive topic (salary)" in text and "Yes, see the wiki [1]." in text
    actions = card.blocks[-1]
    assert [(e["action_id"], e["value"]) for e in actions["elements"]] == [
        (review_view.APPROVE, "3"), (review_view.EDIT, "3"), (review_view.REJECT, "3")]


@pytest.mark.parametrize(("review", "title", "expected"), [
    (_review(status="approved", decided_by="UREV"), "Answer approved",
     [":white_check_mark: Approved by <@UREV> on <!date^"]),
    (_review(status="edited", decided_by="alice@example.com", edited_text="Better."), "Answer edited and approved",
     [":pencil2: Edited and approved by alice@example.com on <!date^", "Better."]),
    (_review(status="rejected", decided_by="UREV", reject_reason="no <way>"), "Answer rejected",
     [":no_entry: Rejected by <@UREV> on <!date^", "Reason: no &lt;way&gt;"]),
])
def test_decided_card_says_what_who_and_when_and_has_no_buttons(
        review: feedback.Review, title: str, expected: list[str]) -> None:
    decided = dt.datetime(2025, 3, 4, 5, 6, tzinfo=dt.UTC)
    card = review_view.review_card(dataclasses.replace(review, decided_at=decided), _answer())
    assert not any(b["type"] == "actions" for b in card.blocks)
    assert card.blocks[0]["text"]["text"] == title and card.text.startswith(f"{title}: ")   # not "waiting for review"
    text = str(card.blocks)
    assert f"<!date^{int(decided.timestamp())}^" in text
    assert all(e in text for e in expected)


def test_card_of_a_huge_draft_or_edit_stays_within_one_message() -> None:
    card = review_view.review_card(_review(), _answer(draft="word " * 200_000))
    assert len(card.blocks) <= blocks.MAX_BLOCKS and "dashboard" in str(card.blocks[-4:])
    assert blocks.text_chars(card.blocks) <= blocks.MESSAGE_CHARS
    edited = dataclasses.replace(_review(), status="edited", decided_by="U1", edited_text="Use the portal. " * 2000,
                                 decided_at=dt.datetime(2025, 3, 4, tzinfo=dt.UTC))
    card = review_view.review_card(edited, _answer(draft="word " * 200_000, question="q" * 4000))
    assert blocks.text_chars(card.blocks) <= blocks.MESSAGE_CHARS
    assert str(card.blocks).count("whole text is in the dashboard") == 2   # the draft's cut and the edit's
    # At the worst: ten sources with long titles full of '&' and long links, a long reason, an earlier turn
    sources = [{"n": n, "title": "R&D " * 200, "heading": "& " * 100, "url": "https://wiki.example/" + "x" * 3000,
                "chunk_id": n} for n in range(1, 11)]
    worst = _answer(draft="word " * 200_000, question="&" * 4000, sources=sources)
    card = review_view.review_card(dataclasses.replace(edited, reason="&" * 3000), worst,
                                   _answer(question="&" * 4000, final_answer="&" * 4000))
    assert blocks.text_chars(card.blocks) <= blocks.MESSAGE_CHARS + 100 < 12_000
    assert all(blocks.text_chars(m.blocks) <= blocks.MESSAGE_CHARS for m in blocks.answer_messages(
        1, "&" * 40_000, sources))


def test_a_follow_ups_card_shows_the_turn_before_it_and_a_first_questions_does_not() -> None:
    earlier = _answer(id=6, question="How do I order a laptop?", final_answer="In the IT portal [1].")
    card = review_view.review_card(_review(), _answer(question="And for contractors?"), earlier)
    [context] = [b for b in card.blocks if "Earlier in this thread" in str(b)]
    assert "How do I order a laptop?" in str(context) and "In the IT portal [1]." in str(context)
    assert "Earlier in this thread" not in str(review_view.review_card(_review(), _answer()).blocks)


def test_a_card_drafted_from_restricted_documents_shows_no_draft_sources_or_buttons_unless_reviewers_may_see_them(
        ) -> None:
    hr_only = [{**SOURCES[2], "restricted": True}]
    answer = _answer(draft="Band C pays 71,000 [1].", sources=hr_only)
    card = review_view.review_card(_review(), answer)
    shown = str(card.blocks)
    assert "Band C pays" not in shown and "Pay" not in shown and "pay.md" not in shown
    assert "review #3" in shown and "Is R&amp;D's &lt;budget&gt; public?" in shown   # the question stays
    assert not [b for b in card.blocks if b["type"] == "actions"]
    edited = _review(status="edited", decided_by="UREV", edited_text="Band C pays 72,000.",
                     decided_at=dt.datetime(2025, 1, 2, tzinfo=dt.UTC))
    assert "72,000" not in str(review_view.review_card(edited, answer).blocks)
    follow_up = review_view.review_card(_review(), _answer(question="And band D?"), answer)
    assert "Band C pays" not in str(follow_up.blocks)   # nor as the turn before a follow-up

    allowed = review_view.review_card(_review(), answer, show_restricted=True)
    assert "Band C pays" in str(allowed.blocks) and "Pay" in str(allowed.blocks)
    assert [b for b in allowed.blocks if b["type"] == "actions"]


def test_direct_message_questions_show_where_as_a_dm() -> None:
    assert "a direct message" in str(review_view.review_card(_review(), _answer(channel_id="D123")).blocks)


def test_undelivered_note_says_what_the_asker_missed_and_keeps_slack_error_text_inert() -> None:
    answer = _answer(user_id="U42")
    approved = review_view.undelivered(answer, "answer", "Slack said <is_archived>")
    rejected = review_view.undelivered(answer, "refusal", "posting it failed 20 times")
    assert approved.text.startswith(":warning: <@U42> never got the approved answer: Slack said &lt;is_archived&gt;.")
    assert "never got the note that a person will follow up" in rejected.text


def test_edit_modal_is_prefilled_with_the_whole_draft_up_to_slacks_input_limit() -> None:
    draft = "x" * 3000  # Slack's plain_text_input holds at most 3,000 characters
    modal = review_view.edit_modal(3, draft)
    element = modal["blocks"][0]["element"]
    assert modal["private_metadata"] == "3" and element["initial_value"] == draft and "submit" in modal


def test_draft_too_long_to_edit_in_slack_is_sent_to_the_dashboard_not_cut() -> None:
    modal = review_view.edit_modal(3, "x" * 5000)
    assert "submit" not in modal and not any(b["type"] == "input" for b in modal["blocks"])
    [note] = modal["blocks"]
    assert "5,000 characters" in note["text"]["text"] and "dashboard's *Reviews* page" in note["text"]["text"]
    assert "submit" not in review_view.edit_modal(3, "x" * 3001)  # one past Slack's input limit


def test_question_from_mention_drops_the_bots_mention_and_slacks_entities() -> None:
    event = {"type": "app_mention", "user": "U1", "channel": "C1", "ts": "2.0", "thread_ts": "1.0",
             "text": "<@UBOT> is R&amp;D &lt;open&gt;?  ask <@U9>"}
    question = answering.question_from_event(event, "Ev1", "UBOT")
    assert question == answering.Question(channel_id="C1", user_id="U1", text="is R&D <open>? ask <@U9>", ts="2.0",
                                          thread_ts="1.0", event_id="Ev1")
    assert question.thread_key == "slack:C1:1.0"
    assert answering.question_from_event({"text": "hi"}, "Ev2", "UBOT") is None
    assert answering.question_from_event({**event, "bot_id": "B2"}, "Ev3", "UBOT") is None   # no bot ping-pong


@pytest.mark.parametrize(("event", "answered"), [
    ({"channel_type": "im", "user": "U1", "text": "hi"}, True),
    ({"channel_type": "im", "user": "U1", "subtype": "file_share", "text": "what is this form?"}, True),
    ({"channel_type": "im", "user": "U1", "subtype": "file_share", "text": ""}, False),
    ({"channel_type": "im", "user": "U1", "subtype": "thread_broadcast", "thread_ts": "1.0", "text": "and?"}, True),
    ({"channel_type": "im", "user": "U1", "subtype": "message_changed"}, False),
    ({"channel_type": "im", "user": "U1", "subtype": "message_deleted"}, False),
    ({"channel_type": "im", "user": "U1", "subtype": "bot_message"}, False),
    ({"channel_type": "im", "user": "U1", "subtype": "channel_join"}, False),
    ({"channel_type": "im", "user": "U1", "bot_id": "B1"}, False),
    ({"channel_type": "channel", "user": "U1"}, False),
])
def test_only_peoples_new_direct_messages_are_questions(event: dict, answered: bool) -> None:
    assert answering.is_direct_question(event) is answered


def test_throttle_spaces_updates_of_one_message_but_not_of_different_ones() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    throttle = UpdateThrottle(1.0, clock=lambda: now[0], sleep=sleep)
    throttle.wait("C1", "1.0")
    throttle.wait("C1", "2.0")      # another message: no wait
    now[0] += 0.25
    throttle.wait("C1", "1.0")      # 0.25 s after the first update of this message
    assert slept == [0.75]
    now[0] += 5
    throttle.wait("C1", "1.0")
    assert slept == [0.75]
