"""When a retrain goes wrong: a killed training resumes from its checkpoint, a dead worker's run
is failed, nothing to train on is a clear error, and a cancel stops between steps."""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
from pathlib import Path

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from core import audit, curation, db, hyperparams, models, queue, retrain, serving, training
from core.cli import train_cmds
from core.config import get_settings
from retrain_support import CURATED, TINY_PARAMS, answer_and_curate, finished_run
from support.polling import wait_until
from trainer import jobs, train

LONG = {**TINY_PARAMS, "epochs": 10, "val_every": 5}  # 30 steps: long enough to be stopped mid-way


def _work(run_id: int) -> Path:
    return training.work_dir(get_settings(), run_id)


def _training_pid(run_id: int) -> int:
    def pid() -> int | None:
        with db.connection() as conn:
            found = re.search(r"training process (\d+) started", training.get_run(conn, run_id).log)  # type: ignore[union-attr]
        return int(found.group(1)) if found else None

    return wait_until(pid, timeout_s=120, what="the training process to start")  # type: ignore[return-value]


def _checkpointed(run_id: int) -> None:
    wait_until(lambda: list((_work(run_id) / "checkpoints").glob("step-*/state.json")), timeout_s=120,
               what="a first checkpoint")


def test_killed_training_is_marked_failed_and_resumes_from_its_checkpoint(
        curated_dataset: int, start_worker: object) -> None:
    run = retrain.request_retrain(requested_by="admin", params=LONG)
    start_worker()  # type: ignore[operator]
    pid = _training_pid(run.id)
    _checkpointed(run.id)
    os.kill(pid, signal.SIGKILL)

    failed = finished_run(run.id)
    assert failed.status == "failed"
    assert "killed by SIGKILL" in (failed.error or "") and "checkpoints are kept" in (failed.error or "")
    with db.connection() as conn:
        adapter = models.get(conn, failed.adapter_version)  # type: ignore[arg-type]
    assert adapter is not None and adapter.status == "failed" and "SIGKILL" in (adapter.error or "")
    with pytest.raises(models.PromotionRefused, match="failed"):
        serving.promote(adapter.version, actor="admin")

    retrain.resume_retrain(run.id, requested_by="admin")
    done = finished_run(run.id)
    assert done.status == "succeeded", f"{done.error}\n{done.log}"
    resumed_from = done.metrics["train"]["resumed_from"]
    assert resumed_from is not None and resumed_from >= 2 and f"resumed from the checkpoint at step {resumed_from}" in done.log
    steps = done.metrics["train"]["steps"]
    assert f"trained {steps - resumed_from} steps ({steps} in all)" in done.log
    assert done.adapter_version == adapter.version  # the same version, now trained
    with db.connection() as conn:
        assert models.get(conn, adapter.version).status == "ready"  # type: ignore[union-attr]
    assert not (_work(run.id) / "checkpoints").exists()


def test_a_new_run_does_not_take_up_a_run_folder_another_database_left_and_keeps_no_second_adapter(
        curated_dataset: int) -> None:
    run = retrain.request_retrain(requested_by="admin", params=TINY_PARAMS)
    left = _work(run.id)   # run 1 of the database this one replaced (a reset, an import), same adapters folder
    (left / "data").mkdir(parents=True)
    (left / "data" / "manifest.json").write_text(json.dumps({"dataset_version": 7}))
    (left / "checkpoints" / "step-000002").mkdir(parents=True)
    (left / "checkpoints" / "step-000002" / "state.json").write_text("{}")
    jobs.run_retrain(run.id)
    done = finished_run(run.id)
    assert done.status == "succeeded", done.error
    assert f"cleared {left}" in done.log and "resumed from" not in done.log
    assert f"dataset v{curated_dataset}:" in done.log
    with db.connection() as conn:
        adapter = models.get(conn, done.adapter_version)  # type: ignore[arg-type]
    assert (Path(adapter.path) / "adapter_config.json").exists()  # type: ignore[union-attr]
    assert not (left / "adapter").exists() and (left / "train.log").exists()


