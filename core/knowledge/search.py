"""Hybrid search: pgvector cosine similarity and Postgres full text, fused by reciprocal rank,
over only what the viewer may see (the visibility filter is inside the SQL)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg

from core.config import get_settings
from core.knowledge.parse import clean_text
from core.knowledge import embed, store

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Viewer:
    """Who will read the answer: the asker, in a channel (None: only the asker, e.g. the CLI)."""
    user_id: str | None = None
    channel_id: str | None = None

    @property
    def group_member(self) -> str | None:
        """The user whose groups open documents to them: only where the answer stays theirs,
        a direct message (Slack ids "D...") or no channel. In a channel everyone reads the
        answer, so there only the channel's own documents and public ones count."""
        private = self.channel_id is None or self.channel_id.startswith("D")
        return self.user_id if private else None


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
    restricted: bool = False      # its document is visible only in some channels or to some groups


class QueryError(ValueError):
    """A query that cannot be searched: empty, only punctuation, or too long."""


_VISIBLE = f"""(
    NOT {store.RESTRICTED}
    OR %(channel)s = ANY (d.visible_channels)
    OR d.visible_groups && ARRAY(SELECT g.group_name FROM group_members g WHERE g.user_id = %(user)s)
)"""

def _nearest(column: str, exact: bool) -> str:
    """The visible chunks nearest to the query by one vector column: an HNSW index scan, or
    with `exact` a scan of every visible chunk (adding 0 to the distance keeps the index out)."""
    distance = f"(c.{column} <=> %(qvec)s) + 0" if exact else f"c.{column} <=> %(qvec)s"
    return (f"SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id WHERE {_VISIBLE}"
            f" ORDER BY {distance} LIMIT %(candidates)s")


# Dense: a chunk's similarity is the better of its text's and its label's (title > heading).
# The chunks of a section share one label, so when the label wins they tie: tied chunks share
# their dense rank, and full text (then their own text's similarity) tells them apart. Ranked
# by id instead, the best chunk of a matching section could come 6th.
_SEARCH = """
WITH dense AS (
    SELECT id, sim, body_sim, rank() OVER (ORDER BY sim DESC) AS rank FROM (
        SELECT c.id, 1 - (c.embedding <=> %(qvec)s) AS body_sim,
               greatest(1 - (c.embedding <=> %(qvec)s), coalesce(1 - (c.heading_embedding <=> %(qvec)s), 0)) AS sim
        FROM chunks c
        WHERE c.id IN (({nearest_text}) UNION ({nearest_label}))
        ORDER BY sim DESC, body_sim DESC, c.id
        LIMIT %(candidates)s
    ) nearest
), lexical AS (
    SELECT id, lex, row_number() OVER (ORDER BY lex DESC, id) AS rank FROM (
        SELECT c.id, ts_rank(c.tsv, q, 1) AS lex
        FROM chunks c JOIN documents d ON d.id = c.document_id, CAST(%(tsquery)s AS tsquery) q
        WHERE c.tsv @@ q AND {VISIBLE}
        ORDER BY lex DESC
        LIMIT %(candidates)s
    ) matched
), fused AS (
    SELECT coalesce(dense.id, lexical.id) AS id, dense.sim, dense.body_sim, lexical.lex,
           coalesce(%(wd)s::float8 / (%(rrf_k)s + dense.rank), 0)
           + coalesce(%(wl)s::float8 / (%(rrf_k)s + lexical.rank), 0) AS score
    FROM dense FULL OUTER JOIN lexical ON dense.id = lexical.id
)
SELECT chunk_id, document_id, source, title, heading, url, text, score, dense_score, lexical_score, restricted,
       dense_found
FROM (   -- a passage stored twice (an uploaded copy of a file, a folder copied) is shown once, its best
    SELECT DISTINCT ON (c.text) c.id AS chunk_id, c.document_id, d.source, d.title, c.heading, d.url, c.text,
           f.score, f.sim AS dense_score, f.body_sim, f.lex AS lexical_score,
           {restricted} AS restricted,
           (SELECT count(*) FROM dense) AS dense_found
    FROM fused f JOIN chunks c ON c.id = f.id JOIN documents d ON d.id = c.document_id
    ORDER BY c.text, f.score DESC, f.sim DESC NULLS LAST, f.body_sim DESC NULLS LAST, f.id
) once
ORDER BY score DESC, dense_score DESC NULLS LAST, body_sim DESC NULLS LAST, chunk_id
LIMIT %(k)s
"""
_SQL = _SEARCH.format(nearest_text=_nearest("embedding", False), nearest_label=_nearest("heading_embedding", False),
                      VISIBLE=_VISIBLE, restricted=store.RESTRICTED)
_SQL_EXACT = _SEARCH.format(nearest_text=_nearest("embedding", True), nearest_label=_nearest("heading_embedding", True),
                            VISIBLE=_VISIBLE, restricted=store.RESTRICTED)

