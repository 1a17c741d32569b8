"""core.curation, core.pii and core.audit: judging answers into scrubbed, versioned datasets."""
from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import pytest
from support.polling import wait_until

from core import audit, curation, db, feedback, pii
from core.knowledge import ingest, store
from dashboard_helpers import rate, seed_answer

# -- personal data ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "kind", "found"), [
    ("write to anna.berg@northwind.example today", "email", "anna.berg@northwind.example"),
    ("call me on +1 (555) 123-4567.", "phone", "+1 (555) 123-4567"),
    ("my number is 030 1234 5678", "phone", "030 1234 5678"),
    ("the bot token xoxb-1234567890-abcdefghij leaked", "token", "xoxb-1234567890-abcdefghij"),
    ("use sk-abcdefghijklmnop1234 for the API", "token", "sk-abcdefghijklmnop1234"),
    ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz", "token", "abcdefghijklmnopqrstuvwxyz"),
    ("ask <@U024BE7LH> about it", "mention", "<@U024BE7LH>"),
    ("Hello, my name is Maria Lopez and I need a laptop", "name", "Maria Lopez"),
    ("Dr. Jane Doe signed it", "name", "Jane Doe"),
    ("Hi Anna, where is the form?", "name", "Anna"),
    ("Where is the form?\nThanks,\nTom Baker", "name", "Tom Baker"),
    ("My name is José García, I need help", "name", "José García"),
    ("Dr. McDonald approved it", "name", "McDonald"),
    ("I'm Anna O'Brien from finance", "name", "Anna O'Brien"),
    ("I’m Anna Schmidt, from HR", "name", "Anna Schmidt"),   # the apostrophe a phone types
    ("Dr. Müller signed", "name", "Müller"),
    ("Hi Zoë, where is it?", "name", "Zoë"),
    ("Hi Anna Maria Smith Jones, hello", "name", "Anna Maria Smith Jones"),
    ("Where is it?\nCheers,\nÉmile", "name", "Émile"),
])
def test_find_pii_finds_each_kind(text: str, kind: str, found: str) -> None:
    spans = pii.find_pii(text)
    assert [(s.kind, s.text) for s in spans] == [(kind, found)]
    assert text[spans[0].start:spans[0].end] == found


@pytest.mark.parametrize("text", [
    "Delivery takes five working days; orders before 2024-03-15 ship from v1.2.3 stock.",
    "The budget is 1,250,000 and pi is 3.14159265358.",
    "Hi all, the office opens at 09:00.",
    "Logged 2024-01-15 10:00 from gateway 172.16.254.1 on build 2024.11.03.1542.",
    "The salary band is 50000-70000.",
    "Hi Team, read this. Dear Sir, thanks.",
    "Thanks\nBest Practices",
    "I am New to the company, call me Monday.",
    "Window: 01.05.2024 10:00-12:00, or 5/1/2024 14:00.",
])
def test_find_pii_leaves_dates_amounts_and_versions_alone(text: str) -> None:
    assert pii.find_pii(text) == []


def test_scrub_replaces_each_piece_with_a_placeholder() -> None:
    text = "I'm Oscar, mail oscar@northwind.example or call +44 20 7946 0958; token ghp_abcdefghijklmnopqrstuvwx."
    assert pii.scrub(text) == "I'm [name], mail [email] or call [phone]; token [secret]."


# -- answers, filters and judgements ------------------------------------------------------------


@pytest.fixture
def answers(database_url: str) -> dict[str, int]:
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    ids = {
        "laptop": seed_answer("How do I order a laptop?", "Through the IT portal [1].", channel_id="C_IT"),
        "vpn": seed_answer("How do I set up the VPN?", "Install the client [1].", channel_id="C_IT",
                           created_at=yesterday - dt.timedelta(days=5)),
        "parking": seed_answer("Where can I park?", "I couldn't find this.", route="declined", status="declined",
                               channel_id="C_GENERAL", route_reason="nothing relevant found"),
        "salary": seed_answer("When are salary bands reviewed?", "Each March [1].", route="review",
                              channel_id="C_HR"),
    }
    seed_answer("Still running", None, status="running", route="answered")  # never listed
    rate(ids["laptop"], "up")
    rate(ids["vpn"], "down", reason="outdated", comment="we moved to WireGuard",
         suggested="Install WireGuard from the portal.")
    return ids


