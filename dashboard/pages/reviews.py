"""Reviews: the drafts waiting for a person. Approve, edit or reject here as in Slack: the decision
resumes the same agent thread, and the Slack bot delivers the outcome to the asker's thread."""
from __future__ import annotations

import streamlit as st

from core import audit, db, feedback
from core.agent import run
from dashboard import auth, frame, markup

LABELS = {"approve": "Approve", "edit": "Send edited", "reject": "Reject"}
DONE = {"approve": "approved", "edit": "sent edited", "reject": "rejected"}


class AlreadyDecided(Exception):
    """Someone (here or in Slack) decided this review first."""


def decide(review_id: int, action: str, actor: str, text: str, reason: str) -> run.Outcome:
    """Resume the paused thread with the decision. `run.decide` commits the decision itself, so
    the audit row follows in a transaction of its own."""
    decision: dict[str, str] = {"action": action, "reviewer": actor}
    if action == "edit":
        decision["text"] = text
    if action == "reject":
        decision["reason"] = reason
    outcome = run.decide(review_id, decision)  # type: ignore[arg-type]
    if outcome is None:
        raise AlreadyDecided(f"Review #{review_id} was already decided by someone else; nothing changed.")
    with db.connection() as conn:
        audit.record(conn, actor, f"review.{action}", f"review:{review_id}",
                     {"answer_id": outcome.answer_id, **({"reason": reason} if action == "reject" else {})})
    return outcome


def on_click(review_id: int, action: str, identity: auth.Identity, draft: str) -> None:
    """Decide in the button's callback, before the page reruns: the queue below is then read
    after the decision, and a review someone decided meanwhile still gets its answer."""
    if not identity.can_act:
        frame.flash_error("Viewers cannot change anything here; ask an admin.")
        return
    edited = st.session_state.get(f"rv_text_{review_id}", draft)
    reason = st.session_state.get(f"rv_reason_{review_id}", "")
    if action == "approve" and edited.strip() != draft.strip():
        # Approving sends the draft as it is: an edit the reviewer made must not be lost silently.
        frame.flash_error(f"You changed the text: use {LABELS['edit']} to send your edit for review #{review_id}, "
                          "or undo it to approve the draft.")
        return
    # ValueError: an empty edit or a rejection without a reason (the agent refuses both);
    # ReviewNotFound: the review no longer exists.
    frame.attempt_in_callback(
        "Deciding the review", lambda: decide(review_id, action, identity.actor, edited, reason),
        lambda outcome: f"Review #{review_id} {DONE[action]}; the answer is queued for the asker's thread.",
        ValueError, run.ReviewNotFound, AlreadyDecided)


SHOWN_AT_ONCE = 25   # a backlog of hundreds would make every rerun of the page slow


identity = frame.page("Reviews")
viewer = not identity.can_act
with db.connection() as conn:
    pending = feedback.pending_reviews(conn, limit=SHOWN_AT_ONCE)
    waiting = feedback.pending_review_count(conn) if len(pending) == SHOWN_AT_ONCE else len(pending)
    earlier_turns = {answer.id: feedback.earlier_turn(conn, answer) for _, answer in pending}

if not pending:
    st.info("No drafts are waiting for review.")
else:
    st.caption(f"{waiting:,} waiting, oldest first" + (f"; the oldest {SHOWN_AT_ONCE} are shown: each decision "
                                                        "brings the next." if waiting > len(pending) else "."))

for review, answer in pending:
    with st.container(border=True):
        st.markdown(f"**Review #{review.id}** · answer #{answer.id} · asked {markup.when(answer.created_at)} by "
                    f"{markup.escape(answer.user_id or 'unknown')} in {markup.escape(answer.channel_id or 'no channel')}"
                    f" · why: {markup.escape(review.reason)}"
                    + (f" · confidence {answer.confidence:.2f}" if answer.confidence is not None else ""))
        if earlier := earlier_turns.get(answer.id):   # a follow-up: what it follows
            st.caption(f"Earlier in this thread: {markup.escape(earlier.question)} → "
                       f"{markup.escape((earlier.final_answer or earlier.draft or '(no answer)')[:600])}")
        st.markdown(f"**Question:** {markup.highlight_pii(answer.question)}")
        st.markdown(f"**Draft:** {markup.highlight_pii(answer.draft or '')}")
        with st.expander(f"Sources ({len(answer.sources)})"):
            for source in answer.sources:
                st.markdown(markup.source_line(source))
        st.text_area(f"Edited answer (for {LABELS['edit']})", value=answer.draft or "", key=f"rv_text_{review.id}",
                     disabled=viewer)
        st.text_input(f"Reason (for {LABELS['reject']})", key=f"rv_reason_{review.id}", disabled=viewer)
        for column, (action, label) in zip(st.columns(3), LABELS.items()):
            column.button(label, key=f"rv_{action}_{review.id}", on_click=on_click,
                          args=(review.id, action, identity, answer.draft or ""),
                          type="primary" if action == "approve" else "secondary", disabled=viewer)
