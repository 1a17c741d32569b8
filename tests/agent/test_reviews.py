"""Human review: decisions resume the paused thread, once, from any process."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from langgraph.types import Command
from typer.testing import CliRunner

from core import db, feedback
from core.agent import graph, prompts, run
from core.agent.state import AgentContext
from core.cli import app
from support.scripted_model import ScriptedModel

SALARY_DRAFT = "Salary bands are reviewed each March by the People team [1]."


def _pending(context: AgentContext, model: ScriptedModel, thread: str = "r1") -> run.Outcome:
    model.reply = SALARY_DRAFT
    outcome = run.ask("When are salary bands reviewed?",
                      run.Asker(surface="slack", user_id="U1", channel_id="C1", thread_key=f"slack:C1:{thread}"),
                      context=context)
    assert outcome.status == "pending_review" and outcome.review_id is not None
    return outcome


def _deliveries(answer_id: int) -> list[dict]:
    with db.connection() as conn:
        return conn.execute("SELECT kind, text FROM deliveries WHERE answer_id = %(a)s",
                            {"a": answer_id}).fetchall()


def test_approve_delivers_draft_once_and_second_click_does_nothing(context: AgentContext,
                                                                   model: ScriptedModel) -> None:
    pending = _pending(context, model)
    decided = run.decide(pending.review_id, {"action": "approve", "reviewer": "UREV"}, context=context)
    assert decided is not None and decided.status == "delivered" and decided.text == SALARY_DRAFT
    assert run.decide(pending.review_id, {"action": "approve", "reviewer": "UREV2"}, context=context) is None
    assert _deliveries(pending.answer_id) == [{"kind": "answer", "text": SALARY_DRAFT}]
    with db.connection() as conn:
        review = feedback.get_review(conn, pending.review_id)
    assert review is not None and review.status == "approved" and review.decided_by == "UREV"


def test_edit_delivers_the_reviewers_text(context: AgentContext, model: ScriptedModel) -> None:
    pending = _pending(context, model)
    decided = run.decide(pending.review_id, {"action": "edit", "reviewer": "UREV",
                                             "text": "Bands are reviewed every March [1]."}, context=context)
    assert decided is not None and decided.text == "Bands are reviewed every March [1]."
    assert _deliveries(pending.answer_id)[0]["text"] == "Bands are reviewed every March [1]."


def test_empty_edit_is_refused_and_review_stays_pending(context: AgentContext, model: ScriptedModel) -> None:
    pending = _pending(context, model)
    with pytest.raises(ValueError, match="cannot be empty"):
        run.decide(pending.review_id, {"action": "edit", "reviewer": "UREV", "text": "  "}, context=context)
    with db.connection() as conn:
        assert feedback.get_review(conn, pending.review_id).status == "pending"  # type: ignore[union-attr]


def test_reject_delivers_polite_refusal(context: AgentContext, model: ScriptedModel) -> None:
    pending = _pending(context, model)
    decided = run.decide(pending.review_id, {"action": "reject", "reviewer": "UREV",
                                             "reason": "bands are confidential"}, context=context)
    assert decided is not None and decided.status == "rejected"
    assert "A person will follow up" in decided.text
    assert _deliveries(pending.answer_id)[0]["kind"] == "refusal"


def test_new_question_in_thread_with_pending_review_gets_clear_note(context: AgentContext,
                                                                    model: ScriptedModel) -> None:
    _pending(context, model, thread="busy")
    follow_up = run.ask("And when do changes take effect?",
                        run.Asker(surface="slack", user_id="U1", channel_id="C1", thread_key="slack:C1:busy"),
                        context=context)
    assert follow_up.route == "declined" and "still checking the earlier answer" in follow_up.text


def test_a_follow_ups_earlier_turn_is_the_one_the_agent_remembers_not_a_note_or_a_failed_run(
        context: AgentContext, model: ScriptedModel) -> None:
    asker = run.Asker(surface="slack", user_id="U1", channel_id="C1", thread_key="slack:C1:turns")
    pending = _pending(context, model, thread="turns")
    run.ask("Any update?", asker, context=context)   # turned away: the salary answer awaits review
    run.decide(pending.review_id, {"action": "approve", "reviewer": "UREV"}, context=context)
    model.error = RuntimeError("model server fell over")
    with pytest.raises(run.AgentFailed):
        run.ask("And for contractors?", asker, context=context)
    model.error = None
    again = run.ask("And for contractors?", asker, context=context)   # asked again
    with db.connection() as conn:
        answer = feedback.get_answer(conn, again.answer_id)
        earlier = feedback.earlier_turn(conn, answer)   # type: ignore[arg-type]
    assert earlier is not None and earlier.id == pending.answer_id
    assert (earlier.question, earlier.final_answer) == ("When are salary bands reviewed?", SALARY_DRAFT)
    assert "When are salary bands reviewed?" in [m.content for m in model.calls[-1]]   # what the model was shown


def test_unknown_review_is_a_clear_error(context: AgentContext) -> None:
    with pytest.raises(LookupError, match="no review 999"):
        run.decide(999, {"action": "approve", "reviewer": "UREV"}, context=context)


def _review_status(review_id: int) -> str:
    with db.connection() as conn:
        review = feedback.get_review(conn, review_id)
    assert review is not None
    return review.status


def _answer_status(answer_id: int) -> str:
    with db.connection() as conn:
        answer = feedback.get_answer(conn, answer_id)
    assert answer is not None
    return answer.status


def _interrupted_in_deliver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C arrives while the resumed thread records its outcome (after the review node ran)."""
    def interrupted(*args: object, **kwargs: object) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(feedback, "queue_delivery", interrupted)


