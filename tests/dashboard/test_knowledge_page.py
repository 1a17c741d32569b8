"""The Knowledge page: upload to ingest, list, change visibility, re-index, delete."""
from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from core import db
from core.knowledge import store
from dashboard_helpers import audit_rows, open_page, table, texts

GUIDE = b"# Parking guide\n\n## Where to park\nStaff park in the north garage, levels 2 to 4.\n"


def documents() -> list[store.DocumentRow]:
    with db.connection() as conn:
        return store.list_documents(conn)


def _visibility_field(at, which: str, document_id: int):  # noqa: ANN001, ANN202
    """The channels or groups field of a document (its key carries the version it was filled from)."""
    return next(w for w in at.text_input if w.key.startswith(f"kn_{which}_{document_id}_"))


def test_upload_ingests_the_file(dashboard_db: str) -> None:
    at = open_page("knowledge")
    at.file_uploader[0].upload("parking.md", GUIDE, "text/markdown").run()
    at.text_input(key="kn_up_channels").input("#C0FACILITY")
    at.button(key="kn_ingest").click().run()
    assert not at.error and "1 added, 0 updated, 0 unchanged, 0 failed" in texts(at)
    [doc] = documents()
    assert (doc.source, doc.title, doc.chunks, doc.visible_channels) == (
        "upload:parking.md", "Parking guide", 1, ["C0FACILITY"])
    listed = table(at, "title", "chunks", "visibility")
    assert listed[["title", "chunks", "visibility"]].to_dict("records") == [
        {"title": "Parking guide", "chunks": 1, "visibility": "only #C0FACILITY"}]
    [entry] = audit_rows()
    assert (entry["action"], entry["target"]) == ("knowledge.ingest", f"document:{doc.id}")


def test_uploading_another_file_of_the_same_name_says_it_replaced_the_first_and_kept_its_visibility(
        dashboard_db: str) -> None:
    at = open_page("knowledge")
    at.file_uploader[0].upload("policy.md", b"# Pay policy\n\nBands are reviewed each March.\n", "text/markdown").run()
    at.text_input(key="kn_up_groups").input("hr")
    at.button(key="kn_ingest").click().run()
    at = open_page("knowledge")   # another admin, another team's policy.md
    at.file_uploader[0].upload("policy.md", b"# Desk policy\n\nClear desks on Fridays.\n", "text/markdown").run()
    at.button(key="kn_ingest").click().run()
    assert ("replaced the document uploaded before as policy.md; it keeps who may see it unless visibility was "
            "given") in texts(at)
    [doc] = documents()
    assert (doc.title, doc.visible_groups) == ("Desk policy", ["hr"])


def test_an_upload_that_fails_at_one_file_stores_the_others_and_says_which(
        dashboard_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.knowledge import ingest

    real = ingest.ingest_file_bytes

    def database_drops_at_the_second(name: str, *args: object, **kwargs: object) -> ingest.IngestReport:
        if name == "b.md":
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest, "ingest_file_bytes", database_drops_at_the_second)
    at = open_page("knowledge")
    at.file_uploader[0].set_value([(f"{n}.md", f"# {n.upper()}\n\nText of {n}.\n".encode(), "text/markdown")
                                   for n in ("a", "b", "c")]).run()
    at.button(key="kn_ingest").click().run()
    assert [e.value for e in at.error] == ["b.md: could not be stored (OperationalError); upload it again"]
    assert [i.value for i in at.info] == ["2 added, 0 updated, 0 unchanged, 1 failed (2 chunks written)"]
    assert sorted(d.source for d in documents()) == ["upload:a.md", "upload:c.md"]


def test_uploading_a_jsonl_file_again_removes_the_records_taken_out_of_it(dashboard_db: str) -> None:
    at = open_page("knowledge")
    badge = b'{"_id": "badge", "text": "Reception prints badges."}\n'
    lunch = b'{"_id": "lunch", "text": "Lunch at noon."}\n'
    for content in (badge + lunch, badge):
        at.file_uploader[0].upload("faq.jsonl", content, "application/jsonl").run()
        at.button(key="kn_ingest").click().run()
    assert not at.error and "0 added, 0 updated, 1 unchanged, 1 removed, 0 failed" in texts(at)
    assert [d.source for d in documents()] == ["upload:faq.jsonl#badge"]
    assert [(e["action"], e["target"]) for e in audit_rows()][-1] == ("knowledge.delete", "upload:faq.jsonl#lunch")


