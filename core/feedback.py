"""The records the loop feeds on: answers, reviews, ratings and the delivery outbox.

Every function takes a connection and never commits: the caller owns the transaction."""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

Surface = Literal["slack", "cli", "dashboard", "eval"]
DeliveryKind = Literal["answer", "refusal"]   # the reviewed answer, or the note that a person will follow up
AnswerStatus = Literal["running", "pending_review", "delivered", "declined", "rejected", "failed", "withdrawn"]
Route = Literal["answered", "review", "declined"]
ReviewStatus = Literal["pending", "approved", "edited", "rejected", "withdrawn"]   # withdrawn: the asker deleted it
Rating = Literal["up", "down"]
DownReason = Literal["wrong", "outdated", "incomplete", "unclear", "other"]
DOWN_REASONS: tuple[DownReason, ...] = ("wrong", "outdated", "incomplete", "unclear", "other")


@dataclass(frozen=True)
class Answer:
    id: int
    thread_key: str
    surface: Surface
    user_id: str | None
    channel_id: str | None
    question: str
    status: AnswerStatus
    route: Route | None
    route_reason: str | None
    draft: str | None
    final_answer: str | None
    confidence: float | None
    sources: list[dict[str, Any]]
    model: str | None
    adapter_id: str | None
    timings: dict[str, float]
    error: str | None
    created_at: dt.datetime
    restricted_context: bool = False   # drafted with earlier turns that drew on such documents in its prompt

    @property
    def restricted(self) -> bool:
        return drew_on_restricted(self.sources, self.restricted_context)


def drew_on_restricted(sources: Sequence[dict[str, Any]], restricted_context: bool) -> bool:
    """Drafted from a document not everyone may see (as it was when drafted), or with earlier
    turns of its thread that were, whose text it may repeat."""
    return restricted_context or any(source.get("restricted") for source in sources)


@dataclass(frozen=True)
class Review:
    id: int
    answer_id: int
    reason: str
    status: ReviewStatus
    decided_by: str | None
    decided_at: dt.datetime | None
    edited_text: str | None
    reject_reason: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class Feedback:
    answer_id: int
    user_id: str
    rating: Rating
    reason: DownReason | None
    comment: str | None
    suggested_answer: str | None


@dataclass(frozen=True)
class Delivery:
    id: int
    answer_id: int
    kind: DeliveryKind
    text: str


def _columns(cls: type, prefix: str = "") -> str:
    return ", ".join(f"{prefix}{f.name}" for f in fields(cls))


def _one(cls: type, row: dict[str, Any] | None) -> Any:
    return None if row is None else cls(**row)


# -- answers ---------------------------------------------------------------------------------

def create_answer(conn: psycopg.Connection, *, thread_key: str, surface: Surface, question: str,
                  user_id: str | None = None, channel_id: str | None = None) -> int:
    row = conn.execute(
        "INSERT INTO answers (thread_key, surface, user_id, channel_id, question)"
        " VALUES (%(thread_key)s, %(surface)s, %(user_id)s, %(channel_id)s, %(question)s) RETURNING id",
        {"thread_key": thread_key, "surface": surface, "user_id": user_id,
         "channel_id": channel_id, "question": question},
    ).fetchone()
    return int(row["id"])  # type: ignore[index]


def update_answer(conn: psycopg.Connection, answer_id: int, **values: Any) -> None:
    """Set the given columns of one answer (names are checked against `Answer`'s fields). A
    withdrawn answer is final: nothing overwrites it (a resumed node reruns its writes)."""
    allowed = {f.name for f in fields(Answer)} | {"prompt_tokens", "completion_tokens", "finished_at"}
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"unknown answer columns: {sorted(unknown)}")
    params = {k: Jsonb(v) if k in ("sources", "timings") else v for k, v in values.items()}
    assignments = ", ".join(f"{k} = %({k})s" for k in values)  # keys validated above
    conn.execute(f"UPDATE answers SET {assignments} WHERE id = %(answer_id)s AND status <> 'withdrawn'",
                 {**params, "answer_id": answer_id})


def get_answer(conn: psycopg.Connection, answer_id: int) -> Answer | None:
    row = conn.execute(f"SELECT {_columns(Answer)} FROM answers WHERE id = %(id)s", {"id": answer_id}).fetchone()
    return _one(Answer, row)


def thread_answers(conn: psycopg.Connection, thread_key: str) -> list[Answer]:
    rows = conn.execute(f"SELECT {_columns(Answer)} FROM answers WHERE thread_key = %(k)s ORDER BY id",
                        {"k": thread_key}).fetchall()
    return [Answer(**r) for r in rows]


AWAITS_REVIEW = "earlier answer in thread awaits review"   # route_reason of a question turned away meanwhile


