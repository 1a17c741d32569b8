"""Retrain runs and the retrain schedule, as records: what the worker writes and the dashboard reads.

Every function takes a connection and never commits."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from core import db, hyperparams
from core.config import Settings

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


@dataclass(frozen=True)
class TrainingRun:
    id: int
    status: RunStatus
    dataset_version: int | None
    base_model: str
    params: dict[str, Any]
    requested_by: str | None
    progress: float
    losses: list[dict[str, Any]]
    metrics: dict[str, Any]
    log: str
    adapter_version: int | None
    error: str | None
    cancel_requested: bool
    job_id: int | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class Schedule:
    enabled: bool
    cron: str
    min_new_examples: int
    params: dict[str, Any]
    last_fired_at: dt.datetime | None
    updated_at: dt.datetime


class CannotResume(ValueError):
    """A run that is not there to resume: none by that id, not failed, or its adapter trained."""


class RunAlreadyActive(RuntimeError):
    """Only one retrain runs at a time."""


_COLUMNS = ", ".join(f.name for f in fields(TrainingRun))


def create_run(conn: psycopg.Connection, *, base_model: str, dataset_version: int | None,
               params: dict[str, Any], requested_by: str | None) -> TrainingRun:
    try:
        with conn.transaction():  # a savepoint: the unique index says whether one is active
            row = conn.execute(
                f"INSERT INTO training_runs (base_model, dataset_version, params, requested_by)"
                f" VALUES (%(b)s, %(d)s, %(p)s, %(r)s) RETURNING {_COLUMNS}",
                {"b": base_model, "d": dataset_version, "p": Jsonb(params), "r": requested_by},
            ).fetchone()
    except psycopg.errors.UniqueViolation as e:
        active = conn.execute("SELECT id FROM training_runs WHERE status IN ('queued', 'running')").fetchone()
        raise RunAlreadyActive(f"Retrain run {active['id'] if active else '?'} is already queued or running; "
                               "wait for it or cancel it first.") from e
    return TrainingRun(**row)  # type: ignore[arg-type]


def get_run(conn: psycopg.Connection, run_id: int) -> TrainingRun | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM training_runs WHERE id = %(id)s", {"id": run_id}).fetchone()
    return None if row is None else TrainingRun(**row)


# A run in a list: its log and loss history left out (they grow with every step; `get_run` has them).
_LISTED = ", ".join({"losses": "'[]'::jsonb AS losses", "log": "'' AS log"}.get(f.name, f.name)
                    for f in fields(TrainingRun))


def list_runs(conn: psycopg.Connection, limit: int = 50) -> list[TrainingRun]:
    """The newest runs, without their `log` and `losses` (empty here)."""
    rows = conn.execute(f"SELECT {_LISTED} FROM training_runs ORDER BY id DESC LIMIT %(n)s", {"n": limit})
    return [TrainingRun(**r) for r in rows]


def set_job(conn: psycopg.Connection, run_id: int, job_id: int) -> None:
    conn.execute("UPDATE training_runs SET job_id = %(j)s WHERE id = %(id)s", {"j": job_id, "id": run_id})


def attach_adapter(conn: psycopg.Connection, run_id: int, adapter_version: int) -> None:
    """The adapter version this run trains (registered when training starts)."""
    conn.execute("UPDATE training_runs SET adapter_version = %(a)s WHERE id = %(id)s",
                 {"a": adapter_version, "id": run_id})


def work_dir(settings: Settings, run_id: int) -> Path:
    """Where the worker keeps a run's data, checkpoints and (until it is registered) adapter."""
    return settings.adapter_root / "runs" / f"run-{run_id}"


def requeue(conn: psycopg.Connection, run_id: int) -> TrainingRun:
    """Queue a failed run again: it resumes from its last checkpoint. Refuses a run that is not
    failed, and (through the unique index) a second active run."""
    run = get_run(conn, run_id)
    if run is None:
        raise CannotResume(f"There is no retrain run {run_id}.")
    if run.status != "failed":
        raise CannotResume(f"Retrain run {run_id} is {run.status}; only a failed run can be resumed.")
    try:
        with conn.transaction():
            # Its old job (ended) goes with it: until the new one is set, orphan recovery must not
            # take a queued run whose job ended for one that never started.
            # Only while it is still failed: two resumes at once (two admins, a double click) queue it once.
            taken = conn.execute("UPDATE training_runs SET status = 'queued', error = NULL, finished_at = NULL,"
                                 " cancel_requested = false, job_id = NULL WHERE id = %(id)s AND status = 'failed'",
                                 {"id": run_id}).rowcount
    except psycopg.errors.UniqueViolation as e:
        raise RunAlreadyActive("Another retrain is already queued or running; wait for it or cancel it first.") from e
    if not taken:
        raise CannotResume(f"Retrain run {run_id} was resumed meanwhile; only a failed run can be resumed.")
    return get_run(conn, run_id)  # type: ignore[return-value]


