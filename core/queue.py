"""The job queue (procrastinate on our Postgres): retrains run in the worker process.

`core` defers jobs by task name, so it never imports the trainer; the worker imports
`trainer.jobs`, where the tasks are defined on this same app."""
from __future__ import annotations

import procrastinate

from core import db

RETRAIN_TASK = "trainer.jobs.retrain"
TRAINING_QUEUE = "training"

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(kwargs={}),
    import_paths=["trainer.jobs"],
)


def configure(url: str | None = None) -> procrastinate.App:
    """Point the app at our database (DATABASE_URL or the embedded one) and return it."""
    return app.with_connector(procrastinate.PsycopgConnector(conninfo=url or db.database_url()))


def ensure_schema(url: str | None = None) -> None:
    """Install procrastinate's tables once, under the migration lock, after our migrations."""
    url = url or db.database_url()
    with db.connect(url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%(k)s)", {"k": db.MIGRATION_LOCK_KEY})
        if conn.execute("SELECT to_regclass('procrastinate_jobs') AS t").fetchone()["t"] is None:  # type: ignore[index]
            conn.execute(configure(url).schema_manager.get_schema())  # type: ignore[arg-type]


def defer_retrain(run_id: int, url: str | None = None) -> int:
    """Queue the retrain of a recorded run; returns the job id."""
    queued = configure(url)
    with queued.open():
        return queued.configure_task(RETRAIN_TASK, queue=TRAINING_QUEUE).defer(run_id=run_id)


def cancel_job(job_id: int, url: str | None = None) -> bool:
    """Cancel a job still waiting in the queue (a running one stops at its next step check)."""
    queued = configure(url)
    with queued.open():
        return queued.job_manager.cancel_job_by_id(job_id)
