"""The Training page: start (or refuse) a retrain, set the schedule, follow and cancel runs."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from core import curation, db, queue, training
from core.config import get_settings
from dashboard_helpers import audit_rows, open_page, seed_answer, table, texts


def runs() -> list[training.TrainingRun]:
    with db.connection() as conn:
        return training.list_runs(conn)


def start(at, base_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"):  # noqa: ANN001, ANN201
    at.text_input(key="tr_base").input(base_model)
    at.number_input(key="tr_epochs").set_value(3)
    at.selectbox(key="tr_rank").select(8)
    return at.button[0].click().run()  # the form's "Start retrain"


@pytest.fixture
def dataset(dashboard_db: str) -> int:
    queue.ensure_schema(dashboard_db)
    answer_id = seed_answer("How do I order a laptop?", "In the IT portal.")
    with db.connection() as conn:
        curation.accept(conn, answer_id, curated_by="ann")
        return curation.create_dataset(conn, created_by="ann").version


def test_retrain_without_a_dataset_is_refused(dashboard_db: str) -> None:
    at = start(open_page("training"))
    assert [e.value for e in at.error] == [
        "There is no dataset yet: accept answers in Curation and make a dataset."]
    assert runs() == [] and audit_rows() == []


def test_retrain_on_an_empty_dataset_is_refused(dashboard_db: str) -> None:
    with db.connection() as conn:  # a version with no items (create_dataset itself refuses to make one)
        conn.execute("INSERT INTO datasets (version, created_by) VALUES (1, 'ann')")
    at = start(open_page("training"))
    assert [e.value for e in at.error] == ["Dataset v1 is empty: nothing to train on."]
    assert runs() == [] and audit_rows() == []


def test_retrain_is_queued_listed_and_cancelled(dataset: int) -> None:
    at = start(open_page("training"))
    assert not at.error, [e.value for e in at.error]
    [run] = runs()
    assert (run.status, run.dataset_version, run.params) == ("queued", dataset, {"epochs": 3, "rank": 8})
    assert run.requested_by is not None and run.requested_by.startswith("local:") and run.job_id is not None
    assert f"Retrain run {run.id} queued on dataset v{dataset}." in texts(at)
    assert table(at, "run", "status")["status"].tolist() == ["queued"]

    start(at)
    assert [e.value for e in at.error] == [
        f"Retrain run {run.id} is already queued or running; wait for it or cancel it first."]

    at.button(key="tr_cancel").click().run()
    assert f"Run {run.id}: cancelled." in texts(at)   # a queued one: taken off the queue at once
    assert runs()[0].status == "cancelled"
    assert [e["action"] for e in audit_rows()] == ["retrain.start", "retrain.cancel"]


def test_other_parameters_ride_along_and_a_bad_one_is_refused_naming_it(dataset: int) -> None:
    at = open_page("training")
    at.text_area(key="tr_params").input("max_seq_len=oops\ngradient_checkpointing=true")
    start(at)
    assert [e.value for e in at.error] == ["Bad retrain parameters: max_seq_len must be a whole number of at least 1."]
    at.text_area(key="tr_params").input("gradient_checkpointing")
    start(at)
    assert [e.value for e in at.error] == [
        "A parameter is KEY=VALUE, e.g. max_seq_len=1024; got 'gradient_checkpointing'."]
    at.text_area(key="tr_params").input("rank=64")   # the field says 8: neither may silently win
    start(at)
    assert [e.value for e in at.error] == ["Set rank in its own field, not among the other parameters."]
    assert runs() == []

    at.text_area(key="tr_params").input("max_seq_len = 1024\n\ngradient_checkpointing=true\n")
    start(at)
    assert not at.error, [e.value for e in at.error]
    [run] = runs()
    assert run.params == {"max_seq_len": 1024, "gradient_checkpointing": True, "epochs": 3, "rank": 8}


def test_run_details_show_progress_losses_metrics_and_log(dashboard_db: str) -> None:
    with db.connection() as conn:
        run = training.create_run(conn, base_model="base", dataset_version=1, params={"epochs": 1},
                                  requested_by="ann")
        training.start_run(conn, run.id)
        training.report_progress(conn, run.id, step=1, total=4, train_loss=2.5, val_loss=2.7)
        training.report_progress(conn, run.id, step=2, total=4, train_loss=2.1, val_loss=2.4)
        training.append_log(conn, run.id, "epoch 1: loss 2.1")
        training.finish_run(conn, run.id, "failed", metrics={"eval_loss": 2.4}, error="out of memory")
    at = open_page("training")
    assert [e.value for e in at.error] == ["out of memory"]
    [log] = [c.value for c in at.code]
    assert log.rstrip().endswith("epoch 1: loss 2.1")
    assert at.json[-1].value == '{"eval_loss": 2.4}'
    assert len(at.get("vega_lite_chart")) == 1  # the loss curve
    assert "tr_cancel" not in {b.key for b in at.button}  # a finished run cannot be cancelled
    [listed] = runs()   # the list leaves out what grows with every step; the detail reads it
    assert (listed.log, listed.losses, listed.error) == ("", [], "out of memory")


def progress_text(at) -> str:  # noqa: ANN001
    [bar] = at.get("progress")
    return bar.proto.text


def test_an_active_run_shows_its_latest_progress_on_each_rerun_until_it_ends(dashboard_db: str) -> None:
    with db.connection() as conn:
        run = training.create_run(conn, base_model="base", dataset_version=1, params={}, requested_by="ann")
        training.start_run(conn, run.id)
        training.report_progress(conn, run.id, step=1, total=4, train_loss=2.5, val_loss=None)
    at = open_page("training")
    assert not at.error and progress_text(at) == "running · 25%" and at.button(key="tr_cancel")
    with db.connection() as conn:
        training.report_progress(conn, run.id, step=3, total=4, train_loss=2.0, val_loss=None)
        training.append_log(conn, run.id, "step 3/4")
    at.run()
    assert progress_text(at) == "running · 75%" and "step 3/4" in at.code[0].value
    with db.connection() as conn:
        training.finish_run(conn, run.id, "succeeded")
    at.run()
    assert progress_text(at) == "succeeded · 100%" and "tr_cancel" not in {b.key for b in at.button}


def test_a_failed_run_can_be_resumed_and_a_second_active_run_is_refused(dashboard_db: str) -> None:
    queue.ensure_schema(dashboard_db)
    with db.connection() as conn:
        failed = training.create_run(conn, base_model="base", dataset_version=1, params={}, requested_by="ann")
        training.finish_run(conn, failed.id, "failed", error="worker died")
        other = training.create_run(conn, base_model="base", dataset_version=1, params={}, requested_by="ann")
    at = open_page("training")
    at.selectbox(key="tr_run").select(failed.id).run()
    at.button(key="tr_resume").click().run()
    assert [e.value for e in at.error][-1] == (
        "Another retrain is already queued or running; wait for it or cancel it first.")
    with db.connection() as conn:
        training.finish_run(conn, other.id, "cancelled")
    at.button(key="tr_resume").click().run()
    assert f"Run {failed.id} queued again; it continues from its last checkpoint, if it left one." in texts(at)
    assert runs()[-1].status == "queued" and "retrain.resume" in [e["action"] for e in audit_rows()]


def _field(widgets, name: str):  # noqa: ANN001, ANN202
    """A schedule form field (its key carries the version of the schedule it was filled from)."""
    return next(w for w in widgets if w.key.startswith(f"sc_{name}_"))


def test_schedule_is_validated_and_saved(dashboard_db: str) -> None:
    at = open_page("training")
    _field(at.toggle, "enabled").set_value(True)
    _field(at.text_input, "cron").input("every monday")
    at.button[1].click().run()  # the schedule form's "Save schedule"
    assert [e.value for e in at.error] == [
        "'every monday' is not a valid cron expression (e.g. '0 3 * * 1' for Mondays 03:00)."]
    with db.connection() as conn:
        assert training.get_schedule(conn).enabled is False
    _field(at.text_input, "cron").input("0 4 * * 2")
    _field(at.number_input, "min").set_value(20)
    at.button[1].click().run()
    assert "Schedule saved: retrains at '0 4 * * 2' with at least 20 new answers." in texts(at)
    with db.connection() as conn:
        schedule = training.get_schedule(conn)
    assert (schedule.enabled, schedule.cron, schedule.min_new_examples) == (True, "0 4 * * 2", 20)
    assert [e["action"] for e in audit_rows()] == ["schedule.set"]

    _field(at.number_input, "epochs").set_value(2)   # saved again from the same form: its own save is no news
    at.button[1].click().run()
    assert not at.error and "Schedule saved" in texts(at)


def test_the_schedules_other_parameters_are_saved_shown_again_and_checked(dashboard_db: str) -> None:
    at = open_page("training")
    _field(at.text_area, "params").input("lr=0.0002\ntarget_modules=[\"q_proj\", \"v_proj\"]")
    at.button[1].click().run()
    assert not at.error, [e.value for e in at.error]
    with db.connection() as conn:
        assert training.get_schedule(conn).params == {"lr": 0.0002, "target_modules": ["q_proj", "v_proj"],
                                                      "epochs": 3, "rank": 16}
    at = open_page("training")   # a fresh page shows them, so saving it again keeps them
    assert _field(at.text_area, "params").value == 'lr=0.0002\ntarget_modules=["q_proj", "v_proj"]'
    _field(at.text_area, "params").input("lr=0.0002\nwarmup=0.1")
    at.button[1].click().run()
    [refused] = at.error
    assert refused.value.startswith("Unknown retrain parameter(s) warmup; known: ")
    with db.connection() as conn:
        assert "target_modules" in training.get_schedule(conn).params   # nothing saved


def test_the_schedule_names_the_time_zone_its_cron_and_times_are_in(
        dashboard_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_TIMEZONE", "Asia/Kolkata")
    get_settings.cache_clear()
    db.close_pools()   # its connections read times in the zone they were opened with
    with db.connection() as conn:
        training.mark_schedule_fired(conn, dt.datetime(2026, 3, 1, 21, 30, tzinfo=dt.UTC))
        training.create_run(conn, base_model="tiny", dataset_version=None, params={}, requested_by="ann")
    at = open_page("training")
    assert _field(at.text_input, "cron").label == "When (cron, Asia/Kolkata)"
    assert "Last fired: 2026-03-02 03:00 IST" in texts(at)
    [runs_table] = [d for d in at.dataframe if "created" in d.value.columns]   # its times are in that zone too
    headers = json.loads(runs_table.proto.columns)
    assert headers["created"]["label"] == "created (Asia/Kolkata)" and str(runs_table.value["created"].dt.tz) == \
        "Asia/Kolkata"


def test_a_schedule_form_older_than_someone_elses_save_does_not_switch_it_back(dashboard_db: str) -> None:
    at = open_page("training")   # shows the schedule off
    with db.connection() as conn:   # another admin, or the CLI, meanwhile
        training.set_schedule(conn, enabled=False, cron="0 2 * * *", min_new_examples=5)
    _field(at.toggle, "enabled").set_value(True)
    at.button[1].click().run()
    assert [e.value for e in at.error] == ["Someone saved the schedule after this page showed it, so nothing was "
                                           "saved: the form shows their schedule now."]
    assert _field(at.text_input, "cron").value == "0 2 * * *" and _field(at.toggle, "enabled").value is False
    with db.connection() as conn:
        assert (training.get_schedule(conn).enabled, training.get_schedule(conn).cron) == (False, "0 2 * * *")
    _field(at.toggle, "enabled").set_value(True)   # decided again, on what is saved now
    at.button[1].click().run()
    assert not at.error and "Schedule saved: retrains at '0 2 * * *'" in texts(at)
