"""`flywheel doctor`: is every part the product needs in working order? Each check says what it
found and, when something is wrong, what to do about it."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import psycopg

from core import db, logs, models, queue, serving
from core.config import Settings

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str


NO_TABLES = Check("migrations", "warn", "a new database, no tables yet: `flywheel migrate` (or any of the "
                  "Procfile's processes, at start) creates them")


def redacted(url: str) -> str:
    """A connection URL or keyword conninfo ("host=... password=...") fit to print: no password,
    no query string."""
    return logs.without_passwords(url).split("?")[0]


def run_checks(settings: Settings, *, embedder: bool = True) -> Iterator[Check]:
    """Database first: when it is down, the checks that read from it are skipped, not failed twice."""
    try:
        url = db.database_url(settings)
    except Exception as e:  # noqa: BLE001  (embedded Postgres may fail in many ways; all are reported)
        yield Check("database", "fail", f"the embedded Postgres did not start: {e}")
        return
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    except psycopg.Error as e:
        yield Check("database", "fail", f"cannot connect to {redacted(url)}: {str(e).strip().splitlines()[0]}. "
                    "Check DATABASE_URL, or unset it to use the embedded Postgres.")
        return
    where = "DATABASE_URL" if settings.database_url else f"embedded, {settings.pg_dir}"
    yield Check("database", "ok", f"PostgreSQL {version} ({where}), pgvector {vector[0] if vector else 'not installed yet'}")
    migrations = list(_guarded("migrations", lambda: _migrations(url)))
    yield from migrations
    if embedder:
        yield from _guarded("embedder", _embedder)
    if migrations == [NO_TABLES]:   # nothing to read yet: one finding, not three errors
        yield from (Check(name, "warn", "not checked: the database has no tables yet")
                    for name in ("knowledge base", "generation"))
    else:
        yield from _guarded("knowledge base", lambda: _knowledge(url))
        yield from _guarded("generation", lambda: _generation(settings, url))
    yield from _guarded("slack", lambda: _slack(settings))
    yield from _guarded("queue", lambda: _queue(url))


def _guarded(name: str, check: Callable[[], Check]) -> Iterator[Check]:
    try:
        yield check()
    except Exception as e:  # noqa: BLE001  (a broken part is a finding, not a crash of the doctor)
        yield Check(name, "fail", f"{type(e).__name__}: {e}")


def _migrations(url: str) -> Check:
    with db.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations') AS t").fetchone()
        applied = {r["version"] for r in conn.execute("SELECT version FROM schema_migrations")} if exists["t"] else set()  # type: ignore[index]
    pending = [p.stem for p in db.migration_files() if p.stem not in applied]
    if not applied:
        return NO_TABLES
    if pending:
        return Check("migrations", "warn", f"{len(pending)} not applied yet ({', '.join(pending)}): `flywheel migrate`")
    return Check("migrations", "ok", f"{len(applied)} applied, none pending")


def _embedder() -> Check:
    from core.knowledge import embed

    vector = embed.embed_query("health check")
    return Check("embedder", "ok", f"{embed.model_path()} ({vector.shape[0]} dimensions)")


def _knowledge(url: str) -> Check:
    from core.knowledge import store

    with db.connect(url) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM documents) AS d, (SELECT count(*) FROM chunks) AS c").fetchone()
        empty = store.empty_documents(conn)
    if not row["d"]:  # type: ignore[index]
        return Check("knowledge base", "warn", "empty: `flywheel ingest PATH`")
    figures = f"{row['d']} documents, {row['c']} chunks"  # type: ignore[index]
    if empty:
        return Check("knowledge base", "warn", f"{figures}; {len(empty)} without content (an import listed them, "
                     f"e.g. {empty[0]}): ingest their files again")
    return Check("knowledge base", "ok", figures)


def _generation(settings: Settings, url: str) -> Check:
    from core.llm.backends import make_generator

    with db.connect(url) as conn:
        live = models.live(conn)
    adapter = f"live adapter {live.name} (v{live.version})" if live else "base model (no live adapter)"
    url = serving.serving_url(settings)  # a TGI promotion may have moved serving to another server
    generator = make_generator(settings.model_copy(update={"llm_url": url}))
    if generator is None:
        return Check("generation", "ok", "extractive answers (no model configured)")
    if not generator.health():
        return Check("generation", "warn", f"{settings.llm_backend} server at {redacted(url)} is not answering: "
                     "answers fall back to cited excerpts until it is (`flywheel serve-llm`)")
    if serving.lost_live_adapter(live, url, settings):
        return Check("generation", "warn", f"{settings.llm_backend} server at {redacted(url)} is healthy but does not "
                     f"hold the {adapter}, so it answers with the base model: `flywheel models promote "
                     f"{live.version}` loads it again")  # type: ignore[union-attr]
    return Check("generation", "ok", f"{settings.llm_backend} server at {redacted(url)} is healthy; {adapter}")


def slack_mode(settings: Settings) -> str | None:
    """How the bot receives events: Socket Mode when an app token is set, else HTTP events with a
    signing secret; None when it cannot receive any."""
    if settings.slack_app_token is not None:
        return "Socket Mode"
    return "HTTP events" if settings.slack_signing_secret is not None else None


def _slack(settings: Settings) -> Check:
    if settings.slack_bot_token is None:
        return Check("slack", "warn", "not configured (SLACK_BOT_TOKEN unset): questions come through the "
                     "dashboard's Try it page and the CLI")
    mode = slack_mode(settings)
    if mode is None:
        return Check("slack", "fail", "SLACK_BOT_TOKEN is set but neither SLACK_APP_TOKEN (Socket Mode) "
                     "nor SLACK_SIGNING_SECRET (HTTP events) is")
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    try:
        who = WebClient(token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url,
                        timeout=5).auth_test()
    except SlackApiError as e:
        return Check("slack", "fail", f"Slack refused the bot token (SLACK_BOT_TOKEN): {e.response.get('error')}")
    if settings.slack_app_token is not None:   # what the bot opens its Socket Mode connection with
        try:
            WebClient(base_url=settings.slack_api_url, timeout=5).apps_connections_open(
                app_token=settings.slack_app_token.get_secret_value())
        except SlackApiError as e:
            return Check("slack", "fail", f"Slack refused the app token (SLACK_APP_TOKEN): {e.response.get('error')}; "
                         "the bot cannot connect in Socket Mode (an app-level token with connections:write, xapp-...)")
    review = f", reviews go to {settings.review_channel}" if settings.review_channel else \
        ", FLYWHEEL_REVIEW_CHANNEL unset: drafts needing review cannot be shown to reviewers"
    level: Level = "ok" if settings.review_channel else "warn"
    return Check("slack", level, f"{mode} as @{who.get('user')} in {who.get('team')}{review}")


def _queue(url: str) -> Check:
    with db.connect(url) as conn:
        if not queue.installed(conn):
            return Check("queue", "warn", "not set up yet: the worker does it at start (`flywheel worker`)")
        counts = {r["status"]: r["n"] for r in conn.execute(
            "SELECT status::text AS status, count(*) AS n FROM procrastinate_jobs GROUP BY 1")}
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no jobs yet"
    return Check("queue", "ok", summary)
