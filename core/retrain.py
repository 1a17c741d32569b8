"""Start and cancel retrains: what the dashboard, the CLI and the schedule call.

A retrain is a recorded run (`core.training`) plus a job in the queue (`core.queue`) that the
worker picks up; this module owns the transactions around both."""
from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import psycopg

from core import audit, curation, db, hyperparams, models, queue, training
from core.config import Settings, get_settings

logger = logging.getLogger(__name__)
SCHEDULE_ACTOR = "schedule"


def default_base_model(settings: Settings | None = None) -> str:
    """The base model a retrain starts from, the one the model server runs (`Settings.base_model`),
    converted from its wheel first when it is the default SmolLM2."""
    settings = settings or get_settings()
    if not settings.llm_model:
        from core.llm.local_model import ensure_default_model

        ensure_default_model(settings.data_dir)
    return settings.base_model


class NotAModel(ValueError):
    """A base model path with no model in it."""


def model_source(name: str) -> str:
    """A base model as every process reads it the same: a folder as its absolute path (the
    worker may run from another directory), a hub id as given. Raises `NotAModel` for a path
    with no model in it."""
    path = Path(name).expanduser()
    if not (path.exists() or name.startswith((".", "/", "~"))):
        return name
    if not (path / "config.json").is_file():
        raise NotAModel(f"{name} is not a model folder (no config.json)")
    return str(path.resolve())


def checked(params: dict[str, Any] | None, base_model: str | None = None) -> str:
    """What a retrain is asked for, checked before anything is recorded: parameters the trainer
    knows and can use (`hyperparams.InvalidParams`), and a base model it can load (`NotAModel`).
    Returns the base model as it is recorded (default: the served one)."""
    hyperparams.parse(params or {})
    return model_source(base_model or default_base_model())


def request_retrain(*, requested_by: str, dataset_version: int | None = None, base_model: str | None = None,
                    params: dict[str, Any] | None = None) -> training.TrainingRun:
    """Queue a retrain on a dataset version (default: the latest). Refuses parameters the trainer
    does not know or cannot use (`hyperparams.InvalidParams`), a base model folder with no model
    in it (`NotAModel`), an empty or unknown dataset, and a second retrain while one is queued or
    running (`training.RunAlreadyActive`)."""
    base_model = checked(params, base_model)
    with db.connection() as conn:
        version = dataset_version if dataset_version is not None else curation.latest_version(conn)
        if version is None:
            raise curation.CurationError("There is no dataset yet: accept answers in Curation and make a dataset.")
        info = curation.get_dataset(conn, version)
        if info is None:
            raise curation.CurationError(f"There is no dataset version {version}.")
        if info.items == 0:
            raise curation.CurationError(f"Dataset v{version} is empty: nothing to train on.")
        run = training.create_run(conn, base_model=base_model, dataset_version=version,
                                  params=params or {}, requested_by=requested_by)
        audit.record(conn, requested_by, "retrain.start", f"run:{run.id}", {"dataset_version": version, **(params or {})})
    return _enqueue(run.id)


def _enqueue(run_id: int) -> training.TrainingRun:
    """Put a recorded run on the worker's queue. If the queue cannot take it, the run is failed
    with the reason, so it never blocks later retrains as a run forever 'queued'."""
    try:
        job_id = queue.defer_retrain(run_id)
    except Exception as e:
        with db.connection() as conn:
            training.finish_run(conn, run_id, "failed", error=f"could not queue the job: {type(e).__name__}: {e}")
        raise
    with db.connection() as conn:
        training.set_job(conn, run_id, job_id)
        return training.get_run(conn, run_id)  # type: ignore[return-value]


