"""Curation: admins judge answers (accept as-is, edit and accept, reject) into versioned datasets.

What is accepted is scrubbed of personal data here, once, so neither the dataset nor the
trainer ever sees it. Every function takes a connection and never commits."""
from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from core import db, pii
from core.agent import prompts
from core.knowledge import store

Decision = Literal["accepted", "rejected"]
RatingFilter = Literal["any", "up", "down", "unrated"]


class CurationError(ValueError):
    """A curation action that cannot be taken; the message is fit to show an admin."""


class NotAnAnswer(CurationError):
    """Accepting as delivered an answer that is a note (a decline, a reviewer's rejection, quoted
    excerpts): the model would learn to say it. Edited into a real answer, it can be accepted."""


class JudgedMeanwhile(CurationError, db.ChangedSince):
    """Someone judged the answer after the admin deciding had it in front of them (`Seen`)."""


class DatasetUnchanged(CurationError):
    """A new dataset version would hold exactly what the latest one holds."""

    def __init__(self, version: int, items: int) -> None:
        super().__init__(f"Dataset v{version} already holds these {items} accepted answers as they are now: "
                         "accept, edit or reject answers before making a new version.")
        self.version = version


@dataclass(frozen=True)
class AnswerFilter:
    rating: RatingFilter = "any"
    route: str | None = None                 # answered | review | declined
    since: dt.date | None = None
    until: dt.date | None = None             # inclusive
    channel_id: str | None = None
    text: str | None = None                  # in the question or the answer
    uncurated_only: bool = False
    limit: int = 200


@dataclass(frozen=True)
class CurationRow:
    """An answer as the curation table shows it: the record, its votes and its judgement."""

    answer_id: int
    created_at: dt.datetime
    user_id: str | None
    channel_id: str | None
    question: str
    draft: str | None
    final_answer: str | None
    route: str | None
    route_reason: str | None
    status: str
    sources: list[dict[str, Any]]
    ups: int
    downs: int
    down_reasons: list[str]
    down_comments: list[str]
    suggested_answers: list[str]
    decision: Decision | None
    ideal_answer: str | None
    curated_by: str | None
    curated_at: dt.datetime | None


@dataclass(frozen=True)
class Seen:
    """The judgement an admin had in front of them when deciding (`CurationRow.curated_at`;
    None: not judged yet). A judgement made by someone else since is not overwritten."""

    curated_at: dt.datetime | None


@dataclass(frozen=True)
class DatasetInfo:
    version: int
    created_by: str
    note: str
    created_at: dt.datetime
    items: int


@dataclass(frozen=True)
class DatasetItem:
    answer_id: int
    question: str
    answer: str
    context: list[dict[str, Any]]   # [{n, title, heading, text}]


_ROW_SQL = """
SELECT a.id AS answer_id, a.created_at, a.user_id, a.channel_id, a.question, a.draft, a.final_answer,
       a.route, a.route_reason, a.status, a.sources,
       count(f.*) FILTER (WHERE f.rating = 'up') AS ups,
       count(f.*) FILTER (WHERE f.rating = 'down') AS downs,
       coalesce(array_agg(f.reason) FILTER (WHERE f.reason IS NOT NULL), '{}') AS down_reasons,
       coalesce(array_agg(f.comment) FILTER (WHERE coalesce(f.comment, '') <> ''), '{}') AS down_comments,
       coalesce(array_agg(f.suggested_answer) FILTER (WHERE coalesce(f.suggested_answer, '') <> ''), '{}')
           AS suggested_answers,
       c.decision, c.ideal_answer, c.curated_by, c.curated_at
FROM answers a
LEFT JOIN feedback f ON f.answer_id = a.id
LEFT JOIN curation_items c ON c.answer_id = a.id
WHERE a.status NOT IN ('running', 'pending_review', 'failed', 'withdrawn') AND a.surface <> 'eval'
  AND (%(route)s::text IS NULL OR a.route = %(route)s)
  AND (%(since)s::date IS NULL OR a.created_at >= %(since)s::date)
  AND (%(until)s::date IS NULL OR a.created_at < %(until)s::date + 1)
  AND (%(channel)s::text IS NULL OR a.channel_id = %(channel)s)
  AND (%(text)s::text IS NULL OR a.question ILIKE %(text)s OR a.final_answer ILIKE %(text)s
       OR a.draft ILIKE %(text)s)
  AND (NOT %(uncurated)s OR c.id IS NULL)
  {answer_clause}
GROUP BY a.id, c.id
HAVING CASE %(rating)s WHEN 'up' THEN count(f.*) FILTER (WHERE f.rating = 'up') > 0
                       WHEN 'down' THEN count(f.*) FILTER (WHERE f.rating = 'down') > 0
                       WHEN 'unrated' THEN count(f.*) = 0
                       ELSE true END
ORDER BY a.created_at DESC, a.id DESC
LIMIT %(limit)s
"""