def _died_while_resuming(context: AgentContext, monkeypatch: pytest.MonkeyPatch, decision: dict) -> None:
    """The deciding process resumed the thread of review r1 and was cut off after the review node."""
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        _interrupted_in_deliver(patch)
        graph.get_graph().invoke(Command(resume=decision), {"configurable": {"thread_id": "slack:C1:r1"}},
                                 context=context)


def test_review_interrupted_while_resuming_is_reopened_and_can_be_decided_again(
        context: AgentContext, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    pending = _pending(context, model)
    with monkeypatch.context() as patch:
        _interrupted_in_deliver(patch)
        with pytest.raises(KeyboardInterrupt):
            run.decide(pending.review_id, {"action": "approve", "reviewer": "UREV"}, context=context)
    assert _review_status(pending.review_id) == "pending"

    decided = run.decide(pending.review_id, {"action": "approve", "reviewer": "UREV"}, context=context)
    assert decided is not None and decided.status == "delivered"
    assert _deliveries(pending.answer_id) == [{"kind": "answer", "text": SALARY_DRAFT}]


@pytest.mark.parametrize("died", ["before resuming", "while resuming"])
def test_decision_of_a_process_that_died_is_applied_once_by_resume_decided(
        context: AgentContext, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch, died: str) -> None:
    pending = _pending(context, model)
    edited = "Bands are reviewed every March [1]."
    with db.connection() as conn:   # what `decide` records before it resumes the thread
        feedback.claim_review(conn, pending.review_id, status="edited", decided_by="UREV", edited_text=edited)
    if died == "while resuming":    # the thread got past the review node, not to the end
        _died_while_resuming(context, monkeypatch, {"action": "edit", "reviewer": "UREV", "text": edited})

    assert run.resume_decided(context=context) == 0   # just decided: its own process may be resuming it
    assert run.resume_decided(context=context, older_than_s=0) == 1
    assert run.resume_decided(context=context, older_than_s=0) == 0
    assert _answer_status(pending.answer_id) == "delivered"
    assert _deliveries(pending.answer_id) == [{"kind": "answer", "text": edited}]


def test_decision_whose_thread_moved_on_is_still_delivered_once(
        context: AgentContext, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    pending = _pending(context, model)
    with db.connection() as conn:
        feedback.claim_review(conn, pending.review_id, status="approved", decided_by="UREV")
    _died_while_resuming(context, monkeypatch, {"action": "approve", "reviewer": "UREV"})
    model.reply = "New laptops are ordered through the IT portal [1]."
    run.ask("How do I get a new laptop?", run.Asker(surface="slack", user_id="U1", channel_id="C1",
                                                    thread_key="slack:C1:r1"), context=context)

    assert run.resume_decided(context=context, older_than_s=0) == 1
    assert _answer_status(pending.answer_id) == "delivered"
    assert run.resume_decided(context=context, older_than_s=0) == 0
    assert _deliveries(pending.answer_id) == [{"kind": "answer", "text": SALARY_DRAFT}]


@pytest.mark.parametrize(("decision", "kind", "text"), [
    ({"action": "approve", "reviewer": "UREV"}, "answer", SALARY_DRAFT),
    ({"action": "edit", "reviewer": "UREV", "text": "Each March [1]."}, "answer", "Each March [1]."),
    ({"action": "reject", "reviewer": "UREV", "reason": "stale"}, "refusal", prompts.REJECTED),
])
def test_a_review_restored_from_an_export_without_its_thread_can_still_be_decided(
        context: AgentContext, model: ScriptedModel, decision: dict, kind: str, text: str) -> None:
    pending = _pending(context, model)
    with db.connection() as conn:  # `flywheel export` leaves the agent's checkpoints out
        for table in ("checkpoint_writes", "checkpoint_blobs", "checkpoints"):
            conn.execute(f"DELETE FROM {table}")  # noqa: S608
    outcome = run.decide(pending.review_id, decision, context=context)  # type: ignore[arg-type]
    assert outcome is not None and outcome.text == text
    assert _answer_status(pending.answer_id) == ("rejected" if kind == "refusal" else "delivered")
    assert _deliveries(pending.answer_id) == [{"kind": kind, "text": text}]
    assert run.decide(pending.review_id, decision, context=context) is None  # type: ignore[arg-type]


def _flywheel(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "FLYWHEEL_LLM_BACKEND": "extractive"}
    return subprocess.run([sys.executable, "-m", "core.cli", *args], env=env, capture_output=True,
                          text=True, timeout=180)


def test_review_started_in_one_process_is_approved_from_a_fresh_one(database_url: str, handbook: Path) -> None:
    asked = _flywheel("ask", "When are salary bands reviewed?", database_url=database_url)
    assert asked.returncode == 0, asked.stderr
    assert "sent to review" in asked.stdout
    graph.reset_graphs()
    with db.connection() as conn:
        [(review, answer)] = feedback.pending_reviews(conn)
    listed = CliRunner().invoke(app, ["reviews", "ls"])   # what the reviewer approves, before approving it
    assert listed.exit_code == 0, listed.output
    assert f"Review {review.id} (" in listed.output and "sensitive topic (salary)" in listed.output
    assert textwrap.indent(f"Question: When are salary bands reviewed?\nDraft: {answer.draft}\n", "  ") \
        + "  [1] " in listed.output
    approved = _flywheel("reviews", "approve", str(review.id), database_url=database_url)
    assert approved.returncode == 0, approved.stderr
    assert "Salary bands" in approved.stdout or "salary band" in approved.stdout.lower()
    again = _flywheel("reviews", "approve", str(review.id), database_url=database_url)
    assert again.returncode == 1 and "already decided" in again.stderr
    assert len(_deliveries(answer.id)) == 1