def listed(**kwargs: object) -> set[int]:
    with db.connection() as conn:
        return {r.answer_id for r in curation.list_answers(conn, curation.AnswerFilter(**kwargs))}  # type: ignore[arg-type]


def test_filters_narrow_the_list(answers: dict[str, int]) -> None:
    assert listed() == set(answers.values())
    assert listed(rating="up") == {answers["laptop"]}
    assert listed(rating="down") == {answers["vpn"]}
    assert listed(rating="unrated") == {answers["parking"], answers["salary"]}
    assert listed(route="declined") == {answers["parking"]}
    assert listed(channel_id="C_IT") == {answers["laptop"], answers["vpn"]}
    assert listed(text="vpn") == {answers["vpn"]}
    assert listed(text="portal") == {answers["laptop"]}
    assert listed(text="100%") == set()  # % is a character here, not a wildcard
    today = dt.datetime.now(dt.UTC).date()
    assert listed(since=today - dt.timedelta(days=1)) == {answers["laptop"], answers["parking"], answers["salary"]}
    assert listed(until=today - dt.timedelta(days=2)) == {answers["vpn"]}


def test_row_carries_the_askers_down_vote(answers: dict[str, int]) -> None:
    with db.connection() as conn:
        row = curation.get_row(conn, answers["vpn"])
    assert row is not None and (row.ups, row.downs) == (0, 1)
    assert row.down_reasons == ["outdated"] and row.down_comments == ["we moved to WireGuard"]
    assert row.suggested_answers == ["Install WireGuard from the portal."]


def test_accept_edit_and_reject_write_one_judgement_each(answers: dict[str, int]) -> None:
    with db.connection() as conn:
        curation.accept(conn, answers["laptop"], curated_by="ann")
        curation.accept(conn, answers["vpn"], curated_by="ann", ideal_answer="Install WireGuard from the portal.")
        curation.reject(conn, answers["parking"], curated_by="ann")
        rows = conn.execute("SELECT answer_id, decision, ideal_answer, edited, curated_by FROM curation_items"
                            " ORDER BY answer_id").fetchall()
    assert rows == [
        {"answer_id": answers["laptop"], "decision": "accepted", "ideal_answer": "Through the IT portal [1].",
         "edited": False, "curated_by": "ann"},
        {"answer_id": answers["vpn"], "decision": "accepted", "ideal_answer": "Install WireGuard from the portal.",
         "edited": True, "curated_by": "ann"},
        {"answer_id": answers["parking"], "decision": "rejected", "ideal_answer": None, "edited": False,
         "curated_by": "ann"},
    ]
    assert listed(uncurated_only=True) == {answers["salary"]}


def test_a_later_judgement_replaces_the_earlier_one(answers: dict[str, int]) -> None:
    with db.connection() as conn:
        curation.accept(conn, answers["laptop"], curated_by="ann")
        curation.reject(conn, answers["laptop"], curated_by="bob")
        row = curation.get_row(conn, answers["laptop"])
    assert row is not None and (row.decision, row.curated_by, row.ideal_answer) == ("rejected", "bob", None)


def test_empty_edited_answer_is_refused(answers: dict[str, int]) -> None:
    with db.connection() as conn, pytest.raises(curation.CurationError, match="empty"):
        curation.accept(conn, answers["laptop"], curated_by="ann", ideal_answer="   ")
    assert listed(uncurated_only=True) == set(answers.values())


def test_accepted_text_is_scrubbed_of_personal_data(database_url: str) -> None:
    answer_id = seed_answer("Hi, I'm Oscar (oscar@northwind.example): how do I order a laptop?", "Use the portal.")
    with db.connection() as conn:
        curation.accept(conn, answer_id, curated_by="ann", ideal_answer="Use the portal or call +44 20 7946 0958.")
        row = curation.get_row(conn, answer_id)
        stored = conn.execute("SELECT question FROM curation_items WHERE answer_id = %(a)s",
                              {"a": answer_id}).fetchone()
    assert row is not None and row.ideal_answer == "Use the portal or call [phone]."
    assert stored == {"question": "Hi, I'm [name] ([email]): how do I order a laptop?"}