def list_answers(conn: psycopg.Connection, flt: AnswerFilter = AnswerFilter()) -> list[CurationRow]:
    """Finished answers for the curation table, newest first, narrowed by `flt`."""
    # The admin's words are matched literally: % and _ are not wildcards here.
    words = (flt.text or "").strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    text = f"%{words}%" if words else None
    rows = conn.execute(_ROW_SQL.replace("{answer_clause}", ""), {
        "route": flt.route, "since": flt.since, "until": flt.until, "channel": flt.channel_id or None,
        "text": text, "uncurated": flt.uncurated_only, "rating": flt.rating, "limit": flt.limit,
    }).fetchall()
    return [CurationRow(**r) for r in rows]


def channels(conn: psycopg.Connection) -> list[str]:
    """The channels answers were asked in, for the table's channel filter."""
    rows = conn.execute("SELECT DISTINCT channel_id FROM answers WHERE channel_id IS NOT NULL"
                        " AND surface <> 'eval' ORDER BY channel_id").fetchall()
    return [r["channel_id"] for r in rows]


def get_row(conn: psycopg.Connection, answer_id: int) -> CurationRow | None:
    """One answer as the curation detail view shows it (None if unknown or not finished)."""
    row = conn.execute(_ROW_SQL.replace("{answer_clause}", "AND a.id = %(answer_id)s"), {
        "route": None, "since": None, "until": None, "channel": None, "text": None, "uncurated": False,
        "rating": "any", "limit": 1, "answer_id": answer_id,
    }).fetchone()
    return None if row is None else CurationRow(**row)


def accept(conn: psycopg.Connection, answer_id: int, *, curated_by: str, ideal_answer: str | None = None,
           seen: Seen | None = None) -> None:
    """Accept an answer as training material: as delivered, or as the admin's edited ideal answer.
    Question and answer are scrubbed of personal data before they are stored. With `seen`,
    refused if the answer was judged since."""
    row = get_row(conn, answer_id)
    if row is None:
        raise CurationError(f"Answer {answer_id} does not exist or is not finished yet.")
    edited = ideal_answer is not None and ideal_answer.strip() != (row.final_answer or "").strip()
    if not edited and (why := _a_note(row)):   # as delivered, or the page's text box left as it was
        raise NotAnAnswer(f"Answer {answer_id} is {why}, not an answer: write the answer the model should "
                          "give, and accept that.")
    text = (ideal_answer if ideal_answer is not None else row.final_answer) or ""
    if not text.strip():
        raise CurationError("The ideal answer is empty: write the answer you want the model to learn.")
    _upsert(conn, row, "accepted", pii.scrub(text.strip()), edited, curated_by, seen)


def question_key(question: str) -> str:
    """A question as the trainer tells repeats apart ("How do I reset my password?" and "how do i
    reset my password" are one): a dataset teaches one answer per key, the latest curated."""
    return re.sub(r"\s+", " ", question.strip().lower()).rstrip("?!. ")


def _a_note(row: CurationRow) -> str | None:
    """What the delivered text is when it is a note rather than an answer, else None."""
    if row.status == "rejected":
        return "the note that a reviewer rejected the draft"
    if row.route == "declined":
        return f"a decline ({row.route_reason or 'no answer drafted'})"
    if prompts.EXTRACTIVE_NOTE.split("{")[0] in (row.final_answer or ""):
        return "quoted excerpts, written without the model"
    return None


def reject(conn: psycopg.Connection, answer_id: int, *, curated_by: str, seen: Seen | None = None) -> None:
    """Keep an answer out of every future dataset. With `seen`, refused if judged since."""
    row = get_row(conn, answer_id)
    if row is None:
        raise CurationError(f"Answer {answer_id} does not exist or is not finished yet.")
    _upsert(conn, row, "rejected", None, False, curated_by, seen)


