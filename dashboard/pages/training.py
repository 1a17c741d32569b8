"""Training: start a LoRA retrain on a dataset version, set the periodic schedule, and follow runs
(status, progress, loss curve, eval metrics, log), cancelling one if needed."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from core import audit, curation, db, hyperparams, retrain, training
from core.config import get_settings
from dashboard import frame, markup

RANKS = [4, 8, 16, 32, 64]
DEFAULT_EPOCHS = hyperparams.TrainConfig().epochs
DEFAULT_RANK = hyperparams.TrainConfig().rank
ACTIVE = ("queued", "running")
REFRESH_S = 3  # how often an active run's detail is read again
OWN_FIELDS = ("epochs", "rank")   # retrain parameters with a field of their own on this page
OTHER_PARAMETERS = "KEY=VALUE, one per line, e.g.\nlr=1e-4\nmax_seq_len=1024\ngradient_checkpointing=true"
SCHEDULE_SHOWN = "sc_shown"   # `frame.filled_from`: the schedule's updated_at the form was filled from


def _params(epochs: int, rank: int, other: str) -> dict[str, object]:
    """The epochs and rank fields with the other parameters' KEY=VALUE lines."""
    return {**hyperparams.other_than(OWN_FIELDS, other.splitlines()), "epochs": epochs, "rank": rank}


def start(version: int | None, base_model: str, epochs: int, rank: int, other: str,
          actor: str) -> training.TrainingRun:
    """Queue a retrain with `other` parameters (KEY=VALUE lines) besides the epochs and rank.
    request_retrain records the run, its audit row and the queued job itself."""
    return retrain.request_retrain(requested_by=actor, dataset_version=version, base_model=base_model or None,
                                   params=_params(epochs, rank, other))


def save_schedule(enabled: bool, cron: str, min_new: int, epochs: int, rank: int, other: str, actor: str,
                  seen: dt.datetime) -> training.Schedule:
    """Refused (`db.ChangedSince`) when someone saved theirs after `seen`."""
    params = _params(epochs, rank, other)
    with db.connection() as conn:
        training.set_schedule(conn, enabled=enabled, cron=cron.strip(), min_new_examples=min_new,
                              params=params, seen=seen)
        audit.record(conn, actor, "schedule.set", "training_schedule",
                     {"enabled": enabled, "cron": cron.strip(), "min_new_examples": min_new, **params})
        return training.get_schedule(conn)


def cancel(run_id: int, actor: str) -> training.TrainingRun:
    run = retrain.cancel_retrain(run_id, requested_by=actor)   # audits the request itself
    if run is None:
        raise LookupError(f"Run {run_id} is not queued or running any more.")
    return run


identity = frame.page("Training")
viewer = not identity.can_act
with db.connection() as conn:
    datasets = curation.list_datasets(conn)
    schedule = training.get_schedule(conn)
    runs = training.list_runs(conn)

st.subheader("Retrain now")
with st.form("tr_start"):
    c_data, c_base = st.columns(2)
    version = c_data.selectbox("Dataset version", [d.version for d in datasets],
                               format_func=lambda v: next(f"v{d.version} ({markup.count(d.items, 'answer')})" for d in datasets
                                                          if d.version == v),
                               placeholder="No datasets yet: make one in Curation", key="tr_version")
    base_model = c_base.text_input("Base model", key="tr_base",
                                   placeholder="empty: the configured base model (FLYWHEEL_LLM_MODEL)")
    c_epochs, c_rank = st.columns(2)
    epochs = c_epochs.number_input("Epochs", min_value=1, max_value=20, value=DEFAULT_EPOCHS, key="tr_epochs")
    rank = c_rank.selectbox("LoRA rank", RANKS, index=RANKS.index(DEFAULT_RANK), key="tr_rank")
    other = st.text_area("Other parameters", key="tr_params", height=68,
                         placeholder=OTHER_PARAMETERS,
                         help="Any retrain parameter besides epochs and rank; an unknown one is refused, naming "
                              "those there are.")
    submitted = st.form_submit_button("Start retrain", type="primary", disabled=viewer)
if submitted and not frame.refuse_viewer(identity):
    # The first retrain on the default base model prepares it locally, which takes a while.
    with st.spinner("Queuing the retrain…"):
        started = frame.attempt("Starting a retrain",
                                lambda: start(version, base_model.strip(), int(epochs), int(rank), other,
                                              identity.actor),
                                curation.CurationError, hyperparams.InvalidParams, retrain.NotAModel,
                                training.RunAlreadyActive)
    if started is not None:
        frame.done(f"Retrain run {started.id} queued on dataset v{started.dataset_version}.")

