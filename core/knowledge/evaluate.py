"""Retrieval evaluation on a BEIR-layout set (corpus.jsonl, queries.jsonl, qrels.tsv).

The corpus goes into a fresh schema of its own, dropped afterwards, so a team can measure its
knowledge base without touching it: recall@k, precision@k, MRR@k and nDCG@10 by record `_id`."""
from __future__ import annotations

import csv
import json
import math
import uuid
from collections.abc import Callable
from pathlib import Path

from psycopg.conninfo import make_conninfo

from core import db
from core.knowledge import ingest, search


def read_queries(path: Path) -> dict[str, str]:
    queries = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
                queries[str(record["_id"])] = str(record["text"])
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{path}:{number}: a query needs '_id' and 'text' ({e})") from e
    return queries


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(newline="") as f:
        for number, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not row or row[0] == "query-id":
                continue
            try:
                relevance = int(float(row[2]))   # BEIR writes 1; some sets write 1.0
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>score', got {row}") from None
            if relevance > 0:
                qrels.setdefault(row[0], {})[row[1]] = relevance
    return qrels


def score(ranked: list[str], relevant: dict[str, int], k: int) -> dict[str, float]:
    top = ranked[:k]
    hits = [doc for doc in top if doc in relevant]
    first = next((i for i, doc in enumerate(top, start=1) if doc in relevant), None)
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 1) for i, doc in enumerate(ranked[:10], start=1))
    ideal = sum(g / math.log2(i + 1) for i, g in enumerate(sorted(relevant.values(), reverse=True)[:10], start=1))
    return {f"recall@{k}": len(hits) / len(relevant), f"precision@{k}": len(hits) / k,
            f"mrr@{k}": 1 / first if first else 0.0, "ndcg@10": dcg / ideal if ideal else 0.0}


def evaluate_retrieval(corpus: Path, queries: Path, qrels: Path, k: int = 3,
                       progress: Callable[[str], None] | None = None) -> dict[str, float]:
    questions, judgements = read_queries(queries), read_qrels(qrels)
    judged = [q for q in questions if q in judgements]
    if not judged:
        raise ValueError(f"{qrels}: no judgement matches a query in {queries}")
    url = db.database_url()
    schema = f"eval_{uuid.uuid4().hex[:12]}"
    eval_url = make_conninfo(url, options=f"-c search_path={schema},public")
    with db.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')  # generated name, not input
    try:
        db.ensure_schema(eval_url)
        report = ingest.ingest_paths([corpus], url=eval_url)
        if progress:
            progress(report.summary())
        if not report.added:
            raise ValueError(f"{corpus}: nothing could be ingested\n{report.summary()}")
        totals: dict[str, float] = {}
        with db.connection(eval_url) as conn:
            for qid in judged:
                try:
                    hits = search.hybrid_search(conn, questions[qid], k=max(k, 10) * 3)
                except search.QueryError as e:   # a query no one could search for: say which
                    raise ValueError(f"{queries}: query {qid!r}: {e}") from None
                ranked = list(dict.fromkeys(h.source.rsplit("#", 1)[-1] for h in hits))
                for name, value in score(ranked, judgements[qid], k).items():
                    totals[name] = totals.get(name, 0.0) + value
    finally:
        db.close_pools()
        with db.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return {**{name: round(total / len(judged), 4) for name, total in totals.items()}, "n": len(judged)}