def bulk(conn: psycopg.Connection, answer_ids: Iterable[int], decision: Decision, *, curated_by: str) -> list[int]:
    """Accept (as delivered) or reject many answers; returns the ids it judged. Answers judged
    before (or meanwhile) are skipped: a bulk action must not undo a hand-edited ideal answer or
    an earlier decision (those are changed one by one); so are notes (`NotAnAnswer`) when
    accepting. Any other answer that cannot be accepted stops the whole batch, so the caller's
    transaction rolls back."""
    ids = list(answer_ids)
    # One read for those judged before; `Seen(None)` below catches only one judged meanwhile.
    judged_before = {r["answer_id"] for r in conn.execute(
        "SELECT answer_id FROM curation_items WHERE answer_id = ANY(%(ids)s)", {"ids": ids})}
    # A repeat of a question whose ideal answer an admin wrote by hand: accepted later as
    # delivered, it would be the one the dataset teaches (the latest curated wins).
    hand_written = {question_key(r["question"]) for r in conn.execute(
        "SELECT question FROM curation_items WHERE decision = 'accepted' AND edited")} if decision == "accepted" else set()
    asked = {r["id"]: r["question"] for r in conn.execute(
        "SELECT id, question FROM answers WHERE id = ANY(%(ids)s)", {"ids": ids})} if hand_written else {}
    judged = []
    for answer_id in (i for i in ids if i not in judged_before
                      and question_key(pii.scrub(asked.get(i, ""))) not in hand_written):   # stored scrubbed
        try:
            if decision == "accepted":
                accept(conn, answer_id, curated_by=curated_by, seen=Seen(None))
            else:
                reject(conn, answer_id, curated_by=curated_by, seen=Seen(None))
        except (JudgedMeanwhile, NotAnAnswer):
            continue
        except CurationError as e:
            raise CurationError(f"Nothing in this batch was judged: answer {answer_id} cannot be {decision}. {e}") from e
        judged.append(answer_id)
    return judged


def _upsert(conn: psycopg.Connection, row: CurationRow, decision: Decision, answer: str | None, edited: bool,
            curated_by: str, seen: Seen | None) -> None:
    """Store the judgement; with `seen`, only over the judgement the admin saw (checked in the
    same statement, so two admins deciding at once cannot both win)."""
    stored = conn.execute(
        "INSERT INTO curation_items (answer_id, decision, question, ideal_answer, edited, curated_by)"
        " VALUES (%(a)s, %(d)s, %(q)s, %(i)s, %(e)s, %(by)s)"
        " ON CONFLICT (answer_id) DO UPDATE SET decision = EXCLUDED.decision, question = EXCLUDED.question,"
        "  ideal_answer = EXCLUDED.ideal_answer, edited = EXCLUDED.edited, curated_by = EXCLUDED.curated_by,"
        "  curated_at = now()"
        " WHERE NOT %(check)s OR curation_items.curated_at IS NOT DISTINCT FROM %(seen)s",
        {"a": row.answer_id, "d": decision, "q": pii.scrub(row.question), "i": answer, "e": edited,
         "by": curated_by, "check": seen is not None, "seen": seen.curated_at if seen else None},
    ).rowcount
    if stored == 0:
        now = get_row(conn, row.answer_id)
        by = f"{now.decision} by {now.curated_by}" if now and now.decision else "judged by someone else"
        raise JudgedMeanwhile(f"Answer {row.answer_id} was {by} after you opened it, so nothing changed: "
                              "look at it again, then decide.")


# -- datasets --------------------------------------------------------------------------------

# An answer drafted from a document not everyone may see (visible only in some channels or to
# some groups, when the answer was drafted or now): an adapter trained on it would tell everyone,
# so datasets leave it out unless `FLYWHEEL_TRAIN_ON_RESTRICTED` says the adapter is served only
# to people who may see it all. Reads the answer as `a`.
_FROM_RESTRICTED = ("(a.restricted_context OR EXISTS (SELECT 1 FROM jsonb_array_elements(a.sources) s"
                    " LEFT JOIN documents d ON d.id = (s->>'document_id')::bigint"
                    f" WHERE coalesce((s->>'restricted')::boolean, false) OR {store.RESTRICTED}))")
_TRAINABLE = f"(%(restricted_ok)s OR NOT {_FROM_RESTRICTED})"