def active_run(conn: psycopg.Connection) -> TrainingRun | None:
    """The run queued or running, if any (there is at most one)."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM training_runs WHERE status IN ('queued', 'running')").fetchone()
    return None if row is None else TrainingRun(**row)


def last_succeeded(conn: psycopg.Connection) -> TrainingRun | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM training_runs WHERE status = 'succeeded'"
                       " ORDER BY created_at DESC LIMIT 1").fetchone()
    return None if row is None else TrainingRun(**row)


def start_run(conn: psycopg.Connection, run_id: int) -> None:
    conn.execute("UPDATE training_runs SET status = 'running', started_at = coalesce(started_at, now()),"
                 " error = NULL WHERE id = %(id)s", {"id": run_id})


def report_progress(conn: psycopg.Connection, run_id: int, *, step: int, total: int,
                    train_loss: float | None, val_loss: float | None) -> None:
    point = {"step": step, "train_loss": train_loss, "val_loss": val_loss}
    conn.execute("UPDATE training_runs SET progress = %(p)s, losses = losses || %(pt)s WHERE id = %(id)s",
                 {"p": step / max(total, 1), "pt": Jsonb([point]), "id": run_id})


def append_log(conn: psycopg.Connection, run_id: int, line: str) -> None:
    """One line of the run's log, stamped with the time (UTC)."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%H:%M:%S")
    conn.execute("UPDATE training_runs SET log = log || %(l)s WHERE id = %(id)s",
                 {"l": f"{stamp} {line.rstrip()}\n", "id": run_id})


def finish_run(conn: psycopg.Connection, run_id: int, status: RunStatus, *, metrics: dict[str, Any] | None = None,
               adapter_version: int | None = None, error: str | None = None) -> None:
    conn.execute(
        "UPDATE training_runs SET status = %(s)s, finished_at = now(), metrics = coalesce(%(m)s, metrics),"
        " adapter_version = coalesce(%(a)s, adapter_version), error = %(e)s,"
        " progress = CASE WHEN %(s)s = 'succeeded' THEN 1 ELSE progress END WHERE id = %(id)s",
        {"s": status, "m": Jsonb(metrics) if metrics is not None else None, "a": adapter_version,
         "e": error, "id": run_id},
    )


def request_cancel(conn: psycopg.Connection, run_id: int) -> bool:
    """Ask a queued or running retrain to stop; the worker checks between steps."""
    cur = conn.execute("UPDATE training_runs SET cancel_requested = true"
                       " WHERE id = %(id)s AND status IN ('queued', 'running')", {"id": run_id})
    return bool(cur.rowcount)


def cancel_requested(conn: psycopg.Connection, run_id: int) -> bool:
    row = conn.execute("SELECT cancel_requested FROM training_runs WHERE id = %(id)s", {"id": run_id}).fetchone()
    return bool(row and row["cancel_requested"])


def get_schedule(conn: psycopg.Connection) -> Schedule:
    row = conn.execute("SELECT enabled, cron, min_new_examples, params, last_fired_at, updated_at"
                       " FROM training_schedule WHERE id = 1").fetchone()
    return Schedule(**row)  # type: ignore[arg-type]


class InvalidSchedule(ValueError):
    """A cron expression or minimum that cannot be used; the message says which."""


def set_schedule(conn: psycopg.Connection, *, enabled: bool, cron: str, min_new_examples: int,
                 params: dict[str, Any] | None = None, seen: dt.datetime | None = None) -> None:
    """Save the schedule. With `seen` (its `updated_at` as the admin was shown it), refused
    (`db.ChangedSince`) if saved since: an old form must not switch a schedule back on."""
    from croniter import croniter  # procrastinate's dependency, also used by the worker

    if not croniter.is_valid(cron):
        raise InvalidSchedule(f"'{cron}' is not a valid cron expression (e.g. '0 3 * * 1' for Mondays 03:00).")
    if min_new_examples < 1:
        raise InvalidSchedule("The minimum number of new curated examples must be at least 1.")
    try:
        hyperparams.parse(params or {})
    except hyperparams.InvalidParams as e:
        raise InvalidSchedule(str(e)) from e
    saved = conn.execute(
        "UPDATE training_schedule SET enabled = %(e)s, cron = %(c)s, min_new_examples = %(m)s,"
        " params = coalesce(%(p)s, params), updated_at = now()"
        " WHERE id = 1 AND (%(seen)s::timestamptz IS NULL OR updated_at = %(seen)s)",
        {"e": enabled, "c": cron, "m": min_new_examples, "p": Jsonb(params) if params is not None else None,
         "seen": seen}).rowcount
    if not saved:
        raise db.ChangedSince("Someone saved the schedule after this page showed it, so nothing was saved: "
                              "the form shows their schedule now.")


def mark_schedule_fired(conn: psycopg.Connection, at: dt.datetime) -> None:
    conn.execute("UPDATE training_schedule SET last_fired_at = %(t)s WHERE id = 1", {"t": at})
