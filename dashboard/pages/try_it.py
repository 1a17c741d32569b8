"""Try it: ask the agent as a chosen user in a chosen channel (visibility rules apply as in Slack),
see the answer, its sources, route and timings, and rate it the way the asker would."""
from __future__ import annotations

import uuid

import pandas as pd
import streamlit as st

from core import audit, db, feedback
from core.agent import run
from dashboard import frame, markup

_OUTCOME = "tryit_outcome"   # (run.Outcome, the user id it was asked as)
_THREADS = "tryit_threads"   # (user id, channel id) -> the conversation's thread key


def thread_for(user_id: str, channel_id: str) -> str:
    """Follow-ups share a conversation only as the same person in the same channel, as in Slack:
    asked as someone else, the history (which may quote what only the first could read) stays out."""
    threads: dict[tuple[str, str], str] = st.session_state.setdefault(_THREADS, {})
    return threads.setdefault((user_id, channel_id), f"dashboard:{uuid.uuid4().hex}")


def ask(question: str, user_id: str, channel_id: str, actor: str) -> run.Outcome:
    """The agent records the answer itself (in its own transactions); the audit row follows."""
    asker = run.Asker(surface="dashboard", user_id=user_id or None, channel_id=channel_id or None,
                      thread_key=thread_for(user_id, channel_id))
    outcome = run.ask(question, asker)
    with db.connection() as conn:
        audit.record(conn, actor, "tryit.ask", f"answer:{outcome.answer_id}",
                     {"user_id": user_id, "channel_id": channel_id})
    return outcome


def rate(answer_id: int, user_id: str, rating: feedback.Rating, actor: str, reason: feedback.DownReason | None = None,
         comment: str = "", suggested: str = "") -> feedback.Feedback:
    with db.connection() as conn:
        vote = feedback.record_rating(conn, answer_id, user_id, rating, reason=reason, comment=comment or None,
                                      suggested_answer=suggested or None)
        audit.record(conn, actor, "tryit.rate", f"answer:{answer_id}", {"rating": rating, "as": user_id})
    return vote


identity = frame.page("Try it")
viewer = not identity.can_act
st.caption("Asks the live agent, exactly as Slack does. Each question is recorded like any other.")

c_user, c_channel = st.columns(2)
user_id = c_user.text_input("Ask as Slack user id", value="U_DASHBOARD", key="tryit_user").strip()
channel_id = c_channel.text_input("In channel id (sets what documents are visible)", key="tryit_channel").strip()
question = st.text_area("Question", key="tryit_question", height=100)
c_ask, c_new = st.columns([1, 3])
if c_ask.button("Ask", type="primary", key="tryit_ask", disabled=viewer) and not frame.refuse_viewer(identity):
    if not question.strip():
        st.error("Type a question first.")
        st.stop()
    with st.spinner("Thinking…"):
        result = frame.attempt("Asking the agent", lambda: ask(question, user_id, channel_id, identity.actor),
                               run.AgentFailed)
    if result is not None:
        st.session_state[_OUTCOME] = (result, user_id)   # votes are the asker's, whatever the box says later
if c_new.button("New conversation", key="tryit_new",
                help="Follow-up questions as the same user in the same channel share a thread (and its "
                     "history) until you start a new one."):
    st.session_state.pop(_THREADS, None)
    st.session_state.pop(_OUTCOME, None)

outcome, asked_as = st.session_state.get(_OUTCOME, (None, ""))
if outcome is not None:
    st.divider()
    st.markdown(f"**Route:** {outcome.route} · {markup.escape(outcome.reason)} · answer #{outcome.answer_id}"
                + (f" · confidence {outcome.confidence:.2f}" if outcome.confidence is not None else "")
                + (f" · model {markup.escape(outcome.model)}" if outcome.model else "")
                + (f" · adapter {markup.escape(outcome.adapter_id)}" if outcome.adapter_id else ""))
    if outcome.review_id is not None:
        st.info(f"This draft went to review #{outcome.review_id}: decide it on the Reviews page.")
    st.markdown(markup.escape(outcome.text))
    if outcome.sources:
        st.markdown("**Sources**")
        for source in outcome.sources:
            st.markdown(markup.source_line(source))
    if outcome.timings:
        st.dataframe(pd.DataFrame({"step": list(outcome.timings), "seconds": list(outcome.timings.values())}),
                     hide_index=True)

    asker = asked_as or identity.actor   # asked without a user id: the admin's own vote
    st.markdown(f"**Rate it as the asker** ({markup.escape(asker)})")
    c_up, c_down = st.columns(2)
    if c_up.button("👍 Helpful", key="tryit_up", disabled=viewer) and not frame.refuse_viewer(identity):
        if frame.attempt("Rating", lambda: rate(outcome.answer_id, asker, "up", identity.actor)) is not None:
            frame.done("Thanks: 👍 recorded.")
    # Keyed by the answer: what was written about one answer never carries over to the next.
    with c_down.form(f"tryit_down_form_{outcome.answer_id}"):
        reason = st.selectbox("What was wrong?", feedback.DOWN_REASONS, key=f"tryit_reason_{outcome.answer_id}")
        comment = st.text_input("Comment", key=f"tryit_comment_{outcome.answer_id}")
        suggested = st.text_area("Suggested answer", key=f"tryit_suggested_{outcome.answer_id}")
        if st.form_submit_button("👎 Not helpful", disabled=viewer) and not frame.refuse_viewer(identity):
            vote = frame.attempt("Rating", lambda: rate(outcome.answer_id, asker, "down", identity.actor, reason,
                                                        comment, suggested))
            if vote is not None:
                frame.done("Thanks: 👎 recorded with your reason.")
