"""Ingest and hybrid search against the real embedded Postgres and the real MiniLM embedder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from core import db
from core.config import get_settings
from core.knowledge import ingest, search, store

HANDBOOK = Path(__file__).resolve().parents[2] / "samples" / "handbook"
PDF = HANDBOOK / "security" / "travel-security.pdf"


def _chunk_ids(source: str) -> list[int]:
    with db.connection() as conn:
        rows = conn.execute("SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id"
                            " WHERE d.source = %(s)s ORDER BY c.id", {"s": source}).fetchall()
    return [r["id"] for r in rows]


def _search(query: str, viewer: search.Viewer = search.Viewer(), k: int = 5) -> list[search.Hit]:
    with db.connection() as conn:
        return search.hybrid_search(conn, query, viewer, k=k)


def test_every_format_ingests_and_is_found(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "vpn.md").write_text("# VPN\n\n## Connecting\nUse GlobalProtect with portal vpn.example.\n")
    (tmp_path / "parking.txt").write_text("Parking\n\nThe garage has 20 bicycle racks on level minus one.\n")
    (tmp_path / "lunch.html").write_text("<html><head><title>Lunch</title></head><body><h1>Lunch</h1>"
                                         "<p>The canteen serves paella on Fridays.</p></body></html>")
    (tmp_path / "travel.pdf").write_bytes(PDF.read_bytes())
    (tmp_path / "faq.jsonl").write_text(json.dumps({"_id": "q7", "title": "Badge lost?", "text": "Reception prints a new badge.",
                                                    "url": "https://intranet.example/faq#q7"}) + "\n")
    report = ingest.ingest_paths([tmp_path])
    assert report.failed == [] and len(report.added) == 5
    assert _search("which VPN client")[0].title == "VPN"
    assert _search("bicycle racks in the garage")[0].title == "Parking"
    assert _search("what food is served on Friday")[0].title == "Lunch"
    assert _search("can I check my laptop in as hold luggage")[0].title == "Travel security"
    badge = _search("I lost my badge")[0]
    assert badge.source.endswith("faq.jsonl#q7") and badge.url == "https://intranet.example/faq#q7"


def test_reingesting_unchanged_files_changes_nothing(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\nAlpha text about printers.\n")
    ingest.ingest_paths([tmp_path])
    before = _chunk_ids(str((tmp_path / "a.md").resolve()))
    again = ingest.ingest_paths([tmp_path])
    assert again.unchanged == [str((tmp_path / "a.md").resolve())] and again.chunks == 0
    assert _chunk_ids(str((tmp_path / "a.md").resolve())) == before


def test_changed_document_replaces_its_chunks(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "policy.md"
    path.write_text("# Policy\n\nThe limit is 100 EUR.\n")
    ingest.ingest_paths([path])
    old = _chunk_ids(str(path.resolve()))
    path.write_text("# Policy\n\nThe limit is 250 EUR.\n")
    report = ingest.ingest_paths([path])
    assert report.updated == [str(path.resolve())]
    new = _chunk_ids(str(path.resolve()))
    assert new and not set(new) & set(old)
    assert "250 EUR" in _search("what is the limit")[0].text


def test_deleted_document_is_no_longer_found(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "gone.md").write_text("# Gone\n\nThe submarine is yellow.\n")
    ingest.ingest_paths([tmp_path])
    with db.connection() as conn:
        assert store.delete_document(conn, str((tmp_path / "gone.md").resolve()))
        assert not store.delete_document(conn, "no-such-source")
    assert all(h.title != "Gone" for h in _search("yellow submarine"))


def test_visibility_hides_documents_from_who_may_not_see_them(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "public.md").write_text("# Holidays\n\nThe office closes on 24 December.\n")
    (tmp_path / "secret.md").write_text("# Board notes\n\nThe acquisition of Acme closes on 24 December.\n")
    ingest.ingest_paths([tmp_path / "public.md"])
    ingest.ingest_paths([tmp_path / "secret.md"], visible_channels=["CBOARD"], visible_groups=["execs"])
    with db.connection() as conn:
        store.add_group_member(conn, "execs", "UCEO")
    titles = lambda viewer: {h.title for h in _search("acquisition of Acme", viewer)}  # noqa: E731
    assert "Board notes" not in titles(search.Viewer(user_id="UINTERN", channel_id="CGENERAL"))
    assert "Board notes" not in titles(search.Viewer())
    assert "Board notes" in titles(search.Viewer(user_id="UINTERN", channel_id="CBOARD"))
    assert "Board notes" in titles(search.Viewer(user_id="UCEO", channel_id="DCEO"))  # a direct message
    assert "Board notes" in titles(search.Viewer(user_id="UCEO"))
    # The whole channel reads the answer: a member of the group asking there does not open it.
    assert "Board notes" not in titles(search.Viewer(user_id="UCEO", channel_id="CGENERAL"))
    assert "Holidays" in titles(search.Viewer(user_id="UINTERN"))


def test_bad_files_are_reported_and_the_rest_of_the_batch_goes_in(database_url: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_MAX_FILE_MB", "1")
    get_settings.cache_clear()
    (tmp_path / "good.md").write_text("# Good\n\nThis one is fine.\n")
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "binary.pdf").write_bytes(b"\x00\x01\x02 not a pdf")
    writer = PdfWriter(clone_from=PdfReader(PDF))
    writer.encrypt("secret")
    with (tmp_path / "locked.pdf").open("wb") as f:
        writer.write(f)
    (tmp_path / "huge.txt").write_text("word " * 300_000)
    (tmp_path / "records.jsonl").write_text('{"_id": "1", "text": "valid record"}\n{broken\n{"_id": "", "text": "x"}\n')
    report = ingest.ingest_paths([tmp_path, tmp_path / "missing.md"])
    messages = "\n".join(m for _, m in report.failed)
    assert "empty.md: the file is empty" in messages
    assert "binary.pdf: not a PDF file" in messages
    assert "locked.pdf: the PDF is encrypted" in messages
    assert "huge.txt: 2 MB is over the 1 MB limit" in messages
    assert "records.jsonl:2: invalid JSON" in messages and "records.jsonl:3: a record needs" in messages
    assert "missing.md: no such file or folder" in messages
    assert sorted(Path(s).name.split("#")[0] for s in report.added) == ["good.md", "records.jsonl"]


@pytest.mark.parametrize("query, message", [
    ("", "empty"), ("?!... ---", "only punctuation"), ("x" * 10_000, "10,000 characters long"),
])
def test_unsearchable_queries_get_a_clear_message(database_url: str, query: str, message: str) -> None:
    with pytest.raises(search.QueryError, match=message):
        _search(query)


def test_over_a_large_knowledge_base_a_word_in_most_chunks_is_left_out_of_the_full_text_query(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(30):  # "policy" is in every document, "parking" in one
        topic = "Parking spaces are in the garage." if i == 0 else f"Item {i} of the list."
        (tmp_path / f"policy-{i}.md").write_text(f"# Policy {i}\n\nThis policy says: {topic}\n")
    with db.connection() as conn:
        assert search.lexical_query(conn, "the parking policy") == "'park' | 'polici'"  # no statistics yet
    assert ingest.ingest_paths([tmp_path]).failed == []  # which brings them up to date
    with db.connection() as conn:
        assert search.lexical_query(conn, "the parking policy") == "'park' | 'polici'"  # 30 chunks: a small one
        monkeypatch.setattr(search, "COMMON_WORD_MIN_CHUNKS", 30)
        assert search.lexical_query(conn, "the parking policy") == "'park'"
        assert search.lexical_query(conn, "policy?") == "'polici'"  # nothing rarer to search for
        assert search.lexical_query(conn, "policy kaput") == "'kaput'"  # no chunk holds it: dense search carries the question
        assert search.lexical_query(conn, "what is it") == ""  # only stop words
    [hit] = [h for h in _search("the parking policy") if h.lexical_score is not None]
    assert hit.title == "Policy 0"
    assert _search("O'Brien's \\ policy")  # quotes and backslashes are taken literally
