"""Ingest and hybrid search against the real embedded Postgres and the real MiniLM embedder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pypdf import PdfReader, PdfWriter

from core import db
from core.config import SettingsInvalid, get_settings
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


def test_a_new_chunk_size_re_chunks_a_document_on_its_next_ingest(database_url: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.md"
    path.write_text("# Policy\n\n" + " ".join(f"Rule {i} applies to every trip abroad." for i in range(30)) + "\n")
    ingest.ingest_paths([path])
    assert len(_chunk_ids(str(path.resolve()))) == 2  # 210 words at 200 a chunk
    monkeypatch.setenv("FLYWHEEL_CHUNK_TOKENS", "60")
    monkeypatch.setenv("FLYWHEEL_CHUNK_OVERLAP", "10")
    get_settings.cache_clear()
    report = ingest.ingest_paths([path])
    assert report.updated == [str(path.resolve())] and len(_chunk_ids(str(path.resolve()))) == 5


def _stored_vector(source: str) -> str:
    with db.connection() as conn:
        return conn.execute("SELECT c.embedding::text AS v FROM chunks c JOIN documents d ON d.id = c.document_id"
                            " WHERE d.source = %(s)s", {"s": source}).fetchone()["v"]  # type: ignore[index]


def _embedder(folder: Path, dimensions: int) -> Path:
    """A sentence-transformers model of its own: MiniLM's encoder with a random projection to
    `dimensions`, saved as an admin's FLYWHEEL_EMBED_MODEL folder would be."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    from core.knowledge import embed

    torch.manual_seed(0)
    encoder = models.Transformer(embed.model_path())
    SentenceTransformer(modules=[encoder, models.Pooling(encoder.get_embedding_dimension()),
                                 models.Dense(embed.DIMENSIONS, dimensions)]).save(str(folder))
    return folder


