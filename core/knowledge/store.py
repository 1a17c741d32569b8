"""Documents and chunks in Postgres. Every function takes a connection and never commits."""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

from core import db
from core.knowledge.chunk import Chunk


@dataclass(frozen=True)
class DocumentRow:
    id: int
    source: str
    title: str
    url: str | None
    chunks: int
    visible_channels: list[str]
    visible_groups: list[str]
    updated_at: dt.datetime

    @property
    def visibility(self) -> str:
        if not self.visible_channels and not self.visible_groups:
            return "public"
        parts = [f"#{c}" for c in self.visible_channels] + [f"@{g}" for g in self.visible_groups]
        return "only " + ", ".join(parts)


@dataclass(frozen=True)
class ChunkText:
    """What a chunk's two vectors are computed from: its text, and its label (title > heading)."""

    id: int
    text: str
    label: str


@dataclass(frozen=True)
class ChunkRow:
    id: int
    document_id: int
    title: str
    heading: str
    url: str | None
    source: str
    text: str


def vectors(conn: psycopg.Connection) -> psycopg.Connection:
    """Teach this connection the `vector` type (cheap; idempotent)."""
    register_vector(conn)
    return conn


def count_documents(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT count(*) AS n FROM documents").fetchone()["n"])  # type: ignore[index]


def content_hash_of(conn: psycopg.Connection, source: str) -> str | None:
    row = conn.execute("SELECT content_hash FROM documents WHERE source = %(s)s", {"s": source}).fetchone()
    return None if row is None else row["content_hash"]


def upsert_document(conn: psycopg.Connection, *, source: str, title: str, url: str | None, content_hash: str,
                    visibility: tuple[Sequence[str], Sequence[str]] | None, metadata: dict[str, Any]) -> int:
    """Insert or update the document from `source`. `visibility` is (channels, groups); None
    keeps what a known document has (a new one is public)."""
    channels, groups = visibility if visibility is not None else ((), ())
    row = conn.execute(
        "INSERT INTO documents (source, title, url, content_hash, visible_channels, visible_groups, metadata)"
        " VALUES (%(source)s, %(title)s, %(url)s, %(hash)s, %(channels)s, %(groups)s, %(metadata)s)"
        " ON CONFLICT (source) DO UPDATE SET title = EXCLUDED.title, url = EXCLUDED.url,"
        "   content_hash = EXCLUDED.content_hash,"
        "   visible_channels = CASE WHEN %(keep)s THEN documents.visible_channels ELSE EXCLUDED.visible_channels END,"
        "   visible_groups = CASE WHEN %(keep)s THEN documents.visible_groups ELSE EXCLUDED.visible_groups END,"
        "   metadata = EXCLUDED.metadata, updated_at = now()"
        " RETURNING id",
        {"source": source, "title": title, "url": url, "hash": content_hash, "channels": list(channels),
         "groups": list(groups), "keep": visibility is None, "metadata": Jsonb(metadata)},
    ).fetchone()
    return int(row["id"])  # type: ignore[index]


def replace_chunks(conn: psycopg.Connection, document_id: int, chunks: Sequence[Chunk],
                   embeddings: np.ndarray, heading_embeddings: np.ndarray) -> None:
    vectors(conn)
    conn.execute("DELETE FROM chunks WHERE document_id = %(d)s", {"d": document_id})
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO chunks (document_id, ord, heading, text, embedding, heading_embedding)"
            " VALUES (%(d)s, %(ord)s, %(heading)s, %(text)s, %(embedding)s, %(heading_embedding)s)",
            [{"d": document_id, "ord": c.ord, "heading": c.heading, "text": c.text, "embedding": e,
              "heading_embedding": h} for c, e, h in zip(chunks, embeddings, heading_embeddings)],
        )


def refresh_statistics(conn: psycopg.Connection) -> None:
    """ANALYZE the chunks after an ingest: the planner's row estimates, and the share of chunks
    holding each word that `search.lexical_query` reads."""
    conn.execute("ANALYZE chunks")


def chunk_texts(conn: psycopg.Connection, document_id: int) -> list[ChunkText]:
    """A document's chunks as embedded at ingest (the label is built as chunk.chunk_document does)."""
    rows = conn.execute(
        "SELECT c.id, c.text, CASE WHEN c.heading = '' THEN d.title ELSE d.title || ' > ' || c.heading END AS label"
        " FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.document_id = %(d)s ORDER BY c.ord",
        {"d": document_id},
    ).fetchall()
    return [ChunkText(**r) for r in rows]


