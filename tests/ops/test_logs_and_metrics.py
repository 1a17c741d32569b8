"""Logs are JSON off a terminal, name their answer, and never carry secrets; metrics count the loop."""
from __future__ import annotations

import io
import json
import logging

import pytest
from prometheus_client import generate_latest

from core import db, feedback, logs, metrics
from core.config import get_settings


def test_logs_are_json_lines_with_answer_id_and_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "a-signing-secret-value")
    get_settings.cache_clear()
    out = io.StringIO()
    logs.setup(logging.INFO, stream=out)
    log = logging.getLogger("core.test")
    with logs.bound(answer=42, thread="slack:C1:1.2"):
        log.info("calling Slack with xoxb-123456-abcdef and secret %s", "a-signing-secret-value")
        try:
            raise RuntimeError("connect to postgresql://fly:hunter22@db/flywheel failed")
        except RuntimeError:
            log.exception("boom")
    log.info("outside")
    logging.getLogger().removeHandler(next(h for h in logging.getLogger().handlers if h.get_name() == "flywheel"))
    get_settings.cache_clear()
    first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["answer_id"] == 42 and first["thread_key"] == "slack:C1:1.2"
    assert "xoxb-123456" not in first["message"] and "a-signing-secret-value" not in first["message"]
    assert "hunter22" not in second["exception"] and "RuntimeError" in second["exception"]
    assert "answer_id" not in third


@pytest.mark.parametrize("conninfo", ["postgresql://fly:TopSecret1@db/flywheel", "host=db password=TopSecret1",
                                      "host=db PASSWORD = TopSecret1", "host=db password='Top Secret1'",
                                      "postgresql://fly:Top@Secret1@db/flywheel",   # an @ left unescaped
                                      "postgresql://fly:Top#Secret1@db:5432/flywheel?sslmode=require",
                                      '{"url": "postgresql://fly:TopSecret1@db", "mail": "ann@example.com"}'])
def test_logs_and_doctor_mask_a_connection_string_password_however_it_is_written(conninfo: str) -> None:
    from core import doctor

    for shown in (logs.Redactor([]).redact(f"cannot connect to {conninfo}"), doctor.redacted(conninfo)):
        assert "TopSecret1" not in shown and "Secret1" not in shown and "***" in shown
        assert "@db" in shown or "host=db" in shown   # where it connects stays readable


def test_metrics_report_questions_routes_feedback_and_latency(database_url: str) -> None:
    with db.connection() as conn:
        a = feedback.create_answer(conn, thread_key="cli:1", surface="cli", question="q")
        feedback.update_answer(conn, a, status="delivered", route="answered")
        feedback.record_rating(conn, a, "U1", "up")
    metrics.observe_timings({"retrieve": 0.02, "total": 0.3})
    collector = metrics.DatabaseCollector(database_url)
    registry_text = generate_latest(metrics.REGISTRY).decode()
    found = {(m.name, tuple(sorted(s.labels.items())), s.value) for m in collector.collect() for s in m.samples}
    assert ("flywheel_questions", (("route", "answered"), ("surface", "cli")), 1) in found
    assert ("flywheel_feedback", (("rating", "up"),), 1) in found
    assert ("flywheel_database_up", (), 1) in found
    assert 'flywheel_answer_seconds_count{step="retrieve"}' in registry_text


def test_a_metrics_port_already_taken_costs_the_metrics_not_the_process(
        database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as taken:   # a second bot or worker on this host
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert metrics.start_exporter(taken.getsockname()[1], database_url) is False
    assert any("metrics not served: port" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
