"""Curation: judge answers into training material (accept, edit and accept, reject; one by one or
in bulk), with personal data highlighted, and freeze what is accepted into dataset versions."""
from __future__ import annotations

import functools

import pandas as pd
import streamlit as st

from core import audit, curation, db
from core.config import get_settings
from dashboard import frame, markup

RATINGS = {"any": "Any", "up": "👍", "down": "👎", "unrated": "Not rated"}
ROUTES = {"any": "Any", "answered": "Answered", "review": "Reviewed", "declined": "Declined"}
ALL = "any"
ACCEPT, ACCEPT_EDITED, REJECT = "Accept as delivered", "Accept edited answer", "Reject"
SEEN = "cur_seen"   # `frame.last_shown`: the judgement the page last showed of the open answer


def label(row: curation.CurationRow) -> str:
    question = row.question if len(row.question) <= 70 else row.question[:69] + "…"
    return f"#{row.answer_id} · {question}"


def table(rows: list[curation.CurationRow]) -> pd.DataFrame:
    return pd.DataFrame([{
        "id": r.answer_id, "asked": r.created_at, "channel": r.channel_id, "question": r.question,
        "route": r.route, "👍": r.ups, "👎": r.downs, "judged": r.decision or "",
        "personal data": "⚠️" if markup.has_pii(r.question, r.final_answer) else "",
    } for r in rows])


def judge(answer_id: int, action: str, actor: str, ideal_answer: str | None,
          seen: curation.Seen) -> curation.Decision:
    """One transaction: the judgement and its audit row land together or not at all. Accepting
    stores `ideal_answer` (marked edited when it is not the answer as delivered; None: as
    delivered). Refused when someone judged the answer after this admin opened it (`seen`)."""
    with db.connection() as conn:
        if action == "reject":
            curation.reject(conn, answer_id, curated_by=actor, seen=seen)
        else:
            curation.accept(conn, answer_id, curated_by=actor, ideal_answer=ideal_answer, seen=seen)
        audit.record(conn, actor, f"curation.{action}", f"answer:{answer_id}", {"answer_ids": [answer_id]})
    return "rejected" if action == "reject" else "accepted"


def judge_many(answer_ids: list[int], action: str, actor: str) -> list[int]:
    """Bulk judgements in one transaction with their audit row; returns the ids judged (a bulk
    action skips answers judged before)."""
    with db.connection() as conn:
        judged = curation.bulk(conn, answer_ids, "rejected" if action == "reject" else "accepted", curated_by=actor)
        skipped = [i for i in answer_ids if i not in judged]
        if judged:
            target = f"answer:{judged[0]}" if len(judged) == 1 else None
            audit.record(conn, actor, f"curation.{action}", target,
                         {"answer_ids": judged, **({"skipped": skipped} if skipped else {})})
    return judged


def _skipped(n: int, *, accepting: bool) -> str:
    if not n:
        return ""
    repeat = (", or a repeat of a question whose ideal answer someone wrote by hand (it would replace that "
              "answer)") if accepting else ""
    return (f" Skipped {n}: already judged (bulk actions leave a decision and ideal answer as they are), a note "
            f"rather than an answer (a decline, a rejection, quoted excerpts){repeat}; open one to change it.")


def export(version: int, actor: str) -> str:
    """A dataset version as JSONL, made only when an admin clicks download (Streamlit runs this
    on a thread of its own, hence the connection of its own); exports are audited."""
    with db.connection() as conn:
        audit.record(conn, actor, "dataset.export", f"dataset:v{version}")
        return curation.export_jsonl(conn, version)


def make_dataset(actor: str, note: str) -> curation.DatasetInfo:
    with db.connection() as conn:
        info = curation.create_dataset(conn, created_by=actor, note=note,
                                       include_restricted=get_settings().train_on_restricted)
        audit.record(conn, actor, "dataset.create", f"dataset:v{info.version}", {"items": info.items})
    return info


identity = frame.page("Curation")
viewer = not identity.can_act

with db.connection() as conn:
    channels = curation.channels(conn)

with st.container(border=True):
    c_rating, c_route, c_channel, c_dates = st.columns(4)
    rating = c_rating.selectbox("Rating", list(RATINGS), format_func=RATINGS.__getitem__, key="cur_rating")
    route = c_route.selectbox("Route", list(ROUTES), format_func=ROUTES.__getitem__, key="cur_route")
    channel = c_channel.selectbox("Channel", [ALL, *channels], format_func=lambda c: "Any" if c == ALL else c,
                                  key="cur_channel")
    dates = c_dates.date_input("Asked between", value=(), key="cur_dates")
    c_text, c_uncurated = st.columns([3, 1])
    search = c_text.text_input("Search questions and answers", key="cur_text")
    uncurated = c_uncurated.checkbox("Not yet curated", key="cur_uncurated")