def update_embeddings(conn: psycopg.Connection, chunk_ids: Sequence[int], embeddings: np.ndarray,
                      heading_embeddings: np.ndarray) -> None:
    vectors(conn)
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE chunks SET embedding = %(e)s, heading_embedding = %(h)s WHERE id = %(id)s",
            [{"id": i, "e": e, "h": h} for i, e, h in zip(chunk_ids, embeddings, heading_embeddings)],
        )


def list_documents(conn: psycopg.Connection) -> list[DocumentRow]:
    rows = conn.execute(
        "SELECT d.id, d.source, d.title, d.url, count(c.id)::int AS chunks, d.visible_channels,"
        " d.visible_groups, d.updated_at FROM documents d LEFT JOIN chunks c ON c.document_id = d.id"
        " GROUP BY d.id ORDER BY d.source"
    ).fetchall()
    return [DocumentRow(**r) for r in rows]


def is_document(conn: psycopg.Connection, document_id: int) -> bool:
    return conn.execute("SELECT 1 FROM documents WHERE id = %(id)s", {"id": document_id}).fetchone() is not None


def empty_documents(conn: psycopg.Connection) -> list[str]:
    """Sources of documents without content: listed by an import, not ingested here since."""
    rows = conn.execute("SELECT d.source FROM documents d WHERE NOT EXISTS"
                        " (SELECT 1 FROM chunks c WHERE c.document_id = d.id) ORDER BY d.source")
    return [r["source"] for r in rows]


# A document not everyone may see (visible only in some channels or to some groups), reading the
# document as `d`: what search lets only some askers see, and what training leaves out.
RESTRICTED = "(cardinality(d.visible_channels) > 0 OR cardinality(d.visible_groups) > 0)"


def delete_document(conn: psycopg.Connection, id_or_source: int | str) -> list[str]:
    """Delete a document by id or source; the source of a JSONL file deletes all its records.
    Returns the sources deleted."""
    if isinstance(id_or_source, int) or str(id_or_source).isdigit():
        rows = conn.execute("DELETE FROM documents WHERE id = %(id)s RETURNING source", {"id": int(id_or_source)})
    else:
        rows = conn.execute("DELETE FROM documents WHERE source = %(s)s"
                            " OR (%(records)s AND starts_with(source, %(s)s || '#')) RETURNING source",
                            {"s": id_or_source, "records": holds_records(str(id_or_source))})
    return sorted(r["source"] for r in rows)


def holds_records(source: str) -> bool:
    """Whether documents `<source>#<_id>` are the records of this source: a JSONL file (not a
    folder `docs/C` beside `docs/C#`)."""
    return source.lower().endswith(".jsonl")


def delete_under(conn: psycopg.Connection, folder: str) -> list[str]:
    """Delete every document ingested from under a folder (its absolute path, not the root).
    Returns the sources deleted."""
    folder = folder.rstrip("/")
    if not folder.startswith("/"):
        raise ValueError(f"{folder!r} is not an absolute folder path")
    rows = conn.execute("DELETE FROM documents WHERE starts_with(source, %(f)s || '/') RETURNING source", {"f": folder})
    return sorted(r["source"] for r in rows)


def delete_records_not_in(conn: psycopg.Connection, file_source: str, kept: Collection[str]) -> list[str]:
    """Delete the records of a JSONL file (sources `<file>#<_id>`) whose sources are not in
    `kept`: the ones since removed from the file. Returns their sources."""
    rows = conn.execute(
        "DELETE FROM documents WHERE starts_with(source, %(file)s || '#') AND NOT source = ANY(%(kept)s)"
        " RETURNING source", {"file": file_source, "kept": list(kept)}).fetchall()
    return sorted(r["source"] for r in rows)


class VisibilityError(ValueError):
    """A channel given by its name, or blank: a document visible only there is visible nowhere."""


_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")
_USER_ID = re.compile(r"[UW](?=[A-Z]*\d)[A-Z0-9]{7,}")   # U0123ABCD, with a digit: "WILLIAMS" is a name


def channel_ids(channels: Iterable[str]) -> list[str]:
    """Slack channel ids as typed (a leading # is dropped); anything else is refused."""
    ids = [c.strip().lstrip("#") for c in channels]   # not upper-cased: "#general" is a name
    wrong = [c for c in ids if not _CHANNEL_ID.fullmatch(c)]
    if wrong:
        raise VisibilityError(f"Not a Slack channel id: {', '.join(repr(c) for c in wrong)}. Give the channel's id "
                              "(like C0123ABCD, at the bottom of the channel's About tab), not its name.")
    return ids