def earlier_turn(conn: psycopg.Connection, answer: Answer) -> Answer | None:
    """The question and answer before `answer` in its conversation, if any: what a follow-up
    ("and for contractors?") means depends on it. Only turns the agent itself remembers count:
    not a run that failed or never finished, a question its asker deleted, nor a question turned
    away while an earlier answer awaited review."""
    row = conn.execute(f"SELECT {_columns(Answer)} FROM answers WHERE thread_key = %(k)s AND id < %(id)s"
                       " AND status NOT IN ('failed', 'running', 'withdrawn')"
                       " AND route_reason IS DISTINCT FROM %(away)s"
                       " ORDER BY id DESC LIMIT 1",
                       {"k": answer.thread_key, "id": answer.id, "away": AWAITS_REVIEW}).fetchone()
    return _one(Answer, row)


# -- reviews ---------------------------------------------------------------------------------

def fail_running(conn: psycopg.Connection, answer_ids: Sequence[int], *, error: str) -> None:
    """Fail those of these answers still running: left so by a process that stopped."""
    conn.execute("UPDATE answers SET status = 'failed', error = %(e)s WHERE id = ANY(%(ids)s) AND status = 'running'",
                 {"e": error, "ids": list(answer_ids)})


def open_review(conn: psycopg.Connection, answer_id: int, reason: str) -> int:
    """Open the review of an answer, or return the one already open (a resumed node reruns)."""
    conn.execute(
        "INSERT INTO reviews (answer_id, reason) VALUES (%(a)s, %(r)s) ON CONFLICT (answer_id) DO NOTHING",
        {"a": answer_id, "r": reason},
    )
    row = conn.execute("SELECT id FROM reviews WHERE answer_id = %(a)s", {"a": answer_id}).fetchone()
    return int(row["id"])  # type: ignore[index]


def get_review(conn: psycopg.Connection, review_id: int) -> Review | None:
    row = conn.execute(f"SELECT {_columns(Review)} FROM reviews WHERE id = %(id)s", {"id": review_id}).fetchone()
    return _one(Review, row)


def review_for_answer(conn: psycopg.Connection, answer_id: int) -> Review | None:
    row = conn.execute(f"SELECT {_columns(Review)} FROM reviews WHERE answer_id = %(a)s",
                       {"a": answer_id}).fetchone()
    return _one(Review, row)


def pending_reviews(conn: psycopg.Connection, limit: int | None = None) -> list[tuple[Review, Answer]]:
    """Reviews waiting for a decision, oldest first (the first `limit`), each with its answer."""
    rows = conn.execute(
        f"SELECT {_columns(Review, 'r.')} FROM reviews r WHERE r.status = 'pending' ORDER BY r.created_at, r.id"
        " LIMIT %(n)s", {"n": limit}).fetchall()
    reviews = [Review(**r) for r in rows]
    answers = {a["id"]: Answer(**a) for a in conn.execute(
        f"SELECT {_columns(Answer)} FROM answers WHERE id = ANY(%(ids)s)", {"ids": [r.answer_id for r in reviews]})}
    return [(r, answers[r.answer_id]) for r in reviews]