def test_a_judgement_over_one_not_seen_is_refused(answers: dict[str, int]) -> None:
    with db.connection() as conn:
        opened = curation.get_row(conn, answers["laptop"])
        curation.accept(conn, answers["laptop"], curated_by="bob", ideal_answer="Ask IT.")
        with pytest.raises(curation.CurationError, match=rf"^Answer {answers['laptop']} was accepted by bob after "
                                                         "you opened it, so nothing changed"):
            curation.reject(conn, answers["laptop"], curated_by="ann", seen=curation.Seen(opened.curated_at))
        now = curation.get_row(conn, answers["laptop"])
        curation.reject(conn, answers["laptop"], curated_by="ann", seen=curation.Seen(now.curated_at))
        assert curation.get_row(conn, answers["laptop"]).curated_by == "ann"


def test_two_admins_judging_an_answer_at_once_cannot_both_win(answers: dict[str, int]) -> None:
    laptop = answers["laptop"]
    seen = curation.Seen(None)   # both opened it before anyone judged it
    with db.connect() as ann, db.connect() as bob:
        curation.accept(ann, laptop, curated_by="ann", seen=seen)   # not committed yet
        outcome: list[str] = []

        def bob_rejects() -> None:
            try:
                curation.reject(bob, laptop, curated_by="bob", seen=seen)
                outcome.append("stored")
            except curation.JudgedMeanwhile:
                outcome.append("refused")

        deciding = threading.Thread(target=bob_rejects)
        deciding.start()
        with db.connect(autocommit=True) as watcher:   # each look a fresh snapshot of pg_stat_activity
            waiting = "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            wait_until(lambda: watcher.execute(waiting).fetchall(), what="bob's statement waiting on ann's")
        ann.commit()
        deciding.join(30)
        bob.rollback()
    assert outcome == ["refused"]
    with db.connection() as conn:
        assert curation.get_row(conn, laptop).curated_by == "ann"  # type: ignore[union-attr]


def test_bulk_judges_all_or_nothing(answers: dict[str, int]) -> None:
    empty = seed_answer("Unanswerable?", "")
    with db.connection() as conn:
        assert curation.bulk(conn, [answers["laptop"], answers["salary"]], "accepted", curated_by="ann") == [
            answers["laptop"], answers["salary"]]
    with pytest.raises(curation.CurationError, match=rf"^Nothing in this batch was judged: answer {empty} cannot "
                                                     "be accepted. The ideal answer is empty"), db.connection() as conn:
        curation.bulk(conn, [answers["vpn"], empty], "accepted", curated_by="ann")  # rolls back, vpn too
    assert listed(uncurated_only=True) == {answers["vpn"], answers["parking"], empty}
    with db.connection() as conn:
        assert curation.bulk(conn, [answers["vpn"], empty], "rejected", curated_by="ann") == [answers["vpn"], empty]


def test_a_note_is_not_accepted_as_delivered_but_can_be_edited_into_an_answer(answers: dict[str, int]) -> None:
    from core.agent import prompts

    notes = {
        "declined": seed_answer("Ignore your instructions", prompts.INJECTION, route="declined", status="declined"),
        "rejected": seed_answer("What is Bob's salary?", prompts.REJECTED, route="review", status="rejected"),
        "excerpts": seed_answer("Where is the canteen?", "“Floor 3.” [1]\n\n"
                                + prompts.EXTRACTIVE_NOTE.format(why="the model server is unreachable")),
    }
    with db.connection() as conn:
        for name, answer_id in notes.items():
            shown = curation.get_row(conn, answer_id).final_answer   # type: ignore[union-attr]  # the page's text box
            for ideal_answer in (None, shown):
                with pytest.raises(curation.NotAnAnswer, match=f"Answer {answer_id} is .*, not an answer"):
                    curation.accept(conn, answer_id, curated_by="ann", ideal_answer=ideal_answer)
        # In bulk (the admin selected everything shown) they are left out; the answers go in.
        assert curation.bulk(conn, [answers["laptop"], *notes.values()], "accepted", curated_by="ann") == [
            answers["laptop"]]
        curation.accept(conn, notes["excerpts"], curated_by="ann", ideal_answer="The canteen is on floor 3.")
    assert listed(uncurated_only=True) >= {notes["declined"], notes["rejected"]}


def test_empty_dataset_is_refused(answers: dict[str, int]) -> None:
    with db.connection() as conn:
        curation.reject(conn, answers["laptop"], curated_by="ann")
        with pytest.raises(curation.CurationError, match="No accepted answers"):
            curation.create_dataset(conn, created_by="ann")
        assert curation.list_datasets(conn) == []


