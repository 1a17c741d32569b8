from __future__ import annotations

import threading

from core import db


def test_migrations_apply_twice_without_error(database_url: str) -> None:
    assert db.ensure_schema(database_url) == []  # the template already has them all
    with db.connect(database_url) as conn:
        conn.execute("DELETE FROM schema_migrations")
        conn.execute("DROP TABLE chunks, documents, group_members")
    applied = db.ensure_schema(database_url)
    assert applied == [p.stem for p in db.migration_files()]
    assert db.ensure_schema(database_url) == []


def test_concurrent_migrations_do_not_race(database_url: str) -> None:
    with db.connect(database_url) as conn:
        conn.execute("DELETE FROM schema_migrations")
        conn.execute("DROP TABLE chunks, documents, group_members")
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(db.ensure_schema(database_url))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r) for r in results) == [0, 0, 0, len(db.migration_files())]


def test_pooled_connection_rolls_back_on_error(database_url: str) -> None:
    try:
        with db.connection() as conn:
            conn.execute("INSERT INTO group_members (group_name, user_id) VALUES ('hr', 'U1')")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM group_members").fetchone()["n"] == 0
