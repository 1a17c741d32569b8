"""Load on the Slack bot as Slack drives it: signed app_mention events over HTTP, many at once.

The real Bolt app (HTTP mode, `bot.serve`) answers from the sample handbook with the extractive
backend; Slack's Web API is the tests' fake (tests/support/fake_slack.py), which timestamps the
bot's replies. Measures ack latency (the event POST's response time) and time to the final
message in each thread (answer, review note, refusal or apology), and counts those outcomes.
Uses its own embedded Postgres in a temporary folder (DATABASE_URL is ignored).
Run: `.venv/bin/python bench/bot_bench.py [--events 200] [--concurrency 20]`."""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import httpx

ROOT = Path(__file__).resolve().parents[1]
HANDBOOK = ROOT / "samples" / "handbook"
QUESTIONS = ROOT / "samples" / "handbook-qa" / "questions.jsonl"
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "bot")]

import slack_payloads  # noqa: E402  (tests/bot: events built from Slack's own examples, v0-signed)
from support.fake_slack import TOKEN, Call, FakeSlack  # noqa: E402

SECRET = "bench-signing-secret-0123456789ab"
BOT_USER = "UBOT"
CHANNEL = "CBENCH"
REVIEW_CHANNEL = "CREVIEW"
FINAL_DEADLINE_S = 300.0   # after the last event is sent
Outcome = Literal["answered", "review", "declined", "apology"]


