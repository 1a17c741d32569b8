"""Adapter registry: versions, status, which one is live, and where it is served; plus a
per-process cache of the live adapter and serving URL.

Every function takes a connection and never commits. Promotion notifies listeners
(`LISTEN flywheel_live_adapter`), so every process switches on its next request. The serving
URL changes only when a promotion starts a new server (TGI): it switches in the same
transaction as the live adapter, so no process ever pairs the new adapter with the old server."""
from __future__ import annotations

import atexit
import datetime as dt
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, fields
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from core import audit, db

logger = logging.getLogger(__name__)

AdapterStatus = Literal["training", "ready", "live", "retired", "failed"]
LIVE_CHANNEL = "flywheel_live_adapter"
LIVE_CACHE_MAX_AGE_S = 30.0   # how stale a process's view of the live adapter may get when it misses a NOTIFY


@dataclass(frozen=True)
class Adapter:
    id: int
    version: int
    name: str
    base_model: str
    dataset_version: int | None
    path: str
    status: AdapterStatus
    hyperparams: dict[str, Any]
    metrics: dict[str, Any]
    error: str | None
    created_at: dt.datetime
    promoted_at: dt.datetime | None
    rolled_back_at: dt.datetime | None  # rolled back from: no longer a rollback target


@dataclass(frozen=True)
class Endpoint:
    """The server generation goes to, when a promotion started it (else the configured URL)."""

    url: str
    pid: int | None = None
    host: str | None = None
    adapters: str = ""      # what it was launched with: `name=/path,...`


def adapter_names(launched_with: str) -> list[str]:
    """The names in a TGI launch's `name=/path,...`."""
    return [spec.partition("=")[0] for spec in launched_with.split(",") if spec]


class PromotionRefused(ValueError):
    """The adapter cannot go live (failed, still training, unknown)."""


class GateNotPassed(PromotionRefused):
    """The adapter did not pass its eval gate: it goes live only when promoted despite that."""


_COLUMNS = ", ".join(f.name for f in fields(Adapter))


def register(conn: psycopg.Connection, *, base_model: str, path: str, dataset_version: int | None,
             hyperparams: dict[str, Any], status: AdapterStatus = "training") -> Adapter:
    """A new version, named `flywheel-v{version}`; the version is taken under a lock."""
    conn.execute("LOCK TABLE adapters IN SHARE ROW EXCLUSIVE MODE")
    version = conn.execute("SELECT coalesce(max(version), 0) + 1 AS v FROM adapters").fetchone()["v"]  # type: ignore[index]
    row = conn.execute(
        f"INSERT INTO adapters (version, name, base_model, dataset_version, path, status, hyperparams)"
        f" VALUES (%(v)s, %(n)s, %(b)s, %(d)s, %(p)s, %(s)s, %(h)s) RETURNING {_COLUMNS}",
        {"v": version, "n": f"flywheel-v{version}", "b": base_model, "d": dataset_version, "p": path,
         "s": status, "h": Jsonb(hyperparams)},
    ).fetchone()
    return Adapter(**row)  # type: ignore[arg-type]


def update(conn: psycopg.Connection, version: int, *, status: AdapterStatus | None = None,
           metrics: dict[str, Any] | None = None, error: str | None = None, path: str | None = None,
           clear_error: bool = False) -> None:
    conn.execute(
        "UPDATE adapters SET status = coalesce(%(s)s, status), metrics = coalesce(%(m)s, metrics),"
        " error = CASE WHEN %(clear)s THEN NULL ELSE coalesce(%(e)s, error) END,"
        " path = coalesce(%(p)s, path) WHERE version = %(v)s",
        {"s": status, "m": Jsonb(metrics) if metrics is not None else None, "e": error, "p": path, "v": version,
         "clear": clear_error},
    )


def get(conn: psycopg.Connection, version: int) -> Adapter | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM adapters WHERE version = %(v)s", {"v": version}).fetchone()
    return None if row is None else Adapter(**row)


