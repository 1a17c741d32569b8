"""The agent's steps. Each takes the state and the run-time context and returns an update."""
from __future__ import annotations

import datetime as dt
import logging
import re
import time
from typing import Any

import psycopg
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from core import db, feedback
from core.agent import prompts
from core.agent.assess import groundedness, sensitive_topic
from core.agent.state import AgentContext, AgentState, Decision, Source
from core.knowledge import search
from core.llm import extractive
from core.llm.base import BackendUnavailable, LLMError, UnknownAdapter

logger = logging.getLogger(__name__)

# Instructions aimed at the assistant; not questions that merely say "ignore the previous travel
# rules", "if you are now on the night shift", "forget the prior instructions from HR", or ask how
# to turn on developer mode on a phone or whether jailbreaking a company iPhone is allowed.
_ABOUT_THE_ASSISTANT = r"(?:the\s+)?(?:system|developers?|assistant|model|ai|openai|above|admins?)\b|your\b|me\b|now\b"
_INJECTION = re.compile(
    r"\b(ignore|disregard|forget)\b.{0,20}\b(previous|prior|above|earlier|your|all)\b.{0,20}"
    r"\b(instructions?|prompts?)\b"
    rf"(?!\s+(?:from|by)\s+(?!{_ABOUT_THE_ASSISTANT}))"   # "… instructions from HR": a named source's
    r"|\b(reveal|print|show|repeat)\b.{0,20}\b(system|hidden)\s+prompt\b"
    r"|\byou are now (dan|unrestricted|jailbroken|free of|no longer bound)\b"
    r"|(?:^|[.!:]\s*)(dan|stan|dude|jailbreak|developer)\s+mode\s+(enabled|activated)\b(?!\s+(on|in|for)\b)"
    r"|\b(act|acting|respond|answer|pretend|simulate)\b.{0,40}\bwith\s+developer mode\b"
    r"|\b(you are|you're)\s+(now\s+)?(in|running in)\s+developer mode\b"
    # "enable developer mode on my phone / in Chrome" names a device; without one it is aimed here
    r"|\b(enable|enter|activate|switch\s+(?:to|into)|turn\s+on)\s+(the\s+)?developer mode\b(?!\s+(on|in|for|of)\b)"
    r"|\bdan\s+(jailbreak|prompt)\b"
    r"|\bjailbreak\s+(yourself|you|this\s+(assistant|bot|model|ai|chat)|the\s+(assistant|bot|model|ai))\b",
    re.IGNORECASE | re.DOTALL,
)


def _timed(state: AgentState, step: str, started: float) -> dict[str, float]:
    return {**state.get("timings", {}), step: time.perf_counter() - started}


def _declined(state: AgentState, step: str, started: float, text: str, reason: str) -> dict[str, Any]:
    return {"route": "declined", "final": text, "reason": reason, "timings": _timed(state, step, started)}