def cancel_retrain(run_id: int, *, requested_by: str) -> training.TrainingRun | None:
    """Stop a queued or running retrain: a queued job is taken off the queue; a running one
    stops at its next step (its worker stops it if it has not within `jobs.CANCEL_GRACE_S`:
    stuck loading, in the gate), or at once when its worker is dead (`queue.orphaned_runs`), so that
    it does not block every new retrain until a worker starts. Returns the run as it is now,
    None when it is not active; raises `LookupError` for a run that does not exist."""
    with db.connection() as conn:
        asked = training.request_cancel(conn, run_id)
        run = training.get_run(conn, run_id)
        if run is None:
            raise LookupError(f"There is no retrain run {run_id}.")
        if not asked:
            return None
        audit.record(conn, requested_by, "retrain.cancel", f"run:{run_id}")
        if run.status == "queued" and run.job_id is None:   # its job was never queued (the request was cut short)
            end_run(conn, run, "cancelled", f"cancelled by {requested_by} before it started")
        elif run.status == "running" and queue.orphaned_runs(conn, run_id=run_id):
            end_run(conn, run, "cancelled", f"cancelled by {requested_by}; its worker had stopped")
            if run.job_id is not None:
                queue.fail_job(conn, run.job_id)
    if run.status == "queued" and run.job_id is not None:
        taken_off = queue.cancel_job(run.job_id)
        with db.connection() as conn:
            # Taken off the queue, or its job already ended without starting it: nothing will.
            if taken_off or queue.job_status(conn, run.job_id) not in queue.UNFINISHED_JOB:
                end_run(conn, run, "cancelled", f"cancelled by {requested_by} before it started")
    with db.connection() as conn:
        return training.get_run(conn, run_id)


def resume_retrain(run_id: int, *, requested_by: str) -> training.TrainingRun:
    """Queue a failed (crashed, killed) run again; the worker resumes it from its last
    checkpoint (or starts over, without one) on the same dataset version and parameters.
    Refuses a run whose adapter is already trained (ready, live or retired): training it again
    would take a live one off the air."""
    with db.connection() as conn:
        trained = _trained_adapter(conn, training.get_run(conn, run_id))
        if trained is not None:
            raise training.CannotResume(f"Retrain run {run_id} already trained {trained.name} ({trained.status}): "
                             f"there is nothing to resume. See it with `flywheel models ls`.")
        run = training.requeue(conn, run_id)
        audit.record(conn, requested_by, "retrain.resume", f"run:{run_id}")
    return _enqueue(run.id)


def scheduled_retrain(now: dt.datetime) -> training.TrainingRun | None:
    """What the worker's periodic task calls every minute: when the schedule is enabled and a
    cron time has passed since it last fired (or since it was saved), and at least
    `min_new_examples` accepted answers are new or edited since the dataset the last successful
    retrain learned from, freeze a new dataset version (or take the latest, when it already holds
    exactly these) and queue a retrain on it. The cron reads in `FLYWHEEL_TIMEZONE`. Each cron
    time is considered once; a skip (not enough new answers, a retrain under way, parameters
    the trainer cannot use) is audited with its reason. Returns the queued run, if any."""
    from croniter import croniter

    with db.connection() as conn:
        schedule = training.get_schedule(conn)
        if not schedule.enabled:
            return None
        settings = get_settings()
        zone = settings.zone
        due = croniter(schedule.cron, now.astimezone(zone)).get_prev(dt.datetime)
        # A cron time before the schedule was last saved (switched back on, a new cron) is past:
        # turning a weekly schedule on again on a Wednesday must not retrain there and then.
        since = max(schedule.last_fired_at or schedule.updated_at, schedule.updated_at).astimezone(zone)
        # On the clock's face: when clocks go back, 02:30 comes twice, and is one cron time.
        if due.replace(tzinfo=None) <= since.replace(tzinfo=None):
            return None
        training.mark_schedule_fired(conn, now)
        try:   # before any dataset is made: parameters saved by hand (or by a version that knew others),
            base_model = checked(schedule.params)   # a base model folder not mounted on this worker
        except (hyperparams.InvalidParams, NotAModel) as e:
            audit.record(conn, SCHEDULE_ACTOR, "retrain.skip", "training_schedule", {"reason": str(e)})
            return None
        if training.active_run(conn) is not None:
            audit.record(conn, SCHEDULE_ACTOR, "retrain.skip", "training_schedule",
                         {"reason": "a retrain is already queued or running"})
            return None
        # New: accepted answers the last successful retrain did not learn as they are now.
        last = training.last_succeeded(conn)
        new = curation.not_in_dataset(conn, last.dataset_version if last else None,
                                      include_restricted=settings.train_on_restricted)
        if new < schedule.min_new_examples:
            audit.record(conn, SCHEDULE_ACTOR, "retrain.skip", "training_schedule",
                         {"reason": "not enough new accepted answers", "new": new,
                          "min_new_examples": schedule.min_new_examples})
            return None
        try:
            version = curation.create_dataset(conn, created_by=SCHEDULE_ACTOR, note=f"scheduled ({schedule.cron})",
                                              include_restricted=settings.train_on_restricted).version
        except curation.DatasetUnchanged as e:  # an admin already froze exactly these answers
            version = e.version
    try:
        return request_retrain(requested_by=SCHEDULE_ACTOR, dataset_version=version, base_model=base_model,
                               params=schedule.params)
    except training.RunAlreadyActive as e:   # an admin started one meanwhile
        with db.connection() as conn:
            audit.record(conn, SCHEDULE_ACTOR, "retrain.skip", "training_schedule", {"reason": str(e)})
        logger.info("scheduled retrain skipped: %s", e)
        return None


