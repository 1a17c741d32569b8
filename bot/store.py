"""The bot's own records: Slack events seen, where each answer's messages live in Slack, and
the questions it has yet to answer.

Every function takes a connection and never commits: the caller owns the transaction."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any

import psycopg


@dataclass(frozen=True)
class SlackAnswer:
    """One question asked in Slack and the bot's messages about it."""

    id: int
    channel_id: str
    question_ts: str
    thread_ts: str
    user_id: str
    event_id: str | None
    answer_id: int | None
    reply_ts: str | None
    review_channel_id: str | None
    review_ts: str | None
    delivered_ts: str | None
    deleted_at: dt.datetime | None = None   # when the asker deleted the question


_COLUMNS = ", ".join(f"s.{f.name}" for f in fields(SlackAnswer))


def _one(row: dict[str, Any] | None) -> SlackAnswer | None:
    return None if row is None else SlackAnswer(**row)


def record_event(conn: psycopg.Connection, event_id: str, event_type: str) -> bool:
    """Note an event id; False when it was seen before (Slack retried it)."""
    cur = conn.execute(
        "INSERT INTO slack_events (event_id, event_type) VALUES (%(id)s, %(type)s)"
        " ON CONFLICT (event_id) DO NOTHING",
        {"id": event_id, "type": event_type},
    )
    return bool(cur.rowcount)


def forget_events(conn: psycopg.Connection, older_than_s: float) -> int:
    """Drop event ids older than Slack's retry window; returns how many."""
    cur = conn.execute(
        "DELETE FROM slack_events WHERE received_at < now() - make_interval(secs => %(s)s)",
        {"s": older_than_s},
    )
    return cur.rowcount


def open_question(conn: psycopg.Connection, *, channel_id: str, question_ts: str, thread_ts: str,
                  user_id: str, event_id: str | None, question: str, owner: str) -> int | None:
    """Start the record of a question, in progress in the bot process `owner` (which is noted
    alive); None when this message was already taken up."""
    note_alive(conn, owner)
    row = conn.execute(
        "INSERT INTO slack_answers (channel_id, question_ts, thread_ts, user_id, event_id, question, owner)"
        " VALUES (%(c)s, %(q)s, %(t)s, %(u)s, %(e)s, %(text)s, %(owner)s)"
        " ON CONFLICT (channel_id, question_ts) DO NOTHING RETURNING id",
        {"c": channel_id, "q": question_ts, "t": thread_ts, "u": user_id, "e": event_id, "text": question,
         "owner": owner},
    ).fetchone()
    return None if row is None else int(row["id"])


def finish_question(conn: psycopg.Connection, slack_answer_id: int, owner: str) -> None:
    """`owner`'s run for this question ended (answered, apologised for): nothing to take over.
    (A process that was only slow leaves alone a question another has taken over.)"""
    conn.execute("UPDATE slack_answers SET question = NULL, owner = NULL WHERE id = %(id)s AND owner = %(o)s",
                 {"id": slack_answer_id, "o": owner})


def keep_waiting(conn: psycopg.Connection, slack_answer_id: int) -> None:
    """The bot is stopping before it began this question (or began showing an answer taken over):
    it waits for the next bot to start."""
    conn.execute("UPDATE slack_answers SET owner = NULL WHERE id = %(id)s", {"id": slack_answer_id})


def note_alive(conn: psycopg.Connection, process: str) -> None:
    conn.execute("INSERT INTO bot_processes (id) VALUES (%(p)s) ON CONFLICT (id) DO UPDATE SET seen_at = now()",
                 {"p": process})


def release_orphans(conn: psycopg.Connection, silent_for_s: float) -> list[int | None]:
    """Questions in progress (being answered, or the answer being shown) in a bot process not
    noted alive for `silent_for_s` (killed, out of memory) go back to waiting; returns the
    answers recorded for them (None: killed before the agent recorded one). Forgets processes
    silent for a day."""
    conn.execute("DELETE FROM bot_processes WHERE seen_at < now() - interval '1 day'")
    rows = conn.execute(
        "UPDATE slack_answers s SET owner = NULL"
        " WHERE s.question IS NOT NULL AND s.owner IS NOT NULL AND NOT EXISTS ("
        "   SELECT 1 FROM bot_processes p WHERE p.id = s.owner"
        "   AND p.seen_at > now() - make_interval(secs => %(s)s))"
        " RETURNING s.answer_id", {"s": silent_for_s}).fetchall()
    return [r["answer_id"] for r in rows]


def take_waiting(conn: psycopg.Connection, owner: str, limit: int = 1000) -> list[tuple[SlackAnswer, str]]:
    """Claim the questions waiting for a bot, oldest first, with their text, for the bot
    process `owner`; another bot claiming at the same time takes the others."""
    rows = conn.execute(
        f"UPDATE slack_answers s SET owner = %(o)s FROM ("
        "  SELECT id FROM slack_answers WHERE question IS NOT NULL AND owner IS NULL"
        "  ORDER BY id LIMIT %(n)s FOR UPDATE SKIP LOCKED) w"
        f" WHERE s.id = w.id RETURNING {_COLUMNS}, s.question", {"n": limit, "o": owner}).fetchall()
    taken = [(SlackAnswer(**{k: v for k, v in r.items() if k != "question"}), r["question"]) for r in rows]
    return sorted(taken, key=lambda t: t[0].id)


def set_reply(conn: psycopg.Connection, slack_answer_id: int, reply_ts: str) -> None:
    conn.execute("UPDATE slack_answers SET reply_ts = %(ts)s WHERE id = %(id)s",
                 {"ts": reply_ts, "id": slack_answer_id})