def test_a_retrain_goes_on_when_postgres_drops_every_connection_mid_training(
        curated_dataset: int, database_url: str) -> None:
    run = retrain.request_retrain(requested_by="admin", params={**LONG, "epochs": 30})   # 90 steps
    worker = threading.Thread(target=jobs.run_retrain, args=(run.id,))  # the task's body, in this process
    worker.start()
    _training_pid(run.id)
    wait_until(lambda: _progress(run.id) > 0, timeout_s=120, what="training progress")
    with psycopg.connect(database_url, autocommit=True) as admin:   # a restart, a failover: every session ends
        dropped = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                " WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
    assert dropped[0] >= 1   # type: ignore[index]
    assert _progress(run.id) < 1, "training ended before the connections were dropped"
    worker.join(timeout=300)
    done = finished_run(run.id)
    assert done.status == "succeeded", done.error
    assert done.progress == 1


def test_a_run_killed_in_its_gate_resumes_at_the_gate_without_training_again(curated_dataset: int) -> None:
    run = retrain.request_retrain(requested_by="admin", params={**TINY_PARAMS, "gate_max_new_tokens": 128})
    finished = _work(run.id) / train.FINISHED

    def kill_once_trained() -> None:   # the gate loads the model and generates: about 2 s, on this machine
        pid = _training_pid(run.id)    # found while it trains: nothing but polling between the two
        wait_until(finished.exists, timeout_s=120, what="the training to finish")
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_once_trained)
    killer.start()
    jobs.run_retrain(run.id)   # the worker's task, in this process
    killer.join(30)
    killed = finished_run(run.id)
    assert killed.status == "failed" and "Training had finished: a resume goes straight to the gate." in (
        killed.error or "")

    retrain.resume_retrain(run.id, requested_by="admin")
    jobs.run_retrain(run.id)
    resumed = finished_run(run.id)
    assert resumed.status == "succeeded" and resumed.metrics["gate"]  # type: ignore[index]
    assert "training had finished (" in resumed.log
    assert len(re.findall(r"^[\d:]+ trained \d+ steps", resumed.log, re.MULTILINE)) == 1   # trained once


def test_run_of_a_dead_worker_is_failed_and_its_training_stops(curated_dataset: int, start_worker: object) -> None:
    run = retrain.request_retrain(requested_by="admin", params=LONG)
    worker = start_worker()  # type: ignore[operator]
    pid = _training_pid(run.id)
    _checkpointed(run.id)
    worker.kill()  # type: ignore[attr-defined]

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, timeout_s=60, what="the training process to notice its worker is gone")
    with db.connection() as conn:
        assert training.get_run(conn, run.id).status == "running"  # type: ignore[union-attr]
    assert retrain.recover_orphaned_runs(stalled_after_s=0) == [run.id]
    with db.connection() as conn:
        failed = training.get_run(conn, run.id)
        job = conn.execute("SELECT status::text AS s FROM procrastinate_jobs WHERE id = %(j)s",
                           {"j": failed.job_id}).fetchone()  # type: ignore[union-attr]
    assert failed.status == "failed" and "worker stopped" in failed.error  # type: ignore[union-attr,operator]
    assert job["s"] == "failed"  # type: ignore[index]
    assert retrain.recover_orphaned_runs(stalled_after_s=0) == []


@pytest.mark.parametrize(("adapter_status", "after"), [("training", "failed"), ("ready", "ready"), ("live", "live")])
def test_a_failed_run_fails_only_an_adapter_still_training(curated_dataset: int, adapter_status: str,
                                                           after: str) -> None:
    """A worker that dies while promoting (TGI's health wait, the drain) must not fail the adapter
    it already made ready, or the one now serving."""
    with db.connection() as conn:
        run = training.create_run(conn, base_model="tiny", dataset_version=curated_dataset, params={},
                                  requested_by="admin")
        adapter = models.register(conn, base_model="tiny", path="/tmp/a", dataset_version=curated_dataset,
                                  hyperparams={})
        models.update(conn, adapter.version, status=adapter_status)  # type: ignore[arg-type]
        training.attach_adapter(conn, run.id, adapter.version)
    retrain.fail_run(run.id, "worker stopped")
    with db.connection() as conn:
        assert models.get(conn, adapter.version).status == after  # type: ignore[union-attr]
        assert training.get_run(conn, run.id).status == "failed"  # type: ignore[union-attr]


