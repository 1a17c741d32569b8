"""The worker's tasks: `retrain(run_id)` and the periodic schedule tick (procrastinate, on
`core.queue.app`; run them with `flywheel worker`).

A retrain: start the run -> build the dataset (refusing an empty one) -> register the adapter
version (status training) -> train and gate in a child process (`trainer.runner`) whose
progress, loss and log go to Postgres -> mark the adapter ready with its metrics (or failed,
with the reason) -> promote it when it passed the gate and `auto_promote` is set. The child
process keeps a crash (OOM kill, segfault) from taking the worker with it; its checkpoints let
`core.retrain.resume_retrain` continue a failed run. One retrain at a time: the worker runs one
job at a time and the database allows one queued or running run."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import procrastinate
import psycopg
from psycopg_pool import PoolTimeout

from core import db, hyperparams, logs, models, queue, serving, training
from core import retrain as retrains
from core.config import Settings, get_settings
from trainer import checkpoints, dataset, train
from trainer.runner import CANCELLED_EXIT

logger = logging.getLogger(__name__)
app = queue.app

AUTO_PROMOTE_ACTOR = "auto-promote"   # who the audit log says promoted an adapter that passed the gate
# How long the training process has to honour a cancel itself (at its next step) before the worker
# stops it: longer than a step of an 8B model, shorter than an admin's patience.
CANCEL_GRACE_S = 60.0


class _ChildFailed(RuntimeError):
    """The training process failed, was killed, or was stopped by a worker shutdown."""


@app.task(name=queue.RETRAIN_TASK, queue=queue.TRAINING_QUEUE, pass_context=True)
def retrain(context: procrastinate.JobContext, run_id: int) -> None:
    run_retrain(run_id, should_abort=context.should_abort)


@app.periodic(cron="* * * * *", periodic_id="retrain-schedule")
@app.task(name=queue.SCHEDULE_TASK, queue=queue.TRAINING_QUEUE, queueing_lock="retrain-schedule")
def tick(timestamp: int) -> None:
    """Every minute: fail runs orphaned by a dead worker, then fire the schedule if it is due."""
    retrains.recover_orphaned_runs()
    retrains.scheduled_retrain(dt.datetime.fromtimestamp(timestamp, tz=dt.UTC))


def run_retrain(run_id: int, *, should_abort: Callable[[], bool] = lambda: False,
                settings: Settings | None = None) -> None:
    """Carry out one recorded run (see the module docstring). Expected failures end the run
    with a clear reason; anything else is recorded too, then raised for the queue to see."""
    settings = settings or get_settings()
    with db.connection() as conn:
        run = training.get_run(conn, run_id)
        if run is None:
            raise LookupError(f"There is no retrain run {run_id}.")
        if run.status != "queued":
            logger.warning("retrain run %s is %s, not queued: nothing to do", run_id, run.status)
            return
        if run.cancel_requested:
            training.finish_run(conn, run_id, "cancelled", error="cancelled before it started")
            return
        training.start_run(conn, run_id)
        training.append_log(conn, run_id, f"started on {socket.gethostname()} (worker pid {os.getpid()})")
    try:
        _retrain(run, settings, should_abort)
    except (dataset.DatasetError, hyperparams.InvalidParams, _ChildFailed) as e:
        retrains.fail_run(run_id, str(e))
    except BaseException as e:
        logger.exception("retrain run %s crashed", run_id)
        retrains.fail_run(run_id, f"{type(e).__name__}: {e}")
        raise


def _retrain(run: training.TrainingRun, settings: Settings, should_abort: Callable[[], bool]) -> None:
    work = training.work_dir(settings, run.id)
    if run.adapter_version is None and work.exists():   # never trained: what is there is another database's run
        _log(run.id, f"cleared {work}, left by an earlier run {run.id} of another database")
        shutil.rmtree(work)
    # Checked when the run was requested; a run queued by an older version is checked again here.
    train_config, data_config, gate = hyperparams.parse(run.params)
    if not (work / "data" / "manifest.json").exists():  # a resumed run keeps the data it started with
        if run.dataset_version is None:
            raise dataset.DatasetError("This run names no dataset version.")
        with db.connection() as conn:
            built = dataset.build(conn, run.dataset_version, data_config,
                                  include_restricted=settings.train_on_restricted)
        dataset.save(built, work / "data")
    manifest = json.loads((work / "data" / "manifest.json").read_text())
    _log(run.id, f"dataset v{manifest['dataset_version']}: {manifest['domain_train']} domain + "
                 f"{manifest['general_train']} general training examples, {manifest['val']} held out "
                 f"({manifest['dropped_duplicates']} duplicates dropped"
                 + (f", {manifest['dropped_restricted']} restricted since the dataset was made"
                    if manifest.get("dropped_restricted") else "") + ")")
    adapter = _adapter_for(run, settings, train_config)
    with db.connection() as conn:
        live = models.live(conn)
    baseline = {"name": live.name, "path": live.path} if live is not None and serving.fits(live, run.base_model) else None
    spec = {"run_id": run.id, "base_model": run.base_model, "train": train_config.as_dict(),
            "gate": {"margin": settings.gate_margin, "questions": gate.gate_questions,
                     "max_new_tokens": gate.gate_max_new_tokens},
            "baseline": baseline, "supervisor_pid": os.getpid()}
    (work / "spec.json").write_text(json.dumps(spec, indent=2))
    (work / "result.json").unlink(missing_ok=True)
    processes = training_processes(settings)
    if processes > 1:
        _log(run.id, f"training in {processes} processes")
    code = _run_child(child_command(work, processes), work, run.id, should_abort)
    result = json.loads((work / "result.json").read_text()) if (work / "result.json").exists() else {}
    # torchrun reports any worker's non-zero exit as 1: the result file says what happened.
    if code == CANCELLED_EXIT or result.get("status") == "cancelled":
        shutil.rmtree(work / "checkpoints", ignore_errors=True)   # a cancelled run is not resumed
        with db.connection() as conn:   # read again: the adapter it trains is attached now
            retrains.end_run(conn, training.get_run(conn, run.id), "cancelled",  # type: ignore[arg-type]
                             result.get("error", "cancelled"))
        return
    if code != 0 or result.get("status") != "succeeded":
        raise _ChildFailed(_failure_reason(code, result, work))
    final = Path(adapter.path)
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(work / "adapter", final)
    metrics: dict[str, Any] = {"train": result["train"], "gate": result["gate"],
                               "dataset": _manifest_summary(manifest)}
    with db.connection() as conn:
        models.update(conn, adapter.version, status="ready", metrics=metrics, clear_error=True)
        training.append_log(conn, run.id, f"adapter {adapter.name} is ready in {final}")
    # Only now, the adapter on record as ready: a worker killed before this resumes from the copy
    # here (its checkpoints are gone) instead of training again. The run keeps its data, spec and log.
    shutil.rmtree(work / "adapter")
    with db.connection() as conn:
        if _cancelled_after_training(conn, run.id, adapter, metrics):   # asked while the gate ran
            return
    gated_against = baseline["name"] if baseline else None
    metrics["promoted"] = _auto_promote(run.id, adapter, bool(result["gate"].get("passed")), gated_against,
                                        settings)
    with db.connection() as conn:
        if metrics["promoted"] or not _cancelled_after_training(conn, run.id, adapter, metrics):
            training.finish_run(conn, run.id, "succeeded", metrics=metrics, adapter_version=adapter.version)


def _cancelled_after_training(conn: psycopg.Connection, run_id: int, adapter: models.Adapter,
                              metrics: dict[str, Any]) -> bool:
    """A cancel asked once the adapter was trained ends the run with the adapter ready, not promoted."""
    if not training.cancel_requested(conn, run_id):
        return False
    training.finish_run(conn, run_id, "cancelled", metrics=metrics, adapter_version=adapter.version,
                        error=f"cancelled after training: {adapter.name} is ready but was not promoted")
    return True


def _auto_promote(run_id: int, adapter: models.Adapter, passed: bool, gated_against: str | None,
                  settings: Settings) -> bool:
    """Promote what passed the gate against what is live now (`gated_against`: the live
    adapter's name when the gate ran, None for the base model)."""
    if not settings.auto_promote:
        return False
    if not passed:
        _log(run_id, f"{adapter.name} is not promoted: it did not pass the gate")
        return False
    with db.connection() as conn:
        live = models.live(conn)
        if training.cancel_requested(conn, run_id):   # asked during the gate or since
            return False
    live_now = live.name if live is not None and serving.fits(live, adapter.base_model) else None
    if live_now != gated_against:   # promoted or rolled back by hand while this run trained
        _log(run_id, f"{adapter.name} is not promoted: the gate compared it with {gated_against or 'the base model'}, "
                     f"but {live_now or 'the base model'} went live meanwhile; compare them and promote by hand")
        return False
    try:
        serving.promote(adapter.version, settings, actor=AUTO_PROMOTE_ACTOR)
    except Exception as e:  # whatever went wrong, the adapter itself is ready: never fail it for this
        logger.exception("auto-promotion of %s failed", adapter.name)
        _log(run_id, f"auto-promotion of {adapter.name} failed, the live adapter is unchanged: {e}")
        return False
    _log(run_id, f"promoted {adapter.name}: it passed the gate and auto-promote is on")
    return True


def _adapter_for(run: training.TrainingRun, settings: Settings, config: hyperparams.TrainConfig) -> models.Adapter:
    """The adapter version this run trains: registered now, or the one a resumed run had."""
    with db.connection() as conn:
        if run.adapter_version is not None:
            models.update(conn, run.adapter_version, status="training", clear_error=True)
            return models.get(conn, run.adapter_version)  # type: ignore[return-value]
        adapter = models.register(conn, base_model=run.base_model, path="", dataset_version=run.dataset_version,
                                  hyperparams=config.as_dict())
        path = str(settings.adapter_root / adapter.name)
        models.update(conn, adapter.version, path=path)
        training.attach_adapter(conn, run.id, adapter.version)
        training.append_log(conn, run.id, f"training adapter {adapter.name}")
        return models.get(conn, adapter.version)  # type: ignore[return-value]


def training_processes(settings: Settings) -> int:
    """`FLYWHEEL_TRAIN_PROCESSES` (at most one per GPU where there are GPUs), or one process
    per GPU (one without a GPU)."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if settings.train_processes > 0:
        if gpus and settings.train_processes > gpus:
            logger.warning("FLYWHEEL_TRAIN_PROCESSES=%d but there are %d GPUs: training in %d processes",
                           settings.train_processes, gpus, gpus)
            return gpus
        return settings.train_processes
    return max(1, gpus)


def child_command(work: Path, processes: int = 1) -> list[str]:
    """`python -m trainer.runner WORK`; several processes are started by `torchrun`, and
    `accelerate` in each finds its rank and the others from what torchrun sets."""
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
                "-m", "trainer.runner", str(work)]
    return [sys.executable, "-m", "trainer.runner", str(work)]


def _run_child(command: list[str], work: Path, run_id: int, should_abort: Callable[[], bool],
               cancel_grace_s: float | None = None) -> int:
    """Run the training process and wait for it; a worker shutdown stops it (its checkpoints
    stay for a resume). A cancel is the process's to honour between steps; one it has not
    honoured within `cancel_grace_s` (loading a model, a hung collective) is enforced here, and
    the exit reads as cancelled. Not in the gate (training is done then): a cancel asked there
    leaves the adapter ready, not promoted."""
    env = {**os.environ, "DATABASE_URL": db.database_url(), "PYTHONUNBUFFERED": "1"}
    grace = CANCEL_GRACE_S if cancel_grace_s is None else cancel_grace_s
    cancel_seen: float | None = None
    with (work / "train.log").open("ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=str(Path(__file__).resolve().parents[1]), start_new_session=True)
        try:
            while True:
                try:
                    return proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass
                if cancel_seen is None and _cancel_requested(run_id):
                    cancel_seen = time.monotonic()
                if cancel_seen is not None and time.monotonic() - cancel_seen > grace \
                        and train.finished_training(work) is None:
                    _log(run_id, f"the training process did not stop within {grace:.0f} s of the "
                                 "cancel: stopping it")
                    _terminate(proc)
                    (work / "result.json").write_text(json.dumps({
                        "status": "cancelled", "error": "cancelled; the training process was stopped"}))
                    return CANCELLED_EXIT
                if should_abort():
                    _log(run_id, "the worker is shutting down: stopping the training process")
                    _terminate(proc)
                    raise _ChildFailed("The worker shut down during training. Resume the run from its last "
                                       f"checkpoint with `flywheel train resume {run_id}`.")
        except BaseException:
            if proc.poll() is None:
                _terminate(proc)
            raise


def _cancel_requested(run_id: int) -> bool:
    """False while the database cannot be asked (a restart): training goes on meanwhile."""
    try:
        with db.connection() as conn:
            return training.cancel_requested(conn, run_id)
    except (psycopg.Error, PoolTimeout) as e:
        logger.warning("could not check run %s for a cancel: %s", run_id, e)
        return False


def _terminate(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# How torchrun reports a process of its group that a signal killed (torchrun itself exits 1).
_TORCHRUN_SIGNALLED = re.compile(r"exitcode\s*:\s*-(\d+)")


def _failure_reason(code: int, result: dict[str, Any], work: Path) -> str:
    if result.get("error"):
        return str(result["error"])
    log = logs.tail(work / "train.log", 40)
    if code > 0 and (signalled := _TORCHRUN_SIGNALLED.findall(log)):
        code = -int(signalled[-1])  # the root cause, which torchrun lists last
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        why = f"The training process was killed by {name}{hint}"
    else:
        why = f"The training process exited with code {code}"
    tail = "\n".join(log.splitlines()[-8:])
    if checkpoints.latest(work / "checkpoints") is not None:
        kept = "\nIts checkpoints are kept: resume the run to continue."
    elif train.finished_training(work) is not None:
        kept = "\nTraining had finished: a resume goes straight to the gate."
    else:
        kept = "\nNo checkpoint was left (none was due yet): a resume trains from the start."
    return why + (f"; last output:\n{tail}" if tail else "") + kept


def _manifest_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k != "val_keys"}


def _log(run_id: int, line: str) -> None:
    logger.info("run %s: %s", run_id, line)
    with db.connection() as conn:
        training.append_log(conn, run_id, line)
