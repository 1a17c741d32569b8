"""Overview: how the loop is doing. Volume, routes, 👍 rate, latency, the live adapter, and the
questions the knowledge base serves badly (what to write documents about next)."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from core import audit, db, models, stats
from dashboard import frame

PERIODS = {7: "Last 7 days", 30: "Last 30 days", 90: "Last 90 days", 365: "Last year"}


def percent(share: float | None) -> str:
    return "–" if share is None else f"{share:.0%}"


def seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


identity = frame.page("Overview")
days = st.selectbox("Period", list(PERIODS), index=1, format_func=PERIODS.__getitem__)
since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)

with db.connection() as conn:
    summary = stats.summary(conn, since)
    per_day = stats.daily(conn, since)
    gaps = stats.knowledge_gaps(conn, since)
    live = models.live(conn)
    recent_actions = audit.recent(conn, limit=25)

volume, answered, reviewed, declined = st.columns(4)
volume.metric("Questions", summary.questions, help=f"{summary.questions / days:.1f} per day; "
              f"{summary.failed} failed")
answered.metric("Answered directly", percent(summary.answer_rate))
reviewed.metric("Sent to review", percent(summary.review_rate))
declined.metric("Declined", percent(summary.decline_rate))
liked, median, p95, adapter = st.columns(4)
liked.metric("👍 rate", percent(summary.up_rate), help=f"{summary.ups} 👍, {summary.downs} 👎")
median.metric("Median latency", seconds(summary.median_latency_s))
p95.metric("p95 latency", seconds(summary.p95_latency_s))
adapter.metric("Live adapter", live.name if live else "base model")

if not per_day:
    st.info("No questions in this period yet. Ask one in Slack or on the Try it page.")
else:
    table = pd.DataFrame([vars(d) for d in per_day]).set_index("day")
    st.subheader("Questions per day, by route")
    st.bar_chart(table[["answered", "reviewed", "declined"]], stack=True)
    votes = table[["ups", "downs"]].sum(axis=1)
    st.subheader("👍 rate per day")
    st.line_chart((table["ups"] / votes.where(votes > 0)).rename("👍 rate"))

st.subheader("Gaps in the knowledge base")
st.caption("Questions most often not found in the documents, or voted down.")
if gaps:
    st.dataframe(pd.DataFrame([vars(g) for g in gaps]), hide_index=True,
                 column_config={"question": st.column_config.TextColumn("Question", width="large"),
                                "not_found": "Not found", "downvotes": "👎", "asked": "Asked",
                                **frame.time_columns("last_asked")})
else:
    st.write("None in this period.")

with st.expander("Recent admin actions"):
    if recent_actions:
        st.dataframe(pd.DataFrame([vars(a) for a in recent_actions]), hide_index=True,
                     column_config=frame.time_columns("at"))
    else:
        st.write("No admin actions recorded yet.")