def find(conn: psycopg.Connection, given: str) -> Adapter | None:
    """The adapter named `given`, or numbered so (`3`, `v3`)."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM adapters WHERE name = %(n)s", {"n": given}).fetchone()
    if row is not None:
        return Adapter(**row)
    number = version_number(given)
    return None if number is None else get(conn, number)


def list_adapters(conn: psycopg.Connection) -> list[Adapter]:
    return [Adapter(**r) for r in conn.execute(f"SELECT {_COLUMNS} FROM adapters ORDER BY version DESC")]


def live(conn: psycopg.Connection) -> Adapter | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM adapters WHERE status = 'live'").fetchone()
    return None if row is None else Adapter(**row)


def promotable(conn: psycopg.Connection, version: int) -> Adapter:
    """The adapter, if it may go live; else `PromotionRefused` saying why."""
    adapter = get(conn, version)
    if adapter is None:
        raise PromotionRefused(f"There is no adapter version {version}.")
    if adapter.status in ("failed", "training"):
        raise PromotionRefused(f"Adapter v{version} is {adapter.status}; only a finished adapter can go live.")
    return adapter


def gate_failure(adapter: Adapter, live_now: str | None) -> str | None:
    """Why `adapter` should not go live on its eval gate's word, or None: it did not pass the
    gate, or it passed against another adapter (or the base model) than `live_now`, the adapter
    answering now (None: the base model), so the two were never compared. None as well for an
    adapter registered without a gate."""
    gate = adapter.metrics.get("gate")
    if not isinstance(gate, dict):
        return None
    if not gate.get("passed"):
        reasons = gate.get("reasons") or ["no reason was recorded"]
        return f"{adapter.name} did not pass its eval gate: {'; '.join(reasons)}."
    compared = gate.get("baseline_name")
    if compared is None or adapter.name == live_now or compared == (live_now or "base"):
        return None
    return (f"{adapter.name} passed its eval gate against {_called(compared)}, but {_called(live_now)} answers now: "
            "the two were never compared.")


def _called(adapter_name: str | None) -> str:
    return adapter_name if adapter_name not in (None, "base") else "the base model"  # type: ignore[return-value]


def version_number(given: str) -> int | None:
    """The version an admin typed: `3`, `v3` or the name `flywheel-v3`; None for anything else."""
    match = re.fullmatch(r"\s*(?:flywheel-)?v?(\d{1,9})\s*", given, flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


def mark_live(conn: psycopg.Connection, version: int, *, actor: str, rolling_back: bool = False,
              endpoint: Endpoint | None = None) -> Adapter:
    """Make `version` the live adapter in the registry (the serving side must already have it
    loaded: see `core.serving.promote`), switch the serving endpoint with it when the promotion
    started a new server, and audit who did it, all in the caller's transaction. Checks again
    that the adapter may go live: loading it can take minutes, during which its status may change.
    `rolling_back`: the adapter live until now is no longer a rollback target."""
    promotable(conn, version)
    _retire_live(conn, except_version=version, rolled_back=rolling_back)
    conn.execute("UPDATE adapters SET status = 'live', promoted_at = now(), rolled_back_at = NULL"
                 " WHERE version = %(v)s", {"v": version})
    if endpoint is not None:
        conn.execute(
            "INSERT INTO serving_endpoint (id, url, pid, host, adapters) VALUES (1, %(u)s, %(p)s, %(h)s, %(a)s)"
            " ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, pid = EXCLUDED.pid, host = EXCLUDED.host,"
            " adapters = EXCLUDED.adapters, updated_at = now()",
            {"u": endpoint.url, "p": endpoint.pid, "h": endpoint.host, "a": endpoint.adapters})
    conn.execute("SELECT pg_notify(%(ch)s, %(v)s)", {"ch": LIVE_CHANNEL, "v": str(version)})
    live: Adapter = get(conn, version)  # type: ignore[assignment]
    audit.record(conn, actor, "model.rollback" if rolling_back else "model.promote", f"adapter:v{version}",
                 {"name": live.name, **({"url": endpoint.url} if endpoint is not None else {})})
    return live


def roll_back_to_base_model(conn: psycopg.Connection, *, actor: str) -> None:
    """Retire the live adapter with none after it: the base model answers again. Audited."""
    current = live(conn)
    if current is None:
        raise PromotionRefused("No adapter is live: the base model already answers.")
    _retire_live(conn, except_version=None, rolled_back=True)
    conn.execute("SELECT pg_notify(%(ch)s, '')", {"ch": LIVE_CHANNEL})
    audit.record(conn, actor, "model.rollback", "base model", {"from": current.name})


def _retire_live(conn: psycopg.Connection, *, except_version: int | None, rolled_back: bool) -> None:
    conn.execute("UPDATE adapters SET status = 'retired', rolled_back_at = CASE WHEN %(rb)s THEN now() END"
                 " WHERE status = 'live' AND version IS DISTINCT FROM %(v)s", {"v": except_version, "rb": rolled_back})


def clear_endpoint(conn: psycopg.Connection) -> None:
    """Generation goes to the configured URL again (the server a promotion started is gone)."""
    conn.execute("DELETE FROM serving_endpoint WHERE id = 1")
    conn.execute("SELECT pg_notify(%(ch)s, '')", {"ch": LIVE_CHANNEL})


def endpoint(conn: psycopg.Connection) -> Endpoint | None:
    """The server a promotion switched generation to; None: the configured URL."""
    row = conn.execute("SELECT url, pid, host, adapters FROM serving_endpoint WHERE id = 1").fetchone()
    return None if row is None else Endpoint(**row)


def previous_live(conn: psycopg.Connection) -> Adapter | None:
    """The adapter that was live before the current one, skipping those rolled back from: what a
    rollback promotes. None: before the current one, the base model answered."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM adapters WHERE status = 'retired' AND promoted_at IS NOT NULL"
        " AND rolled_back_at IS NULL ORDER BY promoted_at DESC LIMIT 1"
    ).fetchone()
    return None if row is None else Adapter(**row)


