"""The periodic retrain: due by the cron in the database, only with enough new curated answers,
one at a time; and the worker's minute tick that checks it."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from core import audit, curation, db, queue, retrain, training
from core.config import get_settings

NOW = dt.datetime(2026, 3, 2, 3, 0, 30, tzinfo=dt.timezone.utc)  # a Monday, just after 03:00


def _schedule(enabled: bool = True, cron: str = "0 3 * * 1", min_new: int = 5, saved: dt.datetime | None = None) -> None:
    with db.connection() as conn:
        training.set_schedule(conn, enabled=enabled, cron=cron, min_new_examples=min_new, params={"epochs": 1})
        conn.execute("UPDATE training_schedule SET updated_at = %(t)s", {"t": saved or NOW - dt.timedelta(days=3)})


def _edit_one_ideal_answer() -> None:
    with db.connection() as conn:
        answer_id = conn.execute("SELECT min(answer_id) AS a FROM curation_items").fetchone()["a"]  # type: ignore[index]
        curation.accept(conn, answer_id, curated_by="ann", ideal_answer="Order it in the IT portal [1].")


def test_due_schedule_with_enough_new_answers_makes_a_dataset_and_queues_a_retrain(curated_dataset: int) -> None:
    _edit_one_ideal_answer()   # so the answers are no longer exactly what v1 holds
    _schedule()
    run = retrain.scheduled_retrain(NOW)
    assert run is not None and run.status == "queued" and run.requested_by == "schedule"
    assert run.params == {"epochs": 1} and run.job_id is not None
    with db.connection() as conn:
        assert run.dataset_version == curation.latest_version(conn) == curated_dataset + 1
        assert training.get_schedule(conn).last_fired_at == NOW
    # The same cron time is not considered twice, and the next one finds a run still active.
    assert retrain.scheduled_retrain(NOW + dt.timedelta(minutes=5)) is None
    assert retrain.scheduled_retrain(NOW + dt.timedelta(days=7)) is None
    with db.connection() as conn:
        assert [e.details["reason"] for e in audit.recent(conn) if e.action == "retrain.skip"] == \
            ["a retrain is already queued or running"]


def test_schedule_waits_for_enough_new_answers_since_the_last_successful_retrain(curated_dataset: int) -> None:
    with db.connection() as conn:
        done = training.create_run(conn, base_model="tiny", dataset_version=curated_dataset, params={},
                                   requested_by="admin")
        training.finish_run(conn, done.id, "succeeded")
    _schedule(min_new=1)
    assert retrain.scheduled_retrain(NOW) is None  # every accepted answer predates that retrain
    with db.connection() as conn:
        [skip] = [e for e in audit.recent(conn) if e.action == "retrain.skip"]
    assert skip.details == {"reason": "not enough new accepted answers", "new": 0, "min_new_examples": 1}


def test_due_schedule_retrains_on_the_latest_dataset_when_it_already_holds_every_accepted_answer(
        curated_dataset: int) -> None:
    _schedule()   # eight accepted answers no retrain learned, all frozen in v1 by an admin
    run = retrain.scheduled_retrain(NOW)
    assert run is not None and run.dataset_version == curated_dataset
    with db.connection() as conn:
        assert [d.version for d in curation.list_datasets(conn)] == [curated_dataset]


def test_an_edited_answer_counts_as_new_and_one_accepted_again_unchanged_does_not(curated_dataset: int) -> None:
    with db.connection() as conn:
        done = training.create_run(conn, base_model="tiny", dataset_version=curated_dataset, params={},
                                   requested_by="admin")
        training.finish_run(conn, done.id, "succeeded")
        for item in conn.execute("SELECT answer_id, ideal_answer FROM curation_items").fetchall():
            curation.accept(conn, item["answer_id"], curated_by="ann", ideal_answer=item["ideal_answer"])
    _schedule(min_new=1)
    assert retrain.scheduled_retrain(NOW) is None
    with db.connection() as conn:
        [skip] = [e for e in audit.recent(conn) if e.action == "retrain.skip"]
    assert skip.details["new"] == 0

    _edit_one_ideal_answer()
    run = retrain.scheduled_retrain(NOW + dt.timedelta(days=7))
    assert run is not None and run.dataset_version == curated_dataset + 1


def test_schedule_is_not_due_when_disabled_or_before_its_time(curated_dataset: int) -> None:
    _schedule(enabled=False)
    assert retrain.scheduled_retrain(NOW) is None
    _schedule(saved=NOW - dt.timedelta(minutes=10))  # saved at 02:50, and it is 02:59:30:
    assert retrain.scheduled_retrain(NOW - dt.timedelta(minutes=1)) is None  # the last cron time predates the save
    with db.connection() as conn:
        assert training.list_runs(conn) == [] and training.get_schedule(conn).last_fired_at is None


def test_a_schedule_switched_back_on_waits_for_its_next_cron_time(curated_dataset: int) -> None:
    wednesday = NOW + dt.timedelta(days=2, hours=7)  # 10:00, two days after Monday's 03:00
    _schedule(saved=wednesday - dt.timedelta(minutes=1))
    with db.connection() as conn:  # it last fired a month ago, then was switched off
        training.mark_schedule_fired(conn, NOW - dt.timedelta(days=28))
    assert retrain.scheduled_retrain(wednesday) is None  # not in working hours on a Wednesday
    assert retrain.scheduled_retrain(NOW + dt.timedelta(days=7)) is not None  # next Monday 03:00


def test_a_schedule_with_parameters_the_trainer_does_not_know_is_refused(curated_dataset: int) -> None:
    _schedule()
    with db.connection() as conn, pytest.raises(training.InvalidSchedule, match="Unknown retrain parameter.s. epoch;"):
        training.set_schedule(conn, enabled=True, cron="0 3 * * 1", min_new_examples=5, params={"epoch": 2})
    with db.connection() as conn:
        assert training.get_schedule(conn).params == {"epochs": 1}


def test_a_due_schedule_whose_stored_parameters_are_bad_skips_with_the_reason(curated_dataset: int) -> None:
    _edit_one_ideal_answer()   # new answers: a dataset would be made
    _schedule()   # then its parameters were stored by hand, or by a version that knew other keys
    with db.connection() as conn:
        conn.execute("UPDATE training_schedule SET params = '{\"epochs\": 0}'")
    assert retrain.scheduled_retrain(NOW) is None
    with db.connection() as conn:
        [skip] = [e for e in audit.recent(conn) if e.action == "retrain.skip"]
        assert training.list_runs(conn) == []
        assert curation.latest_version(conn) == curated_dataset   # no dataset frozen for nothing
    assert "epochs must be a whole number of at least 1" in skip.details["reason"]


def test_a_due_schedule_whose_base_model_folder_is_missing_skips_with_the_reason(
        curated_dataset: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _edit_one_ideal_answer()
    _schedule()
    monkeypatch.setenv("FLYWHEEL_LLM_MODEL", str(tmp_path / "unmounted"))   # a volume not mounted on this worker
    get_settings.cache_clear()
    assert retrain.scheduled_retrain(NOW) is None
    with db.connection() as conn:
        [skip] = [e for e in audit.recent(conn) if e.action == "retrain.skip"]
        assert training.list_runs(conn) == [] and curation.latest_version(conn) == curated_dataset
    assert "is not a model folder (no config.json)" in skip.details["reason"]


def test_the_cron_reads_in_the_configured_time_zone(curated_dataset: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_TIMEZONE", "Asia/Kolkata")
    get_settings.cache_clear()
    _schedule()   # Mondays 03:00 in India: Sunday 21:30 UTC
    sunday = NOW - dt.timedelta(hours=5, minutes=30)
    assert retrain.scheduled_retrain(sunday - dt.timedelta(minutes=1)) is None
    run = retrain.scheduled_retrain(sunday)
    assert run is not None and run.status == "queued"
    with db.connection() as conn:
        assert training.get_schedule(conn).last_fired_at == sunday


def test_a_cron_time_the_clocks_going_back_repeats_fires_once(curated_dataset: int,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_TIMEZONE", "Europe/Paris")
    get_settings.cache_clear()
    first = dt.datetime(2024, 10, 27, 0, 30, 30, tzinfo=dt.timezone.utc)   # 02:30 CEST; at 03:00 it is 02:00 CET
    _schedule(cron="30 2 * * 0", min_new=1, saved=first - dt.timedelta(days=3))
    assert retrain.scheduled_retrain(first) is not None
    assert retrain.scheduled_retrain(first + dt.timedelta(hours=1)) is None   # 02:30 CET: the same time again
    with db.connection() as conn:
        assert training.get_schedule(conn).last_fired_at == first
        assert not [e for e in audit.recent(conn) if e.action == "retrain.skip"]   # not even considered


def test_the_worker_ticks_every_minute_on_the_training_queue() -> None:
    import trainer.jobs  # noqa: F401  (registers the tasks on core.queue.app)

    [periodic] = [p for (name, _), p in queue.app.periodic_registry.periodic_tasks.items() if name == queue.SCHEDULE_TASK]
    assert periodic.cron == "* * * * *"
    assert periodic.task.queue == queue.TRAINING_QUEUE and periodic.task.queueing_lock == "retrain-schedule"
    assert queue.app.tasks[queue.RETRAIN_TASK].queue == queue.TRAINING_QUEUE