def _trained_adapter(conn: psycopg.Connection, run: training.TrainingRun | None) -> models.Adapter | None:
    """The run's adapter when its training is over (ready, live, retired), else None."""
    adapter = models.get(conn, run.adapter_version) if run and run.adapter_version is not None else None
    return adapter if adapter is not None and adapter.status in ("ready", "live", "retired") else None


def fail_run(run_id: int, reason: str) -> None:
    """Mark a run failed with its reason, and the adapter it was training with it."""
    with db.connection() as conn:
        run = training.get_run(conn, run_id)
        if run is not None:
            end_run(conn, run, "failed", reason)


def end_run(conn: psycopg.Connection, run: training.TrainingRun, status: Literal["failed", "cancelled"],
            reason: str) -> None:
    """End a run with its reason (in its log too), and the adapter it was training with it (one
    already ready or live stays so), in the caller's transaction."""
    training.append_log(conn, run.id, f"{status}: {reason}")
    training.finish_run(conn, run.id, status, error=reason)
    adapter = models.get(conn, run.adapter_version) if run.adapter_version is not None else None
    if adapter is not None and adapter.status == "training":
        models.update(conn, adapter.version, status="failed",
                      error=reason if status == "failed" else "training was cancelled")


def recover_orphaned_runs(stalled_after_s: float = queue.STALLED_AFTER_S) -> list[int]:
    """End the runs no worker will carry on (see `queue.orphaned_runs`): they would show
    "running" or "queued" forever, and block every new retrain. Failed, with their checkpoints
    kept so that `resume_retrain` continues them; cancelled when a cancel was asked. Returns
    their ids."""
    ended: list[int] = []
    with db.connection() as conn:
        for orphan in queue.orphaned_runs(conn, stalled_after_s):
            if orphan["job_status"] == "doing":
                queue.fail_job(conn, orphan["job_id"])  # type: ignore[arg-type]
            run = training.get_run(conn, int(orphan["run_id"]))  # type: ignore[call-overload]
            assert run is not None
            trained = _trained_adapter(conn, run)
            if run.cancel_requested:   # asked while its worker was already gone
                end_run(conn, run, "cancelled", "cancelled; its worker had stopped")
            elif trained is not None:   # it stopped while promoting, or just before the run was closed
                end_run(conn, run, "failed", f"The worker stopped after {trained.name} was trained "
                                             f"({trained.status}); it is in Models with its gate result. "
                                             "There is nothing to resume.")
                # The copy it trained in, if the worker stopped before clearing it: the adapter is in its own folder.
                shutil.rmtree(training.work_dir(get_settings(), run.id) / "adapter", ignore_errors=True)
            elif run.status == "queued":
                end_run(conn, run, "failed", f"This retrain's job ended ({orphan['job_status'] or 'gone'}) before "
                                             f"the run started. Start it again with `flywheel train resume {run.id}`.")
            else:
                end_run(conn, run, "failed", f"The worker stopped while it ran this retrain (no heartbeat for "
                                             f"{stalled_after_s:.0f} s). Resume it from its last checkpoint with "
                                             f"`flywheel train resume {run.id}`.")
            logger.warning("retrain run %s was orphaned (%s, job %s); ended", run.id, run.status, orphan["job_status"])
            ended.append(run.id)
    return ended


def wait_for_run(run_id: int, *, timeout_s: float, poll_s: float = 1.0,
                 on_update: Callable[[training.TrainingRun], None] | None = None) -> training.TrainingRun:
    """Poll until the run has finished (succeeded, failed, cancelled) or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        with db.connection() as conn:
            run = training.get_run(conn, run_id)
        if run is None:
            raise LookupError(f"There is no retrain run {run_id}.")
        if on_update is not None:
            on_update(run)
        if run.status in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return run
        time.sleep(poll_s)
