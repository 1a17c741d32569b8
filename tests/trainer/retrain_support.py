"""Helpers of the trainer tests: curated answers, the worker process, a client that keeps
asking while adapters switch, and waiting with deadlines."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from core import curation, db, feedback, models, training
from support.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]

# Three handbook passages, and answers drafted from them that admins then curated.
PASSAGES = {
    "laptops": ("Laptops", "Ordering", "Order a new laptop in the IT portal under Hardware. Your manager approves the "
                "request. Delivery takes five working days in Lisbon and seven working days in Toronto."),
    "expenses": ("Expenses", "Claims", "Meals on business trips are reimbursed up to 40 euros a day. Submit expense "
                 "claims within 30 days with the receipts attached."),
    "vpn": ("VPN", "Access", "Install the VPN client from the IT portal and sign in with your company account."),
}
CURATED = [
    ("laptops", "How do I order a new laptop?", "Order it in the IT portal under Hardware; your manager approves it [1]."),
    ("laptops", "How long does laptop delivery take in Lisbon?", "Five working days [1]."),
    ("laptops", "How long does delivery take in Toronto?", "Seven working days in Toronto [1]."),
    ("expenses", "How much can I spend on meals when travelling?", "Up to 40 euros a day [1]."),
    ("expenses", "When do I have to submit an expense claim?", "Within 30 days, with the receipts attached [1]."),
    ("vpn", "How do I get on the VPN?", "Install the VPN client from the IT portal and sign in with your company account [1]."),
    ("laptops", "Who approves a laptop request?", "Your manager approves it [1]."),
    ("expenses", "Do I need receipts for expenses?", "Yes: attach the receipts to the claim [1]."),
]


def answer_and_curate(curated: list[tuple[str, str, str]], *, rejected: list[tuple[str, str, str]] = ()) -> None:
    """Store the passages and one delivered answer per question, drafted from its passage (the
    records the agent writes; no embedder needed), then accept each with its ideal answer, or
    reject it: what an admin does in Curation."""
    import numpy as np

    from core.knowledge import chunk, store

    rng = np.random.default_rng(0)
    with db.connection() as conn:
        chunk_ids = {}
        for key, (title, heading, text) in PASSAGES.items():
            doc = store.upsert_document(conn, source=f"{key}.md", title=title, url=None, content_hash=key,
                                        visibility=None, metadata={})
            vectors = rng.normal(size=(2, 384)).astype(np.float32)
            store.replace_chunks(conn, doc, [chunk.Chunk(0, heading, f"{title} > {heading}\n{text}", text,
                                                         f"{title} > {heading}")], vectors[:1], vectors[1:])
            chunk_ids[key] = (doc, conn.execute("SELECT id FROM chunks WHERE document_id = %(d)s",
                                                {"d": doc}).fetchone()["id"])  # type: ignore[index]
        for decision, items in (("accepted", curated), ("rejected", rejected)):
            for key, question, ideal in items:
                doc, chunk_id = chunk_ids[key]
                title, heading, text = PASSAGES[key]
                answer_id = feedback.create_answer(conn, thread_key=f"cli:{question}", surface="cli", question=question)
                feedback.update_answer(conn, answer_id, status="delivered", route="answered", final_answer=text,
                                       sources=[{"n": 1, "chunk_id": chunk_id, "document_id": doc, "title": title,
                                                 "heading": heading, "url": None, "score": 0.9, "dense_score": 0.8}])
                if decision == "accepted":
                    curation.accept(conn, answer_id, curated_by="admin@example.com", ideal_answer=ideal)
                else:
                    curation.reject(conn, answer_id, curated_by="admin@example.com")


# Small and quick on two CPU cores; the mechanics are the same as the defaults.
TINY_PARAMS = {"epochs": 3, "rank": 4, "lr": 5e-3, "max_seq_len": 512, "checkpoint_every": 2, "val_every": 2,
               "gate_max_new_tokens": 8}


class Worker:
    """`flywheel worker` in a subprocess (through `core.cli.train_cmds`, so without the line in
    `core/cli/__init__.py` too), on the test's database and data folder."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        script = ("import typer; from core.cli import train_cmds; app = typer.Typer(); "
                  "train_cmds.register(app); app(['worker'])")
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


def finished_run(run_id: int, *, timeout_s: float = 600) -> training.TrainingRun:
    def done() -> training.TrainingRun | None:
        with db.connection() as conn:
            found = training.get_run(conn, run_id)
        return found if found is not None and found.status in ("succeeded", "failed", "cancelled") else None

    return wait_until(done, timeout_s=timeout_s, what=f"retrain run {run_id} to finish")  # type: ignore[return-value]


class Client:
    """Sends generation requests without pause, like the bot: each one with the live adapter,
    to the serving URL, both read per request from `models.LiveAdapterCache`. Records every
    failure and which adapter answered."""

    def __init__(self, database_url: str, default_url: str) -> None:
        self.cache = models.LiveAdapterCache(database_url, max_age_s=3600)
        self.default_url = default_url
        self.failures: list[str] = []
        self.answered: list[tuple[str | None, str]] = []   # (adapter, url)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.cache.close()

    def answered_by(self, adapter: str | None) -> int:
        return sum(1 for a, _ in self.answered if a == adapter)

    def _loop(self) -> None:
        with httpx.Client(timeout=60) as http:
            while not self._stop.is_set():
                adapter, url = self.cache.current()
                url = url or self.default_url
                body = {"inputs": "How long does delivery take?",
                        "parameters": {"max_new_tokens": 2, "adapter_id": adapter}}
                try:
                    r = http.post(f"{url}/generate", json=body)
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code} from {url} with {adapter}: {r.text[:200]}")
                    else:
                        self.answered.append((adapter, url))
                except httpx.HTTPError as e:
                    self.failures.append(f"{type(e).__name__} from {url} with {adapter}: {e}")
                self._stop.wait(0.1)  # about 10 requests a second: steady traffic, not a CPU hog