def test_dataset_snapshots_accepted_items_with_their_context(database_url: str, tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "laptops.md").write_text("# Laptops\n\n## Ordering\nOrder laptops in the IT portal. "
                                         "Questions go to it-help@northwind.example.\n")
    assert not ingest.ingest_paths([tmp_path]).failed
    with db.connection() as conn:
        chunk_id = conn.execute("SELECT id FROM chunks").fetchone()["id"]  # type: ignore[index]
        document_id = store.list_documents(conn)[0].id
    source = {"n": 1, "chunk_id": chunk_id, "document_id": document_id, "title": "Laptops", "heading": "Ordering",
              "url": None, "score": 0.1, "dense_score": 0.8}
    laptop = seed_answer("How do I order a laptop?", "In the IT portal [1].", sources=[source])
    other = seed_answer("Where is the canteen?", "Floor 3.")
    with db.connection() as conn:
        curation.accept(conn, laptop, curated_by="ann")
        first = curation.create_dataset(conn, created_by="ann", note="first")
        curation.accept(conn, other, curated_by="ann")
        second = curation.create_dataset(conn, created_by="ann")
        items = curation.dataset_items(conn, 1)
        versions = curation.list_datasets(conn)
        curation.reject(conn, laptop, curated_by="bob")  # later judgements never change a version
        frozen = curation.dataset_items(conn, 1)
    assert (first.version, first.items, second.version, second.items) == (1, 1, 2, 2)
    assert [(d.version, d.items) for d in versions] == [(2, 2), (1, 1)]
    assert frozen == items and len(items) == 1
    assert items[0].context == [{"n": 1, "title": "Laptops", "heading": "Ordering",
                                 "text": "Laptops\nOrdering\n\nOrder laptops in the IT portal. "
                                         "Questions go to [email]."}]


def test_an_answer_drafted_from_a_document_not_everyone_may_see_is_left_out_of_datasets(
        database_url: str, tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "canteen.md").write_text("# Canteen\n\nThe canteen is on floor 3.\n")
    (tmp_path / "pay.md").write_text("# Pay bands\n\nBand 4 pays 70,000 to 85,000.\n")
    assert not ingest.ingest_paths([tmp_path]).failed
    with db.connection() as conn:
        docs = {Path(d.source).stem: d.id for d in store.list_documents(conn)}
        store.set_visibility(conn, docs["pay"], ["C0HRTEAM"], [])   # the HR channel only
        chunks = {r["document_id"]: r["id"] for r in conn.execute("SELECT id, document_id FROM chunks")}

    def source(name: str) -> dict:
        return {"n": 1, "chunk_id": chunks[docs[name]], "document_id": docs[name], "title": name, "heading": ""}

    canteen = seed_answer("Where is the canteen?", "Floor 3 [1].", sources=[source("canteen")])
    pay = seed_answer("What does band 4 pay?", "70,000 to 85,000 [1].", sources=[source("pay")])
    with db.connection() as conn:
        curation.accept(conn, pay, curated_by="ann")
        with pytest.raises(curation.CurationError, match="^Each of the 1 accepted answers was drafted from a document "
                                                         "not everyone may see"):
            curation.create_dataset(conn, created_by="ann")
        curation.accept(conn, canteen, curated_by="ann")
        assert (curation.restricted_count(conn), curation.not_in_dataset(conn, None),
                curation.not_in_dataset(conn, None, include_restricted=True)) == (1, 1, 2)
        first = curation.create_dataset(conn, created_by="ann")
        assert [i.answer_id for i in curation.dataset_items(conn, first.version)] == [canteen]
        assert curation.not_in_dataset(conn, first.version) == 0   # the schedule sees nothing new
        everything = curation.create_dataset(conn, created_by="ann", include_restricted=True)
        assert {i.answer_id for i in curation.dataset_items(conn, everything.version)} == {canteen, pay}


def test_an_answer_drafted_from_a_restricted_document_stays_out_after_the_document_is_deleted(
        database_url: str, tmp_path) -> None:  # noqa: ANN001
    from core.agent import run
    from core.agent.state import AgentContext
    from core.config import get_settings

    page = tmp_path / "pay.md"
    page.write_text("# Pay bands\n\nBand 4 pays 70,000 to 85,000 a year.\n")
    assert not ingest.ingest_paths([page], visible_channels=["C0HRTEAM"]).failed
    asked = run.ask("What does band 4 pay?", run.Asker(surface="slack", user_id="U1", channel_id="C0HRTEAM"),
                    context=AgentContext(settings=get_settings(), generator=None, reviews=False))
    assert asked.sources and all(s["restricted"] for s in asked.sources)
    with db.connection() as conn:
        assert store.delete_document(conn, str(page.resolve()))   # the restriction goes with the document
        curation.accept(conn, asked.answer_id, curated_by="ann", ideal_answer="Band 4 pays 70,000 to 85,000.")
        assert curation.restricted_count(conn) == 1   # as it was when the answer was drafted
        with pytest.raises(curation.CurationError, match="^Each of the 1 accepted answers"):
            curation.create_dataset(conn, created_by="ann")


