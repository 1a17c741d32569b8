"""Retrieval at scale: 100k synthetic 384-d chunks in pgvector's HNSW index.

Prints recall@10 of HNSW against exact search, p50/p95 query latency of the HNSW scan and of
the full hybrid query (with and without leaving very common words out of the full-text part),
and ingestion throughput through the real embedder.
Run: `.venv/bin/python bench/retrieval_bench.py [N]` (own embedded Postgres in a temp folder)."""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DIM = 384


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def embedding_like_vectors(n: int, rng: np.random.Generator, latent: int = 48, topics: int = 500) -> np.ndarray:
    """Unit vectors with the structure of sentence embeddings: topics in a low-dimensional
    latent space, projected to 384 dimensions, plus a little noise. (Uniform noise in 384-d has
    no neighbourhood structure at all and is no model of real embeddings.)"""
    projection = rng.standard_normal((latent, DIM)).astype(np.float32)
    centres = rng.standard_normal((topics, latent)).astype(np.float32)
    z = centres[rng.integers(0, topics, n)] + 0.5 * rng.standard_normal((n, latent)).astype(np.float32)
    points = z @ projection + 0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def main(n: int = 100_000, queries: int = 200) -> None:
    os.environ.setdefault("FLYWHEEL_DATA_DIR", tempfile.mkdtemp(prefix="retrieval-bench-"))
    from pgvector.psycopg import register_vector

    from core import db
    from core.knowledge import embed, ingest
    from core.knowledge import search

    rng = np.random.default_rng(0)
    data = embedding_like_vectors(n + queries, rng)
    vectors, probes = data[:n], data[n:]  # queries from the same distribution, not in the table
    # Text with a realistic word distribution: Zipf over a 20k-word vocabulary; the questions'
    # topic words sit at mid-frequency ranks (200-211), as topic words do in a real corpus.
    real = "laptop vpn expense travel badge payroll holiday parking printer security phishing leave".split()
    filler = [f"term{i}" for i in range(20_000)]
    vocabulary = np.array(filler[:200] + real + filler[200:])
    weights = 1 / np.arange(1, len(vocabulary) + 1)
    weights /= weights.sum()
    with db.connection() as conn:
        register_vector(conn)
        doc = conn.execute("INSERT INTO documents (source, title, content_hash) VALUES ('bench', 'Bench', 'x')"
                           " RETURNING id").fetchone()["id"]
        # Bulk load first, index after: inserting into a live HNSW index row by row is far slower.
        conn.execute("DROP INDEX chunks_embedding_hnsw, chunks_heading_embedding_hnsw")
        started = time.perf_counter()
        with conn.cursor().copy("COPY chunks (document_id, ord, heading, text, embedding, heading_embedding)"
                                " FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "int4", "text", "text", "vector", "vector"])
            for i, v in enumerate(vectors):
                text = " ".join(rng.choice(vocabulary, 60, p=weights))
                copy.write_row((doc, i, "", text, v, v))
        print(f"loaded {n:,} chunks with COPY in {time.perf_counter() - started:.1f} s")
    with db.connect(autocommit=True) as conn:  # rebuild the index over the loaded data, timed
        conn.execute("SET maintenance_work_mem = '2GB'")
        started = time.perf_counter()
        conn.execute("CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops)")
        print(f"HNSW index (m=16, ef_construction=64) built in {time.perf_counter() - started:.1f} s")
        conn.execute("CREATE INDEX chunks_heading_embedding_hnsw ON chunks USING hnsw (heading_embedding vector_cosine_ops)")
        conn.execute("VACUUM ANALYZE chunks")

    with db.connect() as conn:
        register_vector(conn)
        exact: list[set[int]] = []
        conn.execute("SET LOCAL enable_indexscan = off")
        for q in probes:
            rows = conn.execute("SELECT id FROM chunks ORDER BY embedding <=> %(q)s LIMIT 10", {"q": q}).fetchall()
            exact.append({r["id"] for r in rows})
        conn.rollback()
        print(f"{'ef_search':>9} {'recall@10':>10} {'p50 ms':>7} {'p95 ms':>7}")
        for ef in (40, 100, 200, 400):
            conn.execute("SELECT set_config('hnsw.ef_search', %(ef)s, false)", {"ef": str(ef)})
            latencies, recalls = [], []
            for q, truth in zip(probes, exact):
                started = time.perf_counter()
                rows = conn.execute("SELECT id FROM chunks ORDER BY embedding <=> %(q)s LIMIT 10", {"q": q}).fetchall()
                latencies.append((time.perf_counter() - started) * 1000)
                recalls.append(len({r["id"] for r in rows} & truth) / 10)
            print(f"{ef:>9} {statistics.mean(recalls):>10.3f} {pct(latencies, 50):>7.2f} {pct(latencies, 95):>7.2f}")

    embed.embed_query("warm up")
    questions = ["How do I reset my VPN password?", "What is the hotel limit in Canada?", "parking in Toronto"]
    # Each question plus one filler word: a rarer one (ranks 37-2183: in at most 14% of chunks), or
    # one of the ten commonest (in 45-100% of chunks), as "policy" or "employee" are in a handbook.
    query_sets = {"rare": [questions[i % 3] + f" term{37 + i * 37}" for i in range(60)],
                  "common": [questions[i % 3] + f" term{i % 10}" for i in range(60)]}
    viewer = search.Viewer(user_id="U1", channel_id="C1")
    default_share = search.COMMON_WORD_SHARE
    with db.connection() as conn:
        for query in query_sets["rare"] + query_sets["common"]:  # warm the caches for both settings
            search.hybrid_search(conn, query, viewer, k=5)
    p95s = {}
    # Full text leaves out words in more than COMMON_WORD_SHARE of the chunks; 1.0 keeps every
    # word (as before that rule), for the comparison.
    for kind, queries in query_sets.items():
        for share in (default_share, 1.0):
            search.COMMON_WORD_SHARE = share
            latencies, embedding = [], []
            with db.connection() as conn:
                for query in queries:
                    started = time.perf_counter()
                    embed.embed_query(query)
                    embedding.append((time.perf_counter() - started) * 1000)
                    started = time.perf_counter()
                    search.hybrid_search(conn, query, viewer, k=5)
                    latencies.append((time.perf_counter() - started) * 1000)
            p95s[kind, share] = pct(latencies, 95)
            print(f"hybrid_search over {n:,} chunks, questions with a {kind} word, "
                  f"{'every word searched' if share == 1.0 else f'words in over {share:.0%} of chunks left out'}:"
                  f" p50 {pct(latencies, 50):.1f} ms, p95 {pct(latencies, 95):.1f} ms"
                  f" (embedding the query p50 {pct(embedding, 50):.1f} ms)")
        print(f"  p95 ratio, every word / common words left out: {p95s[kind, 1.0] / p95s[kind, default_share]:.1f}x")
    search.COMMON_WORD_SHARE = default_share

    handbook = Path(__file__).resolve().parents[1] / "samples" / "handbook"
    texts = [p.read_text() for p in sorted(handbook.rglob("*.md"))] * 8
    started = time.perf_counter()
    vectors_out = embed.embed_texts([t[i:i + 900] for t in texts for i in range(0, len(t), 900)])
    elapsed = time.perf_counter() - started
    print(f"embedder throughput: {len(vectors_out) / elapsed:.0f} chunks/s ({len(vectors_out)} chunks of ~150 words)")
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(8):
            for p in sorted(handbook.rglob("*.md")):
                Path(tmp, f"{k}-{p.name}").write_text(p.read_text().replace("#", f"# copy {k}", 1))
        started = time.perf_counter()
        report = ingest.ingest_paths([Path(tmp)])
        elapsed = time.perf_counter() - started
    print(f"ingest (parse, chunk, embed, store): {report.chunks / elapsed:.0f} chunks/s "
          f"({report.chunks} chunks, {len(report.added)} documents, {elapsed:.1f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
