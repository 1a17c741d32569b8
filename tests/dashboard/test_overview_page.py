"""The Overview page: volume, rates, latency, live adapter, charts and knowledge gaps."""
from __future__ import annotations

from core import db, models
from dashboard_helpers import open_page, rate, seed_answer, table, texts


def test_overview_shows_the_loop_at_a_glance(dashboard_db: str) -> None:
    laptop = seed_answer("How do I order a laptop?", total_s=1.0)
    seed_answer("How do I order a laptop?", total_s=3.0)
    seed_answer("Where can I park?", "Not found.", route="declined", status="declined",
                route_reason="nothing relevant found", total_s=2.0)
    seed_answer("Salary bands?", route="review", status="pending_review", total_s=2.0)
    rate(laptop, "up")
    rate(laptop, "down", user_id="U2", reason="incomplete")
    with db.connection() as conn:
        adapter = models.register(conn, base_model="base", path="/a", dataset_version=1, hyperparams={},
                                  status="ready")
        models.mark_live(conn, adapter.version, actor="password:Ann")
    at = open_page("overview")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Questions": "4", "Answered directly": "50%", "Sent to review": "25%", "Declined": "25%",
                       "👍 rate": "50%", "Median latency": "2.00 s", "p95 latency": "2.85 s",
                       "Live adapter": "flywheel-v1"}
    assert len(at.get("vega_lite_chart")) == 2  # questions per day by route, 👍 rate per day
    gaps = table(at, "question", "not_found", "downvotes")
    assert gaps[["question", "asked", "not_found", "downvotes"]].to_dict("records") == [
        {"question": "Where can I park?", "asked": 1, "not_found": 1, "downvotes": 0},
        {"question": "How do I order a laptop?", "asked": 2, "not_found": 0, "downvotes": 1},
    ]
    assert table(at, "actor", "action")[["actor", "action"]].values.tolist() == [["password:Ann", "model.promote"]]


def test_overview_of_an_empty_database_says_so(dashboard_db: str) -> None:
    at = open_page("overview")
    assert "No questions in this period yet." in texts(at)
    assert {m.label: m.value for m in at.metric}["👍 rate"] == "–"