def test_all_rejected_answers_are_a_clear_error_and_no_run(tiny_base: Path) -> None:
    answer_and_curate([], rejected=CURATED[:2])
    with db.connection() as conn, pytest.raises(curation.CurationError, match="No accepted answers"):
        curation.create_dataset(conn, created_by="admin")
    with pytest.raises(curation.CurationError, match="no dataset yet"):
        retrain.request_retrain(requested_by="admin")
    with db.connection() as conn:
        assert training.list_runs(conn) == [] and models.list_adapters(conn) == []


def test_empty_dataset_fails_the_run_with_a_clear_error_and_no_adapter(tiny_base: Path) -> None:
    with db.connection() as conn:
        conn.execute("INSERT INTO datasets (version, created_by) VALUES (1, 'admin')")
    with pytest.raises(curation.CurationError, match="empty"):
        retrain.request_retrain(requested_by="admin", dataset_version=1)
    # A run recorded some other way still refuses in the worker, before anything is registered.
    with db.connection() as conn:
        run = training.create_run(conn, base_model=str(tiny_base), dataset_version=1, params={}, requested_by="x")
    jobs.run_retrain(run.id)
    with db.connection() as conn:
        failed = training.get_run(conn, run.id)
        assert models.list_adapters(conn) == []
    assert failed.status == "failed" and "no accepted answers to train on" in (failed.error or "")  # type: ignore[union-attr]


def test_a_gpu_out_of_memory_says_what_a_new_run_should_change_from_what_this_one_used() -> None:
    import torch

    from trainer import runner

    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                                 "79.19 GiB of which 1.20 GiB is free.\nOf the allocated memory 70.1 GiB is allocated")
    said = runner.failure_message(oom, hyperparams.TrainConfig(max_seq_len=2048, packs_per_forward=2))
    assert said.startswith("The GPU ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB.")
    assert "A resume keeps this run's parameters" in said and "is allocated" not in said
    suggested = dict(pair.split("=", 1) for pair in re.findall(r"--param (\w+=\w+)", said))
    assert suggested == {"gradient_checkpointing": "true", "packs_per_forward": "1", "max_seq_len": "1024"}
    for key, value in suggested.items():   # each suggestion, as `flywheel train` reads it, is a valid parameter
        hyperparams.parse({key: json.loads(value)})

    # Packs per forward pass left to "auto" may have taken several: one is suggested.
    auto = runner.failure_message(oom, hyperparams.TrainConfig(max_seq_len=512, gradient_checkpointing=True))
    assert re.findall(r"--param (\w+=\w+)", auto) == ["packs_per_forward=1"]

    lean = hyperparams.TrainConfig(max_seq_len=512, gradient_checkpointing=True, packs_per_forward=1)  # nothing to cut
    assert "use a GPU with more free memory" in runner.failure_message(oom, lean)
    assert "--param" not in runner.failure_message(oom, lean)
    assert runner.failure_message(ValueError("bad"), lean) == "ValueError: bad"


def test_unknown_parameter_is_refused_before_anything_is_queued(curated_dataset: int) -> None:
    app = typer.Typer()
    train_cmds.register(app)
    refused = CliRunner().invoke(app, ["train", "--param", "epoch=2", "--as", "admin"])
    assert refused.exit_code == 2
    assert "Unknown retrain parameter(s) epoch; known: " in refused.output and "epochs" in refused.output
    with db.connection() as conn:
        assert training.list_runs(conn) == []
        assert [e for e in audit.recent(conn) if e.action == "retrain.start"] == []