st.subheader("Schedule")
# The version of the schedule this admin's form was filled from: saving over a newer one (another
# admin, the CLI) is refused rather than switching it back, and the form then shows the newer one.
shown = frame.filled_from(SCHEDULE_SHOWN, "schedule", schedule.updated_at)
stamp = f"{shown:%Y%m%d%H%M%S%f}"   # in the fields' keys: a new version fills a new form
with st.form("tr_schedule"):
    enabled = st.toggle("Retrain periodically", value=schedule.enabled, key=f"sc_enabled_{stamp}")
    c_cron, c_min = st.columns(2)
    cron = c_cron.text_input(f"When (cron, {get_settings().timezone})", value=schedule.cron, key=f"sc_cron_{stamp}",
                             help="'0 3 * * 1' is Mondays at 03:00.")
    min_new = c_min.number_input("Only with at least this many new accepted answers", min_value=1,
                                 value=schedule.min_new_examples, key=f"sc_min_{stamp}")
    c_epochs, c_rank = st.columns(2)
    sc_epochs = c_epochs.number_input("Epochs", min_value=1, max_value=20,
                                      value=int(schedule.params.get("epochs", DEFAULT_EPOCHS)), key=f"sc_epochs_{stamp}")
    shown_rank = schedule.params.get("rank", DEFAULT_RANK)
    sc_rank = c_rank.selectbox("LoRA rank", RANKS, index=RANKS.index(shown_rank if shown_rank in RANKS else DEFAULT_RANK),
                               key=f"sc_rank_{stamp}")
    others = {k: v for k, v in schedule.params.items() if k not in OWN_FIELDS}
    sc_other = st.text_area("Other parameters", value="\n".join(hyperparams.to_pairs(others)), height=68,
                            key=f"sc_params_{stamp}", placeholder=OTHER_PARAMETERS)
    saved = st.form_submit_button("Save schedule", disabled=viewer)
st.caption(f"Last fired: {markup.when(schedule.last_fired_at)}" if schedule.last_fired_at else "Never fired yet.")
if saved and not frame.refuse_viewer(identity):
    # InvalidSchedule: an invalid cron expression or minimum (the message says which).
    saved_schedule = frame.attempt("Saving the schedule", lambda: save_schedule(
        enabled, cron, int(min_new), int(sc_epochs), int(sc_rank), sc_other, identity.actor, shown),
        training.InvalidSchedule, hyperparams.InvalidParams, refill=SCHEDULE_SHOWN)
    if saved_schedule is not None:
        frame.done("Schedule saved: " + (f"retrains at '{saved_schedule.cron}' with at least "
                                         f"{markup.count(saved_schedule.min_new_examples, 'new answer')}."
                                         if saved_schedule.enabled else "periodic retrains are off."))

st.subheader("Runs")
if not runs:
    st.info("No retrains yet.")
    st.stop()
st.dataframe(pd.DataFrame([{
    "run": r.id, "status": r.status, "dataset": r.dataset_version, "progress": r.progress,
    "adapter": r.adapter_version, "by": r.requested_by, "created": r.created_at, "finished": r.finished_at,
} for r in runs]), hide_index=True,
    column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0),
                   **frame.time_columns("created", "finished")})

by_id = {r.id: r for r in runs}
chosen_id = st.selectbox("Run", list(by_id), format_func=lambda i: f"run {i} · {by_id[i].status}", key="tr_run")


@st.fragment(run_every=REFRESH_S if by_id[chosen_id].status in ACTIVE else None)
def run_detail(run_id: int, was_active: bool) -> None:
    """One run's progress, losses, metrics and log, read again every few seconds while it is
    queued or running (only this part of the page reruns)."""
    with db.connection() as conn:
        chosen = training.get_run(conn, run_id)
    if chosen is None:
        return
    if was_active and chosen.status not in ACTIVE:
        st.rerun()  # it ended: refresh the whole page (the table, the buttons) and stop polling
    st.progress(min(max(chosen.progress, 0.0), 1.0), text=f"{chosen.status} · {chosen.progress:.0%}")
    if chosen.error:
        st.error(chosen.error)
    losses = pd.DataFrame(chosen.losses)
    if "step" in losses:
        st.markdown("**Loss**")
        st.line_chart(losses.set_index("step")[[c for c in ("train_loss", "val_loss") if c in losses]])
    if chosen.metrics:
        st.markdown("**Eval metrics**")
        st.json(chosen.metrics)
    st.markdown(f"**Parameters:** base `{chosen.base_model}` · {chosen.params}")
    with st.expander("Log", expanded=chosen.status in ACTIVE):
        st.code(chosen.log or "(empty)", language=None)
    if chosen.status in ACTIVE:
        if st.button("Cancel this run", key="tr_cancel", disabled=viewer) and not frame.refuse_viewer(identity):
            cancelled = frame.attempt("Cancelling", lambda: cancel(run_id, identity.actor), LookupError)
            if cancelled is not None:
                frame.done(f"Run {run_id}: " + ("cancelled." if cancelled.status == "cancelled"
                                                else "cancellation requested. Still training, it stops at its next "
                                                "step; in its eval gate, it finishes the gate and its adapter is "
                                                "kept ready, not promoted (unless its promotion has begun)."))
    if chosen.status == "failed":
        if st.button("Resume from the last checkpoint", key="tr_resume", disabled=viewer) \
                and not frame.refuse_viewer(identity):
            # CannotResume: the run is not failed any more; RunAlreadyActive: another retrain is active.
            resumed = frame.attempt("Resuming", lambda: retrain.resume_retrain(run_id, requested_by=identity.actor),
                                    training.CannotResume, training.RunAlreadyActive)
            if resumed is not None:
                frame.done(f"Run {resumed.id} queued again; it continues from its last checkpoint, if it left one.")


run_detail(chosen_id, by_id[chosen_id].status in ACTIVE)
