"""Ask the agent and decide its reviews: what every surface (Slack, dashboard, CLI) calls."""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal

import psycopg
from langgraph.types import Command

from core import db, feedback, logs, metrics, models, serving
from core.agent import nodes, prompts
from core.agent.graph import get_graph
from core.agent.state import AgentContext, Decision, new_turn
from core.config import get_settings
from core.knowledge.parse import storable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Asker:
    """Who asks, where: `thread_key` names the conversation, so follow-ups share a thread."""

    surface: feedback.Surface
    user_id: str | None = None
    channel_id: str | None = None
    thread_key: str = field(default_factory=lambda: f"cli:{uuid.uuid4().hex}")


@dataclass(frozen=True)
class Outcome:
    answer_id: int
    status: feedback.AnswerStatus
    route: feedback.Route
    text: str                      # what the asker sees now (the answer, a note, or a refusal)
    reason: str
    confidence: float | None
    sources: list[dict[str, Any]]
    review_id: int | None
    model: str | None
    adapter_id: str | None
    timings: dict[str, float]


class ReviewNotFound(LookupError):
    """No review has that id."""


class ReviewWithdrawn(ValueError):
    """The asker deleted the question: there is nothing left to decide."""

    def __init__(self, review_id: int) -> None:
        super().__init__(f"The asker deleted the question of review #{review_id}, so it needs no decision; "
                         "nothing was sent.")


class AgentFailed(RuntimeError):
    """Answering crashed; the answer row is marked failed. Carries the id for the apology."""

    def __init__(self, answer_id: int, cause: BaseException) -> None:
        super().__init__(f"answer {answer_id} failed: {cause}")
        self.answer_id = answer_id


REVIEW_WAIT = "A reviewer is checking this answer. You'll get it here once it's approved."
REVIEW_DONE = "A reviewer has checked this answer: what they decided follows in this thread."
# A decision reaches its thread within a second or so; one recorded longer ago and not yet
# applied was cut off (the deciding process died between recording and resuming).
STUCK_AFTER_S = 300.0
# A reviewer's action and the review status it records.
_STATUS: dict[Literal["approve", "edit", "reject"], Literal["approved", "edited", "rejected"]] = {
    "approve": "approved", "edit": "edited", "reject": "rejected"}
_ACTIONS: dict[str, Literal["approve", "edit", "reject"]] = {
    status: action for action, status in _STATUS.items()}


@lru_cache(maxsize=1)
def _default_generator(url: str | None = None) -> Any:
    """The configured backend, at `url` when a promotion moved serving to another server (TGI)."""
    from core.llm.backends import make_generator

    settings = get_settings()
    return make_generator(settings.model_copy(update={"llm_url": url}) if url else settings,
                          known_adapters=_launched_adapters)


def _launched_adapters() -> list[str]:
    """The adapters the serving TGI was started with, from the cache a promotion refreshes: TGI
    answers an adapter id it lacks with the base model, silently, so the id is checked first."""
    return _live_adapter_cache(db.database_url()).launched_adapters()


_live_caches: dict[str, models.LiveAdapterCache] = {}
_live_caches_lock = threading.Lock()


def _live_adapter_cache(url: str) -> models.LiveAdapterCache:
    """One cache (and listener) per database for the process."""
    with _live_caches_lock:
        if url not in _live_caches:
            _live_caches[url] = models.LiveAdapterCache(url)
        return _live_caches[url]


def close_live_adapter_caches() -> None:
    """Stop the caches' listeners (tests, before dropping their database; a process switching
    databases). A process that exits stops them itself."""
    with _live_caches_lock:
        for cache in _live_caches.values():
            cache.close()
        _live_caches.clear()


def default_context() -> AgentContext:
    """Settings, the configured generator, and the live adapter (None: the base model), read
    per question from a cache that a promotion refreshes."""
    settings = get_settings()
    live, started = _live_adapter_cache(db.database_url()).current()
    url = serving.effective_url(started, settings)
    return AgentContext(settings=settings, generator=_default_generator(url), adapter_id=live)