def guard(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Turn away what needs no model: empty, oversized, wordless or injection-shaped input."""
    started = time.perf_counter()
    question = state["question"].strip()
    limit = runtime.context.settings.max_question_chars
    if not question:
        return _declined(state, "guard", started, prompts.EMPTY_QUESTION, "empty question")
    if len(question) > limit:
        return _declined(state, "guard", started, prompts.TOO_LONG.format(n=len(question), limit=limit),
                         "question too long")
    if not any(ch.isalnum() for ch in question):
        return _declined(state, "guard", started, prompts.EMPTY_QUESTION, "no words in question")
    if _INJECTION.search(question):
        return _declined(state, "guard", started, prompts.INJECTION, "injection-shaped input")
    return {"timings": _timed(state, "guard", started)}


def retrieve(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Hybrid search with what the asker may see. A short follow-up is searched together with
    the question before it, so "and in Toronto?" finds what the thread is about."""
    started = time.perf_counter()
    settings = runtime.context.settings
    query = state["question"].strip()
    history = state.get("history") or []
    if history and len(query.split()) < 6:
        # The follow-up first: the embedder reads only a query's first 256 word pieces, and the
        # question before may be long enough to push the follow-up out of them, and out of the cut.
        query = f"{query} {history[-1]['question']}"
    viewer = search.Viewer(user_id=state.get("user_id"), channel_id=state.get("channel_id"))
    try:
        with db.connection() as conn:
            hits = search.hybrid_search(conn, query[: settings.max_query_chars], viewer, k=settings.search_k)
    except search.QueryError as e:
        return _declined(state, "retrieve", started, str(e), "unsearchable question")
    relevant = [h for h in hits if (h.dense_score or 0.0) >= settings.min_relevance]
    sources: list[Source] = [
        Source(n=i, chunk_id=h.chunk_id, document_id=h.document_id, title=h.title, heading=h.heading,
               url=h.url, text=h.text, score=h.score, dense_score=h.dense_score, restricted=h.restricted)
        for i, h in enumerate(relevant, start=1)
    ]
    if not sources:
        return {"sources": [], **_declined(state, "retrieve", started,
                                           prompts.NOT_FOUND.format(contact=settings.fallback_contact),
                                           "nothing relevant found")}
    return {"sources": sources, "timings": _timed(state, "retrieve", started)}


def draft(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """The live model writes an answer citing [n]; with no model reachable, quote the sources."""
    started = time.perf_counter()
    ctx = runtime.context
    sources = state["sources"]
    if ctx.generator is None:
        return _extractive(state, started, "extractive answers are configured")
    history = state.get("history") or []
    messages = prompts.answer_messages(state["question"], sources, history)
    restricted_context = any(turn.get("restricted") for turn in history[-prompts.MAX_HISTORY:])
    try:
        gen = _generate(ctx, messages)
    except BackendUnavailable as e:
        logger.warning("model server unreachable, answering with excerpts: %s", e)
        return _extractive(state, started, "the model server is unreachable")
    except LLMError as e:  # overloaded past its retries, a refused request, a failed generation
        logger.error("the model server could not answer, answering with excerpts: %s", e)
        return _extractive(state, started, "the model server could not answer")
    return {"draft": gen.text.strip(), "restricted_context": restricted_context, "model": gen.model,
            "adapter_id": gen.adapter_id,
            "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
            "timings": _timed(state, "draft", started)}


def _generate(ctx: AgentContext, messages: list[Any]) -> Any:
    """The live adapter's answer, or the base model's when the server lacks the adapter (e.g.
    restarted without it): a question is not failed for that."""
    try:
        return ctx.generator.chat(messages, adapter_id=ctx.adapter_id, max_new_tokens=ctx.settings.llm_max_new_tokens)
    except UnknownAdapter as e:
        logger.error("the model server lacks the live adapter %s, answering with the base model: %s",
                     ctx.adapter_id, e)
        return ctx.generator.chat(messages, adapter_id=None, max_new_tokens=ctx.settings.llm_max_new_tokens)


def _extractive(state: AgentState, started: float, why: str) -> dict[str, Any]:
    quoted = extractive.extractive_answer(state["question"], [(s["title"], s["text"]) for s in state["sources"]])
    text = f"{quoted}\n\n{prompts.EXTRACTIVE_NOTE.format(why=why)}"
    return {"draft": text, "model": "extractive", "adapter_id": None, "timings": _timed(state, "draft", started)}


def assess(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Confidence from retrieval and groundedness; sensitive topics always go to a person."""
    started = time.perf_counter()
    settings = runtime.context.settings
    sources = state["sources"]
    top = max((s["dense_score"] or 0.0) for s in sources)
    # An extractive draft quotes the sources word for word: grounded by construction.
    texts = [s["text"] for s in sources]
    grounded = 1.0 if state.get("model") == "extractive" else groundedness(state["draft"], texts, question=state["question"])
    # Both must hold: strong evidence was found, and the draft says what the evidence says.
    confidence = round(min(1.0, top / settings.strong_relevance) * grounded, 3)
    topic = sensitive_topic(f"{state['question']}\n{state['draft']}", settings.sensitive_topics)
    update: dict[str, Any] = {"confidence": confidence, "timings": _timed(state, "assess", started)}
    if topic:
        why = f"touches a sensitive topic ({topic})"
    elif confidence < settings.min_confidence:
        why = f"low confidence ({confidence:.2f})"
    else:
        return {**update, "route": "answered", "reason": "confident and grounded", "final": state["draft"]}
    if not runtime.context.reviews:
        return {**update, "route": "answered", "reason": f"review skipped: {why}", "final": state["draft"]}
    return {**update, "route": "review", "reason": why}


def review(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Wait for a person. The review row is written before `interrupt()` idempotently, since a
    resumed node runs again from its top (`update_answer` leaves a withdrawn answer as it is)."""
    with db.connection() as conn:
        review_id = feedback.open_review(conn, state["answer_id"], state["reason"])
        feedback.update_answer(conn, state["answer_id"], status="pending_review", route="review",
                               route_reason=state["reason"], draft=state["draft"],
                               confidence=state["confidence"], sources=state["sources"],
                               restricted_context=state.get("restricted_context", False),
                               model=state.get("model"), adapter_id=state.get("adapter_id"),
                               timings=state.get("timings", {}))
    decision: Decision = interrupt({
        "review_id": review_id, "answer_id": state["answer_id"], "question": state["question"],
        "draft": state["draft"], "reason": state["reason"], "confidence": state["confidence"],
        "sources": state["sources"],
    })
    return {"decision": decision, "final": decided_text(decision, state["draft"])}


def decided_text(decision: Decision, draft: str) -> str:
    """What the asker gets after a review: the draft, the reviewer's edit, or the rejection note."""
    if decision["action"] == "reject":
        return prompts.REJECTED
    text = decision.get("text") if decision["action"] == "edit" else draft
    return text or draft


def deliver(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Record the outcome. An answer decided by a reviewer is queued for the asker's surface; a
    withdrawn one (recorded as such already) is not, nor remembered as a turn of the thread."""
    decision = state.get("decision")
    if decision is not None and decision["action"] == "withdraw":
        return {}
    route = state.get("route", "declined")
    how = {"route": route, "route_reason": state.get("reason"), "draft": state.get("draft") or None,
           "confidence": state.get("confidence"), "sources": state.get("sources", []),
           "restricted_context": state.get("restricted_context", False), "model": state.get("model"),
           "adapter_id": state.get("adapter_id"), "prompt_tokens": state.get("prompt_tokens"),
           "completion_tokens": state.get("completion_tokens"), "timings": state.get("timings", {})}
    with db.connection() as conn:
        if decision is not None:
            record_decided(conn, state["answer_id"], decision, state["final"], **how)
        else:
            feedback.update_answer(conn, state["answer_id"], status="declined" if route == "declined" else "delivered",
                                   final_answer=state["final"], finished_at=dt.datetime.now(dt.UTC), **how)
    restricted = feedback.drew_on_restricted(state.get("sources", []), state.get("restricted_context", False))
    return {"history": [{"question": state["question"], "answer": state["final"], "restricted": restricted}]}


def record_decided(conn: psycopg.Connection, answer_id: int, decision: Decision, final: str, **how: Any) -> None:
    """Record the answer a reviewer decided (with `how` it was made, when known) and queue it for
    the asker's surface."""
    rejected = decision["action"] == "reject"
    feedback.update_answer(conn, answer_id, status="rejected" if rejected else "delivered", final_answer=final,
                           finished_at=dt.datetime.now(dt.UTC), **how)
    feedback.queue_delivery(conn, answer_id, "refusal" if rejected else "answer", final)
