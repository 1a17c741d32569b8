"""The adapter registry: one live version, refused promotions, rollback, live cache refresh."""
from __future__ import annotations

import psycopg
import pytest
from support.polling import wait_until

from core import audit, db, models


def _ready(conn: psycopg.Connection, status: models.AdapterStatus = "ready") -> models.Adapter:
    adapter = models.register(conn, base_model="smollm2", path="/tmp/a", dataset_version=1, hyperparams={"rank": 8})
    models.update(conn, adapter.version, status=status)
    return adapter


def test_versions_are_numbered_and_named_in_order(database_url: str) -> None:
    with db.connection() as conn:
        first, second = _ready(conn), _ready(conn)
    assert (first.version, first.name, second.name) == (1, "flywheel-v1", "flywheel-v2")


def test_promoting_a_failed_or_unknown_adapter_is_refused(database_url: str) -> None:
    with db.connection() as conn:
        failed = _ready(conn, "failed")
        with pytest.raises(models.PromotionRefused, match="failed"):
            models.mark_live(conn, failed.version, actor="admin")
        with pytest.raises(models.PromotionRefused, match="no adapter version 42"):
            models.mark_live(conn, 42, actor="admin")
        assert models.live(conn) is None and audit.recent(conn) == []


def test_one_live_adapter_and_rollback_returns_to_previous(database_url: str) -> None:
    with db.connection() as conn:
        v1, v2 = _ready(conn), _ready(conn)
        models.mark_live(conn, v1.version, actor="admin")
        models.mark_live(conn, v2.version, actor="admin")
        assert models.live(conn).version == v2.version  # type: ignore[union-attr]
        assert models.get(conn, v1.version).status == "retired"  # type: ignore[union-attr]
        previous = models.previous_live(conn)
        assert previous is not None and previous.version == v1.version
        models.mark_live(conn, previous.version, actor="bob", rolling_back=True)
        assert [a.status for a in models.list_adapters(conn)] == ["retired", "live"]
        # Each switch writes its audit row in the same transaction as the switch.
        assert [(e.actor, e.action, e.target) for e in reversed(audit.recent(conn))] == [
            ("admin", "model.promote", "adapter:v1"), ("admin", "model.promote", "adapter:v2"),
            ("bob", "model.rollback", "adapter:v1")]


def test_rolling_back_again_goes_one_promotion_further_back_then_to_the_base_model(database_url: str) -> None:
    # Each switch in a transaction of its own, as in use (now() is the transaction's time).
    with db.connection() as conn:
        v1, v2, v3 = _ready(conn), _ready(conn), _ready(conn)
    for adapter in (v1, v2, v3):
        with db.connection() as conn:
            models.mark_live(conn, adapter.version, actor="admin")
    went_to = []
    for _ in range(2):
        with db.connection() as conn:
            previous = models.previous_live(conn)
            assert previous is not None
            went_to.append(models.mark_live(conn, previous.version, actor="bob", rolling_back=True).version)
    assert went_to == [v2.version, v1.version]  # never back to v3, the one rolled back from
    with db.connection() as conn:
        assert models.previous_live(conn) is None  # before v1, the base model answered
        models.roll_back_to_base_model(conn, actor="bob")
        assert models.live(conn) is None and audit.recent(conn)[0].target == "base model"
        with pytest.raises(models.PromotionRefused, match="base model already answers"):
            models.roll_back_to_base_model(conn, actor="bob")
    for adapter in (v3, v2):  # promoted again on purpose: v3 is a rollback target once more
        with db.connection() as conn:
            models.mark_live(conn, adapter.version, actor="admin")
    with db.connection() as conn:
        assert models.previous_live(conn).version == v3.version  # type: ignore[union-attr]


@pytest.mark.parametrize("connection_lost", [False, True], ids=["listening", "after-a-lost-connection"])
def test_live_cache_follows_a_promotion_in_another_connection(database_url: str, connection_lost: bool) -> None:
    cache = models.LiveAdapterCache(database_url, max_age_s=3600)  # only a notification refreshes it here
    try:
        assert cache.get() is None
        if connection_lost:  # e.g. a Postgres restart or failover: the listener must listen again
            listening = ("SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %%'"
                         " AND datname = current_database() AND pid <> pg_backend_pid()")


            def listener() -> list[dict]:   # a transaction sees one snapshot of pg_stat_activity: one each
                with db.connection() as conn:
                    return conn.execute(listening).fetchall()

            wait_until(listener, timeout_s=30, what="the cache's LISTEN")   # shortly after its thread starts
            with db.connection() as conn:
                dropped = conn.execute(f"SELECT pg_terminate_backend(pid) FROM ({listening}) l").fetchall()  # noqa: S608
            assert dropped
        with db.connection() as conn:
            adapter = _ready(conn)
            models.mark_live(conn, adapter.version, actor="admin")
        wait_until(lambda: cache.get() == adapter.name, timeout_s=30, what="the cache to follow the promotion")
        assert cache.get() == adapter.name
    finally:
        cache.close()


def test_a_rollback_straight_after_another_is_not_refused_as_under_way(database_url: str) -> None:
    """Each rollback takes the promotion lock and lets it go; the next one, asked at once (a
    script, or the worker's auto-promote right after an admin), must find it free. Closing the
    lock's connection alone left it held until the server ended that session: rare on an idle
    machine, but CI saw a rollback refused right after a promotion."""
    from core import serving
    for _ in range(30):
        with pytest.raises(models.PromotionRefused, match="no longer live"):
            serving.rollback(actor="admin", from_version=99)
