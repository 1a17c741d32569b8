"""Knowledge: upload documents to ingest, see what the knowledge base holds, change who may see a
document, re-embed it, or delete it."""
from __future__ import annotations

import datetime as dt
import logging
import re

import pandas as pd
import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from core import audit, db
from core.knowledge import ingest, store
from core.knowledge.parse import SUPPORTED
from dashboard import frame

logger = logging.getLogger(__name__)
_UPLOADER = "kn_uploader_generation"  # a new key empties the uploader after a successful ingest


def names(text: str) -> list[str]:
    """Channel or group ids typed as "C1, #C2 C3" -> ["C1", "C2", "C3"]."""
    return [n.lstrip("#@") for n in re.split(r"[\s,]+", text) if n.strip("#@ ")]


def empty_groups(groups: list[str]) -> str:
    """A sentence to add to what an action says, when it restricted documents to groups no one is in."""
    if not groups:
        return ""
    with db.connection() as conn:
        note = store.empty_groups_note(conn, groups)
    return f" {note}" if note else ""


def upload(files: list[UploadedFile], channels: list[str], groups: list[str], actor: str) -> ingest.IngestReport:
    """Each document is stored, with its audit row, in a transaction of its own (as on the CLI)."""
    total = ingest.IngestReport()
    bar = st.progress(0.0, text="Starting…")
    for n, file in enumerate(files):
        bar.progress(n / len(files), text=f"Ingesting {file.name} ({n + 1} of {len(files)})…")
        try:   # neither given: a file already here keeps its visibility (a new one is public)
            total.add(ingest.ingest_file_bytes(file.name, file.getvalue(), visible_channels=channels or None,
                                               visible_groups=groups or None, audited_by=actor))
        except store.VisibilityError:
            raise   # the same for every file: said once
        except Exception as e:   # the database or the embedder failing: the files before it are stored
            logger.exception("ingesting %s failed", file.name)
            total.failed.append((file.name, f"{file.name}: could not be stored ({type(e).__name__}); "
                                            "upload it again"))
    bar.progress(1.0, text="Done.")
    return total


def change(document_id: int, action: str, actor: str, channels: list[str], groups: list[str],
           seen: dt.datetime) -> str:
    with db.connection() as conn:
        if action == "visibility":
            found = store.set_visibility(conn, document_id, channels, groups, seen=seen)
            what = "visibility saved"
        elif action == "reindex":
            chunks = ingest.reindex_document(conn, document_id)
            if not chunks and store.is_document(conn, document_id):   # an import listed it, its content not here yet
                raise LookupError(f"Document {document_id} has no content yet (an import listed it): ingest its "
                                  "file again, and it keeps its visibility.")
            found = chunks > 0
            what = f"{chunks} chunks re-embedded"
        else:
            found = store.delete_document(conn, document_id)
            what = "deleted"
        if not found:
            raise LookupError(f"Document {document_id} no longer exists.")
        audit.record(conn, actor, f"knowledge.{action}", f"document:{document_id}",
                     {"channels": channels, "groups": groups} if action == "visibility" else {})
    return what


DOC_SHOWN = "kn_shown"   # `frame.filled_from`: the document's updated_at the visibility fields were filled from


identity = frame.page("Knowledge")
viewer = not identity.can_act

st.subheader("Add documents")
generation = st.session_state.setdefault(_UPLOADER, 0)
files = st.file_uploader(f"Files to ingest ({', '.join(SUPPORTED)})", accept_multiple_files=True,
                         key=f"kn_files_{generation}", disabled=viewer)
c_channels, c_groups = st.columns(2)
new_channels = names(c_channels.text_input("Visible only in channels (ids; empty: everyone, or as before for a file already here)", key="kn_up_channels"))
new_groups = names(c_groups.text_input("Visible only to user groups (names, as in `flywheel docs group-add`)",
                                      key="kn_up_groups"))
if st.button("Ingest", type="primary", key="kn_ingest", disabled=viewer or not files) \
        and not frame.refuse_viewer(identity):
    report = frame.attempt("Ingesting", lambda: upload(files or [], new_channels, new_groups, identity.actor),
                           store.VisibilityError)
    if report is not None:
        for _, message in report.failed:
            st.error(message)
        if report.failed and (report.added or report.updated or report.unchanged):
            st.info(report.summary().splitlines()[0])   # what did go in
        if not report.failed:
            st.session_state[_UPLOADER] = generation + 1
            frame.done(report.summary() + empty_groups(new_groups))
        elif report.added or report.updated:
            st.success(report.summary().splitlines()[0])

with db.connection() as conn:
    documents = store.list_documents(conn)
st.subheader(f"Documents ({len(documents)})")
if not documents:
    st.info("The knowledge base is empty: upload files above, or run `flywheel ingest PATH`.")
    st.stop()
st.dataframe(pd.DataFrame([{"id": d.id, "title": d.title, "source": d.source, "chunks": d.chunks,
                            "visibility": d.visibility, "updated": d.updated_at} for d in documents]),
             hide_index=True,
             column_config=frame.time_columns("updated"))

st.subheader("Change a document")
by_id = {d.id: d for d in documents}
if st.session_state.get("kn_doc") not in by_id:
    st.session_state.pop("kn_doc", None)  # deleted: open the first instead
chosen = by_id[st.selectbox("Document", list(by_id), format_func=lambda i: f"#{i} · {by_id[i].title}", key="kn_doc")]
# The version of the document the fields were filled from: saving them over a newer one (a
# restriction someone just added) is refused.
shown_at = frame.filled_from(DOC_SHOWN, chosen.id, chosen.updated_at)
stamp = f"{chosen.id}_{shown_at:%Y%m%d%H%M%S%f}"
c_channels, c_groups = st.columns(2)
channels = names(c_channels.text_input("Visible only in channels", value=", ".join(chosen.visible_channels),
                                       key=f"kn_channels_{stamp}", disabled=viewer))
groups = names(c_groups.text_input("Visible only to user groups", value=", ".join(chosen.visible_groups),
                                   key=f"kn_groups_{stamp}", disabled=viewer))
st.caption("Leave both empty to make the document visible to everyone.")
c_save, c_reindex, c_delete = st.columns(3)
clicked = {
    "visibility": c_save.button("Save visibility", key="kn_save", disabled=viewer),
    "reindex": c_reindex.button("Re-index", key="kn_reindex", disabled=viewer,
                                help="Embed the document's chunks again with the current embedding model."),
    "delete": c_delete.button("Delete", key="kn_delete", disabled=viewer),
}
confirmed = c_delete.checkbox("Yes, delete this document", key=f"kn_confirm_{chosen.id}", disabled=viewer)
for action, was_clicked in clicked.items():
    if not was_clicked or frame.refuse_viewer(identity):
        continue
    if action == "delete" and not confirmed:
        st.error("Tick “Yes, delete this document” first.")
        continue
    outcome = frame.attempt(f"Document ({action})",
                            lambda: change(chosen.id, action, identity.actor, channels, groups, shown_at),
                            LookupError, store.VisibilityError, refill=DOC_SHOWN)
    if outcome is not None:
        frame.done(f"{chosen.title}: {outcome}." + (empty_groups(groups) if action == "visibility" else ""))
