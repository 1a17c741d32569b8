"""Does the retrain help? The whole loop on CPU with the real SmolLM2-135M-Instruct.

Answers to the sample handbook's questions are curated (the reference answers become the ideal
answers), a dataset is frozen, the retrain runs exactly as the worker runs it
(`trainer.jobs.run_retrain`: dataset, LoRA training in a child process, eval gate), then
`flywheel eval answers` scores questions held out from training, through the agent and the
local server, with the base model and with the new adapter. Prints one JSON object last.

Run: `.venv/bin/python bench/retrain_gain.py` (about 15-30 minutes on 2 cores). Uses its own
embedded Postgres and data folder in a temporary directory."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "samples" / "handbook-qa" / "questions.jsonl"
HANDBOOK = ROOT / "samples" / "handbook"


def held_out(question: str, share: float) -> bool:
    """A fixed third (by default) of the questions, chosen by a hash of their text."""
    return int(hashlib.sha256(question.encode()).hexdigest()[:8], 16) / 16**8 < share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held-out", type=float, default=0.33, help="share of questions kept out of training")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--search-k", type=int, default=3, help="sources per answer (shorter prompts on CPU)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="retrain-gain-"))
    if not args.keep:  # registered first, so it runs last: after the embedded Postgres has stopped
        import atexit
        import shutil

        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    os.environ.update({"FLYWHEEL_DATA_DIR": str(tmp), "FLYWHEEL_SEARCH_K": str(args.search_k),
                       "FLYWHEEL_LLM_MAX_NEW_TOKENS": str(args.max_new_tokens)})
    os.environ.pop("DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from core import curation, db, queue, retrain
    from core.agent import run
    from core.knowledge import ingest
    from core.llm.local_model import ensure_default_model
    from support.servers import serve_llm
    from trainer import jobs

    model_dir = ensure_default_model(tmp)
    os.environ["FLYWHEEL_LLM_MODEL"] = str(model_dir)
    queue.ensure_schema()
    ingest.ingest_paths([HANDBOOK])
    records = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    records = [r for r in records if r.get("answer")]
    train_set = [r for r in records if not held_out(r["question"], args.held_out)]
    test_set = [r for r in records if held_out(r["question"], args.held_out)]
    held_path = tmp / "held_out.jsonl"
    held_path.write_text("".join(json.dumps(r) + "\n" for r in test_set))

    # Curate: the agent answers (extractive drafts: the model is not needed for this), an admin
    # accepts each answer edited into the reference answer.
    context = dataclasses.replace(run.default_context(), generator=None, reviews=False)
    for r in train_set:
        outcome = run.ask(r["question"], run.Asker(surface="cli", user_id="bench"), context=context)
        with db.connection() as conn:
            curation.accept(conn, outcome.answer_id, curated_by="bench", ideal_answer=r["answer"])
    with db.connection() as conn:
        dataset = curation.create_dataset(conn, created_by="bench", note="handbook questions, minus held-out")

    params = {"epochs": args.epochs, "rank": args.rank, "lr": args.lr, "gate_max_new_tokens": args.max_new_tokens}
    started = time.perf_counter()
    queued = retrain.request_retrain(requested_by="bench", dataset_version=dataset.version, params=params)
    jobs.run_retrain(queued.id)  # what the worker's task runs
    wall = time.perf_counter() - started
    with db.connection() as conn:
        from core import models, training

        done = training.get_run(conn, queued.id)
        adapter = models.get(conn, done.adapter_version) if done and done.adapter_version else None
    if done is None or done.status != "succeeded" or adapter is None:
        print(done.log if done else "no run", file=sys.stderr)
        raise SystemExit(f"retrain failed: {done.error if done else '?'}")
    print(done.log, file=sys.stderr)

    scores = {}
    with serve_llm(model_dir, "--adapter", f"{adapter.name}={adapter.path}", timeout_s=600) as url:
        env = {**os.environ, "FLYWHEEL_LLM_BACKEND": "local", "FLYWHEEL_LLM_URL": url,
               "FLYWHEEL_LLM_TIMEOUT_S": "600", "DATABASE_URL": db.database_url()}
        # core.knowledge.embed sets HF_HUB_OFFLINE=1 in this process once it loaded the embedder;
        # a child inheriting it gets a huggingface_hub client that refuses even localhost.
        env.pop("HF_HUB_OFFLINE", None)
        for arm, extra in (("base", []), ("adapter", ["--adapter", adapter.name])):
            with db.connection() as conn:
                first = conn.execute("SELECT coalesce(max(id), 0) + 1 AS n FROM answers").fetchone()["n"]
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "core.cli", "eval", "answers", "--questions", str(held_path),
                                  *extra], cwd=ROOT, env=env, capture_output=True, text=True)
            (tmp / f"eval-{arm}.log").write_text(out.stderr)
            if out.returncode != 0:
                raise SystemExit(f"flywheel eval answers failed ({arm}); see {tmp / f'eval-{arm}.log'}")
            with db.connection() as conn:  # a score of quoted excerpts would measure nothing
                fallback = conn.execute("SELECT count(*) FILTER (WHERE model = 'extractive') AS n FROM answers"
                                        " WHERE surface = 'eval' AND id >= %(f)s", {"f": first}).fetchone()["n"]
            if fallback:
                raise SystemExit(f"{fallback} answers of the {arm} arm fell back to excerpts (model server "
                                 f"unreachable?); see {tmp / f'eval-{arm}.log'}")
            scores[arm] = {**json.loads(out.stdout.strip().splitlines()[-1]), "eval_s": round(time.perf_counter() - t0)}
    result = {
        "model": "SmolLM2-135M-Instruct", "device": "cpu", "threads": os.cpu_count(),
        "train_questions": len(train_set), "held_out_questions": len(test_set), "params": params,
        "search_k": args.search_k, "max_new_tokens": args.max_new_tokens,
        "retrain_wall_s": round(wall, 1), "train": done.metrics["train"], "gate": {
            k: done.metrics["gate"][k] for k in ("passed", "candidate", "baseline", "baseline_name")},
        "held_out_base": scores["base"], "held_out_adapter": scores["adapter"],
        "gain": {k: round(scores["adapter"][k] - scores["base"][k], 4) for k in ("token_f1", "rouge_l", "citation_rate")},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