def set_visibility(conn: psycopg.Connection, document_id: int, channels: Sequence[str], groups: Sequence[str],
                   *, seen: dt.datetime | None = None) -> bool:
    """Who may see a document; False if it is gone. With `seen` (its `updated_at` as the admin was
    shown it), refused (`db.ChangedSince`) if it changed since: saving old lists over a restriction
    someone just added would make the document public again."""
    channels = channel_ids(channels)
    cur = conn.execute(
        "UPDATE documents SET visible_channels = %(c)s, visible_groups = %(g)s, updated_at = now()"
        " WHERE id = %(id)s AND (%(seen)s::timestamptz IS NULL OR updated_at = %(seen)s)",
        {"c": list(channels), "g": list(groups), "id": document_id, "seen": seen})
    if cur.rowcount == 0 and seen is not None and conn.execute(
            "SELECT 1 FROM documents WHERE id = %(id)s", {"id": document_id}).fetchone():
        raise db.ChangedSince(f"Document {document_id} changed after this page showed it (re-ingested, or its "
                           "visibility set by someone else), so nothing was saved: it shows the stored lists now.")
    return bool(cur.rowcount)


_FROM_SOURCE = "source = %(s)s"
_FROM_SOURCE_AND_UNDER = ("(source = %(s)s OR (%(records)s AND starts_with(source, %(s)s || '#'))"
                          " OR starts_with(source, rtrim(%(s)s, '/') || '/'))")


def set_visibility_of_source(conn: psycopg.Connection, source: str, channels: Sequence[str], groups: Sequence[str],
                             *, and_under: bool = False) -> list[tuple[int, str]]:
    """Set the visibility of the document from `source`; `and_under`: of every document stored
    from it, the file's JSONL records (`<file>#<_id>`) or everything under the folder. Returns
    (id, source) of those it changed."""
    rows = conn.execute(
        "UPDATE documents SET visible_channels = %(c)s, visible_groups = %(g)s, updated_at = now()"
        f" WHERE {_FROM_SOURCE_AND_UNDER if and_under else _FROM_SOURCE}"
        " AND (visible_channels <> %(c)s OR visible_groups <> %(g)s) RETURNING id, source",
        {"c": list(channels), "g": list(groups), "s": source, "records": holds_records(source)}).fetchall()
    return sorted((int(r["id"]), r["source"]) for r in rows)


def get_chunks(conn: psycopg.Connection, chunk_ids: Sequence[int]) -> list[ChunkRow]:
    rows = conn.execute(
        "SELECT c.id, c.document_id, d.title, c.heading, d.url, d.source, c.text"
        " FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id = ANY(%(ids)s)",
        {"ids": list(chunk_ids)},
    ).fetchall()
    by_id = {r["id"]: ChunkRow(**r) for r in rows}
    return [by_id[i] for i in chunk_ids if i in by_id]


def empty_groups_note(conn: psycopg.Connection, groups: Sequence[str]) -> str:
    """What to tell whoever restricted documents to `groups`, when no one is in some of them
    yet (a misspelt name: a document visible only to them is visible to nobody); "" otherwise."""
    known = {r["group_name"] for r in conn.execute(
        "SELECT DISTINCT group_name FROM group_members WHERE group_name = ANY(%(g)s)", {"g": list(groups)})}
    empty = [g for g in dict.fromkeys(groups) if g not in known]
    if not empty:
        return ""
    return (f"No one is in {'group' if len(empty) == 1 else 'groups'} {', '.join(empty)} yet, so only "
            f"its members will see these documents once added: `flywheel docs group-add {empty[0]} U0123ABCD …` "
            "adds Slack users.")


def user_ids(users: Iterable[str]) -> list[str]:
    """Slack user ids as typed (a leading @ is dropped); anything else is refused: a name would
    never match the id a question arrives with, so the person would silently see nothing."""
    typed = [u.strip() for u in users]
    ids = [u.removeprefix("<").removesuffix(">").lstrip("@").upper() for u in typed]   # <@U0123ABCD> too
    wrong = [u for u, i in zip(typed, ids) if not _USER_ID.fullmatch(i)]
    if wrong:
        raise VisibilityError(f"Not a Slack user id: {', '.join(repr(u) for u in wrong)}. Give the member's id "
                              "(like U0123ABCD, under 'Copy member ID' in their Slack profile), not their name.")
    return ids


def add_group_member(conn: psycopg.Connection, group: str, user_id: str) -> None:
    conn.execute("INSERT INTO group_members (group_name, user_id) VALUES (%(g)s, %(u)s) ON CONFLICT DO NOTHING",
                 {"g": group, "u": user_id})