# More chunks the viewer may see than the dense candidates found: with pgvector 0.6 an HNSW scan
# yields its `ef_search` nearest chunks and only then drops those the viewer may not see, so
# restricted documents crowding a topic can leave too few (or no) visible ones.
_MORE_CHUNKS_THAN = ("SELECT count(*) > %(found)s AS more FROM (SELECT 1 FROM chunks c JOIN documents d"
                     f" ON d.id = c.document_id WHERE {_VISIBLE} LIMIT %(found)s + 1) visible")


def check_query(query: str) -> str:
    settings = get_settings()
    query = clean_text(query).strip()   # folded as the documents were
    if not query:
        raise QueryError("The query is empty: type a question.")
    if len(query) > settings.max_query_chars:
        raise QueryError(f"The query is {len(query):,} characters long; the limit is "
                         f"{settings.max_query_chars:,}. Ask a shorter, specific question.")
    if not _WORD.search(query):
        raise QueryError("The query has no words to search for, only punctuation.")
    return query


# Over a large knowledge base (COMMON_WORD_MIN_CHUNKS or more), a word found in more than
# COMMON_WORD_SHARE of the chunks is left out of the full-text query when the question has a
# rarer word (even one no chunk holds: full text then finds nothing, and dense search carries
# the question): ts_rank has no inverse document frequency to discount such a word, and
# ranking every chunk that holds it made full-text search slow (p95 134 -> 26 ms at 100k
# chunks, bench/retrieval_bench.py). A small knowledge base ranks every match quickly, and
# there a topic's own word ("vpn" in a quarter of a small handbook) may well pass the share,
# so all words are kept.
COMMON_WORD_SHARE = 0.2
COMMON_WORD_MIN_CHUNKS = 5000

# The query's lexemes (stemmed, stop words dropped, as the chunks' `tsv` column holds them) with
# the share of chunks holding each, from the statistics ANALYZE keeps for `chunks.tsv` (0 for a
# word too rare to be listed there, or before the table was first analysed), and the number of
# chunks the statistics saw.
_QUERY_LEXEMES = """
SELECT w.lexeme, coalesce(common.share, 0) AS share,
       (SELECT reltuples FROM pg_class WHERE oid = 'chunks'::regclass) AS chunks
FROM unnest(tsvector_to_array(to_tsvector('english', %(query)s))) AS w(lexeme)
LEFT JOIN (
    SELECT e.lexeme, e.share
    FROM pg_stats s, unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS e(lexeme, share)
    WHERE s.schemaname = current_schema() AND s.tablename = 'chunks' AND s.attname = 'tsv'
) common ON common.lexeme = w.lexeme
"""

def lexical_query(conn: psycopg.Connection, query: str) -> str:
    """The full-text query, as tsquery text: any of the query's words, less the very common
    ones over a large knowledge base (see `COMMON_WORD_SHARE`). (An AND of every word, as
    plainto_tsquery builds, matches almost nothing for a natural question.)"""
    rows = conn.execute(_QUERY_LEXEMES, {"query": query}).fetchall()
    words = [r["lexeme"] for r in rows]
    rare = [r["lexeme"] for r in rows if r["share"] <= COMMON_WORD_SHARE]
    if rows and rows[0]["chunks"] >= COMMON_WORD_MIN_CHUNKS and rare:
        words = rare
    return " | ".join(_quote_lexeme(lexeme) for lexeme in sorted(words))


def _quote_lexeme(lexeme: str) -> str:
    """A lexeme as a tsquery operand, taken literally (no further stemming)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def hybrid_search(conn: psycopg.Connection, query: str, viewer: Viewer = Viewer(), k: int | None = None) -> list[Hit]:
    settings = get_settings()
    query = check_query(query)
    k = k or settings.search_k
    candidates = max(settings.search_candidates, k)
    store.vectors(conn)
    conn.execute("SELECT set_config('hnsw.ef_search', %(ef)s, true)",
                 {"ef": str(max(settings.hnsw_ef_search, candidates))})
    params = {
        "qvec": embed.embed_query(query), "tsquery": lexical_query(conn, query), "candidates": candidates, "k": k,
        "wd": settings.dense_weight, "wl": settings.lexical_weight, "rrf_k": settings.rrf_k,
        "channel": viewer.channel_id, "user": viewer.group_member,
    }
    rows = conn.execute(_SQL, params).fetchall()
    found = rows[0]["dense_found"] if rows else 0
    more = conn.execute(_MORE_CHUNKS_THAN, {**params, "found": found}).fetchone() if found < candidates else None
    if more is not None and more["more"]:
        # Rare (a tiny knowledge base, or restricted chunks crowding the index): search exactly.
        rows = conn.execute(_SQL_EXACT, params).fetchall()
    return [Hit(**{k: v for k, v in r.items() if k != "dense_found"}) for r in rows]
