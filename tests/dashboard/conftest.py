"""Dashboard fixtures: a fresh database set up the way the dashboard runs without a login."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# pytest puts tests/ on sys.path (pyproject's pythonpath), where this folder would pass for a
# namespace package called `dashboard`; with the repository root on the path too, the real
# package wins (a regular package beats namespace portions wherever it sits on the path).
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import pytest  # noqa: E402
from streamlit import config as st_config  # noqa: E402

from core.agent import run  # noqa: E402
from core.config import get_settings  # noqa: E402


@pytest.fixture
def dashboard_db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database, answers without a model server (extractive), and the Streamlit server
    option a `flywheel dashboard` without login sets: bound to the loopback interface."""
    monkeypatch.setenv("FLYWHEEL_LLM_BACKEND", "extractive")
    for name in ("FLYWHEEL_DASHBOARD_PASSWORD_HASH", "FLYWHEEL_DASHBOARD_OIDC", "FLYWHEEL_DASHBOARD_ADMINS",
                 "FLYWHEEL_DASHBOARD_VIEWERS"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    run._default_generator.cache_clear()
    previous = st_config.get_option("server.address")
    st_config.set_option("server.address", "127.0.0.1")
    yield database_url
    st_config.set_option("server.address", previous)


HANDBOOK = {
    "laptops.md": "# Laptop requests\n\n## Getting a new laptop\nNew laptops are ordered through the IT portal "
                  "under Hardware > Laptop request. Delivery takes five working days.\n",
    "salary.md": "# Salary bands\n\n## How salary bands work\nEvery role has a salary band reviewed each March "
                 "by the People team. Salary changes take effect on the first payroll of April.\n",
}


@pytest.fixture
def handbook(dashboard_db: str, tmp_path: Path) -> Path:
    """Two small documents in the knowledge base (ingested with the real embedder)."""
    from core.knowledge import ingest

    folder = tmp_path / "handbook"
    folder.mkdir()
    for name, text in HANDBOOK.items():
        (folder / name).write_text(text)
    report = ingest.ingest_paths([folder])
    assert not report.failed, report.summary()
    return folder