def pending_review_count(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT count(*) AS n FROM reviews WHERE status = 'pending'").fetchone()["n"])  # type: ignore[index]


def claim_review(conn: psycopg.Connection, review_id: int, *, status: ReviewStatus, decided_by: str,
                 edited_text: str | None = None, reject_reason: str | None = None) -> Review | None:
    """Record a decision if the review is still pending; None if someone decided first.
    The row lock makes two fast clicks decide once."""
    row = conn.execute(
        f"UPDATE reviews SET status = %(s)s, decided_by = %(by)s, decided_at = now(),"
        f" edited_text = %(e)s, reject_reason = %(rr)s"
        f" WHERE id = %(id)s AND status = 'pending' RETURNING {_columns(Review)}",
        {"s": status, "by": decided_by, "e": edited_text, "rr": reject_reason, "id": review_id},
    ).fetchone()
    return _one(Review, row)


def withdraw(conn: psycopg.Connection, answer_id: int, *, by: str, unseen: bool = False) -> bool:
    """The asker deleted the question before its answer reached them: the answer is withdrawn
    (never shown, never curated) and its pending review closes undecided, recorded as `by`'s.
    An answer waiting for review is always unseen; with `unseen` (a run that finished after the
    question was deleted, not shown yet) a delivered or declined one is withdrawn too. False
    when there is nothing to withdraw: shown, failed, or a reviewer's decision came first (it
    stands, and is delivered)."""
    row = conn.execute("SELECT status FROM answers WHERE id = %(a)s FOR UPDATE", {"a": answer_id}).fetchone()
    withdrawable = ("pending_review", "delivered", "declined") if unseen else ("pending_review",)
    if row is None or row["status"] not in withdrawable:
        return False
    review = conn.execute("SELECT status FROM reviews WHERE answer_id = %(a)s FOR UPDATE", {"a": answer_id}).fetchone()
    if review is not None and review["status"] != "pending":   # decided first: delivered, or on its way
        return False
    conn.execute("UPDATE reviews SET status = 'withdrawn', decided_by = %(by)s, decided_at = now()"
                 " WHERE answer_id = %(a)s", {"a": answer_id, "by": by})
    conn.execute("UPDATE answers SET status = 'withdrawn', finished_at = coalesce(finished_at, now())"
                 " WHERE id = %(a)s", {"a": answer_id})
    return True


# -- feedback --------------------------------------------------------------------------------

def record_rating(conn: psycopg.Connection, answer_id: int, user_id: str, rating: Rating, *,
                  reason: DownReason | None = None, comment: str | None = None,
                  suggested_answer: str | None = None) -> Feedback:
    """One vote per user and answer: a later click changes it, never duplicates it. A 👍 clears
    the reason of an earlier 👎."""
    row = conn.execute(
        "INSERT INTO feedback (answer_id, user_id, rating, reason, comment, suggested_answer)"
        " VALUES (%(a)s, %(u)s, %(r)s, %(reason)s, %(c)s, %(s)s)"
        " ON CONFLICT (answer_id, user_id) DO UPDATE SET rating = EXCLUDED.rating,"
        "   reason = EXCLUDED.reason, comment = EXCLUDED.comment,"
        "   suggested_answer = EXCLUDED.suggested_answer, updated_at = now()"
        f" RETURNING {_columns(Feedback)}",
        {"a": answer_id, "u": user_id, "r": rating, "reason": reason, "c": comment, "s": suggested_answer},
    ).fetchone()
    return Feedback(**row)  # type: ignore[arg-type]


def ratings_for(conn: psycopg.Connection, answer_id: int) -> list[Feedback]:
    rows = conn.execute(f"SELECT {_columns(Feedback)} FROM feedback WHERE answer_id = %(a)s ORDER BY id",
                        {"a": answer_id}).fetchall()
    return [Feedback(**r) for r in rows]


# -- delivery outbox -------------------------------------------------------------------------

DELIVERY_CHANNEL = "flywheel_deliveries"


def queue_delivery(conn: psycopg.Connection, answer_id: int, kind: DeliveryKind, text: str) -> bool:
    """Queue one delivery per answer (idempotent) and wake listeners; True if newly queued."""
    cur = conn.execute(
        "INSERT INTO deliveries (answer_id, kind, text) VALUES (%(a)s, %(k)s, %(t)s)"
        " ON CONFLICT (answer_id) DO NOTHING",
        {"a": answer_id, "k": kind, "t": text},
    )
    if cur.rowcount:
        conn.execute("SELECT pg_notify(%(ch)s, %(a)s)", {"ch": DELIVERY_CHANNEL, "a": str(answer_id)})
    return bool(cur.rowcount)


def claim_deliveries(conn: psycopg.Connection, surface: Surface, limit: int = 20) -> list[Delivery]:
    """Take undelivered items for a surface, marking them delivered; concurrent workers skip
    each other's rows. The caller posts them inside the same transaction, so a failed post
    rolls the claim back. Those that failed least come first: one row Slack keeps refusing
    must not hold back every other one until it is given up."""
    rows = conn.execute(
        "UPDATE deliveries d SET delivered_at = now() WHERE d.id IN ("
        "  SELECT d2.id FROM deliveries d2 JOIN answers a ON a.id = d2.answer_id"
        "  WHERE d2.delivered_at IS NULL AND a.surface = %(s)s ORDER BY coalesce(d2.failed_attempts, 0), d2.id"
        "  LIMIT %(n)s FOR UPDATE OF d2 SKIP LOCKED)"
        " RETURNING d.id, d.answer_id, d.kind, d.text",
        {"s": surface, "n": limit},
    ).fetchall()
    return [Delivery(**r) for r in rows]


def retry_delivery(conn: psycopg.Connection, delivery_id: int, *, give_up_after: int) -> int | None:
    """A claimed outbox row whose post failed for a passing reason: count the failure and put
    the row back in the queue; returns how many times it has failed. None when that reaches
    `give_up_after`: it stays taken."""
    row = conn.execute(
        "UPDATE deliveries SET failed_attempts = coalesce(failed_attempts, 0) + 1,"
        " delivered_at = CASE WHEN coalesce(failed_attempts, 0) + 1 < %(n)s THEN NULL ELSE delivered_at END"
        " WHERE id = %(id)s RETURNING failed_attempts, delivered_at IS NULL AS queued",
        {"n": give_up_after, "id": delivery_id},
    ).fetchone()
    return int(row["failed_attempts"]) if row and row["queued"] else None