since, until = (tuple(dates) + (None, None))[:2] if isinstance(dates, tuple) else (dates, dates)
answer_filter = curation.AnswerFilter(
    rating=rating, route=None if route == ALL else route, channel_id=None if channel == ALL else channel,
    since=since, until=until, text=search or None, uncurated_only=uncurated)
with db.connection() as conn:
    rows = curation.list_answers(conn, answer_filter)
by_id = {r.answer_id: r for r in rows}

st.caption(markup.count(len(rows), "answer") + (" (the newest 200)" if len(rows) == answer_filter.limit else ""))
if not rows:
    st.info("No answers match these filters.")
else:
    st.dataframe(table(rows), hide_index=True,
                 column_config={**frame.time_columns("asked"),
                                "question": st.column_config.TextColumn("question", width="large")})

    st.subheader("Bulk")
    selected = st.multiselect("Answers to judge together", list(by_id), format_func=lambda i: label(by_id[i]),
                              key="cur_bulk")
    b_all, b_accept, b_reject = st.columns(3)
    b_all.button("Select all shown", on_click=lambda: st.session_state.update(cur_bulk=list(by_id)),
                 disabled=viewer)
    if b_accept.button("Accept selected as delivered", disabled=viewer or not selected, key="bulk_accept") \
            and not frame.refuse_viewer(identity):
        judged = frame.attempt("Bulk accept", lambda: judge_many(selected, "accept", identity.actor),
                               curation.CurationError)
        if judged is not None:
            frame.forget(SEEN)
            frame.done(f"Accepted {markup.count(len(judged), 'answer')}."
                       + _skipped(len(selected) - len(judged), accepting=True))
    if b_reject.button("Reject selected", disabled=viewer or not selected, key="bulk_reject") \
            and not frame.refuse_viewer(identity):
        judged = frame.attempt("Bulk reject", lambda: judge_many(selected, "reject", identity.actor),
                               curation.CurationError)
        if judged is not None:
            frame.forget(SEEN)
            frame.done(f"Rejected {markup.count(len(judged), 'answer')}."
                       + _skipped(len(selected) - len(judged), accepting=False))

    st.subheader("Answer")
    if st.session_state.get("cur_open") not in by_id:
        st.session_state.pop("cur_open", None)  # filtered away: open the newest instead
    opened = st.selectbox("Open", list(by_id), format_func=lambda i: label(by_id[i]), key="cur_open")
    row = by_id[opened]
    with db.connection() as conn:
        texts = curation.source_texts(conn, row.sources)

    left, right = st.columns([3, 2])
    with left:
        st.markdown(f"**Question** · {markup.when(row.created_at)} · {row.channel_id or 'no channel'} · "
                    f"{row.user_id or 'unknown user'}")
        st.markdown(markup.highlight_pii(row.question))
        st.markdown(f"**Final answer** · route: {row.route} ({markup.escape(row.route_reason or '')})")
        st.markdown(markup.highlight_pii(row.final_answer or "(none)"))
        if row.draft and row.draft != row.final_answer:
            with st.expander("Draft before review"):
                st.markdown(markup.highlight_pii(row.draft))
        with st.expander(f"Sources used ({len(row.sources)})"):
            for source in row.sources:
                st.markdown(markup.source_line(source))
                if source.get("chunk_id") in texts:
                    st.caption(markup.escape(texts[source["chunk_id"]][:600]))
    with right:
        st.markdown(f"**Votes** · {row.ups} 👍 · {row.downs} 👎")
        for reason in row.down_reasons:
            st.markdown(f"👎 reason: **{markup.escape(reason)}**")
        for comment in row.down_comments:
            st.markdown(f"💬 {markup.highlight_pii(comment)}")
        for suggestion in row.suggested_answers:
            st.markdown(f"**Asker's suggested answer:** {markup.highlight_pii(suggestion)}")
        judged = f"**{row.decision}** by {markup.escape(row.curated_by or '?')}" if row.decision else "not yet"
        st.markdown(f"**Judged:** {judged}")
        if row.ideal_answer:
            st.markdown(f"**Stored ideal answer:** {markup.escape(row.ideal_answer)}")

    # The judgement this admin saw when the page last showed this answer: what they decide now
    # must not overwrite one someone else made since.
    seen = frame.last_shown(SEEN, opened, curation.Seen(row.curated_at))
    judged_meanwhile = seen.curated_at != row.curated_at
    shown = row.ideal_answer or row.final_answer or ""
    ideal = st.text_area("Ideal answer (edit, then accept)", value=shown, key=f"cur_ideal_{opened}", height=160,
                         disabled=viewer)
    if markup.has_pii(row.question, ideal):
        st.caption("Highlighted personal data is replaced (e.g. by [email]) in what is stored.")
    if row.ideal_answer and row.ideal_answer.strip() != (row.final_answer or "").strip():
        st.caption(f"The box shows the ideal answer {markup.escape(row.curated_by or 'someone')} stored: "
                   f"{ACCEPT_EDITED} keeps it, {ACCEPT} goes back to the answer as delivered.")
    a_keep, a_edit, a_reject = st.columns(3)
    actions = {
        "accept": a_keep.button(ACCEPT, key="cur_accept", disabled=viewer, type="primary"),
        "edit": a_edit.button(ACCEPT_EDITED, key="cur_accept_edit", disabled=viewer),
        "reject": a_reject.button(REJECT, key="cur_reject", disabled=viewer),
    }
    if judged_meanwhile:
        outcome = ("so nothing changed. Your text is kept: decide again if you still mean it" if any(actions.values())
                   else "your text is kept")
        st.warning(f"{markup.escape(row.curated_by or 'Someone')} judged this answer while you had it open "
                   f"({row.decision}; shown above), {outcome}.")
    for action, clicked in actions.items():
        if not clicked or judged_meanwhile or frame.refuse_viewer(identity):
            continue
        if action == "accept" and ideal.strip() != shown.strip():
            st.error(f"You changed the text: use {ACCEPT_EDITED} to keep your edit, or undo it to accept "
                     "the answer as delivered.")
            continue
        # "Accept as delivered" stores the delivered answer, even over an ideal answer an earlier
        # edit stored (which the text box shows: accepting it again is "Accept edited answer").
        text = None if action == "accept" else ideal
        decision = frame.attempt(f"Curation ({action})", lambda: judge(opened, action, identity.actor, text, seen),
                                 curation.CurationError)
        if decision is not None:
            frame.forget(SEEN)   # their own judgement is no news to them
            st.session_state.pop(f"cur_ideal_{opened}", None)   # the box shows what was stored (scrubbed)
            frame.done(f"Answer #{opened}: {decision}.")

