"""The job queue (procrastinate on our Postgres): retrains run in the worker process.

`core` defers jobs by task name, so it never imports the trainer; the worker imports
`trainer.jobs` (the app's import path), where the tasks are defined on this same app."""
from __future__ import annotations

import procrastinate
import procrastinate.tasks
import psycopg

from core import db

RETRAIN_TASK = "trainer.jobs.retrain"
SCHEDULE_TASK = "trainer.jobs.tick"
TRAINING_QUEUE = "training"
# A worker that sent no heartbeat for this long is dead (procrastinate beats every 10 s).
STALLED_AFTER_S = 60
# Job statuses that may still run a retrain: waiting, or held by a worker.
UNFINISHED_JOB = ("todo", "doing")

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(kwargs={}),
    import_paths=["trainer.jobs"],
)


def configure(url: str | None = None) -> procrastinate.App:
    """An app on our database (DATABASE_URL or the embedded one), for deferring and managing jobs."""
    return app.with_connector(procrastinate.PsycopgConnector(conninfo=url or db.database_url()))


def ensure_schema(url: str | None = None) -> None:
    """Install procrastinate's tables once, under the migration lock (they do not depend on ours)."""
    url = url or db.database_url()
    with db.connection(url) as conn:   # pooled: a retrain request checks on its way to the queue
        if installed(conn):
            return
        conn.execute("SELECT pg_advisory_xact_lock(%(k)s)", {"k": db.MIGRATION_LOCK_KEY})
        if not installed(conn):
            conn.execute(configure(url).schema_manager.get_schema())  # type: ignore[arg-type]


def installed(conn: psycopg.Connection) -> bool:
    """Whether the queue's tables are in this database."""
    return conn.execute("SELECT to_regclass('procrastinate_jobs') AS t").fetchone()["t"] is not None  # type: ignore[index]


def run_worker(url: str | None = None, *, wait: bool = True, install_signal_handlers: bool = True,
               shutdown_graceful_timeout: float = 30, fetch_job_polling_interval: float = 5.0) -> None:
    """Run the worker on the training queue, one job at a time, with the periodic schedule tick.
    On the same app object (its tasks defer the periodic jobs through it), pointed at our database."""
    with app.replace_connector(procrastinate.PsycopgConnector(conninfo=url or db.database_url())):
        app.run_worker(queues=[TRAINING_QUEUE], concurrency=1, wait=wait, name="flywheel-worker",
                       install_signal_handlers=install_signal_handlers,
                       shutdown_graceful_timeout=shutdown_graceful_timeout,
                       fetch_job_polling_interval=fetch_job_polling_interval)


def defer_retrain(run_id: int, url: str | None = None) -> int:
    """Queue the retrain of a recorded run; returns the job id. By name: `App.configure_task`
    would import the trainer (the app's import path) into whichever process defers. The queue's
    tables are installed first if no worker has started yet (a retrain asked for before)."""
    ensure_schema(url)
    queued = configure(url)
    with queued.open():
        deferrer = procrastinate.tasks.configure_task(name=RETRAIN_TASK, job_manager=queued.job_manager,
                                                      queue=TRAINING_QUEUE)
        return deferrer.defer(run_id=run_id)


def cancel_job(job_id: int, url: str | None = None) -> bool:
    """Cancel a job still waiting in the queue (a running one stops at its next step check)."""
    queued = configure(url)
    with queued.open():
        return queued.job_manager.cancel_job_by_id(job_id)


def orphaned_runs(conn: psycopg.Connection, stalled_after_s: float = STALLED_AFTER_S, *,
                  run_id: int | None = None) -> list[dict[str, object]]:
    """Runs (or the run `run_id`) no live worker will carry on: marked running, or queued, while
    their job is gone, ended (the task failed before the run started) or held by a dead worker
    (killed, machine lost). A queued run whose job still waits is not one.
    [{run_id, run_status, job_id, job_status}]."""
    if not installed(conn):
        return []
    rows = conn.execute(
        "SELECT r.id AS run_id, r.status AS run_status, j.id AS job_id, j.status::text AS job_status"
        " FROM training_runs r"
        " LEFT JOIN procrastinate_jobs j ON j.id = r.job_id"
        " LEFT JOIN procrastinate_workers w ON w.id = j.worker_id"
        " WHERE (r.status = 'running' OR (r.status = 'queued' AND r.job_id IS NOT NULL))"
        "  AND (%(run)s::bigint IS NULL OR r.id = %(run)s)"
        "  AND (j.id IS NULL OR NOT j.status::text = ANY(%(unfinished)s)"
        "   OR (r.status = 'running' AND j.status <> 'doing')"
        "   OR (j.status = 'doing' AND (w.id IS NULL OR w.last_heartbeat < now() - make_interval(secs => %(s)s))))",
        {"s": stalled_after_s, "unfinished": list(UNFINISHED_JOB), "run": run_id}).fetchall()
    return [dict(r) for r in rows]


def job_status(conn: psycopg.Connection, job_id: int) -> str | None:
    """The queue's status of a job (todo, doing, succeeded, failed, cancelled, aborted); None if gone."""
    row = conn.execute("SELECT status::text AS s FROM procrastinate_jobs WHERE id = %(id)s", {"id": job_id}).fetchone()
    return None if row is None else str(row["s"])


def fail_job(conn: psycopg.Connection, job_id: int) -> None:
    """Close a job whose worker died, so the queue shows it failed rather than doing forever."""
    conn.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %(id)s AND status = 'doing'",
                 {"id": job_id})
