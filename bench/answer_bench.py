"""Per-step latency of the agent graph on the sample handbook, with the extractive backend.

Generation is excluded (no model): this measures what Flywheel itself adds to a question —
guard, retrieval, assessment, checkpointing and records. Run: `.venv/bin/python bench/answer_bench.py`.
Uses its own embedded Postgres in a temporary folder unless DATABASE_URL is set."""
from __future__ import annotations

import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "samples" / "handbook-qa" / "questions.jsonl"
HANDBOOK = ROOT / "samples" / "handbook"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main(n: int = 100) -> None:
    tmp = tempfile.mkdtemp(prefix="answer-bench-")
    atexit.register(shutil.rmtree, tmp, True)  # registered first, so it runs after Postgres stops
    os.environ.setdefault("FLYWHEEL_DATA_DIR", tmp)
    os.environ["FLYWHEEL_LLM_BACKEND"] = "extractive"
    sys.path.insert(0, str(ROOT))
    from core.agent import run
    from core.knowledge import embed, ingest

    t0 = time.perf_counter()
    report = ingest.ingest_paths([HANDBOOK])
    print(f"ingested handbook: {report.summary()} in {time.perf_counter() - t0:.1f} s")
    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines() if line.strip()]
    embed.embed_query("warm up")
    steps: dict[str, list[float]] = {}
    routes: dict[str, int] = {}
    for i in range(n):
        q = questions[i % len(questions)]
        outcome = run.ask(q, run.Asker(surface="eval", thread_key=f"bench:{i}"))
        routes[outcome.route] = routes.get(outcome.route, 0) + 1
        for step, seconds in outcome.timings.items():
            steps.setdefault(step, []).append(seconds * 1000)
    print(f"{n} questions, routes: {routes}")
    print(f"{'step':<10} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    for step in ("guard", "retrieve", "draft", "assess", "total"):
        if step in steps:
            v = steps[step]
            print(f"{step:<10} {pct(v, 50):8.1f} {pct(v, 95):8.1f} {statistics.mean(v):8.1f}")


def serving_speed(runs: int = 5, new_tokens: int = 128) -> None:
    """Greedy decoding speed of `flywheel serve-llm` over HTTP: the tiny test model (mechanics
    only) and SmolLM2-135M-Instruct (the embedded default)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from core.llm.local_model import ensure_default_model
    from support.servers import serve_llm
    from support.tiny_model import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    atexit.register(shutil.rmtree, tmp, True)
    # A data folder without a database: the servers read no live adapter, so they hold no handle
    # on the benchmark's embedded Postgres, which then stops when this process exits.
    os.environ["FLYWHEEL_DATA_DIR"] = str(tmp)
    for label, model_dir in (("tiny random model", build_tiny_model(tmp / "tiny")),
                             ("SmolLM2-135M-Instruct", ensure_default_model(tmp))):
        with serve_llm(model_dir) as url:
            body = {"inputs": "Write a short note about laptop delivery times.",
                    "parameters": {"max_new_tokens": new_tokens, "details": True}}
            timed(url, body)  # warm up
            rates = [tokens / seconds for seconds, tokens in (timed(url, body) for _ in range(runs))]
            print(f"serve-llm, {label}: {statistics.median(rates):.0f} tokens/s "
                  f"(median of {runs}, {new_tokens} new tokens, greedy, CPU)")
            dropped_stream_cost(url, body)


def timed(url: str, body: dict) -> tuple[float, int]:
    """Seconds for one `/generate` of `body`, and the tokens it generated."""
    import httpx

    started = time.perf_counter()
    out = httpx.post(f"{url}/generate", json=body, timeout=600).json()
    return time.perf_counter() - started, out["details"]["generated_tokens"]


def dropped_stream_cost(url: str, body: dict, long_tokens: int = 1000) -> None:
    """A client that reads one token of a long stream and goes away: how long the next request
    waits, against the same request on an idle server, and how many tokens the dropped
    generation decoded before it was cancelled."""
    import httpx
    from support.servers import decoded_tokens

    idle = statistics.median(timed(url, body)[0] for _ in range(3))
    before = decoded_tokens(url)
    long = {"inputs": body["inputs"], "parameters": {"max_new_tokens": long_tokens}}
    with httpx.stream("POST", f"{url}/generate_stream", json=long, timeout=600) as dropped:
        next(line for line in dropped.iter_lines() if line.startswith("data:"))
    behind, generated = timed(url, body)
    wasted = decoded_tokens(url) - before - generated
    print(f"  behind a dropped {long_tokens}-token stream: {behind:.2f} s against {idle:.2f} s idle "
          f"({behind / idle:.2f}x); the dropped stream decoded {wasted} tokens")

if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
    serving_speed()
