"""The agent with the real HTTP client: a live server answers, a dead one falls back to excerpts."""
from __future__ import annotations

from pathlib import Path

from core import db, feedback
from core.agent import run
from core.agent.state import AgentContext
from core.config import get_settings
from core.knowledge import ingest
from core.llm.tgi import TGIGenerator
from support.servers import free_port


def _handbook(tmp_path: Path) -> None:
    (tmp_path / "laptops.md").write_text("# Laptops\n\n## Delivery\nDelivery takes five working days in Lisbon.\n")
    assert not ingest.ingest_paths([tmp_path]).failed


def test_answer_comes_from_the_served_model(database_url: str, tmp_path: Path, tiny_server: str,
                                            tiny_model_dir: Path) -> None:
    _handbook(tmp_path)
    context = AgentContext(settings=get_settings(), generator=TGIGenerator(tiny_server))
    outcome = run.ask("How long does laptop delivery take?", run.Asker(surface="cli"), context=context)
    assert outcome.model == tiny_model_dir.name  # the server names the model it served


def test_a_live_adapter_the_server_lacks_is_answered_by_the_base_model(database_url: str, tmp_path: Path,
                                                                       tiny_server: str) -> None:
    # e.g. the model server restarted and could not load it: an answer, honestly recorded.
    _handbook(tmp_path)
    context = AgentContext(settings=get_settings(), generator=TGIGenerator(tiny_server), adapter_id="flywheel-v9")
    outcome = run.ask("How long does laptop delivery take?", run.Asker(surface="cli"), context=context)
    assert outcome.model != "extractive" and outcome.adapter_id is None and outcome.text
    with db.connection() as conn:
        recorded = feedback.get_answer(conn, outcome.answer_id)
    assert recorded is not None and recorded.adapter_id is None and recorded.model == outcome.model


def test_unreachable_server_gives_a_cited_excerpt_with_a_note(database_url: str, tmp_path: Path) -> None:
    _handbook(tmp_path)
    context = AgentContext(settings=get_settings(), generator=TGIGenerator(f"http://127.0.0.1:{free_port()}"))
    outcome = run.ask("How long does laptop delivery take?", run.Asker(surface="cli"), context=context)
    assert outcome.model == "extractive"
    assert outcome.route == "answered"
    assert "“Delivery takes five working days in Lisbon.” [1]" in outcome.text
    assert "model server is unreachable" in outcome.text