def test_a_channel_given_by_name_is_refused_and_nothing_is_stored(dashboard_db: str) -> None:
    at = open_page("knowledge")
    at.file_uploader[0].upload("parking.md", GUIDE, "text/markdown").run()
    at.text_input(key="kn_up_channels").input("#facilities")
    at.button(key="kn_ingest").click().run()
    [error] = [e.value for e in at.error]
    assert error.startswith("Not a Slack channel id: 'facilities'. Give the channel's id")
    assert documents() == [] and audit_rows() == []


def test_unsupported_upload_is_refused_and_nothing_changes(dashboard_db: str) -> None:
    at = open_page("knowledge")
    at.file_uploader[0].upload("report.docx", b"PK\x03\x04 not a text file", "application/octet-stream").run()
    at.button(key="kn_ingest").click().run()
    assert [e.value for e in at.error] == [
        "report.docx: unsupported file type '.docx'; supported: .md, .markdown, .txt, .html, .htm, .pdf, .jsonl"]
    assert documents() == [] and audit_rows() == []


def test_visibility_reindex_and_delete(handbook: Path) -> None:
    laptops = next(d for d in documents() if d.title == "Laptop requests")
    with db.connection() as conn:
        conn.execute("UPDATE chunks SET heading_embedding = NULL WHERE document_id = %(d)s", {"d": laptops.id})
    at = open_page("knowledge")
    at.selectbox(key="kn_doc").select(laptops.id).run()
    _visibility_field(at, "channels", laptops.id).input("C0IT, C0HELP")
    at.button(key="kn_save").click().run()
    assert "Laptop requests: visibility saved." in texts(at)
    assert next(d for d in documents() if d.id == laptops.id).visible_channels == ["C0IT", "C0HELP"]

    at.button(key="kn_reindex").click().run()
    assert f"Laptop requests: {laptops.chunks} chunks re-embedded." in texts(at)
    with db.connection() as conn:
        missing = conn.execute("SELECT count(*) AS n FROM chunks WHERE heading_embedding IS NULL").fetchone()
    assert missing == {"n": 0}

    at.button(key="kn_delete").click().run()
    assert [e.value for e in at.error] == ["Tick “Yes, delete this document” first."]
    at.checkbox(key=f"kn_confirm_{laptops.id}").check()
    at.button(key="kn_delete").click().run()
    assert [d.title for d in documents()] == ["Salary bands"]
    assert [e["action"] for e in audit_rows()] == ["knowledge.visibility", "knowledge.reindex", "knowledge.delete"]


def test_restricting_a_document_to_a_group_no_one_is_in_says_how_to_add_members(handbook: Path) -> None:
    laptops = next(d for d in documents() if d.title == "Laptop requests")
    at = open_page("knowledge")
    at.selectbox(key="kn_doc").select(laptops.id).run()
    _visibility_field(at, "groups", laptops.id).input("it-staf")   # misspelt
    at.button(key="kn_save").click().run()
    [said] = [str(e.value) for e in at.success]
    assert said.startswith("Laptop requests: visibility saved. No one is in group it-staf yet")
    assert "flywheel docs group-add it-staf" in said
    with db.connection() as conn:
        store.add_group_member(conn, "it-staff", "U0IT")
    at.run()
    _visibility_field(at, "groups", laptops.id).input("it-staff")
    at.button(key="kn_save").click().run()
    assert [str(e.value) for e in at.success] == ["Laptop requests: visibility saved."]


def test_visibility_saved_over_a_restriction_added_meanwhile_is_refused(handbook: Path) -> None:
    laptops = next(d for d in documents() if d.title == "Laptop requests")
    at = open_page("knowledge")
    at.selectbox(key="kn_doc").select(laptops.id).run()   # shows it public
    with db.connection() as conn:   # another admin restricts it
        store.set_visibility(conn, laptops.id, ["C0IT"], [])
    _visibility_field(at, "groups", laptops.id).input("it-staff")
    at.button(key="kn_save").click().run()
    [error] = [e.value for e in at.error]
    assert error.startswith(f"Document {laptops.id} changed after this page showed it")
    assert next(d for d in documents() if d.id == laptops.id).visible_channels == ["C0IT"]   # still restricted
    at.run()
    assert _visibility_field(at, "channels", laptops.id).value == "C0IT"   # filled from what is stored now
