"""The Reviews page: decisions resume the paused agent thread and queue the delivery to Slack."""
from __future__ import annotations

from pathlib import Path

from core import db, feedback
from core.agent import run
from dashboard_helpers import audit_rows, open_page, pending_review, texts


def deliveries(answer_id: int) -> list[dict]:
    with db.connection() as conn:
        return conn.execute("SELECT kind, text, delivered_at FROM deliveries WHERE answer_id = %(a)s",
                            {"a": answer_id}).fetchall()


def answer_status(answer_id: int) -> str:
    with db.connection() as conn:
        return feedback.get_answer(conn, answer_id).status  # type: ignore[union-attr]


def test_pending_queue_shows_the_draft_and_why(handbook: Path) -> None:
    pending = pending_review()
    at = open_page("reviews")
    page = texts(at)
    assert f"Review #{pending.review_id}" in page and "sensitive topic" in page
    assert "Salary bands are reviewed each March" in page


def test_a_follow_up_waiting_for_review_shows_the_turn_it_follows(handbook: Path) -> None:
    with db.connection() as conn:   # answered earlier in the same Slack thread
        earlier = feedback.create_answer(conn, thread_key="slack:C1:t1", surface="slack",
                                         question="Who sets pay bands?", user_id="U1", channel_id="C1")
        feedback.update_answer(conn, earlier, status="delivered", final_answer="The People team [1].")
    pending_review()
    at = open_page("reviews")
    assert "Earlier in this thread: Who sets pay bands? → The People team \\[1\\]\\." in [c.value for c in at.caption]


def test_approving_resumes_the_thread_and_queues_the_delivery(handbook: Path) -> None:
    pending = pending_review()
    at = open_page("reviews")
    at.button(key=f"rv_approve_{pending.review_id}").click().run()
    assert not at.error and f"Review #{pending.review_id} approved" in texts(at)
    assert "No drafts are waiting for review." in texts(at)
    assert answer_status(pending.answer_id) == "delivered"
    [delivery] = deliveries(pending.answer_id)
    assert delivery["kind"] == "answer" and delivery["text"] == "Salary bands are reviewed each March [1]."
    assert delivery["delivered_at"] is None  # the Slack bot posts it
    with db.connection() as conn:
        review = feedback.get_review(conn, pending.review_id)  # type: ignore[arg-type]
    assert review is not None and review.status == "approved" and review.decided_by.startswith("local:")
    [entry] = audit_rows()
    assert (entry["action"], entry["target"]) == ("review.approve", f"review:{pending.review_id}")


def test_edit_sends_the_reviewers_text(handbook: Path) -> None:
    pending = pending_review()
    at = open_page("reviews")
    at.text_area(key=f"rv_text_{pending.review_id}").input("Bands are reviewed every March [1].")
    at.button(key=f"rv_edit_{pending.review_id}").click().run()
    assert deliveries(pending.answer_id)[0]["text"] == "Bands are reviewed every March [1]."


def test_approve_refuses_an_edited_answer_and_sends_nothing(handbook: Path) -> None:
    pending = pending_review()
    at = open_page("reviews")
    at.text_area(key=f"rv_text_{pending.review_id}").input("Bands are reviewed every March [1].")
    at.button(key=f"rv_approve_{pending.review_id}").click().run()
    assert [e.value for e in at.error] == [
        f"You changed the text: use Send edited to send your edit for review #{pending.review_id}, "
        "or undo it to approve the draft."]
    assert answer_status(pending.answer_id) == "pending_review" and deliveries(pending.answer_id) == []
    assert audit_rows() == []


def test_empty_edit_and_reason_less_reject_are_refused(handbook: Path) -> None:
    pending = pending_review()
    at = open_page("reviews")
    at.text_area(key=f"rv_text_{pending.review_id}").input("  ")
    at.button(key=f"rv_edit_{pending.review_id}").click().run()
    assert [e.value for e in at.error] == ["An edited answer cannot be empty."]
    at.button(key=f"rv_reject_{pending.review_id}").click().run()
    assert [e.value for e in at.error] == ["Please give a reason for rejecting."]
    assert answer_status(pending.answer_id) == "pending_review" and deliveries(pending.answer_id) == []
    assert audit_rows() == []


def test_reject_with_reason_queues_a_refusal(handbook: Path) -> None:
    pending = pending_review()
    at = open_page("reviews")
    at.text_input(key=f"rv_reason_{pending.review_id}").input("bands are confidential")
    at.button(key=f"rv_reject_{pending.review_id}").click().run()
    assert answer_status(pending.answer_id) == "rejected"
    assert deliveries(pending.answer_id)[0]["kind"] == "refusal"
    assert audit_rows()[0]["details"]["reason"] == "bands are confidential"


def test_a_review_decided_elsewhere_says_already_decided(handbook: Path) -> None:
    pending = pending_review()
    at = open_page("reviews")
    run.decide(pending.review_id, {"action": "approve", "reviewer": "U_SLACK_REVIEWER"})  # type: ignore[arg-type]
    at.button(key=f"rv_approve_{pending.review_id}").click().run()
    assert [e.value for e in at.error] == [
        f"Review #{pending.review_id} was already decided by someone else; nothing changed."]
    assert len(deliveries(pending.answer_id)) == 1 and audit_rows() == []


def test_a_long_queue_shows_the_oldest_page_and_says_how_many_wait(dashboard_db: str) -> None:
    opened = []
    with db.connection() as conn:   # thirty drafts waiting (the records the agent writes), in this order
        for i in range(30):
            answer_id = feedback.create_answer(conn, thread_key=f"slack:C1:{i}", surface="slack", question=f"Q{i}?")
            feedback.update_answer(conn, answer_id, status="pending_review", route="review", draft=f"Draft {i}.")
            opened.append(feedback.open_review(conn, answer_id, "low confidence"))
    at = open_page("reviews")
    assert "30 waiting, oldest first; the oldest 25 are shown: each decision brings the next." in texts(at)
    shown = [b.key for b in at.button if b.key and b.key.startswith("rv_approve_")]
    oldest = opened[:25]   # one transaction: the same time, so the order they were opened in decides
    assert shown == [f"rv_approve_{i}" for i in oldest] and len(shown) == 25
