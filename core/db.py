"""Postgres access: a psycopg pool, the embedded server when no DATABASE_URL, and migrations."""
from __future__ import annotations

import json
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from core.config import Settings, get_settings

logger = logging.getLogger(__name__)
T = TypeVar("T")

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
# Any fixed 64-bit number: every process that migrates takes this lock first.
MIGRATION_LOCK_KEY = 7_146_392_001



class ChangedSince(ValueError):
    """A row changed after the person saving it was shown it, so nothing was saved: their edit
    would have undone someone else's. The message says what changed; show them the row again."""


_pools: dict[str, ConnectionPool] = {}
_pools_lock = threading.Lock()
_embedded: dict[Path, object] = {}
_embedded_lock = threading.Lock()


def database_url(settings: Settings | None = None) -> str:
    """The URL of the database: `DATABASE_URL`, or the embedded Postgres under the data folder,
    started on first use (it stops when the last process using it exits)."""
    settings = settings or get_settings()
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return embedded_url(settings.pg_dir)


def embedded_url(pg_dir: Path) -> str:
    with warnings.catch_warnings():  # pgserver asks platformdirs for a runtime dir it never uses
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver  # imported here: production with DATABASE_URL never needs it

    pg_dir = pg_dir.resolve()
    with _embedded_lock:   # threads asking at once (the bot's first questions) start it once
        if pg_dir not in _embedded:
            if not (pg_dir / "PG_VERSION").exists():   # a command run from another folder lands here too
                logger.warning("no database in %s: starting a new, empty one (the data folder is FLYWHEEL_DATA_DIR, "
                               "by default .flywheel in the folder a command is run from)", pg_dir)
            pg_dir.mkdir(parents=True, exist_ok=True)
            with pgserver.postgres_server.PostgresServer._lock:   # pgserver's own, across processes
                forget_stale_server(pg_dir)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
                _embedded[pg_dir] = pgserver.get_server(pg_dir, cleanup_mode="stop")
        return _embedded[pg_dir].get_uri()  # type: ignore[attr-defined]


def connect(url: str | None = None, *, autocommit: bool = False) -> psycopg.Connection:
    """One connection outside the pool, for scripts and tests."""
    conn = psycopg.connect(url or database_url(), autocommit=autocommit, row_factory=dict_row)
    _in_time_zone(conn)
    return conn


# A connection that only waits for notifications sends nothing: after a silent network failure
# (a partition, a NAT that forgot it) it would wait for ever. The OS probes the server after 30 s
# of silence and gives up after three unanswered probes 10 s apart, about a minute.
KEEPALIVES = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3"}


def listening_connection(url: str) -> psycopg.Connection:
    """An autocommit connection outside the pool for LISTEN, with TCP keepalives (keepalive
    settings in `url` itself win)."""
    return psycopg.connect(url, autocommit=True, **{**KEEPALIVES, **conninfo_to_dict(url)})


def _in_time_zone(conn: psycopg.Connection) -> None:
    """Times read back (and days counted by Postgres) in `FLYWHEEL_TIMEZONE`, whatever the
    server's own zone."""
    conn.execute("SELECT set_config('TimeZone', %(z)s, false)", {"z": get_settings().timezone})
    if not conn.autocommit:
        conn.commit()


def forget_stale_server(pg_dir: Path) -> None:
    """What a killed run (a crash, a reboot, SIGKILL) leaves in the embedded database's folder:
    a `postmaster.pid` whose pid is no longer this folder's server (after a reboot, possibly
    another program: pgserver would take it for the server, fail to connect, and kill it on
    exit), and the pids of processes that used it (pgserver stops the server only when the last
    of those exits, so it would never stop it again). Both are forgotten."""
    pid_file = pg_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        pid = None
    if pid is not None and not _serves(pid, pg_dir):
        pid_file.unlink(missing_ok=True)
    users = pg_dir / ".handle_pids.json"
    try:
        pids = json.loads(users.read_text())
    except (OSError, ValueError):
        return
    alive = [p for p in pids if isinstance(p, int) and psutil.pid_exists(p)]
    if alive != pids:
        users.write_text(json.dumps(alive))


def _serves(pid: int, pg_dir: Path) -> bool:
    try:
        process = psutil.Process(pid)
        return process.name() == "postgres" and str(pg_dir) in " ".join(process.cmdline())
    except psutil.Error:
        return False


def pool(url: str | None = None) -> ConnectionPool:
    """The process-wide pool for `url` (default: `database_url()`), opened on first use, after
    migrating the database: this is where every process migrates, so a command run before
    anything else touched a new database (an ingest before the first `make up`) finds its tables."""
    url = url or database_url()
    with _pools_lock:
        if url not in _pools:
            ensure_schema(url)
            _pools[url] = ConnectionPool(
                url,
                min_size=1,
                max_size=get_settings().db_pool_max,
                kwargs={"row_factory": dict_row},
                configure=_in_time_zone,
                check=ConnectionPool.check_connection,   # a connection Postgres dropped (a restart) is replaced
                open=True,
                name="flywheel",
            )
        return _pools[url]


@contextmanager
def connection(url: str | None = None) -> Iterator[psycopg.Connection]:
    """A pooled connection whose transaction commits when the block ends (rolls back on error)."""
    with pool(url).connection() as conn:
        yield conn


def with_retry(work: Callable[[psycopg.Connection], T], url: str | None = None) -> T:
    """`work(conn)` in a pooled transaction, run once more on a fresh connection if Postgres
    dropped this one mid-query (a restart, a failover): for small idempotent writes and reads
    that a long job must not die of. The pool's check only catches drops between queries."""
    try:
        with connection(url) as conn:
            return work(conn)
    except psycopg.OperationalError as e:
        logger.warning("database connection lost mid-query, trying once more: %s", e)
        with connection(url) as conn:
            return work(conn)


def close_pools() -> None:
    with _pools_lock:
        for p in _pools.values():
            p.close()
        _pools.clear()


def migration_files() -> list[Path]:
    return sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply the migrations this database has not seen, in order, under an advisory lock so
    concurrent processes never race. Runs in the caller's transaction; returns what it applied."""
    conn.execute("SELECT pg_advisory_xact_lock(%(key)s)", {"key": MIGRATION_LOCK_KEY})
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied = {row["version"] for row in conn.execute("SELECT version FROM schema_migrations")}
    done: list[str] = []
    for path in migration_files():
        if path.stem in applied:
            continue
        logger.info("applying migration %s", path.name)
        conn.execute(path.read_text())  # type: ignore[arg-type]  # trusted file from sql/
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%(v)s)", {"v": path.stem})
        done.append(path.stem)
    return done


def ensure_schema(url: str | None = None) -> list[str]:
    """Migrate the database at `url` in a transaction of its own."""
    with connect(url) as conn:
        return migrate(conn)