class TimedSlack(FakeSlack):
    """The fake Web API, also noting when each thread's placeholder is first replaced (or, if it
    was never posted, when the first other message lands in the thread)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.placeholder_threads: dict[str, str] = {}             # placeholder ts -> thread ts
        self.finals: dict[str, tuple[float, Call]] = {}           # thread ts -> (perf_counter, call)
        self.finals_changed = threading.Condition()
        self.placeholder_text = ""                                 # bot.blocks.PLACEHOLDER, once importable

    def _answer(self, method: str, args: dict[str, Any], token: str | None) -> tuple[int, dict[str, str], dict]:
        status, headers, body = super()._answer(method, args, token)
        now = time.perf_counter()
        if not body.get("ok") or args.get("channel") != CHANNEL:
            return status, headers, body
        call = Call(method, args, token, status, body)
        with self.finals_changed:
            if method == "chat.postMessage" and args.get("text") == self.placeholder_text:
                self.placeholder_threads[body["ts"]] = args["thread_ts"]
                return status, headers, body
            thread = args.get("thread_ts") if method == "chat.postMessage" else self.placeholder_threads.get(args["ts"])
            if thread is not None and thread not in self.finals:
                self.finals[thread] = (now, call)
                self.finals_changed.notify_all()
        return status, headers, body

    def wait_for_finals(self, threads: set[str], timeout_s: float) -> set[str]:
        """Block until every thread has its final message; returns those still without one."""
        deadline = time.monotonic() + timeout_s
        with self.finals_changed:
            while (missing := threads - self.finals.keys()) and (left := deadline - time.monotonic()) > 0:
                self.finals_changed.wait(left)
            return missing


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile, as bench/answer_bench.py reports them."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def classify(call: Call, rate_up: str, apology: str, review_wait: str) -> Outcome:
    """What the asker was shown: an answer carries the 👍 button; notes are told apart by text."""
    if rate_up in call.action_values():
        return "answered"
    if apology in call.shown_text:
        return "apology"
    return "review" if review_wait in call.shown_text else "declined"


def prepare(tmp: str, slack_url: str) -> None:
    """Environment for a bot of our own, then the database and the handbook."""
    os.environ.pop("DATABASE_URL", None)
    os.environ.update(FLYWHEEL_DATA_DIR=tmp, FLYWHEEL_LLM_BACKEND="extractive", SLACK_BOT_TOKEN=TOKEN,
                      SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=slack_url, FLYWHEEL_REVIEW_CHANNEL=REVIEW_CHANNEL,
                      FLYWHEEL_REVIEWERS=json.dumps(["UREV"]))
    os.environ.pop("SLACK_APP_TOKEN", None)
    from core.knowledge import embed, ingest

    started = time.perf_counter()
    report = ingest.ingest_paths([HANDBOOK])
    if report.failed:
        raise SystemExit(f"ingesting the handbook failed: {report.summary()}")
    print(f"ingested handbook: {report.summary()} in {time.perf_counter() - started:.1f} s")
    embed.embed_query("warm up")


def main(events: int, concurrency: int) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="bot-bench-")
    atexit.register(shutil.rmtree, tmp, True)  # registered first, so it runs after Postgres stops
    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines() if line.strip()]
    with TimedSlack(bot_user_id=BOT_USER).running() as slack:
        prepare(tmp, slack.url)
        from bot import blocks, serve
        from bot.app import build_app
        from bot.deliveries import DeliveryLoop
        from bot.deps import Deps
        from core import db
        from core.agent import run
        from core.config import get_settings

        slack.placeholder_text = blocks.PLACEHOLDER
        settings = get_settings()
        deps = Deps(settings=settings, client=serve.web_client(settings))
        server = serve.http_server(build_app(deps), host="127.0.0.1", port=0)
        server_thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        server_thread.start()
        loop = DeliveryLoop(deps).start()
        url = f"http://127.0.0.1:{server.server_address[1]}{serve.EVENTS_PATH}"
        http = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=concurrency))
        sent_at: dict[str, float] = {}
        acks: list[float] = []

        def send(i: int) -> str:
            """One @mention as its own top-level message (so its own thread); returns the thread ts."""
            ts = f"{1_600_000_000 + i}.{i:06d}"
            envelope = slack_payloads.app_mention(text=questions[i % len(questions)], user=f"U{i:05d}",
                                                  channel=CHANNEL, ts=ts, event_id=f"EvBench{i:06d}",
                                                  bot_user_id=BOT_USER)
            body = json.dumps(envelope)
            headers = slack_payloads.signed_headers(body, SECRET)
            sent_at[ts] = started = time.perf_counter()
            response = http.post(url, content=body.encode(), headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"event {i} got HTTP {response.status_code}: {response.text[:200]}")
            acks.append((time.perf_counter() - started) * 1000)
            return ts

        try:
            if slack.wait_for_finals({send(0)}, 60):  # the whole path once (graph, pools), not counted
                raise SystemExit("the warm-up question got no final message within 60 s")
            acks.clear()
            with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sender") as senders:
                threads = set(senders.map(send, range(1, events + 1)))
            missing = slack.wait_for_finals(threads, FINAL_DEADLINE_S)
        finally:
            http.close()
            server.shutdown()
            server.server_close()
            server_thread.join()
            loop.stop()
            deps.close()
            db.close_pools()
        if missing:
            raise SystemExit(f"{len(missing)} of {events} events got no final message within "
                             f"{FINAL_DEADLINE_S:.0f} s of the last send, e.g. threads {sorted(missing)[:5]}")
        finals = [slack.finals[t][0] - sent_at[t] for t in threads]
        outcomes: dict[str, int] = {}
        for t in sorted(threads):
            kind = classify(slack.finals[t][1], blocks.RATE_UP, blocks.APOLOGY, run.REVIEW_WAIT)
            outcomes[kind] = outcomes.get(kind, 0) + 1
    return {"events": events, "concurrency": concurrency,
            "ack_p50_ms": round(pct(acks, 50), 1), "ack_p99_ms": round(pct(acks, 99), 1),
            "final_p50_s": round(pct(finals, 50), 2), "final_p95_s": round(pct(finals, 95), 2),
            "outcomes": dict(sorted(outcomes.items()))}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200, help="app_mention events to send (default 200)")
    parser.add_argument("--concurrency", type=int, default=20, help="senders at once (default 20)")
    options = parser.parse_args()
    result = main(options.events, options.concurrency)
    print(f"{'measure':<22} {'p50':>9} {'tail':>9}")
    print(f"{'ack (ms, p50/p99)':<22} {result['ack_p50_ms']:9.1f} {result['ack_p99_ms']:9.1f}")
    print(f"{'final msg (s, p50/p95)':<22} {result['final_p50_s']:9.2f} {result['final_p95_s']:9.2f}")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in result["outcomes"].items()))
    print(json.dumps(result))