def not_needed_by_requests(conn: psycopg.Connection, *, replaced: Adapter | None) -> set[str]:
    """Names of the versions no request should use any more, once a switch is committed: all but
    the live one, the one the switch replaced (requests in flight may still use it, and processes
    that missed the switch's NOTIFY send it for a while) and the rollback target."""
    keep = {a.name for a in (live(conn), replaced, previous_live(conn)) if a is not None}
    return {r["name"] for r in conn.execute("SELECT name FROM adapters")} - keep


def names(conn: psycopg.Connection) -> set[str]:
    """Names of the adapters that exist and are not failed: what a serving backend may be asked for."""
    return {r["name"] for r in conn.execute("SELECT name FROM adapters WHERE status <> 'failed'")}


class LiveAdapterCache:
    """The live adapter's name (and the serving URL, when a promotion switched it) for this
    process, read once and refreshed when a promotion notifies; a slow re-read (`max_age_s`)
    covers a missed notification."""

    def __init__(self, url: str, max_age_s: float = LIVE_CACHE_MAX_AGE_S) -> None:
        self._url = url
        self._max_age_s = max_age_s
        self._name: str | None = None
        self._serving_url: str | None = None
        self._launched: list[str] = []
        self._read_at = -math.inf  # not read yet (monotonic time may be small after boot)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = threading.Thread(target=self._listen, daemon=True, name="live-adapter-listener")
        self._listener.start()
        # Stop listening before an embedded Postgres shuts down at exit (atexit runs last-in first).
        atexit.register(self.close)

    def get(self) -> str | None:
        return self.current()[0]

    def current(self) -> tuple[str | None, str | None]:
        """(live adapter name, serving URL), read together so they always match."""
        with self._lock:
            self._fresh()
            return self._name, self._serving_url

    def launched_adapters(self) -> list[str]:
        """The adapters the serving TGI was started with (none for a server Flywheel did not start)."""
        with self._lock:
            self._fresh()
            return self._launched

    def _fresh(self) -> None:
        if time.monotonic() - self._read_at <= self._max_age_s:
            return
        with db.connection(self._url) as conn:  # pooled, so a new database is migrated first
            row = conn.execute(  # one statement: one snapshot, so they always match
                "SELECT (SELECT name FROM adapters WHERE status = 'live') AS name, e.url, e.adapters"
                " FROM (SELECT 1) one LEFT JOIN serving_endpoint e ON e.id = 1").fetchone()
        self._name, self._serving_url = row["name"], row["url"]  # type: ignore[index]
        self._launched = adapter_names(row["adapters"] or "")  # type: ignore[index]
        self._read_at = time.monotonic()

    def _listen(self) -> None:
        """Mark the cache stale on every notification; after a lost connection, listen again
        (re-reading first: a notification may have been missed meanwhile)."""
        backoff = 1.0
        while not self._stop.is_set():
            try:
                with db.listening_connection(self._url) as conn:
                    conn.execute(f"LISTEN {LIVE_CHANNEL}")
                    self._mark_stale()
                    backoff = 1.0
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self._mark_stale()
            except psycopg.Error:
                if self._stop.is_set():
                    return
                logger.warning("live-adapter listener lost its connection; listening again in %.0f s "
                               "(meanwhile the live adapter is re-read every %.0f s)", backoff, self._max_age_s,
                               exc_info=True)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _mark_stale(self) -> None:
        with self._lock:
            self._read_at = -math.inf  # the next get() re-reads

    def close(self) -> None:
        self._stop.set()
        self._listener.join(timeout=5)