def test_out_of_range_parameters_are_refused_naming_each_one(curated_dataset: int) -> None:
    with pytest.raises(hyperparams.InvalidParams) as refused:
        retrain.request_retrain(requested_by="admin",
                                params={"epochs": 0, "lr": -1, "general_ratio": 1, "gate_questions": "many"})
    for problem in ("epochs must be a whole number of at least 1", "lr must be a positive number",
                    "general_ratio must be at least 0 and below 1", "gate_questions must be a whole number"):
        assert problem in str(refused.value)
    with db.connection() as conn:
        assert training.list_runs(conn) == []


def test_a_run_recorded_with_bad_parameters_fails_in_the_worker_without_an_adapter(
        curated_dataset: int, tiny_base: Path) -> None:
    # Recorded by an older version, or by hand: the worker checks again before building anything.
    with db.connection() as conn:
        run = training.create_run(conn, base_model=str(tiny_base), dataset_version=curated_dataset,
                                  params={"epochs": 2, "gate_max_new_tokens": 0}, requested_by="admin")
    jobs.run_retrain(run.id)
    with db.connection() as conn:
        failed = training.get_run(conn, run.id)
        assert models.list_adapters(conn) == []
    assert failed.status == "failed"  # type: ignore[union-attr]
    assert "gate_max_new_tokens must be a whole number of at least 1" in (failed.error or "")  # type: ignore[union-attr]


def test_a_cancel_asked_while_the_gate_runs_leaves_the_adapter_ready_and_not_promoted(
        curated_dataset: int, monkeypatch: pytest.MonkeyPatch) -> None:
    run = retrain.request_retrain(requested_by="admin", params=TINY_PARAMS)
    train_and_gate = jobs._run_child

    def admin_cancels_after_the_last_check(*args: object, **kwargs: object) -> int:
        code = train_and_gate(*args, **kwargs)  # type: ignore[arg-type]
        assert retrain.cancel_retrain(run.id, requested_by="admin")
        return code

    monkeypatch.setattr(jobs, "_run_child", admin_cancels_after_the_last_check)
    jobs.run_retrain(run.id, settings=get_settings().model_copy(update={"auto_promote": True}))
    with db.connection() as conn:
        cancelled = training.get_run(conn, run.id)
        adapter = models.get(conn, cancelled.adapter_version)  # type: ignore[union-attr, arg-type]
        assert models.live(conn) is None
    assert cancelled.status == "cancelled" and "is ready but was not promoted" in (cancelled.error or "")  # type: ignore[union-attr]
    assert adapter is not None and adapter.status == "ready" and adapter.metrics["gate"]


def test_a_cancel_asked_once_the_adapter_is_ready_stops_its_auto_promotion(
        curated_dataset: int, monkeypatch: pytest.MonkeyPatch) -> None:
    run = retrain.request_retrain(requested_by="admin", params=TINY_PARAMS)
    check_for_cancel = jobs._cancelled_after_training

    def admin_cancels_just_after_the_check(*args: object) -> bool:
        cancelled = check_for_cancel(*args)  # type: ignore[arg-type]
        if not cancelled:   # the adapter was just recorded ready; promotion comes next
            threading.Thread(target=retrain.cancel_retrain, args=(run.id,), kwargs={"requested_by": "admin"}).start()
            wait_until(lambda: _cancel_requested(run.id), what="the cancel")
        return cancelled

    promotions: list[int] = []   # no model server runs here: what matters is that none is asked for
    monkeypatch.setattr(jobs, "_cancelled_after_training", admin_cancels_just_after_the_check)
    monkeypatch.setattr(serving, "promote", lambda version, *args, **kwargs: promotions.append(version))
    # A generous margin: the gate passes, so only the cancel can keep the adapter from promotion.
    jobs.run_retrain(run.id, settings=get_settings().model_copy(update={"auto_promote": True, "gate_margin": 100.0}))
    assert promotions == []
    with db.connection() as conn:
        cancelled = training.get_run(conn, run.id)
        assert models.live(conn) is None
        assert models.get(conn, cancelled.adapter_version).status == "ready"  # type: ignore[union-attr, arg-type]
    assert cancelled.metrics["gate"]["passed"]  # type: ignore[union-attr]
    assert cancelled.status == "cancelled" and "is ready but was not promoted" in (cancelled.error or "")  # type: ignore[union-attr]


