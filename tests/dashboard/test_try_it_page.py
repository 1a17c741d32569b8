"""The Try it page: ask the real agent as a chosen user and channel, see the outcome, rate it."""
from __future__ import annotations

from pathlib import Path

from core import db, feedback
from dashboard_helpers import audit_rows, open_page, texts


def ask(question: str, user: str = "U_ANN", channel: str = "C_IT"):  # noqa: ANN201
    at = open_page("try_it")
    at.text_input(key="tryit_user").input(user)
    at.text_input(key="tryit_channel").input(channel)
    at.text_area(key="tryit_question").input(question)
    at.button(key="tryit_ask").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def only_answer() -> feedback.Answer:
    with db.connection() as conn:
        [row] = conn.execute("SELECT id FROM answers").fetchall()
        return feedback.get_answer(conn, row["id"])  # type: ignore[return-value]


def test_asking_shows_answer_sources_route_and_timings(handbook: Path) -> None:
    at = ask("How do I get a new laptop?")
    answer = only_answer()
    assert (answer.surface, answer.user_id, answer.channel_id) == ("dashboard", "U_ANN", "C_IT")
    page = texts(at)
    assert f"answer #{answer.id}" in page and f"**Route:** {answer.route}" in page
    assert "Laptop requests › Getting a new laptop" in page  # the source, as listed
    steps = next(d.value for d in at.dataframe if "step" in d.value.columns)
    assert {"guard", "retrieve", "total"} <= set(steps["step"])
    assert [e["action"] for e in audit_rows()] == ["tryit.ask"]


def test_rating_records_a_vote_like_slack(handbook: Path) -> None:
    at = ask("How do I get a new laptop?")
    at.button(key="tryit_up").click().run()
    assert "Thanks: 👍 recorded." in texts(at)
    answer = only_answer()
    with db.connection() as conn:
        assert [(f.user_id, f.rating) for f in feedback.ratings_for(conn, answer.id)] == [("U_ANN", "up")]
    at.selectbox(key=f"tryit_reason_{answer.id}").select("incomplete")
    at.text_area(key=f"tryit_suggested_{answer.id}").input("Order it in the IT portal; it takes five days.")
    at.text_input(key="tryit_user").input("U_SOMEONE_ELSE")   # the box changed after asking
    at.button[-1].click().run()  # the 👎 form's submit button
    with db.connection() as conn:
        [vote] = feedback.ratings_for(conn, answer.id)
    assert (vote.user_id, vote.rating, vote.reason, vote.suggested_answer) == (
        "U_ANN", "down", "incomplete", "Order it in the IT portal; it takes five days.")

    at.text_input(key="tryit_user").input("U_ANN")
    at.text_area(key="tryit_question").input("How do I set up the VPN?")
    at.button(key="tryit_ask").click().run()
    with db.connection() as conn:
        second = conn.execute("SELECT max(id) AS id FROM answers").fetchone()["id"]  # type: ignore[index]
    assert second != answer.id
    assert at.text_area(key=f"tryit_suggested_{second}").value == ""   # the first answer's text stays with it


def test_empty_question_is_refused_without_asking(handbook: Path) -> None:
    at = open_page("try_it")
    at.button(key="tryit_ask").click().run()
    assert [e.value for e in at.error] == ["Type a question first."]
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM answers").fetchone()["n"] == 0  # type: ignore[index]


def test_a_follow_up_as_another_user_or_channel_starts_its_own_conversation(handbook: Path) -> None:
    at = ask("How do I get a new laptop?", user="U_ANN", channel="C_IT")
    for user, channel in (("U_ANN", "C_IT"), ("U_BOB", "C_IT"), ("U_ANN", "C_HR")):
        at.text_input(key="tryit_user").input(user)
        at.text_input(key="tryit_channel").input(channel)
        at.text_area(key="tryit_question").input("And how long does that take?")
        at.button(key="tryit_ask").click().run()
    with db.connection() as conn:
        threads = [r["thread_key"] for r in conn.execute("SELECT thread_key FROM answers ORDER BY id")]
    # Ann's follow-up in C_IT continues her thread; Bob's, and Ann's in another channel, see none of it.
    assert threads[1] == threads[0] and len({threads[0], threads[2], threads[3]}) == 3