def link_answer(conn: psycopg.Connection, slack_answer_id: int, answer_id: int) -> None:
    conn.execute("UPDATE slack_answers SET answer_id = %(a)s WHERE id = %(id)s",
                 {"a": answer_id, "id": slack_answer_id})


def set_review_card(conn: psycopg.Connection, answer_id: int, channel_id: str, ts: str) -> None:
    """Where the review card of `answer_id` went up; its reminders count from now."""
    conn.execute("UPDATE slack_answers SET review_channel_id = %(c)s, review_ts = %(ts)s"
                 " WHERE answer_id = %(a)s", {"c": channel_id, "ts": ts, "a": answer_id})
    conn.execute("UPDATE reviews SET reminder_from = now() WHERE answer_id = %(a)s", {"a": answer_id})


def set_delivered(conn: psycopg.Connection, answer_id: int, ts: str) -> None:
    conn.execute("UPDATE slack_answers SET delivered_ts = %(ts)s WHERE answer_id = %(a)s",
                 {"ts": ts, "a": answer_id})


def take_overdue_reviews(conn: psycopg.Connection, older_than_s: float,
                         limit: int = 20) -> list[tuple[dt.datetime, SlackAnswer]]:
    """Claim (at most `limit`) pending reviews whose card has waited `older_than_s` since it
    went up or since its last reminder, starting their next interval now; rows another process
    holds (claiming too, or deciding) are skipped. Commit before posting: a reviewer's click
    must not wait on Slack. Returns when each was put to review, with where its card is."""
    rows = conn.execute(   # the locking select in a CTE: run once, so the limit holds
        "WITH due AS ("
        "   SELECT r2.id FROM reviews r2 JOIN slack_answers s2 ON s2.answer_id = r2.answer_id"
        "   WHERE r2.status = 'pending' AND s2.review_ts IS NOT NULL"
        "   AND coalesce(r2.reminder_from, r2.created_at) < now() - make_interval(secs => %(s)s)"
        "   ORDER BY r2.id LIMIT %(n)s FOR UPDATE OF r2 SKIP LOCKED)"
        " UPDATE reviews r SET reminder_from = now() FROM due, slack_answers s"
        " WHERE r.id = due.id AND s.answer_id = r.answer_id"
        f" RETURNING r.created_at AS put_to_review, {_COLUMNS}", {"s": older_than_s, "n": limit}).fetchall()
    return [(r.pop("put_to_review"), SlackAnswer(**r)) for r in rows]


def reviews_without_card(conn: psycopg.Connection) -> list[int]:
    """Pending reviews of Slack questions whose card was never posted, once the question is no
    longer in progress (a bot posts its card before it is done with it)."""
    return [int(r["id"]) for r in conn.execute(
        "SELECT r.id FROM reviews r JOIN slack_answers s ON s.answer_id = r.answer_id"
        " WHERE r.status = 'pending' AND s.review_ts IS NULL AND s.question IS NULL ORDER BY r.id")]


def take_for_card(conn: psycopg.Connection, review_id: int) -> bool:
    """Lock the review's Slack row for posting its card, in the caller's transaction: False when
    it has a card by now, or another process holds it."""
    return conn.execute(
        "SELECT s.id FROM slack_answers s JOIN reviews r ON r.answer_id = s.answer_id"
        " WHERE r.id = %(r)s AND s.review_ts IS NULL FOR UPDATE OF s SKIP LOCKED", {"r": review_id}).fetchone() is not None


def mark_deleted(conn: psycopg.Connection, channel_id: str, question_ts: str, asker: str | None) -> SlackAnswer | None:
    """Note that the message at `question_ts` was deleted (the first deletion counts). A message
    of a person (`asker`) not taken up yet gets its row now, deleted, so that it never is; without
    `asker`, None when it is not a question the bot took up."""
    if asker is None:
        return _one(conn.execute(
            f"UPDATE slack_answers s SET deleted_at = coalesce(s.deleted_at, now())"
            f" WHERE s.channel_id = %(c)s AND s.question_ts = %(q)s RETURNING {_COLUMNS}",
            {"c": channel_id, "q": question_ts}).fetchone())
    return _one(conn.execute(
        "INSERT INTO slack_answers AS s (channel_id, question_ts, thread_ts, user_id, deleted_at)"
        " VALUES (%(c)s, %(q)s, %(q)s, %(u)s, now())"
        " ON CONFLICT (channel_id, question_ts) DO UPDATE SET deleted_at = coalesce(s.deleted_at, now())"
        f" RETURNING {_COLUMNS}", {"c": channel_id, "q": question_ts, "u": asker}).fetchone())


def get(conn: psycopg.Connection, slack_answer_id: int) -> SlackAnswer | None:
    return _one(conn.execute(f"SELECT {_COLUMNS} FROM slack_answers s WHERE s.id = %(id)s",
                             {"id": slack_answer_id}).fetchone())


def for_answer(conn: psycopg.Connection, answer_id: int) -> SlackAnswer | None:
    return _one(conn.execute(f"SELECT {_COLUMNS} FROM slack_answers s WHERE s.answer_id = %(a)s",
                             {"a": answer_id}).fetchone())


def for_review(conn: psycopg.Connection, review_id: int) -> SlackAnswer | None:
    return _one(conn.execute(
        f"SELECT {_COLUMNS} FROM slack_answers s JOIN reviews r ON r.answer_id = s.answer_id"
        " WHERE r.id = %(r)s", {"r": review_id}).fetchone())
