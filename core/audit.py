"""The audit trail: who did what, and when, for every admin action. Takes a connection, never commits,
so an action and its audit row land in the same transaction or not at all."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class AuditEntry:
    id: int
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]
    at: dt.datetime


def record(conn: psycopg.Connection, actor: str, action: str, target: str | None = None,
           details: dict[str, Any] | None = None) -> None:
    conn.execute("INSERT INTO audit_log (actor, action, target, details) VALUES (%(a)s, %(x)s, %(t)s, %(d)s)",
                 {"a": actor, "x": action, "t": target, "d": Jsonb(details or {})})


def count_since(conn: psycopg.Connection, action: str, seconds: float, target: str | None = None) -> int:
    """How many `action` rows (on `target`) the last `seconds` hold."""
    row = conn.execute("SELECT count(*) AS n FROM audit_log WHERE action = %(x)s AND target IS NOT DISTINCT FROM %(t)s"
                       " AND at > now() - make_interval(secs => %(s)s)",
                       {"x": action, "t": target, "s": seconds}).fetchone()
    return int(row["n"])  # type: ignore[index]


def happened(conn: psycopg.Connection, action: str) -> bool:
    """Whether any `action` row is on record."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM audit_log WHERE action = %(x)s) AS e",
                        {"x": action}).fetchone()["e"]  # type: ignore[index]


def recent(conn: psycopg.Connection, limit: int = 100) -> list[AuditEntry]:
    rows = conn.execute("SELECT id, actor, action, target, details, at FROM audit_log"
                        " ORDER BY id DESC LIMIT %(n)s", {"n": limit}).fetchall()
    return [AuditEntry(**r) for r in rows]
