"""Figures for the dashboard's overview: volume, routes, ratings, latency and knowledge gaps.

Plain SQL over `answers` and `feedback`. Evaluation runs (surface 'eval') are not staff questions
and are left out everywhere. Every function takes a connection and never commits."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg

# The route reason the agent's retrieve step gives when the knowledge base has nothing on a
# question (core/agent/nodes.py). Other declines (empty input, injection, a thread waiting for a
# review) say nothing about what the documents lack, so they are not counted as gaps.
NOT_FOUND_REASON = "nothing relevant found"


@dataclass(frozen=True)
class Summary:
    questions: int
    answered: int
    reviewed: int          # went to a reviewer (pending or decided)
    declined: int
    failed: int
    ups: int
    downs: int
    median_latency_s: float | None
    p95_latency_s: float | None

    @property
    def routed(self) -> int:
        return self.answered + self.reviewed + self.declined

    def _share(self, n: int, of: int) -> float | None:
        return n / of if of else None

    @property
    def answer_rate(self) -> float | None:
        return self._share(self.answered, self.routed)

    @property
    def review_rate(self) -> float | None:
        return self._share(self.reviewed, self.routed)

    @property
    def decline_rate(self) -> float | None:
        return self._share(self.declined, self.routed)

    @property
    def up_rate(self) -> float | None:
        """Share of 👍 among all votes."""
        return self._share(self.ups, self.ups + self.downs)


@dataclass(frozen=True)
class Day:
    day: dt.date
    questions: int
    answered: int
    reviewed: int
    declined: int
    ups: int
    downs: int


@dataclass(frozen=True)
class Gap:
    """A question the knowledge base serves badly: not found, or voted down."""

    question: str          # as last asked
    asked: int
    not_found: int
    downvotes: int
    last_asked: dt.datetime


_VOTES = """
votes AS (
    SELECT f.answer_id, count(*) FILTER (WHERE f.rating = 'up') AS ups,
           count(*) FILTER (WHERE f.rating = 'down') AS downs
    FROM feedback f GROUP BY f.answer_id
)"""

_WINDOW = "a.surface <> 'eval' AND a.created_at >= %(since)s"


def summary(conn: psycopg.Connection, since: dt.datetime) -> Summary:
    """Totals for answers asked since `since`; latency is the agent's total time per question."""
    row = conn.execute(f"""
        WITH {_VOTES}
        SELECT count(*) AS questions,
               count(*) FILTER (WHERE a.route = 'answered') AS answered,
               count(*) FILTER (WHERE a.route = 'review') AS reviewed,
               count(*) FILTER (WHERE a.route = 'declined') AS declined,
               count(*) FILTER (WHERE a.status = 'failed') AS failed,
               coalesce(sum(v.ups), 0)::int AS ups,
               coalesce(sum(v.downs), 0)::int AS downs,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY (a.timings->>'total')::float8) AS median_latency_s,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY (a.timings->>'total')::float8) AS p95_latency_s
        FROM answers a LEFT JOIN votes v ON v.answer_id = a.id
        WHERE {_WINDOW}""", {"since": since}).fetchone()
    return Summary(**row)  # type: ignore[arg-type]


def daily(conn: psycopg.Connection, since: dt.datetime) -> list[Day]:
    """One row per calendar day (the database's time zone) that had questions, oldest first."""
    rows = conn.execute(f"""
        WITH {_VOTES}
        SELECT a.created_at::date AS day, count(*) AS questions,
               count(*) FILTER (WHERE a.route = 'answered') AS answered,
               count(*) FILTER (WHERE a.route = 'review') AS reviewed,
               count(*) FILTER (WHERE a.route = 'declined') AS declined,
               coalesce(sum(v.ups), 0)::int AS ups,
               coalesce(sum(v.downs), 0)::int AS downs
        FROM answers a LEFT JOIN votes v ON v.answer_id = a.id
        WHERE {_WINDOW}
        GROUP BY 1 ORDER BY 1""", {"since": since}).fetchall()
    return [Day(**r) for r in rows]


def knowledge_gaps(conn: psycopg.Connection, since: dt.datetime, limit: int = 10) -> list[Gap]:
    """Questions most often not found or voted down, the same question counted together however
    it was spaced or capitalised."""
    rows = conn.execute(f"""
        WITH {_VOTES}
        SELECT (array_agg(a.question ORDER BY a.created_at DESC))[1] AS question,
               count(*) AS asked,
               count(*) FILTER (WHERE a.route = 'declined' AND a.route_reason = %(not_found)s) AS not_found,
               coalesce(sum(v.downs), 0)::int AS downvotes,
               max(a.created_at) AS last_asked
        FROM answers a LEFT JOIN votes v ON v.answer_id = a.id
        WHERE {_WINDOW}
        GROUP BY lower(regexp_replace(btrim(a.question), '\\s+', ' ', 'g'))
        HAVING count(*) FILTER (WHERE a.route = 'declined' AND a.route_reason = %(not_found)s) > 0
            OR coalesce(sum(v.downs), 0) > 0
        ORDER BY count(*) FILTER (WHERE a.route = 'declined' AND a.route_reason = %(not_found)s)
                 + coalesce(sum(v.downs), 0) DESC, max(a.created_at) DESC
        LIMIT %(limit)s""", {"since": since, "not_found": NOT_FOUND_REASON, "limit": limit}).fetchall()
    return [Gap(**r) for r in rows]