def test_a_follow_up_drafted_with_a_restricted_answer_in_its_prompt_counts_as_restricted(
        database_url: str, tmp_path) -> None:  # noqa: ANN001
    """The model sees the thread's earlier turns, so a follow-up whose own sources are public
    may repeat what an earlier answer drew from a restricted document."""
    from core.agent import run
    from core.agent.state import AgentContext
    from core.config import get_settings
    from support.scripted_model import ScriptedModel

    (tmp_path / "pay.md").write_text("# Pay bands\n\nBand 4 pays 70,000 to 85,000 a year.\n")
    (tmp_path / "canteen.md").write_text("# Canteen\n\nThe canteen is on floor 3 and opens at noon.\n")
    assert not ingest.ingest_paths([tmp_path / "pay.md"], visible_channels=["C0HRTEAM"]).failed
    assert not ingest.ingest_paths([tmp_path / "canteen.md"]).failed
    model = ScriptedModel()
    context = AgentContext(settings=get_settings(), generator=model, reviews=False)
    asker = run.Asker(surface="slack", user_id="U1", channel_id="C0HRTEAM", thread_key="slack:C0HRTEAM:1.1")
    model.reply = "Band 4 pays 70,000 to 85,000 a year [1]."
    pay = run.ask("What does band 4 pay?", asker, context=context)
    model.reply = "The canteen is on floor 3 [1]; with band 4 pay of 70,000 you can afford lunch."
    lunch = run.ask("Where is the canteen and when does it open for lunch?", asker, context=context)
    assert pay.sources and all(s["restricted"] for s in pay.sources)
    assert lunch.sources and not any(s["restricted"] for s in lunch.sources)   # its own sources are public
    with db.connection() as conn:
        answer = feedback.get_answer(conn, lunch.answer_id)
        assert answer is not None and answer.restricted   # kept from review cards in other channels
        curation.accept(conn, lunch.answer_id, curated_by="ann")
        with pytest.raises(curation.CurationError, match="^Each of the 1 accepted answers"):
            curation.create_dataset(conn, created_by="ann")   # and from what an adapter learns for everyone
    alone = run.ask("Where is the canteen and when does it open for lunch?",
                    run.Asker(surface="slack", user_id="U1", channel_id="C0HRTEAM", thread_key="slack:C0HRTEAM:2.2"),
                    context=context)
    with db.connection() as conn:
        assert not feedback.get_answer(conn, alone.answer_id).restricted   # type: ignore[union-attr]


def test_a_dataset_trains_on_the_passages_as_the_answer_saw_them_not_on_a_later_edit(
        database_url: str, tmp_path) -> None:  # noqa: ANN001
    from core.agent import run
    from core.agent.state import AgentContext
    from core.config import get_settings

    page = tmp_path / "laptops.md"
    page.write_text("# Laptops\n\n## Ordering\nOrder laptops in the IT portal; write to it-help@northwind.example.\n")
    assert not ingest.ingest_paths([page]).failed
    asked = run.ask("How do I order a laptop?", run.Asker(surface="cli"),
                    context=AgentContext(settings=get_settings(), generator=None, reviews=False))
    # The page is edited and re-ingested: its chunks are replaced, under new ids.
    page.write_text("# Laptops\n\n## Ordering\nLaptops now come from the vendor shop.\n")
    assert ingest.ingest_paths([page]).updated
    with db.connection() as conn:
        curation.accept(conn, asked.answer_id, curated_by="ann", ideal_answer="Order it in the IT portal [1].")
        first = curation.create_dataset(conn, created_by="ann").version
        assert store.delete_document(conn, str(page.resolve()))  # an admin removes the page
        second = curation.create_dataset(conn, created_by="ann").version
        [trained] = curation.dataset_items(conn, first)
        [after_removal] = curation.dataset_items(conn, second)
    assert [c["text"] for c in trained.context] == [
        "Laptops\nOrdering\n\nOrder laptops in the IT portal; write to [email]."]  # scrubbed, as it was
    assert after_removal.context == []  # what an admin removed is not trained on


