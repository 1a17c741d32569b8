"""Helpers for the dashboard tests: open a page of the real app, read it, seed records."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

from core import db, feedback, passwords
from core.agent import run
from core.agent.state import AgentContext
from core.config import get_settings

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dashboard" / "app.py"
PASSWORD = "correct horse battery staple"
PASSWORD_HASH = passwords.hash_password(PASSWORD)
TIMEOUT_S = 120  # generous: a run may load the embedding model; it never sleeps for it


def open_page(page: str | None = None, *, session: dict[str, Any] | None = None,
              user: dict[str, Any] | None = None) -> AppTest:
    """The real app, run once, then switched to `pages/<page>.py` (as the sidebar would)."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    for key, value in (session or {}).items():
        at.session_state[key] = value
    if user is not None:
        at.user = user
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if page is not None:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Everything a person would read on the page, for "does it say X" checks."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "text", "code", "success", "info",
                 "warning", "error"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [m.label + " " + str(m.value) for m in at.metric]
    return "\n".join(parts)


def seed_answer(question: str, final_answer: str | None = "An answer.", *, route: str = "answered",
                status: str = "delivered", channel_id: str | None = "C1", user_id: str | None = "U1",
                draft: str | None = None, sources: list[dict[str, Any]] | None = None,
                created_at: dt.datetime | None = None, total_s: float | None = 1.0,
                route_reason: str = "confident and grounded") -> int:
    """An answer record as the agent leaves it, without running the agent."""
    with db.connection() as conn:
        answer_id = feedback.create_answer(conn, thread_key=f"slack:{channel_id}:{question[:20]}", surface="slack",
                                           question=question, user_id=user_id, channel_id=channel_id)
        values: dict[str, Any] = dict(status=status, route=route, route_reason=route_reason,
                                      draft=draft if draft is not None else final_answer, final_answer=final_answer,
                                      sources=sources or [], timings={"total": total_s} if total_s else {})
        feedback.update_answer(conn, answer_id, **values)
        if created_at is not None:
            conn.execute("UPDATE answers SET created_at = %(t)s WHERE id = %(id)s", {"t": created_at, "id": answer_id})
    return answer_id


def rate(answer_id: int, rating: str, *, user_id: str = "U1", reason: str | None = None,
         comment: str | None = None, suggested: str | None = None) -> None:
    with db.connection() as conn:
        feedback.record_rating(conn, answer_id, user_id, rating, reason=reason, comment=comment,  # type: ignore[arg-type]
                               suggested_answer=suggested)


def audit_rows() -> list[dict[str, Any]]:
    with db.connection() as conn:
        return conn.execute("SELECT actor, action, target, details FROM audit_log ORDER BY id").fetchall()


def table(at: AppTest, *columns: str) -> Any:
    """The first table on the page that has these columns, as a DataFrame (None: no such table)."""
    return next((d.value for d in at.dataframe if set(columns) <= set(d.value.columns)), None)


def curation_rows() -> list[dict[str, Any]]:
    with db.connection() as conn:
        return conn.execute("SELECT answer_id, decision, question, ideal_answer, edited, curated_by"
                            " FROM curation_items ORDER BY answer_id").fetchall()


def pending_review(question: str = "When are salary bands reviewed?", thread: str = "t1") -> run.Outcome:
    """A question from Slack whose draft waits for a reviewer: the agent's thread is paused."""
    from support.scripted_model import ScriptedModel

    context = AgentContext(settings=get_settings(),
                           generator=ScriptedModel(reply="Salary bands are reviewed each March [1]."))
    outcome = run.ask(question, run.Asker(surface="slack", user_id="U1", channel_id="C1",
                                          thread_key=f"slack:C1:{thread}"), context=context)
    assert outcome.status == "pending_review" and outcome.review_id is not None
    return outcome
