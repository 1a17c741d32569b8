from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest

from core import db, feedback, stats
from core.config import SettingsInvalid, get_settings

T = TypeVar("T")


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


def _at_once(call: Callable[[], T], threads: int = 4) -> tuple[list[T], list[BaseException]]:
    """`call` from several threads at once: what each returned, and what any raised."""
    results: list[T] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            results.append(call())
        except BaseException as e:  # noqa: BLE001  (surfaced by the caller's assertions)
            errors.append(e)

    started = [threading.Thread(target=one) for _ in range(threads)]
    for t in started:
        t.start()
    for t in started:
        t.join()
    return results, errors


def test_concurrent_migrations_do_not_race(empty_database: str) -> None:
    results, errors = _at_once(lambda: db.ensure_schema(empty_database))
    assert errors == []
    assert sorted(len(r) for r in results) == [0, 0, 0, len(db.migration_files())]


def test_work_whose_connection_postgres_drops_mid_query_runs_once_more_on_a_fresh_one(database_url: str) -> None:
    backends: list[int] = []

    def drop(pid: int) -> None:   # a restart or a failover, as this one connection sees it
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%(pid)s)", {"pid": pid})

    def read(conn: psycopg.Connection) -> int:
        backends.append(conn.info.backend_pid)
        if len(backends) == 1:
            threading.Timer(0.3, drop, [conn.info.backend_pid]).start()
            conn.execute("SELECT pg_sleep(10)")
        return conn.execute("SELECT 42 AS answer").fetchone()["answer"]  # type: ignore[index]

    assert db.with_retry(read) == 42
    assert len(backends) == 2 and backends[0] != backends[1]
    # A mistake in the work itself is not tried again.
    backends.clear()
    with pytest.raises(psycopg.errors.UndefinedTable):
        db.with_retry(lambda conn: backends.append(0) or conn.execute("SELECT * FROM no_such_table"))
    assert backends == [0]


def test_pooled_connection_rolls_back_on_error(database_url: str) -> None:
    with pytest.raises(RuntimeError):
        with db.connection() as conn:
            conn.execute("INSERT INTO group_members (group_name, user_id) VALUES ('hr', 'U1')")
            raise RuntimeError("boom")
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM group_members").fetchone()["n"] == 0


def test_times_are_read_and_days_counted_in_the_configured_time_zone(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_TIMEZONE", "Asia/Kolkata")   # UTC+05:30, whatever the server's zone
    get_settings.cache_clear()
    with db.connection() as conn:
        answer_id = feedback.create_answer(conn, thread_key="cli:1", surface="cli", question="Laptop?")
        conn.execute("UPDATE answers SET created_at = '2026-03-01 20:00+00' WHERE id = %(a)s", {"a": answer_id})
        asked = feedback.get_answer(conn, answer_id).created_at  # type: ignore[union-attr]
        [day] = stats.daily(conn, dt.datetime(2026, 2, 1, tzinfo=dt.UTC))
    assert (asked.hour, asked.minute, asked.utcoffset()) == (1, 30, dt.timedelta(hours=5, minutes=30))
    assert day.day == dt.date(2026, 3, 2)   # 20:00 UTC is already the next day in India
    with db.connect() as conn:
        assert conn.execute("SELECT current_setting('TimeZone') AS z").fetchone()["z"] == "Asia/Kolkata"  # type: ignore[index]


def test_an_unknown_time_zone_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_TIMEZONE", "Mars/Olympus_Mons")
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsInvalid, match="FLYWHEEL_TIMEZONE: 'Mars/Olympus_Mons' is not a time zone name"):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_questions_an_earlier_version_left_open_after_showing_their_answer_are_closed_not_shown_again(
        database_url: str) -> None:
    with db.connect(database_url) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = '014_shown_questions_done'")
        answer_id = feedback.create_answer(conn, thread_key="slack:C1:1.1", surface="slack", question="Laptop?")
        conn.execute("INSERT INTO slack_answers (channel_id, question_ts, thread_ts, user_id, question, owner,"
                     " answer_id) VALUES ('C1', '1.1', '1.1', 'U1', 'Laptop?', 'gone', %(a)s),"
                     " ('C1', '1.2', '1.1', 'U1', 'Monitor?', NULL, NULL)", {"a": answer_id})
        assert db.migrate(conn) == ["014_shown_questions_done"]
        left = conn.execute("SELECT question, owner FROM slack_answers ORDER BY id").fetchall()
    assert left == [{"question": None, "owner": None}, {"question": "Monitor?", "owner": None}]   # one still waits


def test_threads_asking_for_the_embedded_database_at_once_all_get_it_and_a_new_one_is_announced_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    urls, errors = _at_once(lambda: db.embedded_url(tmp_path / "pg"))
    assert errors == [] and len(set(urls)) == 1 and len(urls) == 4
    # A command run from another folder than usual gets an empty database: it says so, and where.
    assert [r.getMessage() for r in caplog.records if "new, empty one" in r.getMessage()] == [
        f"no database in {tmp_path / 'pg'}: starting a new, empty one (the data folder is FLYWHEEL_DATA_DIR, "
        "by default .flywheel in the folder a command is run from)"]


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


def test_what_a_killed_run_left_in_the_embedded_database_folder_is_forgotten(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])   # after a reboot, another program
    try:
        (tmp_path / "postmaster.pid").write_text(f"{other.pid}\n{tmp_path}\n")
        (tmp_path / ".handle_pids.json").write_text(json.dumps([other.pid, 999_999_999]))   # the second: killed
        db.forget_stale_server(tmp_path)
        assert not (tmp_path / "postmaster.pid").exists() and other.poll() is None
        assert json.loads((tmp_path / ".handle_pids.json").read_text()) == [other.pid]
    finally:
        other.kill()
        other.wait()


def test_the_embedded_servers_own_pid_file_is_kept(pg_server: str) -> None:
    from urllib.parse import parse_qs, urlparse

    pg_dir = Path(parse_qs(urlparse(pg_server).query)["host"][0])   # the tests' own embedded server
    before = (pg_dir / "postmaster.pid").read_text()
    db.forget_stale_server(pg_dir)
    assert (pg_dir / "postmaster.pid").read_text() == before


def test_listening_connections_have_the_os_probe_a_silent_server_unless_the_url_says_otherwise(
        database_url: str) -> None:
    # LISTEN connections send nothing while they wait: without keepalives a silent network
    # failure would leave them waiting for notifications for ever.
    with db.listening_connection(database_url) as conn:
        assert conn.autocommit
        settings = conn.info.get_parameters()
    assert {k: settings.get(k) for k in db.KEEPALIVES} == db.KEEPALIVES
    with db.listening_connection(f"{database_url}&keepalives_idle=5") as conn:
        assert conn.info.get_parameters()["keepalives_idle"] == "5"
