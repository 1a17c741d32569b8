"""Models: the adapter versions retrains produced (dataset, metrics, status), which one is live,
the serving backend's health; promote an adapter, roll back to the previous one, or serve the
base model."""
from __future__ import annotations

import json
from typing import Literal

import pandas as pd
import streamlit as st

from core import db, doctor, models, serving
from core.config import get_settings
from core.llm.backends import make_generator
from dashboard import frame


def switch(actor: str, to: int | Literal["previous", "base model"], shown_live: int | None,
           despite_gate: bool = False) -> str:
    """Promote version `to` (`despite_gate`: though it did not pass its eval gate), or roll back
    from the live version the page showed (audited with the switch); says what answers now."""
    if isinstance(to, int):
        live = serving.promote(to, actor=actor, despite_gate=despite_gate)
    else:
        live = serving.rollback(actor=actor, from_version=shown_live, to_base_model=to == "base model")
    return f"{live.name} is live." if live else "No adapter is live: the base model answers."


LIVE_SHOWN = "md_live_shown"


identity = frame.page("Models")
viewer = not identity.can_act
settings = get_settings()
# After a TGI promotion generation may have moved to a new server: check the one in use.
url = serving.serving_url(settings)
generator = make_generator(settings.model_copy(update={"llm_url": url}))
with db.connection() as conn:
    adapters = models.list_adapters(conn)
    live = models.live(conn)
# The live version as the page showed it before this run: what a click on "Roll back" meant,
# even if a first click (or another admin) has switched since.
shown_live = frame.last_shown(LIVE_SHOWN, "live", live.version if live else None)

healthy = generator is not None and generator.health()
c_backend, c_health, c_live = st.columns(3)
c_backend.metric("Serving backend", settings.llm_backend)
if generator is None:
    c_health.metric("Model server", "none", help="Extractive answers: the agent quotes sources, no model.")
else:
    c_health.metric("Model server", "healthy" if healthy else "unreachable", help=doctor.redacted(url))
c_live.metric("Live adapter", live.name if live else "base model")
if generator is not None:
    st.caption(f"Model server at {doctor.redacted(url)}")   # no credentials or query string on screen
# A model server restarted without the live adapter answers with the base model: say so, and let it be loaded again.
live_missing = healthy and serving.lost_live_adapter(live, url, settings)
if live_missing and live is not None:
    st.warning(f"The model server does not hold the live adapter {live.name} (restarted without it?), so it "
               f"answers with the base model. Promote {live.name} again to load it.")

st.subheader("Adapters")
if not adapters:
    st.info("No adapters yet: a retrain registers one (Training page).")
    st.stop()
st.dataframe(pd.DataFrame([{
    "version": a.version, "name": a.name, "status": a.status, "dataset": a.dataset_version,
    "base model": a.base_model, "metrics": json.dumps(a.metrics) if a.metrics else "", "created": a.created_at,
    "promoted": a.promoted_at, "error": a.error or "",
} for a in adapters]), hide_index=True, column_config=frame.time_columns("created", "promoted"))

by_version = {a.version: a for a in adapters}
chosen = by_version[st.selectbox("Adapter", list(by_version),
                                 format_func=lambda v: f"{by_version[v].name} · {by_version[v].status}", key="md_adapter")]
c_info, c_metrics = st.columns(2)
c_info.markdown(f"**Path:** `{chosen.path}`  \n**Base model:** `{chosen.base_model}`  \n"
                f"**Dataset:** {f'v{chosen.dataset_version}' if chosen.dataset_version else '–'}")
c_info.json(chosen.hyperparams or {})
if chosen.metrics:
    c_metrics.markdown("**Eval metrics**")
    c_metrics.json(chosen.metrics)
if chosen.error:
    st.error(f"{chosen.name} failed: {chosen.error}")
can_promote = chosen.status in ("ready", "retired") or (chosen.status == "live" and live_missing)
gate_failure = serving.gate_failure_now(chosen) if can_promote else None
despite_gate = False
if gate_failure is not None:
    st.warning(gate_failure)
    # One box per version: a tick given for one adapter's reasons must not carry over to another's.
    despite_gate = st.checkbox(f"Promote {chosen.name} all the same", key=f"md_despite_gate_{chosen.version}",
                               disabled=viewer)

c_promote, c_rollback, c_base = st.columns(3)
promote = c_promote.button(f"Promote {chosen.name}", key="md_promote", type="primary",
                           disabled=viewer or (chosen.status == "live" and not live_missing)
                           or (gate_failure is not None and not despite_gate))
rollback = c_rollback.button("Roll back to the previous adapter (or the base model)", key="md_rollback",
                             disabled=viewer or live is None)
to_base = c_base.button("Serve the base model", key="md_base", disabled=viewer or live is None,
                        help="No adapter: the way back when the earlier adapters cannot be loaded.")
targets: tuple[tuple[int | Literal["previous", "base model"], bool], ...] = (
    (chosen.version, promote), ("previous", rollback), ("base model", to_base))
for target, clicked in targets:
    if not clicked or frame.refuse_viewer(identity):
        continue
    # PromotionRefused: failed, still training, trained on another base model, another promotion under
    # way, or no adapter live to roll back from; ServingError: the model server could not load or
    # serve it. Either way nothing was switched.
    with st.spinner("Loading and checking the adapter on the model server…"):
        answered_by = frame.attempt("Switching adapters", lambda: switch(identity.actor, target, shown_live, despite_gate),
                                    models.PromotionRefused, serving.ServingError)
    if answered_by is not None:
        frame.done(answered_by)
