from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from core import db


@pytest.fixture
def empty_database(pg_server: str) -> Iterator[str]:
    """A database with no tables at all, not even pgvector."""
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS empty_db WITH (FORCE)")
        conn.execute("CREATE DATABASE empty_db")
    yield pg_server.replace("/postgres?", "/empty_db?")
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute("DROP DATABASE empty_db WITH (FORCE)")


def test_migrations_apply_in_order_then_are_a_no_op(empty_database: str) -> None:
    assert db.ensure_schema(empty_database) == [p.stem for p in db.migration_files()]
    assert db.ensure_schema(empty_database) == []


def test_concurrent_migrations_do_not_race(empty_database: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            results.append(db.ensure_schema(empty_database))
        except BaseException as e:  # surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(r) for r in results) == [0, 0, 0, len(db.migration_files())]


def test_pooled_connection_rolls_back_on_error(database_url: str) -> None:
    with pytest.raises(RuntimeError):
        with db.connection() as conn:
            conn.execute("INSERT INTO group_members (group_name, user_id) VALUES ('hr', 'U1')")
            raise RuntimeError("boom")
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM group_members").fetchone()["n"] == 0


def test_the_first_pooled_connection_migrates_a_new_database(empty_database: str) -> None:
    # e.g. `flywheel ingest` on a database no process has started on yet
    try:
        with db.connection(empty_database) as conn:
            assert conn.execute("SELECT count(*) AS n FROM documents").fetchone()["n"] == 0  # type: ignore[index]
        assert db.ensure_schema(empty_database) == []
    finally:
        db.close_pools()


def test_a_question_asked_before_any_process_started_on_the_database_is_answered(
        empty_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from core.agent import run
    from core.cli import app
    from core.config import get_settings

    monkeypatch.setenv("DATABASE_URL", empty_database)
    monkeypatch.setenv("FLYWHEEL_LLM_BACKEND", "extractive")
    get_settings.cache_clear()
    run._default_generator.cache_clear()
    try:
        asked = CliRunner().invoke(app, ["ask", "How do I get a new laptop?"])
        assert asked.exit_code == 0, asked.output
        assert "Route:" in asked.output
    finally:
        run.close_live_adapter_caches()
        db.close_pools()
        get_settings.cache_clear()
