"""Processes and fake peers for tests: `flywheel serve-llm` on a free port, and a scripted
HTTP server speaking TGI's wire format for the failure paths a real server rarely shows."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_llm(model_dir: Path, *extra: str, timeout_s: float = 180) -> Iterator[str]:
    """Run the real `flywheel serve-llm` in a subprocess; yield its URL once /health answers."""
    port = free_port()
    log = open(os.devnull, "w")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", "serve-llm", "--model", str(model_dir),
                             "--port", str(port), *extra], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, f"{url}/health", timeout_s)
        yield url
    finally:
        stop(proc)
        log.close()


def decoded_tokens(url: str) -> int:
    """Every token a `flywheel serve-llm` has decoded so far, cancelled generations included."""
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    return int(next(line.split()[1] for line in metrics.splitlines()
                    if line.startswith("flywheel_local_decoded_tokens_total ")))


def answers_http(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(proc: subprocess.Popen, health_url: str, timeout_s: float, log: Path | None = None) -> None:
    """Wait until `health_url` answers 200; fail at once, with the log's tail, if `proc` exits."""
    tail = (lambda: "\n" + log.read_text()[-3000:]) if log is not None else (lambda: "")
    deadline = time.monotonic() + timeout_s
    while not answers_http(health_url):
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}{tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{health_url} did not answer within {timeout_s:.0f} s{tail()}")
        try:  # between checks, wait on the process itself: an early exit is noticed at once
            proc.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            pass


def stop(proc: subprocess.Popen, timeout_s: float = 15) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


CHAT_OK = {"id": "c1", "object": "chat.completion", "created": 0, "model": "tgi", "system_fingerprint": "3.3.6",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok [1]"}, "logprobs": None,
                        "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


@dataclass
class ScriptedTGI:
    """Answers each request with the next (status, headers, body) of its script (the last one
    repeats), recording what it was sent."""

    script: list[tuple[int, dict[str, str], dict]]
    requests: list[dict] = field(default_factory=list)

    @contextmanager
    def running(self) -> Iterator[str]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
                length = int(self.headers.get("content-length") or 0)
                outer.requests.append({"path": self.path, "body": json.loads(self.rfile.read(length) or b"{}"),
                                       "authorization": self.headers.get("authorization")})
                status, headers, body = outer.script[min(len(outer.requests) - 1, len(outer.script) - 1)]
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"content-type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