def test_another_embedder_re_embeds_documents_on_their_next_ingest_and_one_of_another_size_is_refused(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.knowledge import embed

    path = tmp_path / "docs" / "policy.md"
    path.parent.mkdir()
    path.write_text("# Travel\n\nBook trains for trips under four hours.\n")
    ingest.ingest_paths([path])
    before, vector_before = _chunk_ids(str(path.resolve())), _stored_vector(str(path.resolve()))
    monkeypatch.setattr(embed, "_model", None)   # as a restarted process: the embedder is read afresh
    monkeypatch.setenv("FLYWHEEL_EMBED_MODEL", str(_embedder(tmp_path / "other-384", 384)))
    get_settings.cache_clear()
    report = ingest.ingest_paths([path])
    assert report.updated == [str(path.resolve())] and _chunk_ids(str(path.resolve())) != before   # re-embedded
    assert _stored_vector(str(path.resolve())) != vector_before   # by the new model

    monkeypatch.setattr(embed, "_model", None)
    monkeypatch.setenv("FLYWHEEL_EMBED_MODEL", str(_embedder(tmp_path / "other-768", 768)))
    get_settings.cache_clear()
    with pytest.raises(SettingsInvalid, match="makes 768-dimensional vectors, but the knowledge base stores "
                                         "384-dimensional ones"):
        embed.embed_query("Which trips go by train?")


def test_deleted_document_is_no_longer_found(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "gone.md").write_text("# Gone\n\nThe submarine is yellow.\n")
    ingest.ingest_paths([tmp_path])
    with db.connection() as conn:
        assert store.delete_document(conn, str((tmp_path / "gone.md").resolve()))
        assert not store.delete_document(conn, "no-such-source")
    assert all(h.title != "Gone" for h in _search("yellow submarine"))


def _records(path: Path, *records: dict) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_a_record_removed_from_a_jsonl_file_is_removed_from_the_knowledge_base(database_url: str,
                                                                               tmp_path: Path) -> None:
    faq = tmp_path / "faq.jsonl"
    badge = {"_id": "badge", "text": "Reception prints a new badge."}
    _records(faq, badge, {"_id": "parking", "text": "The garage has 20 bicycle racks."})
    ingest.ingest_paths([faq], audited_by="cli")
    _records(faq, badge)
    again = ingest.ingest_paths([faq], audited_by="cli")
    assert [Path(s).name for s in again.removed] == ["faq.jsonl#parking"] and "1 removed" in again.summary()
    assert [Path(h.source).name for h in _search("bicycle racks in the garage")] == ["faq.jsonl#badge"]
    with db.connection() as conn:
        audited = conn.execute("SELECT target FROM audit_log WHERE action = 'knowledge.delete'").fetchall()
    assert [Path(r["target"]).name for r in audited] == ["faq.jsonl#parking"]

    # A file with a bad line deletes nothing: that line may be a record still meant to be there.
    faq.write_text('{"_id": "badge", "text": "Reception prints a new badge."\n')
    broken = ingest.ingest_paths([faq])
    assert broken.removed == [] and _search("new badge")[0].source.endswith("faq.jsonl#badge")
    faq.write_text("\n")  # nor does an empty one (half-written, truncated): it is refused like any empty file
    empty = ingest.ingest_paths([faq])
    assert empty.removed == [] and empty.failed == [(str(faq.resolve()), f"{faq}: the file is empty")]
    assert _search("new badge")[0].source.endswith("faq.jsonl#badge")


def test_a_repeated_record_id_is_reported_and_the_first_record_kept(database_url: str, tmp_path: Path) -> None:
    faq = tmp_path / "faq.jsonl"
    _records(faq, {"_id": "q1", "text": "Reception prints a new badge."}, {"_id": "q1", "text": "Lunch is at noon."})
    report = ingest.ingest_paths([faq])
    assert report.failed == [(str(faq.resolve()), f"{faq}:2: '_id' 'q1' is already used on line 1")]
    assert [Path(s).name for s in report.added] == ["faq.jsonl#q1"]
    assert _search("new badge")[0].text.endswith("Reception prints a new badge.")  # the title, then the text


def test_removing_a_jsonl_file_removes_all_its_records(database_url: str, tmp_path: Path) -> None:
    faq = tmp_path / "faq.jsonl"
    _records(faq, {"_id": "a", "text": "Reception prints a new badge."}, {"_id": "b", "text": "Lunch is at noon."})
    ingest.ingest_paths([faq])
    with db.connection() as conn:
        assert store.delete_document(conn, str(faq.resolve()))
        assert store.count_documents(conn) == 0


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
    # pypdf raises NotImplementedError on a damaged stream filter, not one of its own errors
    (tmp_path / "damaged.pdf").write_bytes(PDF.read_bytes().replace(b"/FlateDecode", b"/FlateDLcode"))
    (tmp_path / "huge.txt").write_text("word " * 300_000)
    (tmp_path / "records.jsonl").write_text('{"_id": "1", "text": "valid record"}\n{broken\n{"_id": "", "text": "x"}\n'
                                            '{"_id": "4", "text": "odd url", "url": 42}\n'
                                            '{"_id": "5", "text": "half an emoji \\ud83d kept"}\n')
    report = ingest.ingest_paths([tmp_path, tmp_path / "missing.md"])
    messages = "\n".join(m for _, m in report.failed)
    assert "empty.md: the file is empty" in messages
    assert "binary.pdf: not a PDF file" in messages
    assert "locked.pdf: the PDF is protected by a password" in messages
    assert "damaged.pdf: unreadable PDF (Unsupported filter /FlateDLcode)" in messages
    assert "huge.txt: 2 MB is over the 1 MB limit" in messages
    assert "records.jsonl:2: invalid JSON" in messages and "records.jsonl:3: a record needs" in messages
    assert "records.jsonl:4: 'url' must be a string, not int" in messages
    assert "missing.md: no such file or folder" in messages
    assert len(report.failed) == 9
    assert sorted(Path(s).name for s in report.added) == ["good.md", "records.jsonl#1", "records.jsonl#5"]
    assert "half an emoji \ufffd kept" in [h.text.split("\n\n")[-1] for h in _search("half an emoji kept")]


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-128", "AES-256"])
def test_a_pdf_with_only_an_owner_password_opens_like_any_other(database_url: str, tmp_path: Path,
                                                                algorithm: str) -> None:
    # Published PDFs often forbid printing or copying with an owner password; they need none to read.
    writer = PdfWriter(clone_from=PdfReader(PDF))
    writer.encrypt(user_password="", owner_password="publisher", algorithm=algorithm)
    with (tmp_path / "restricted.pdf").open("wb") as f:
        writer.write(f)
    report = ingest.ingest_paths([tmp_path / "restricted.pdf"])
    assert not report.failed and report.chunks > 0


def test_text_is_folded_so_ligatures_utf16_files_and_nul_characters_go_in(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "gym.txt").write_text("Gym\nThe ﬁtness room opens at 6.\n")  # "ﬁ": a PDF ligature
    (tmp_path / "windows.txt").write_bytes("Canteen\nThe canteen serves soup on Fridays.\n".encode("utf-16"))
    # A NUL, which Postgres text cannot hold, escaped inside a JSON record
    (tmp_path / "shifts.jsonl").write_text('{"_id": "night", "title": "Night shift", "text": "Starts at 22:00.\\u0000",'
                                          ' "url": "https://wiki.example/shifts\\u0000",'
                                          ' "metadata": {"team": "ops\\u0000", "tags": ["24/7\\u0000"]}}\n')
    report = ingest.ingest_paths([tmp_path])
    assert not report.failed, report.failed
    assert _search("fitness room")[0].title == "Gym"
    assert _search("soup on fridays")[0].title == "Canteen"
    assert _search("night shift")[0].text.endswith("Starts at 22:00.")
    # Typed in a terminal that is not UTF-8 (Python keeps the byte as half a surrogate pair)
    assert _search("\uff46itness room caf\udce9")[0].title == "Gym"


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


def test_restricted_chunks_crowding_a_topic_do_not_hide_the_public_ones(database_url: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # An HNSW scan yields its ef_search nearest chunks before the visibility filter: board-only
    # chunks nearer the question than the public ones would leave none visible. Scaled down:
    # ef_search 10 instead of 100, and the index scan forced as the planner picks it for a
    # large table.
    monkeypatch.setenv("FLYWHEEL_HNSW_EF_SEARCH", "10")
    monkeypatch.setenv("FLYWHEEL_SEARCH_CANDIDATES", "10")
    get_settings.cache_clear()
    rng = np.random.default_rng(0)
    question = rng.normal(size=384).astype(np.float32)

    def near(spread: float) -> np.ndarray:
        v = question / np.linalg.norm(question) + spread * rng.normal(size=384).astype(np.float32)
        return v / np.linalg.norm(v)

    with db.connection() as conn:
        store.vectors(conn)  # before the cursor, which copies the connection's adapters
        cur = conn.cursor()
        for source, groups, count, spread in (("board", ["board"], 200, 0.03), ("public", [], 30, 0.06)):
            doc = conn.execute("INSERT INTO documents (source, title, content_hash, visible_groups)"
                               " VALUES (%(s)s, %(s)s, 'h', %(g)s) RETURNING id", {"s": source, "g": groups}).fetchone()
            cur.executemany("INSERT INTO chunks (document_id, ord, text, embedding, heading_embedding)"
                            " VALUES (%(d)s, %(o)s, %(t)s, %(e)s, %(e)s)",
                            [{"d": doc["id"], "o": i, "t": f"{source} minutes, part {i}", "e": near(spread)}  # type: ignore[index]
                             for i in range(count)])
    monkeypatch.setattr(search.embed, "embed_query", lambda query: question)
    with db.connection() as conn:
        conn.execute("SET LOCAL enable_seqscan = off")
        hits = search.hybrid_search(conn, "quarterly figures", search.Viewer(user_id="UINTERN", channel_id="CGENERAL"))
    assert [h.title for h in hits] == ["public"] * 5
    assert all(h.dense_score is not None for h in hits)


def test_chunks_of_a_section_that_matches_by_heading_rank_by_their_own_text(database_url: str,
                                                                             tmp_path: Path) -> None:
    topics = ["Hotel stays are booked through the travel desk.", "Meals are reimbursed against receipts.",
              "Train tickets in second class are the default.", "Flights are booked in economy class.",
              "Taxi rides at night after 22:00 are reimbursed when no public transport runs."]
    filler = " ".join(["Claims go through the finance portal within thirty days of the trip."] * 14)
    (tmp_path / "travel.md").write_text("# Travel\n\n## Expenses\n" + "\n\n".join(f"{t} {filler}" for t in topics))
    assert not ingest.ingest_paths([tmp_path]).failed
    hits = _search("expenses taxi", k=3)
    assert "Taxi rides" in hits[0].text, [h.text[:60] for h in hits]


def test_a_file_name_that_is_not_utf8_is_reported_and_the_rest_of_the_folder_goes_in(
        database_url: str, tmp_path: Path) -> None:
    import base64
    import os
    import random

    (tmp_path / os.fsdecode(b"caf\xe9.txt")).write_text("Canteen\nThe canteen opens at noon.\n")   # latin-1 name
    (tmp_path / "gym.txt").write_text("Gym\nThe fitness room opens at 6.\n")
    image = base64.b64encode(random.Random(7).randbytes(900_000)).decode()   # a 1.2 MB inlined image
    (tmp_path / "words.md").write_text(f"# Chart\n\n![chart](data:image/png;base64,{image})\n\nSales doubled in spring.\n")
    report = ingest.ingest_paths([tmp_path])
    assert [m for _, m in report.failed] == [f"{tmp_path}/caf\\xe9.txt: the file name is not valid UTF-8; rename the file"]
    assert sorted(Path(s).name for s in report.added) == ["gym.txt", "words.md"]
    assert _search("fitness room")[0].title == "Gym" and _search("sales doubled")[0].title == "Chart"


def test_a_passage_stored_twice_is_found_once(database_url: str, tmp_path: Path) -> None:
    policy = "# Laptops\n\nNew laptops are ordered in the IT portal and arrive within five working days.\n"
    for folder in ("handbook", "handbook-copy"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "laptops.md").write_text(policy)
    ingest.ingest_paths([tmp_path])
    ingest.ingest_file_bytes("laptops.md", policy.encode())   # and uploaded in the dashboard
    hits = _search("how long until a new laptop arrives", k=3)
    assert [h.title for h in hits].count("Laptops") == 1 and len({h.text for h in hits}) == len(hits)