def _cancel_requested(run_id: int) -> bool:
    with db.connection() as conn:
        return training.cancel_requested(conn, run_id)


def test_an_adapter_gated_against_the_base_model_is_not_auto_promoted_over_one_promoted_meanwhile(
        curated_dataset: int, tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = retrain.request_retrain(requested_by="admin", params=TINY_PARAMS)
    train_and_gate = jobs._run_child
    (tmp_path / "by-hand").mkdir()

    def admin_promotes_another_adapter_meanwhile(*args: object, **kwargs: object) -> int:
        code = train_and_gate(*args, **kwargs)  # type: ignore[arg-type]
        with db.connection() as conn:
            other = models.register(conn, base_model=str(tiny_base), path=str(tmp_path / "by-hand"),
                                    dataset_version=curated_dataset, hyperparams={}, status="ready")
            models.mark_live(conn, other.version, actor="admin")
        return code

    monkeypatch.setattr(jobs, "_run_child", admin_promotes_another_adapter_meanwhile)
    jobs.run_retrain(run.id, settings=get_settings().model_copy(update={"auto_promote": True, "gate_margin": 100.0}))
    with db.connection() as conn:
        finished = training.get_run(conn, run.id)
        live = models.live(conn)
    assert finished.status == "succeeded" and finished.metrics["promoted"] is False  # type: ignore[union-attr]
    assert finished.metrics["gate"]["passed"] is True  # type: ignore[union-attr]
    assert live is not None and live.version != finished.adapter_version  # type: ignore[union-attr]
    assert (f"is not promoted: the gate compared it with the base model, but {live.name} went live meanwhile"
            in finished.log)  # type: ignore[union-attr]


def test_cancel_stops_a_running_retrain_between_steps(curated_dataset: int) -> None:
    # 300 steps, so that on a fast machine it is still training when the cancel lands.
    run = retrain.request_retrain(requested_by="admin", params={**LONG, "epochs": 100})
    worker = threading.Thread(target=jobs.run_retrain, args=(run.id,))  # the task's body, in this process
    worker.start()
    _training_pid(run.id)
    wait_until(lambda: _progress(run.id) > 0, timeout_s=120, what="training progress")
    _checkpointed(run.id)
    assert retrain.cancel_retrain(run.id, requested_by="admin")
    worker.join(timeout=120)
    assert not worker.is_alive(), "the retrain did not stop within 120 s of the cancel"
    cancelled = finished_run(run.id)
    assert cancelled.status == "cancelled" and "cancelled at step" in (cancelled.error or "")
    assert 0 < cancelled.progress < 1
    assert not (_work(run.id) / "checkpoints").exists()   # a cancelled run is not resumed: no disk kept for it
    with db.connection() as conn:
        assert models.get(conn, cancelled.adapter_version).status == "failed"  # type: ignore[arg-type,union-attr]


def _progress(run_id: int) -> float:
    with db.connection() as conn:
        return training.get_run(conn, run_id).progress  # type: ignore[union-attr]


def test_a_run_whose_worker_died_after_its_adapter_was_trained_is_not_trained_again(
        curated_dataset: int, tiny_base: Path, tmp_path: Path) -> None:
    # The worker was killed while it auto-promoted (a slow model server); then an admin promoted the adapter.
    run = retrain.request_retrain(requested_by="admin")
    with db.connection() as conn:
        training.start_run(conn, run.id)
        adapter = models.register(conn, base_model=str(tiny_base), path=str(tmp_path), dataset_version=curated_dataset,
                                  hyperparams={}, status="ready")
        training.attach_adapter(conn, run.id, adapter.version)
        models.mark_live(conn, adapter.version, actor="admin")
    (_work(run.id) / "adapter").mkdir(parents=True)   # the copy it trained in, not cleared yet
    (_work(run.id) / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    assert retrain.recover_orphaned_runs(stalled_after_s=0) == [run.id]
    assert not (_work(run.id) / "adapter").exists()
    with db.connection() as conn:
        failed = training.get_run(conn, run.id)
    assert f"The worker stopped after {adapter.name} was trained (live)" in (failed.error or "")  # type: ignore[union-attr]
    assert "flywheel train resume" not in (failed.error or "")  # type: ignore[union-attr]

    with pytest.raises(training.CannotResume, match=f"already trained {adapter.name} .live.: there is nothing to resume"):
        retrain.resume_retrain(run.id, requested_by="admin")
    with db.connection() as conn:
        assert models.live(conn).version == adapter.version  # type: ignore[union-attr]
        assert training.get_run(conn, run.id).status == "failed"  # type: ignore[union-attr]


def test_a_retrain_with_a_relative_data_folder_runs_from_any_directory(
        curated_dataset: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)   # `flywheel worker` started outside the repository
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", "data")   # relative, as the default `.flywheel` is
    get_settings.cache_clear()
    run = retrain.request_retrain(requested_by="admin", params=TINY_PARAMS)
    jobs.run_retrain(run.id)
    with db.connection() as conn:
        done = training.get_run(conn, run.id)
        adapter = models.get(conn, done.adapter_version)  # type: ignore[union-attr, arg-type]
    assert done.status == "succeeded", f"{done.error}\n{done.log}"  # type: ignore[union-attr]
    assert Path(adapter.path) == elsewhere / "data" / "adapters" / adapter.name  # type: ignore[union-attr]


def test_a_base_model_folder_is_one_model_however_it_is_spelled_and_one_without_a_model_is_refused(
        curated_dataset: int, tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with db.connection() as conn:   # live, trained on the base model as the path was typed then
        live = models.register(conn, base_model=f"{tiny_base}/", path=str(tmp_path), dataset_version=curated_dataset,
                               hyperparams={}, status="ready")
        models.mark_live(conn, live.version, actor="admin")
    monkeypatch.chdir(tiny_base.parent)
    run = retrain.request_retrain(requested_by="admin", base_model=f"./{tiny_base.name}")
    assert run.base_model == str(tiny_base.resolve())

    specs: list[dict] = []

    def read_spec_then_fail(command: list[str], work: Path, *args: object, **kwargs: object) -> int:
        specs.append(json.loads((work / "spec.json").read_text()))
        return 1

    monkeypatch.setattr(jobs, "_run_child", read_spec_then_fail)
    jobs.run_retrain(run.id)
    assert specs[0]["baseline"]["name"] == live.name   # the gate compares with the live adapter, not the base

    with pytest.raises(ValueError, match="is not a model folder .no config.json."):
        retrain.request_retrain(requested_by="admin", base_model=str(tmp_path / "nothing-here"))


def test_cancelling_a_run_whose_worker_died_ends_it_at_once_and_frees_retraining(
        curated_dataset: int, tiny_base: Path) -> None:
    stuck = retrain.request_retrain(requested_by="admin")
    with db.connection() as conn:   # running, as a worker killed mid-training left it, and no worker since
        training.start_run(conn, stuck.id)
        adapter = models.register(conn, base_model=str(tiny_base), path="", dataset_version=curated_dataset,
                                  hyperparams={})
        training.attach_adapter(conn, stuck.id, adapter.version)
    cancelled = retrain.cancel_retrain(stuck.id, requested_by="admin")
    assert cancelled is not None and cancelled.status == "cancelled"
    assert cancelled.error == "cancelled by admin; its worker had stopped"
    with db.connection() as conn:
        assert models.get(conn, adapter.version).status == "failed"  # type: ignore[union-attr]
        # Cut short between recording the run and queueing its job: no job to take off.
        never_queued = training.create_run(conn, base_model=str(tiny_base), dataset_version=curated_dataset,
                                           params={}, requested_by="admin")
    assert retrain.cancel_retrain(never_queued.id, requested_by="admin").status == "cancelled"  # type: ignore[union-attr]
    assert retrain.request_retrain(requested_by="admin").status == "queued"   # nothing blocks a new one


def test_a_cancel_asked_before_the_worker_died_ends_the_run_cancelled_not_failed(curated_dataset: int) -> None:
    run = retrain.request_retrain(requested_by="admin")
    with db.connection() as conn:
        training.start_run(conn, run.id)
        training.request_cancel(conn, run.id)   # then the worker was killed before its next step
    assert retrain.recover_orphaned_runs(stalled_after_s=0) == [run.id]
    with db.connection() as conn:
        assert training.get_run(conn, run.id).status == "cancelled"  # type: ignore[union-attr]


def test_cancelling_a_run_that_does_not_exist_says_so(database_url: str) -> None:
    app = typer.Typer()
    train_cmds.register(app)
    refused = CliRunner().invoke(app, ["train", "cancel", "999"])
    assert refused.exit_code == 1 and "There is no retrain run 999." in refused.output


def test_resuming_a_run_that_is_not_there_to_resume_says_why(curated_dataset: int) -> None:
    app = typer.Typer()
    train_cmds.register(app)
    queued = retrain.request_retrain(requested_by="admin")
    for run_id, says in [(999, "There is no retrain run 999."),
                         (queued.id, f"Retrain run {queued.id} is queued; only a failed run can be resumed.")]:
        refused = CliRunner().invoke(app, ["train", "resume", str(run_id)])
        assert refused.exit_code == 2 and says in refused.output, refused.output


def test_a_training_process_killed_under_torchrun_is_reported_as_killed(database_url: str, tmp_path: Path) -> None:
    # torchrun exits 1 when one of its processes is killed; the reason still names the signal.
    script = tmp_path / "killed.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
    code = jobs._run_child(command, tmp_path, run_id=0, should_abort=lambda: False)
    assert code == 1
    reason = jobs._failure_reason(code, {}, tmp_path)
    assert reason.startswith("The training process was killed by SIGKILL (out of memory?)")
    assert "No checkpoint was left" in reason  # none was written here: a resume starts over


def test_a_cancel_the_training_process_does_not_honour_is_enforced_by_the_worker(
        database_url: str, tmp_path: Path) -> None:
    """Stuck loading a model, in the gate or in a hung collective, the process never reaches the
    step where it would look at the cancel: the worker stops it after a grace period."""
    with db.connection() as conn:
        run = training.create_run(conn, base_model="tiny", dataset_version=None, params={}, requested_by="admin")
        training.start_run(conn, run.id)
    pid_file = tmp_path / "pid"
    command = [sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                                     "time.sleep(600)"]
    stopper = threading.Timer(2.0, lambda: retrain.cancel_retrain(run.id, requested_by="admin"))
    stopper.start()
    code = jobs._run_child(command, tmp_path, run.id, should_abort=lambda: False, cancel_grace_s=1.0)
    assert code == jobs.CANCELLED_EXIT
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
    with db.connection() as conn:
        assert "did not stop within 1 s of the cancel: stopping it" in training.get_run(conn, run.id).log  # type: ignore[union-attr]


def test_a_cancel_asked_in_the_gate_lets_the_gate_finish(database_url: str, tmp_path: Path) -> None:
    """Training is done then: the adapter is worth keeping ready (not promoted), so the worker
    does not stop a gate that takes minutes on a CPU."""
    with db.connection() as conn:
        run = training.create_run(conn, base_model="tiny", dataset_version=None, params={}, requested_by="admin")
        training.start_run(conn, run.id)
        training.request_cancel(conn, run.id)
    trained = f"import json, os, time; os.makedirs({str(tmp_path / 'adapter')!r}); " \
              f"open({str(tmp_path / train.FINISHED)!r}, 'w').write(json.dumps(dict(adapter_dir='a', steps=1, " \
              "train_loss=1.0, val_loss=None, tokens_per_s=1.0, peak_mem_gb=None, resumed_from=None, " \
              "stopped_early=False))); time.sleep(3)"
    code = jobs._run_child([sys.executable, "-c", trained], tmp_path, run.id, should_abort=lambda: False,
                           cancel_grace_s=0.5)
    assert code == 0 and not (tmp_path / "result.json").exists()


def test_a_queued_run_whose_job_ended_before_it_started_does_not_block_retraining(curated_dataset: int) -> None:
    """The worker's task failed before it started the run (a database error), or the job was
    lost: the run would stay queued, refusing every new retrain, and a cancel changed nothing."""
    def job_ended(run: training.TrainingRun) -> None:
        with db.connection() as conn:
            conn.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %(j)s", {"j": run.job_id})

    first = retrain.request_retrain(requested_by="admin")
    job_ended(first)
    assert retrain.cancel_retrain(first.id, requested_by="admin")
    second = retrain.request_retrain(requested_by="admin")  # not refused: the first is cancelled
    assert retrain.recover_orphaned_runs(stalled_after_s=0) == []  # its job still waits: left alone
    job_ended(second)
    assert retrain.recover_orphaned_runs(stalled_after_s=0) == [second.id]
    with db.connection() as conn:
        assert training.get_run(conn, first.id).status == "cancelled"  # type: ignore[union-attr]
        failed = training.get_run(conn, second.id)
    assert failed.status == "failed" and "ended (failed) before the run started" in failed.error  # type: ignore[union-attr,operator]
    assert retrain.request_retrain(requested_by="admin").status == "queued"


def test_a_retrain_asked_for_before_any_worker_ever_started_is_queued(database_url: str) -> None:
    answer_and_curate(CURATED[:2])   # a database no worker has touched: no queue tables yet
    with db.connection() as conn:
        version = curation.create_dataset(conn, created_by="admin").version
        assert conn.execute("SELECT to_regclass('procrastinate_jobs') AS t").fetchone()["t"] is None  # type: ignore[index]
    run = retrain.request_retrain(requested_by="admin", dataset_version=version, base_model="tiny")
    assert run.status == "queued" and run.job_id is not None


def test_a_failed_run_queued_again_is_not_taken_for_an_orphan_before_its_new_job_is_set(curated_dataset: int) -> None:
    with db.connection() as conn:
        run = training.create_run(conn, base_model="tiny", dataset_version=curated_dataset, params={},
                                  requested_by="admin")
    job = queue.defer_retrain(run.id)
    with db.connection() as conn:
        training.set_job(conn, run.id, job)
        conn.execute("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %(j)s", {"j": job})  # it ran
        training.finish_run(conn, run.id, "failed", error="The training process was killed by SIGKILL")
        training.requeue(conn, run.id)   # what resume_retrain does before it defers the new job
        assert queue.orphaned_runs(conn) == []   # the worker's minute tick must leave it alone


def test_two_resumes_of_one_failed_run_at_once_queue_it_once(curated_dataset: int, database_url: str) -> None:
    with db.connection() as conn:
        run = training.create_run(conn, base_model="tiny", dataset_version=curated_dataset, params={},
                                  requested_by="admin")
        training.finish_run(conn, run.id, "failed", error="The training process was killed by SIGKILL")
    second: list[BaseException | training.TrainingRun] = []

    def resume_meanwhile() -> None:   # another admin's click, waiting on the first one's row lock
        with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row) as other:
            try:
                second.append(training.requeue(other, run.id))
            except training.CannotResume as e:
                second.append(e)

    with db.connection() as conn:
        assert training.requeue(conn, run.id).status == "queued"   # not committed yet
        meanwhile = threading.Thread(target=resume_meanwhile)
        meanwhile.start()
        wait_until(lambda: _waits_on_a_lock(database_url), what="the second resume to wait for the first")
    meanwhile.join(timeout=30)
    [refused] = second
    assert isinstance(refused, training.CannotResume) and "resumed meanwhile" in str(refused)


def _waits_on_a_lock(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return bool(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                 " AND datname = current_database()").fetchone()[0])  # type: ignore[index]