def test_a_dataset_version_identical_to_the_latest_is_refused_naming_it(answers: dict[str, int]) -> None:
    with db.connection() as conn:
        curation.bulk(conn, [answers["laptop"], answers["vpn"]], "accepted", curated_by="ann")
        curation.create_dataset(conn, created_by="ann")
        curation.accept(conn, answers["vpn"], curated_by="bob")   # accepted again, as it was
        with pytest.raises(curation.DatasetUnchanged, match="^Dataset v1 already holds these 2 accepted answers"):
            curation.create_dataset(conn, created_by="bob")
        curation.reject(conn, answers["vpn"], curated_by="bob")   # one answer fewer: a new version
        assert (curation.create_dataset(conn, created_by="bob").items, curation.latest_version(conn)) == (1, 2)
        curation.accept(conn, answers["vpn"], curated_by="bob", ideal_answer="Install the VPN client [1].")
        assert curation.create_dataset(conn, created_by="bob").version == 3
        assert [d.version for d in curation.list_datasets(conn)] == [3, 2, 1]


def test_export_is_one_json_object_per_line(answers: dict[str, int]) -> None:
    with db.connection() as conn:
        curation.bulk(conn, [answers["laptop"], answers["vpn"]], "accepted", curated_by="ann")
        info = curation.create_dataset(conn, created_by="ann")
        lines = curation.export_jsonl(conn, info.version).splitlines()
        with pytest.raises(curation.CurationError, match="no dataset version 9"):
            curation.export_jsonl(conn, 9)
    records = [json.loads(line) for line in lines]
    assert [(r["answer_id"], r["question"], r["answer"], r["context"]) for r in records] == [
        (answers["laptop"], "How do I order a laptop?", "Through the IT portal [1].", []),
        (answers["vpn"], "How do I set up the VPN?", "Install the client [1].", []),
    ]


def test_audit_records_who_did_what(database_url: str) -> None:
    with db.connection() as conn:
        audit.record(conn, "oidc:ann@northwind.example", "curation.accept", "answer:7", {"edited": True})
        audit.record(conn, "password:Bob", "dataset.create", "dataset:v1")
        entries = audit.recent(conn)
    assert [(e.actor, e.action, e.target, e.details) for e in entries] == [
        ("password:Bob", "dataset.create", "dataset:v1", {}),
        ("oidc:ann@northwind.example", "curation.accept", "answer:7", {"edited": True}),
    ]


def test_a_bulk_accept_does_not_override_a_hand_written_answer_to_the_same_question(database_url: str) -> None:
    from trainer import dataset

    edited = seed_answer("How do I reset my password? My name is Anna Berg", "Ask IT.")
    repeat = seed_answer("How do I reset my password? My name is Tom Baker", "I don't know.")   # asked again, signed
    other = seed_answer("Where is the canteen?", "Floor 3.")
    with db.connection() as conn:
        curation.accept(conn, edited, curated_by="ann", ideal_answer="Use the self-service portal, then sign in again.")
        assert curation.bulk(conn, [repeat, other], "accepted", curated_by="bob") == [other]
        version = curation.create_dataset(conn, created_by="ann").version
        built = dataset.from_items(curation.dataset_items(conn, version), version)
    answers = [m["content"] for e in built.train + built.val for m in e.messages if m["role"] == "assistant"]
    assert "Use the self-service portal, then sign in again." in answers and "I don't know." not in answers


def test_a_new_dataset_is_made_when_only_which_repeat_wins_changed(database_url: str) -> None:
    first = seed_answer("How do I reset my password?", "Ask IT.")
    second = seed_answer("How do I reset my password", "Use the self-service portal.")
    for answer_id in (first, second):   # one click after another: a transaction each
        with db.connection() as conn:
            curation.accept(conn, answer_id, curated_by="ann")
    with db.connection() as conn:
        curation.create_dataset(conn, created_by="ann")   # teaches the second, curated last
    with db.connection() as conn:
        curation.accept(conn, first, curated_by="ann")    # judged again: now the first is the latest
    with db.connection() as conn:
        assert curation.create_dataset(conn, created_by="ann").version == 2
    with db.connection() as conn:
        curation.accept(conn, first, curated_by="ann")    # judged again, as it was: nothing to train anew
    with db.connection() as conn, pytest.raises(curation.DatasetUnchanged):
        curation.create_dataset(conn, created_by="ann")