st.header("Datasets")
with db.connection() as conn:
    accepted = curation.accepted_count(conn)
    restricted = 0 if get_settings().train_on_restricted else curation.restricted_count(conn)
    datasets = curation.list_datasets(conn)
st.caption(f"{accepted} accepted answers. A new version freezes all of them, with the source passages "
           "each answer was drafted from" + (
               f", but {restricted}: drafted from documents not everyone may see, they are left out, since an "
               "adapter answers everyone (FLYWHEEL_TRAIN_ON_RESTRICTED=true trains on them)." if restricted else "."))
d_note, d_make = st.columns([3, 1])
note = d_note.text_input("Note for the new version", key="ds_note", disabled=viewer)
if d_make.button("Make dataset version", key="ds_make", disabled=viewer) and not frame.refuse_viewer(identity):
    info = frame.attempt("Making a dataset", lambda: make_dataset(identity.actor, note), curation.CurationError)
    if info is not None:
        frame.done(f"Dataset v{info.version} made with {markup.count(info.items, 'answer')}.")
if datasets:
    st.dataframe(pd.DataFrame([vars(d) for d in datasets]), hide_index=True,
                 column_config=frame.time_columns("created_at"))
    # Training data is sensitive even scrubbed: only admins get the button, and the file is made
    # on their click (a disabled button would still serve a file made for everyone).
    if identity.can_act:
        version = st.selectbox("Export version", [d.version for d in datasets], format_func=lambda v: f"v{v}",
                               key="ds_export")
        st.download_button(f"Download v{version} as JSONL", functools.partial(export, version, identity.actor),
                           file_name=f"flywheel-dataset-v{version}.jsonl", mime="application/jsonl",
                           on_click="ignore", key="ds_download")
else:
    st.write("No dataset versions yet.")
