"""The Curation page: filter, open, judge (one by one and in bulk), make and export datasets."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from streamlit.runtime.media_file_manager import MediaFileManager

from dashboard_helpers import audit_rows, curation_rows, open_page, rate, seed_answer, table, texts


@pytest.fixture
def answers(dashboard_db: str) -> dict[str, int]:
    ids = {
        "vpn": seed_answer("How do I set up the VPN?", "Install the client [1].", channel_id="C_IT",
                           created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=10)),
        "parking": seed_answer("Where can I park?", "I couldn't find this.", route="declined", status="declined",
                               channel_id="C_GENERAL"),
        "laptop": seed_answer("Hi, I'm Oscar (oscar@northwind.example): how do I order a laptop?",
                              "Through the IT portal [1].", channel_id="C_IT"),
    }
    rate(ids["vpn"], "down", reason="outdated", comment="we use WireGuard now",
         suggested="Install WireGuard from the portal.")
    rate(ids["laptop"], "up")
    return ids


def shown_ids(at) -> list[int]:  # noqa: ANN001
    shown = table(at, "question", "judged")
    return [] if shown is None else shown["id"].tolist()


def test_filters_narrow_the_table(answers: dict[str, int]) -> None:
    at = open_page("curation")
    assert shown_ids(at) == [answers["laptop"], answers["parking"], answers["vpn"]]
    at.selectbox(key="cur_rating").select("down").run()
    assert shown_ids(at) == [answers["vpn"]]
    at.selectbox(key="cur_rating").select("any")
    at.selectbox(key="cur_channel").select("C_IT").run()
    assert shown_ids(at) == [answers["laptop"], answers["vpn"]]
    at.text_input(key="cur_text").input("laptop").run()
    assert shown_ids(at) == [answers["laptop"]]
    at.text_input(key="cur_text").input("")
    at.selectbox(key="cur_channel").select("any")
    at.selectbox(key="cur_route").select("declined").run()
    assert shown_ids(at) == [answers["parking"]]
    at.selectbox(key="cur_route").select("any")
    today = dt.date.today()
    at.date_input(key="cur_dates").set_value((today - dt.timedelta(days=1), today)).run()
    assert shown_ids(at) == [answers["laptop"], answers["parking"]]


def test_detail_shows_votes_suggestion_and_highlights_personal_data(answers: dict[str, int]) -> None:
    at = open_page("curation")
    page = texts(at)
    assert ":red-background[oscar\\@northwind\\.example]" in page and ":red-background[Oscar]" in page
    assert at.dataframe[0].value.set_index("id").loc[answers["laptop"], "personal data"] == "⚠️"
    at.selectbox(key="cur_open").select(answers["vpn"]).run()
    page = texts(at)
    assert "👎 reason: **outdated**" in page and "we use WireGuard now" in page
    assert "Install WireGuard from the portal" in page


def test_accept_as_delivered_writes_curation_and_audit_rows(answers: dict[str, int]) -> None:
    at = open_page("curation")
    at.button(key="cur_accept").click().run()
    assert not at.error and f"Answer #{answers['laptop']}: accepted." in texts(at)
    [row] = curation_rows()
    assert row["answer_id"] == answers["laptop"] and row["decision"] == "accepted"
    assert row["question"] == "Hi, I'm [name] ([email]): how do I order a laptop?"  # scrubbed
    assert row["ideal_answer"] == "Through the IT portal [1]." and row["curated_by"].startswith("local:")
    [entry] = audit_rows()
    assert entry["action"] == "curation.accept" and entry["target"] == f"answer:{answers['laptop']}"
    assert entry["actor"] == row["curated_by"]


def test_edit_into_the_ideal_answer_and_accept(answers: dict[str, int]) -> None:
    at = open_page("curation")
    at.selectbox(key="cur_open").select(answers["vpn"]).run()
    at.text_area(key=f"cur_ideal_{answers['vpn']}").input("Install WireGuard; ask it-help@northwind.example.")
    at.button(key="cur_accept_edit").click().run()
    assert not at.error
    [row] = curation_rows()
    assert (row["answer_id"], row["decision"], row["edited"]) == (answers["vpn"], "accepted", True)
    assert row["ideal_answer"] == "Install WireGuard; ask [email]."
    assert [e["action"] for e in audit_rows()] == ["curation.edit"]
    assert at.text_area(key=f"cur_ideal_{answers['vpn']}").value == "Install WireGuard; ask [email]."   # as stored
    at.button(key="cur_accept_edit").click().run()   # accepted again as the box shows it: no "you changed it"
    assert not at.error


def test_an_ideal_answer_an_earlier_edit_stored_is_kept_or_dropped_as_the_buttons_say(
        answers: dict[str, int]) -> None:
    at = open_page("curation")
    at.selectbox(key="cur_open").select(answers["vpn"]).run()
    at.text_area(key=f"cur_ideal_{answers['vpn']}").input("Install WireGuard from the portal.")
    at.button(key="cur_accept_edit").click().run()
    assert ("The box shows the ideal answer local\\:root stored: Accept edited answer keeps it, "
            "Accept as delivered goes back to the answer as delivered.") in [c.value for c in at.caption]
    at.button(key="cur_accept_edit").click().run()  # the edit is what the box shows: accepted again, kept
    assert not at.error
    [row] = curation_rows()
    assert (row["ideal_answer"], row["edited"]) == ("Install WireGuard from the portal.", True)
    at.button(key="cur_accept").click().run()   # another admin thinks the delivered answer was better
    assert not at.error
    [row] = curation_rows()
    assert row["edited"] is False and row["ideal_answer"] != "Install WireGuard from the portal."


def test_accept_as_delivered_refuses_an_edited_ideal_answer_and_stores_nothing(answers: dict[str, int]) -> None:
    at = open_page("curation")
    at.text_area(key=f"cur_ideal_{answers['laptop']}").input("Order it in the IT portal under Hardware.")
    at.button(key="cur_accept").click().run()
    assert [e.value for e in at.error] == [
        "You changed the text: use Accept edited answer to keep your edit, or undo it to accept the answer "
        "as delivered."]
    assert curation_rows() == [] and audit_rows() == []


def test_empty_edited_answer_is_refused_and_nothing_changes(answers: dict[str, int]) -> None:
    at = open_page("curation")
    at.text_area(key=f"cur_ideal_{answers['laptop']}").input("   ")
    at.button(key="cur_accept_edit").click().run()
    assert [e.value for e in at.error] == [
        "The ideal answer is empty: write the answer you want the model to learn."]
    assert curation_rows() == [] and audit_rows() == []


def test_a_judgement_made_by_someone_else_after_opening_is_not_overwritten_and_the_edit_is_kept(
        answers: dict[str, int]) -> None:
    from core import curation, db

    at = open_page("curation")
    at.selectbox(key="cur_open").select(answers["vpn"]).run()
    box = f"cur_ideal_{answers['vpn']}"
    at.text_area(key=box).input("Install WireGuard from the portal.")
    with db.connection() as conn:   # meanwhile, in another tab
        curation.accept(conn, answers["vpn"], curated_by="bob", ideal_answer="Use the new VPN client.")
    at.button(key="cur_accept_edit").click().run()
    [warning] = [w.value for w in at.warning if "judged" in w.value]
    assert warning.startswith("bob judged this answer while you had it open (accepted; shown above), so nothing "
                              "changed. Your text is kept")
    assert "**Stored ideal answer:** Use the new VPN client" in texts(at)
    assert at.text_area(key=box).value == "Install WireGuard from the portal."   # nothing typed is lost
    [row] = curation_rows()
    assert (row["curated_by"], row["ideal_answer"]) == ("bob", "Use the new VPN client.")
    assert audit_rows() == []

    at.button(key="cur_accept_edit").click().run()   # seen now: deciding again is deliberate
    assert not at.error and not [w for w in at.warning if "judged" in w.value]
    [row] = curation_rows()
    assert row["ideal_answer"] == "Install WireGuard from the portal." and row["curated_by"].startswith("local:")
    at.button(key="cur_reject").click().run()   # and the admin's own judgement never blocks them
    assert not [w for w in at.warning if "judged" in w.value] and curation_rows()[0]["decision"] == "rejected"


def test_judged_since_the_page_last_showed_it_is_said_without_a_click_and_not_after_ones_own_bulk_action(
        answers: dict[str, int]) -> None:
    from core import curation, db

    at = open_page("curation")
    at.selectbox(key="cur_open").select(answers["vpn"]).run()
    with db.connection() as conn:
        curation.reject(conn, answers["vpn"], curated_by="bob")
    at.checkbox(key="cur_uncurated").uncheck().run()   # any other rerun of the page
    assert [w.value for w in at.warning if "judged" in w.value] == [
        "bob judged this answer while you had it open (rejected; shown above), your text is kept."]
    at.multiselect(key="cur_bulk").set_value([answers["laptop"]]).run()
    at.selectbox(key="cur_open").select(answers["laptop"]).run()
    at.button(key="bulk_accept").click().run()
    assert "Accepted 1 answer." in texts(at) and not [w for w in at.warning if "judged" in w.value]


def test_reject_keeps_the_answer_out(answers: dict[str, int]) -> None:
    at = open_page("curation")
    at.selectbox(key="cur_open").select(answers["parking"]).run()
    at.button(key="cur_reject").click().run()
    [row] = curation_rows()
    assert (row["answer_id"], row["decision"], row["ideal_answer"]) == (answers["parking"], "rejected", None)
    assert [e["action"] for e in audit_rows()] == ["curation.reject"]
    at.checkbox(key="cur_uncurated").check().run()
    assert shown_ids(at) == [answers["laptop"], answers["vpn"]]


def test_bulk_accept_and_reject(answers: dict[str, int]) -> None:
    at = open_page("curation")
    at.multiselect(key="cur_bulk").set_value([answers["laptop"], answers["vpn"]]).run()
    at.button(key="bulk_accept").click().run()
    assert "Accepted 2 answers." in texts(at)
    at.multiselect(key="cur_bulk").set_value([answers["parking"]]).run()
    at.button(key="bulk_reject").click().run()
    assert {(r["answer_id"], r["decision"]) for r in curation_rows()} == {
        (answers["laptop"], "accepted"), (answers["vpn"], "accepted"), (answers["parking"], "rejected")}
    bulk = [e for e in audit_rows() if e["action"] == "curation.accept"]
    assert bulk[0]["details"] == {"answer_ids": [answers["laptop"], answers["vpn"]]}


def test_bulk_actions_keep_an_edited_ideal_answer_and_a_rejection(answers: dict[str, int]) -> None:
    at = open_page("curation")
    at.selectbox(key="cur_open").select(answers["vpn"]).run()
    at.text_area(key=f"cur_ideal_{answers['vpn']}").input("Install WireGuard from the portal.")
    at.button(key="cur_accept_edit").click().run()
    at.selectbox(key="cur_open").select(answers["parking"]).run()
    at.button(key="cur_reject").click().run()
    at.multiselect(key="cur_bulk").set_value([answers["laptop"], answers["parking"], answers["vpn"]]).run()
    at.button(key="bulk_accept").click().run()
    assert ("Accepted 1 answer. Skipped 2: already judged (bulk actions leave a decision and ideal answer as "
            "they are), a note rather than an answer (a decline, a rejection, quoted excerpts), or a repeat of a "
            "question whose ideal answer someone wrote by hand (it would replace that answer); open one to "
            "change it.") in texts(at)
    assert {r["answer_id"]: (r["decision"], r["ideal_answer"], r["edited"]) for r in curation_rows()} == {
        answers["vpn"]: ("accepted", "Install WireGuard from the portal.", True),
        answers["parking"]: ("rejected", None, False),
        answers["laptop"]: ("accepted", "Through the IT portal [1].", False)}
    assert audit_rows()[-1]["details"] == {"answer_ids": [answers["laptop"]],
                                           "skipped": [answers["parking"], answers["vpn"]]}
    at.multiselect(key="cur_bulk").set_value([answers["vpn"]]).run()
    at.button(key="bulk_reject").click().run()  # nor does a bulk reject undo the edited answer
    assert "Rejected 0 answers. Skipped 1: already judged" in texts(at)
    assert {r["answer_id"]: r["decision"] for r in curation_rows()}[answers["vpn"]] == "accepted"


def test_dataset_versions_are_made_counted_and_exported(answers: dict[str, int]) -> None:
    at = open_page("curation")
    at.button(key="ds_make").click().run()
    assert [e.value for e in at.error] == [
        "No accepted answers yet: accept some in Curation before making a dataset."]
    at.button(key="cur_accept").click().run()
    at.text_input(key="ds_note").input("first cut")
    at.button(key="ds_make").click().run()
    assert "Dataset v1 made with 1 answer." in texts(at)
    versions = table(at, "version", "items")
    assert versions[["version", "items", "note"]].to_dict("records") == [{"version": 1, "items": 1, "note": "first cut"}]
    download = at.get("download_button")[0]
    assert download.proto.label == "Download v1 as JSONL"
    assert "dataset.create" in [e["action"] for e in audit_rows()]


def test_download_exports_the_selected_version_only_when_clicked(answers: dict[str, int],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from core import curation, db

    with db.connection() as conn:
        curation.accept(conn, answers["laptop"], curated_by="ann")
        curation.create_dataset(conn, created_by="ann")
        curation.accept(conn, answers["vpn"], curated_by="ann")
        curation.create_dataset(conn, created_by="ann")
    # What the page hands Streamlit to make the file on a click (Streamlit serves what it returns).
    made: list = []
    add_deferred = MediaFileManager.add_deferred
    monkeypatch.setattr(MediaFileManager, "add_deferred",
                        lambda self, data, *a, **kw: made.append(data) or add_deferred(self, data, *a, **kw))
    at = open_page("curation")
    at.selectbox(key="ds_export").select(1).run()
    [download] = at.get("download_button")
    assert download.proto.label == "Download v1 as JSONL" and download.proto.url == ""  # nothing made yet
    assert "dataset.export" not in [e["action"] for e in audit_rows()]
    records = [json.loads(line) for line in made[-1]().splitlines()]
    assert [(r["answer_id"], r["question"], r["answer"]) for r in records] == [
        (answers["laptop"], "Hi, I'm [name] ([email]): how do I order a laptop?", "Through the IT portal [1].")]
    export = audit_rows()[-1]
    assert (export["action"], export["target"]) == ("dataset.export", "dataset:v1")
    assert export["actor"].startswith("local:")
