"""`flywheel eval answers` scores the model it was asked to score, or stops saying why."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core import db, models, serving
from core.agent import run
from core.cli import app
from core.config import get_settings
from core.knowledge import ingest
from core.llm.base import BackendUnavailable, UnknownAdapter
from support.polling import wait_until
from support.servers import free_port, serve_llm
from support.tiny_model import register_ready_adapter

runner = CliRunner()


@pytest.fixture
def questions(database_url: str, tmp_path: Path) -> Path:
    (tmp_path / "laptops.md").write_text("# Laptops\n\n## Delivery\nDelivery takes five working days in Lisbon.\n")
    assert not ingest.ingest_paths([tmp_path / "laptops.md"]).failed
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "How long does laptop delivery take?",
                                "answer": "Five working days in Lisbon."}) + "\n")
    return path


def _answers_on_record() -> int:
    with db.connection() as conn:
        return conn.execute("SELECT count(*) AS n FROM answers").fetchone()["n"]


def _serve(monkeypatch: pytest.MonkeyPatch, backend: str, url: str) -> None:
    monkeypatch.setenv("FLYWHEEL_LLM_BACKEND", backend)
    monkeypatch.setenv("FLYWHEEL_LLM_URL", url)
    get_settings.cache_clear()
    run._default_generator.cache_clear()


def test_the_base_model_is_scored(questions: Path, tiny_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve(monkeypatch, "local", tiny_server)
    result = runner.invoke(app, ["eval", "answers", "--questions", str(questions)])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    assert scored["adapter"] is None and scored["n"] == 1 and 0.0 <= scored["token_f1"] <= 1.0


def test_an_adapter_neither_registered_nor_held_by_the_server_stops_the_evaluation_before_a_question(
        questions: Path, tiny_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve(monkeypatch, "local", tiny_server)
    result = runner.invoke(app, ["eval", "answers", "--questions", str(questions), "--adapter", "flywheel-v9"])
    assert result.exit_code == 1
    assert result.output.startswith("Stopped, nothing asked: There is no adapter 'flywheel-v9': `flywheel models ls` "
                                    "lists them.")
    assert "token_f1" not in result.stdout
    assert _answers_on_record() == 0   # no question was asked


def test_a_ready_adapter_is_loaded_and_scored_before_it_goes_live(
        questions: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_LLM_MODEL", str(tiny_model_dir))
    register_ready_adapter(tiny_model_dir, tmp_path / "flywheel-v1")
    with serve_llm(tiny_model_dir) as url:   # a server of its own: it ends up holding flywheel-v1
        _serve(monkeypatch, "local", url)
        result = runner.invoke(app, ["eval", "answers", "--questions", str(questions), "--adapter", "v1"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout.strip().splitlines()[-1])["adapter"] == "flywheel-v1"
        assert "flywheel-v1" in (serving.held_adapters(url, "local") or {})
    with db.connection() as conn:
        assert models.live(conn) is None   # scored, not promoted
        assert [r["adapter_id"] for r in conn.execute("SELECT adapter_id FROM answers")] == ["flywheel-v1"]


def test_an_unreachable_server_stops_the_evaluation_instead_of_scoring_excerpts(
        questions: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve(monkeypatch, "local", f"http://127.0.0.1:{free_port()}")
    result = runner.invoke(app, ["eval", "answers", "--questions", str(questions)])
    assert result.exit_code == 1 and "quoted from excerpts" in result.output and "token_f1" not in result.stdout


def test_an_adapter_asked_of_the_extractive_backend_says_no_model_is_configured(
        questions: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve(monkeypatch, "extractive", f"http://127.0.0.1:{free_port()}")
    result = runner.invoke(app, ["eval", "answers", "--questions", str(questions), "--adapter", "flywheel-v9"])
    assert result.exit_code == 1 and "No model is configured to run adapter 'flywheel-v9'" in result.output
    assert _answers_on_record() == 0   # refused before a question was asked
    scored = runner.invoke(app, ["eval", "answers", "--questions", str(questions)])   # the excerpts themselves
    assert scored.exit_code == 0 and json.loads(scored.stdout.strip().splitlines()[-1])["n"] == 1


def test_an_adapter_tgi_was_not_launched_with_stops_before_a_question_is_asked(
        questions: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve(monkeypatch, "tgi", f"http://127.0.0.1:{free_port()}")
    with db.connection() as conn:   # the TGI a promotion started, with v1 only
        conn.execute("INSERT INTO serving_endpoint (id, url, adapters) VALUES (1, 'http://x', 'flywheel-v1=/a/v1')")
    result = runner.invoke(app, ["eval", "answers", "--questions", str(questions), "--adapter", "flywheel-v2"])
    assert result.exit_code == 1
    assert result.output.startswith("Stopped, nothing asked: The TGI serving now was not launched with "
                                    "'flywheel-v2' (it has flywheel-v1): TGI loads adapters only at start")
    assert _answers_on_record() == 0


def test_a_negative_limit_is_refused(questions: Path) -> None:
    result = runner.invoke(app, ["eval", "answers", "--questions", str(questions), "--limit", "-1"])
    assert result.exit_code == 2 and "--limit" in result.output


def test_tgi_is_only_sent_adapters_it_was_launched_with(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # TGI answers an adapter id it lacks with the base model, silently: the id is checked first.
    _serve(monkeypatch, "tgi", f"http://127.0.0.1:{free_port()}")
    generator = run._default_generator()
    with pytest.raises(UnknownAdapter, match="known adapters: none"):  # no TGI started by Flywheel
        generator.chat([], adapter_id="flywheel-v1")
    with db.connection() as conn:
        conn.execute("INSERT INTO serving_endpoint (id, url, adapters) VALUES (1, 'http://x', %(a)s)",
                     {"a": "flywheel-v1=/a/v1,flywheel-v2=/a/v2"})
        conn.execute("SELECT pg_notify(%(ch)s, '')", {"ch": models.LIVE_CHANNEL})   # as a promotion does
    wait_until(lambda: run._launched_adapters() == ["flywheel-v1", "flywheel-v2"], what="the launch seen")
    with pytest.raises(UnknownAdapter, match="known adapters: flywheel-v1, flywheel-v2"):
        generator.chat([], adapter_id="flywheel-v3")
    with pytest.raises(BackendUnavailable):  # a launched adapter is sent (to a server that is not there)
        generator.chat([], adapter_id="flywheel-v2")