def ask(question: str, asker: Asker, *, context: AgentContext | None = None,
        on_recorded: Callable[[psycopg.Connection, int], None] | None = None) -> Outcome:
    """Run the agent on one question. Returns at once with a review note if the draft waits for
    a person; the decision resumes the same thread later (`decide`). `on_recorded(conn, answer_id)`
    runs in the transaction that records the answer: a surface links its own record of the
    question to it there, so that no stop between the two can leave an answer nobody finds."""
    context = context or default_context()
    question = storable(question)   # as the asker wrote it, less what Postgres cannot store
    graph = get_graph()
    config = {"configurable": {"thread_id": asker.thread_key}}
    with db.connection() as conn:
        answer_id = feedback.create_answer(conn, thread_key=asker.thread_key, surface=asker.surface,
                                           question=question, user_id=asker.user_id,
                                           channel_id=asker.channel_id)
        if on_recorded is not None:
            on_recorded(conn, answer_id)
    started = time.perf_counter()
    try:
        with logs.bound(answer=answer_id, thread=asker.thread_key):
            if _paused(graph, config, context, asker.user_id or ""):
                with db.connection() as conn:
                    feedback.update_answer(conn, answer_id, status="declined", route="declined",
                                           route_reason=feedback.AWAITS_REVIEW,
                                           final_answer=prompts.REVIEW_PENDING)
                return _outcome(answer_id, review_id=None)
            result = graph.invoke(new_turn(answer_id, question, asker.user_id, asker.channel_id), config,
                                  context=context)
    except Exception as e:
        logger.exception("agent failed on answer %s", answer_id)
        with db.connection() as conn:
            feedback.update_answer(conn, answer_id, status="failed", error=f"{type(e).__name__}: {e}")
        raise AgentFailed(answer_id, e) from e
    total = time.perf_counter() - started
    review_id = result["__interrupt__"][0].value["review_id"] if result.get("__interrupt__") else None
    with db.connection() as conn:
        answer = feedback.get_answer(conn, answer_id)
        timings = {**(answer.timings if answer else {}), "total": total}
        feedback.update_answer(conn, answer_id, timings=timings)
    metrics.observe_timings(timings)
    return _outcome(answer_id, review_id=review_id)


def _paused(graph: Any, config: dict[str, Any], context: AgentContext, asker: str) -> bool:
    """Whether the thread waits on a review. One whose answer was withdrawn (the asker deleted
    the question) is released first, nothing delivered; by the interrupt's id, so that a stale
    release (another process released it and asked on meanwhile) applies to nothing."""
    state = graph.get_state(config)
    if not state.interrupts:
        return False
    paused = state.values.get("answer_id")
    with db.connection() as conn:
        answer = feedback.get_answer(conn, paused) if paused is not None else None
    if answer is None or answer.status != "withdrawn":
        return True
    release = {"action": "withdraw", "reviewer": asker}
    graph.invoke(Command(resume={state.interrupts[0].id: release}), config, context=context)
    return bool(graph.get_state(config).interrupts)


def decide(review_id: int, decision: Decision, *, context: AgentContext | None = None) -> Outcome | None:
    """Apply a reviewer's decision: resume the paused thread, record and queue the delivery.
    Returns None when the review was already decided (a second click, another reviewer); raises
    `ReviewWithdrawn` (a ValueError) when the asker deleted the question meanwhile."""
    action = decision["action"]
    if action not in _STATUS:   # "withdraw" is the asker's, never a reviewer's
        raise ValueError(f"A review is decided by approve, edit or reject, not {action!r}.")
    if action == "edit" and not (decision.get("text") or "").strip():
        raise ValueError("An edited answer cannot be empty.")
    if action == "reject" and not (decision.get("reason") or "").strip():
        raise ValueError("Please give a reason for rejecting.")
    status = _STATUS[action]
    with db.connection() as conn:
        claimed = feedback.claim_review(conn, review_id, status=status, decided_by=decision["reviewer"],
                                        edited_text=decision.get("text"), reject_reason=decision.get("reason"))
        if claimed is None:
            review = feedback.get_review(conn, review_id)
            if review is None:
                raise ReviewNotFound(f"There is no review {review_id}.")
            if review.status == "withdrawn":
                raise ReviewWithdrawn(review_id)
            return None
        answer = feedback.get_answer(conn, claimed.answer_id)
    assert answer is not None
    try:
        _apply(answer, decision, context)
    except BaseException:  # Ctrl-C and SystemExit too; a killed process is left to `resume_decided`
        logger.exception("resuming review %s failed; it stays pending", review_id)
        with db.connection() as conn:
            conn.execute("UPDATE reviews SET status = 'pending', decided_by = NULL, decided_at = NULL"
                         " WHERE id = %(id)s", {"id": review_id})
        raise
    return _outcome(answer.id, review_id=review_id)