def accepted_count(conn: psycopg.Connection) -> int:
    """Answers accepted as training material now."""
    row = conn.execute("SELECT count(*) AS n FROM curation_items WHERE decision = 'accepted'").fetchone()
    return int(row["n"])  # type: ignore[index]


def restricted_count(conn: psycopg.Connection) -> int:
    """Accepted answers drafted from a document not everyone may see (left out of datasets
    unless `FLYWHEEL_TRAIN_ON_RESTRICTED`)."""
    row = conn.execute("SELECT count(*) AS n FROM curation_items c JOIN answers a ON a.id = c.answer_id"
                       f" WHERE c.decision = 'accepted' AND {_FROM_RESTRICTED}").fetchone()
    return int(row["n"])  # type: ignore[index]


def not_in_dataset(conn: psycopg.Connection, version: int | None, *, include_restricted: bool = False) -> int:
    """Accepted answers a dataset may hold that dataset `version` does not hold as they are now:
    accepted since it was made, or edited since (all of them for None). The schedule's "enough
    new data"."""
    row = conn.execute(
        "SELECT count(*) AS n FROM curation_items c JOIN answers a ON a.id = c.answer_id"
        f" WHERE c.decision = 'accepted' AND {_TRAINABLE} AND NOT EXISTS ("
        " SELECT 1 FROM dataset_items i WHERE i.dataset_version = %(v)s AND i.curation_item_id = c.id"
        " AND i.question = c.question AND i.answer IS NOT DISTINCT FROM c.ideal_answer)",
        {"v": version, "restricted_ok": include_restricted}).fetchone()
    return int(row["n"])  # type: ignore[index]


def create_dataset(conn: psycopg.Connection, *, created_by: str, note: str = "",
                   include_restricted: bool = False) -> DatasetInfo:
    """Freeze every accepted item into a new dataset version, with the text of the sources each
    answer was drafted from; one drafted from a document not everyone may see only with
    `include_restricted`. Refuses to make an empty one, or one the latest version already is
    (`DatasetUnchanged`, which names it), in the same order: of two answers to one question the
    later curated is the one trained on."""
    conn.execute("LOCK TABLE datasets IN EXCLUSIVE MODE")  # two admins never get the same version
    items = conn.execute(
        "SELECT c.id, c.answer_id, c.question, c.ideal_answer, c.curated_at, a.sources FROM curation_items c"
        f" JOIN answers a ON a.id = c.answer_id WHERE c.decision = 'accepted' AND {_TRAINABLE}"
        " ORDER BY c.curated_at NULLS FIRST, c.id", {"restricted_ok": include_restricted}).fetchall()
    if not items:
        restricted = restricted_count(conn)
        if restricted:
            raise CurationError(f"Each of the {restricted} accepted answers was drafted from a document not everyone "
                                "may see, and an adapter answers everyone: nothing to make a dataset of "
                                "(FLYWHEEL_TRAIN_ON_RESTRICTED=true trains on them where the adapter is served only "
                                "to people who may see them).")
        raise CurationError("No accepted answers yet: accept some in Curation before making a dataset.")
    texts = {i: pii.scrub(t) for i, t in source_texts(conn, [s for item in items for s in item["sources"]]).items()}
    rows = [{"c": item["id"], "a": item["answer_id"], "q": item["question"], "ans": item["ideal_answer"],
             "ctx": _context(item["sources"], texts), "at": item["curated_at"]} for item in items]
    latest = latest_version(conn)
    new = [DatasetItem(answer_id=r["a"], question=r["q"], answer=r["ans"], context=r["ctx"]) for r in rows]
    if latest is not None and _teaches(dataset_items(conn, latest)) == _teaches(new):
        raise DatasetUnchanged(latest, len(rows))
    version = (latest or 0) + 1
    conn.execute("INSERT INTO datasets (version, created_by, note) VALUES (%(v)s, %(by)s, %(n)s)",
                 {"v": version, "by": created_by, "n": note})
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO dataset_items (dataset_version, curation_item_id, answer_id, question, answer, context,"
            " curated_at) VALUES (%(v)s, %(c)s, %(a)s, %(q)s, %(ans)s, %(ctx)s, %(at)s)",
            [{**row, "v": version, "ctx": Jsonb(row["ctx"])} for row in rows])
    return get_dataset(conn, version)  # type: ignore[return-value]


