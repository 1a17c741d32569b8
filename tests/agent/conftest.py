"""Agent fixtures: a small knowledge base and a scripted model for the graph's own logic."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.agent.state import AgentContext
from core.config import get_settings
from core.knowledge import ingest
from support.handbook import LAPTOPS, PAY
from support.scripted_model import ScriptedModel


@pytest.fixture
def handbook(database_url: str, tmp_path: Path) -> Path:
    folder = tmp_path / "handbook"
    folder.mkdir()
    (folder / "laptops.md").write_text(LAPTOPS)
    (folder / "salary.md").write_text(PAY)
    report = ingest.ingest_paths([folder])
    assert not report.failed, report.summary()
    return folder


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
def context(handbook: Path, model: ScriptedModel) -> Iterator[AgentContext]:
    yield AgentContext(settings=get_settings(), generator=model)