def resume_decided(*, context: AgentContext | None = None, older_than_s: float = STUCK_AFTER_S) -> int:
    """Apply the decisions recorded at least `older_than_s` ago that never reached their thread
    (`decide` reopens a review whose resume fails, but not from a killed process). Any process
    may call it at any time (the bot's delivery loop does, every round): a review being resumed
    is locked, so each is resumed once. Returns how many were resumed."""
    after, resumed = 0, 0
    while True:
        with db.connection() as conn:
            row = conn.execute(
                "SELECT r.id FROM reviews r JOIN answers a ON a.id = r.answer_id"
                " WHERE r.status <> 'pending' AND a.status = 'pending_review' AND r.id > %(after)s"
                " AND r.decided_at < now() - make_interval(secs => %(s)s)"
                " ORDER BY r.id LIMIT 1 FOR UPDATE OF r SKIP LOCKED", {"after": after, "s": older_than_s}).fetchone()
            if row is None:
                return resumed
            after = row["id"]
            try:
                _resume_one(conn, after, context)
                resumed += 1
            except Exception:  # one review that cannot be resumed must not hold up the others
                logger.exception("resuming decided review %s failed; trying again later", after)


def _resume_one(conn: psycopg.Connection, review_id: int, context: AgentContext | None) -> None:
    review = feedback.get_review(conn, review_id)
    answer = feedback.get_answer(conn, review.answer_id) if review else None
    assert review is not None and answer is not None and review.status != "pending"
    decision: Decision = {"action": _ACTIONS[review.status], "reviewer": review.decided_by or ""}
    if review.edited_text is not None:
        decision["text"] = review.edited_text
    if review.reject_reason is not None:
        decision["reason"] = review.reject_reason
    logger.warning("review %s was decided by %s at %s but never applied; resuming it now",
                   review_id, review.decided_by, review.decided_at)
    _apply(answer, decision, context)


def _apply(answer: feedback.Answer, decision: Decision, context: AgentContext | None) -> None:
    """Resume the answer's thread with the decision. When the thread is not waiting on this
    review (a later question ran in it meanwhile, or its saved state is gone: a database restored
    from `flywheel export` leaves the agent's checkpoints out), record and queue the decided
    answer directly, as the graph's deliver step would."""
    config = {"configurable": {"thread_id": answer.thread_key}}
    state = get_graph().get_state(config)
    if state.next and state.values.get("answer_id") == answer.id:
        get_graph().invoke(Command(resume=dict(decision)), config, context=context or default_context())
        return
    logger.warning("the thread of answer %s is not waiting on its review; applying the decision directly", answer.id)
    with db.connection() as conn:
        nodes.record_decided(conn, answer.id, decision, nodes.decided_text(decision, answer.draft or ""))


def outcome_as_asked(answer_id: int) -> Outcome | None:
    """What `ask` returned for this answer, read again, for a surface whose process stopped after
    the agent finished and before the asker saw it. An answer that went to review is the review
    note with its review while that is pending; once decided, a note that the decision follows
    (it is queued for delivery on its own). None while the answer is running, after it failed,
    or once withdrawn: there is nothing to show."""
    with db.connection() as conn:
        a = feedback.get_answer(conn, answer_id)
        review = feedback.review_for_answer(conn, answer_id)
    if a is None or a.status in ("running", "failed", "withdrawn"):
        return None
    if review is None or review.status == "pending":   # (a pending review's answer is pending_review)
        return _outcome_of(a, review_id=review.id if review else None)
    # Decided since: shown as a note without buttons, as the review note was; the decision follows.
    return replace(_outcome_of(a, review_id=None), status="pending_review", text=REVIEW_DONE)


def _outcome(answer_id: int, *, review_id: int | None) -> Outcome:
    with db.connection() as conn:
        a = feedback.get_answer(conn, answer_id)
    assert a is not None
    return _outcome_of(a, review_id=review_id)


def _outcome_of(a: feedback.Answer, *, review_id: int | None) -> Outcome:
    text = REVIEW_WAIT if a.status == "pending_review" else (a.final_answer or "")
    return Outcome(answer_id=a.id, status=a.status, route=a.route or "declined", text=text,
                   reason=a.route_reason or "", confidence=a.confidence, sources=a.sources,
                   review_id=review_id, model=a.model, adapter_id=a.adapter_id, timings=a.timings)
