"""Hybrid search: pgvector cosine similarity and Postgres full text, fused by reciprocal rank,
over only what the viewer may see (the visibility filter is inside the SQL)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg

from core.config import get_settings
from core.knowledge import embed, store

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Viewer:
    user_id: str | None = None
    channel_id: str | None = None


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    document_id: int
    source: str
    title: str
    heading: str
    url: str | None
    text: str
    score: float                  # fused reciprocal-rank score, higher is better
    dense_score: float | None     # cosine similarity, None when not among the dense candidates
    lexical_score: float | None   # ts_rank, None when not among the full-text candidates


class QueryError(ValueError):
    """A query that cannot be searched: empty, only punctuation, or too long."""


_VISIBLE = """(
    (cardinality(d.visible_channels) = 0 AND cardinality(d.visible_groups) = 0)
    OR %(channel)s = ANY (d.visible_channels)
    OR d.visible_groups && ARRAY(SELECT g.group_name FROM group_members g WHERE g.user_id = %(user)s)
)"""

def _nearest(column: str) -> str:
    """The visible chunks nearest to the query by one vector column (an HNSW index scan)."""
    return (f"SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE {_VISIBLE}"
            f" ORDER BY c.{column} <=> %(qvec)s LIMIT %(candidates)s")


# Dense: a chunk's similarity is the better of its text's and its label's (title > heading).
_SQL = f"""
WITH dense AS (
    SELECT id, sim, row_number() OVER (ORDER BY sim DESC, id) AS rank FROM (
        SELECT c.id, greatest(1 - (c.embedding <=> %(qvec)s),
                              coalesce(1 - (c.heading_embedding <=> %(qvec)s), 0)) AS sim
        FROM chunks c
        WHERE c.id IN (({_nearest("embedding")}) UNION ({_nearest("heading_embedding")}))
        ORDER BY sim DESC
        LIMIT %(candidates)s
    ) nearest
), lexical AS (
    SELECT id, lex, row_number() OVER (ORDER BY lex DESC, id) AS rank FROM (
        SELECT c.id, ts_rank(c.tsv, q, 1) AS lex
        FROM chunks c JOIN documents d ON d.id = c.document_id, to_tsquery('english', %(tsquery)s) q
        WHERE c.tsv @@ q AND {_VISIBLE}
        ORDER BY lex DESC
        LIMIT %(candidates)s
    ) matched
), fused AS (
    SELECT coalesce(dense.id, lexical.id) AS id, dense.sim, lexical.lex,
           coalesce(%(wd)s::float8 / (%(rrf_k)s + dense.rank), 0)
           + coalesce(%(wl)s::float8 / (%(rrf_k)s + lexical.rank), 0) AS score
    FROM dense FULL OUTER JOIN lexical ON dense.id = lexical.id
)
SELECT c.id AS chunk_id, c.document_id, d.source, d.title, c.heading, d.url, c.text,
       f.score, f.sim AS dense_score, f.lex AS lexical_score
FROM fused f JOIN chunks c ON c.id = f.id JOIN documents d ON d.id = c.document_id
ORDER BY f.score DESC, f.sim DESC NULLS LAST
LIMIT %(k)s
"""


def check_query(query: str) -> str:
    settings = get_settings()
    query = query.strip()
    if not query:
        raise QueryError("The query is empty: type a question.")
    if len(query) > settings.max_query_chars:
        raise QueryError(f"The query is {len(query):,} characters long; the limit is "
                         f"{settings.max_query_chars:,}. Ask a shorter, specific question.")
    if not _WORD.search(query):
        raise QueryError("The query has no words to search for, only punctuation.")
    return query


def or_tsquery(query: str) -> str:
    """Any of the query's words (Postgres drops stop words and stems the rest). An AND of
    every word, as plainto_tsquery builds, matches almost nothing for a natural question."""
    words = dict.fromkeys(w.lower() for w in _WORD.findall(query))
    return " | ".join(words) or "''"


def hybrid_search(conn: psycopg.Connection, query: str, viewer: Viewer = Viewer(), k: int | None = None) -> list[Hit]:
    settings = get_settings()
    query = check_query(query)
    k = k or settings.search_k
    candidates = max(settings.search_candidates, k)
    store.vectors(conn)
    conn.execute("SELECT set_config('hnsw.ef_search', %(ef)s, true)",
                 {"ef": str(max(settings.hnsw_ef_search, candidates))})
    rows = conn.execute(_SQL, {
        "qvec": embed.embed_query(query), "tsquery": or_tsquery(query), "candidates": candidates, "k": k,
        "wd": settings.dense_weight, "wl": settings.lexical_weight, "rrf_k": settings.rrf_k,
        "channel": viewer.channel_id, "user": viewer.user_id,
    }).fetchall()
    return [Hit(**r) for r in rows]
