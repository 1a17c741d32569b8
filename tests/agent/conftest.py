"""Agent fixtures: a small knowledge base and a scripted model for the graph's own logic."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.agent.state import AgentContext
from core.config import get_settings
from core.knowledge import ingest
from support.scripted_model import ScriptedModel

LAPTOPS = """# Laptop requests

## Getting a new laptop
New laptops are ordered through the IT portal at it.northwind.example under Hardware > Laptop request.
Standard staff get a 14-inch MacBook Pro; engineers may choose a 16-inch model.
Delivery takes five working days. Ask in #it-help if the order has not arrived after that.

## Replacing a broken laptop
Bring a broken laptop to the IT desk on floor 2. A loaner is issued the same day.
"""

PAY = """# Salary bands

## How salary bands work
Every role has a salary band reviewed each March by the People team.
Salary changes take effect on the first payroll of April.
"""


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