def _teaches(items: Iterable[DatasetItem]) -> tuple[set[tuple[Any, ...]], dict[str, int]]:
    """What a dataset teaches, for telling two apart: each answer's text and passages, and which
    answer wins for each question (the last curated; `items` in curation order)."""
    items = list(items)
    return ({(i.answer_id, i.question, i.answer, json.dumps(i.context, sort_keys=True)) for i in items},
            {question_key(i.question): i.answer_id for i in items})


def source_texts(conn: psycopg.Connection, sources: Sequence[dict[str, Any]]) -> dict[int, str]:
    """The text of each source by chunk id, as the answer was drafted from it: the text recorded
    with the answer (a re-ingest since may have changed or re-chunked the document), else, for
    an answer recorded without it, the chunk's if it still exists. A source whose document was
    deleted since has none: what an admin removed is not trained on."""
    documents = {r["id"] for r in conn.execute(
        "SELECT id FROM documents WHERE id = ANY(%(ids)s)", {"ids": list({s.get("document_id") for s in sources})})}
    recorded = {s["chunk_id"]: s["text"] for s in sources
                if s.get("text") and "chunk_id" in s and s.get("document_id") in documents}
    unrecorded = list({s["chunk_id"] for s in sources if "chunk_id" in s and not s.get("text")})
    chunks = {r["id"]: r["text"] for r in conn.execute(
        "SELECT id, text FROM chunks WHERE id = ANY(%(ids)s)", {"ids": unrecorded})} if unrecorded else {}
    return {**chunks, **recorded}


def _context(sources: Sequence[dict[str, Any]], texts: dict[int, str]) -> list[dict[str, Any]]:
    """The passages an answer was drafted from, as numbered in it; one deleted since is left out."""
    return [{"n": s.get("n", i), "title": s.get("title", ""), "heading": s.get("heading", ""),
             "text": texts[s["chunk_id"]]}
            for i, s in enumerate(sources, start=1) if s.get("chunk_id") in texts]


_DATASETS_SQL = ("SELECT d.version, d.created_by, d.note, d.created_at, count(i.*) AS items FROM datasets d"
                 " LEFT JOIN dataset_items i ON i.dataset_version = d.version"
                 " WHERE %(v)s::int IS NULL OR d.version = %(v)s GROUP BY d.version ORDER BY d.version DESC")


def list_datasets(conn: psycopg.Connection) -> list[DatasetInfo]:
    return [DatasetInfo(**r) for r in conn.execute(_DATASETS_SQL, {"v": None}).fetchall()]


def get_dataset(conn: psycopg.Connection, version: int) -> DatasetInfo | None:
    row = conn.execute(_DATASETS_SQL, {"v": version}).fetchone()
    return None if row is None else DatasetInfo(**row)


def latest_version(conn: psycopg.Connection) -> int | None:
    row = conn.execute("SELECT max(version) AS v FROM datasets").fetchone()
    return None if row is None or row["v"] is None else int(row["v"])


def dataset_items(conn: psycopg.Connection, version: int) -> list[DatasetItem]:
    """The items of a dataset version in the order they were curated."""
    rows = conn.execute("SELECT answer_id, question, answer, context FROM dataset_items"
                        " WHERE dataset_version = %(v)s ORDER BY curated_at NULLS FIRST, curation_item_id",
                        {"v": version}).fetchall()
    return [DatasetItem(**r) for r in rows]


def restricted_in_dataset(conn: psycopg.Connection, version: int) -> set[int]:
    """The answers in dataset `version` drafted from a document not everyone may see, as it was
    then or is now: restricted since the dataset was made, they are no longer trained on."""
    rows = conn.execute("SELECT i.answer_id FROM dataset_items i JOIN answers a ON a.id = i.answer_id"
                        f" WHERE i.dataset_version = %(v)s AND {_FROM_RESTRICTED}", {"v": version}).fetchall()
    return {r["answer_id"] for r in rows}


def export_jsonl(conn: psycopg.Connection, version: int) -> str:
    """A dataset version as JSON Lines: one `{answer_id, question, answer, context}` per line."""
    if get_dataset(conn, version) is None:
        raise CurationError(f"There is no dataset version {version}.")
    return "".join(json.dumps({"answer_id": i.answer_id, "question": i.question, "answer": i.answer,
                               "context": i.context}, ensure_ascii=False) + "\n"
                   for i in dataset_items(conn, version))
