"""`make up` end to end: `flywheel up` on a fresh data folder starts every Procfile process on the
embedded database, each becomes healthy, a question is answered through the dashboard's Try it
page and the CLI, and Ctrl-C stops everything, keeping the data for the next start."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from core import db
from core.agent.run import close_live_adapter_caches
from core.config import get_settings
from support.servers import answers_http, free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def product(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    """`flywheel up` in its own process group (as a terminal runs it), on free ports."""
    ports = {"llm": free_port(), "dashboard": free_port(), "worker_metrics": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE_URL"))}
    env.update({
        "FLYWHEEL_DATA_DIR": str(tmp_path / "data"), "FLYWHEEL_LLM_MODEL": str(tiny_model_dir),
        "FLYWHEEL_LLM_PORT": str(ports["llm"]), "FLYWHEEL_LLM_URL": f"http://127.0.0.1:{ports['llm']}",
        "FLYWHEEL_DASHBOARD_PORT": str(ports["dashboard"]), "FLYWHEEL_WORKER_METRICS_PORT": str(ports["worker_metrics"]),
        "FLYWHEEL_LLM_MAX_NEW_TOKENS": "16", "FLYWHEEL_BOT_METRICS_PORT": "0",
    })
    for key, value in env.items():
        if key.startswith("FLYWHEEL_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    get_settings.cache_clear()
    log = tmp_path / "up.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "core.cli", "up"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        yield {"proc": proc, "ports": ports, "log": log, "env": env, "data": tmp_path / "data"}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        db.close_pools()
        get_settings.cache_clear()


def test_make_up_runs_every_process_answers_and_stops_cleanly_keeping_data(product: dict) -> None:
    proc, ports, log, env = product["proc"], product["ports"], product["log"], product["env"]
    for health in (f"http://127.0.0.1:{ports['llm']}/health", f"http://127.0.0.1:{ports['dashboard']}/_stcore/health",
                   f"http://127.0.0.1:{ports['worker_metrics']}/metrics"):
        wait_healthy(proc, health, 240, log)
    printed = log.read_text()
    assert "first start: ingesting the sample handbook" in printed
    assert f"dashboard: http://localhost:{ports['dashboard']}" in printed
    assert "slack: not connected: set SLACK_BOT_TOKEN" in printed
    assert "bot.1" in printed and "Slack is not configured" in printed  # idle, not exited
    metrics = httpx.get(f"http://127.0.0.1:{ports['llm']}/metrics", timeout=5).text
    assert "flywheel_questions" in metrics

    asked = subprocess.run([sys.executable, "-m", "core.cli", "ask", "How do I get a new laptop?"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=240)
    assert asked.returncode == 0, asked.stderr
    assert "Route:" in asked.stdout and "Sources:" in asked.stdout

    # The Try it page, as the running dashboard serves it, on the same database.
    # The running server's socket, without joining pgserver's list of processes that keep it up.
    os.environ["DATABASE_URL"] = f"postgresql://postgres:@/postgres?host={product['data'] / 'pg'}"
    try:
        get_settings.cache_clear()
        st_config.set_option("server.address", "127.0.0.1")  # as `flywheel dashboard` binds it without a login
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=240)
        at.run()
        at.switch_page("pages/try_it.py").run()
        at.text_area(key="tryit_question").input("How do I connect to the VPN?")
        at.button(key="tryit_ask").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
            surfaces = [r[0] for r in conn.execute("SELECT surface FROM answers ORDER BY id")]
            documents = conn.execute("SELECT count(*) FROM documents").fetchone()[0]  # type: ignore[index]
        assert surfaces == ["cli", "dashboard"] and documents > 20
    finally:
        del os.environ["DATABASE_URL"]
        close_live_adapter_caches()   # its listener would outlive the database stopped below
        db.close_pools()

    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
    assert proc.wait(timeout=90) == 0, log.read_text()[-3000:]
    assert not answers_http(f"http://127.0.0.1:{ports['llm']}/health")
    assert not answers_http(f"http://127.0.0.1:{ports['dashboard']}/_stcore/health")
    deadline = time.monotonic() + 30
    while (product["data"] / "pg" / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (product["data"] / "pg" / "postmaster.pid").exists(), "the embedded Postgres was left running"

    again = subprocess.run([sys.executable, "-m", "core.cli", "docs", "ls"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.count("chunks") == documents

    # The admin removes the whole sample handbook: the next start leaves it removed.
    removed = subprocess.run([sys.executable, "-m", "core.cli", "docs", "rm", str(ROOT / "samples" / "handbook")],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert removed.returncode == 0, removed.stderr
    procfile = product["data"] / "Procfile"
    procfile.write_text(f'done: {sys.executable} -c "pass"\n')   # honcho stops once it exits
    restarted = subprocess.run([sys.executable, "-m", "core.cli", "up", "--procfile", str(procfile)], cwd=ROOT,
                               env=env, capture_output=True, text=True, timeout=120)
    assert "database: embedded Postgres" in restarted.stdout, restarted.stdout + restarted.stderr
    assert "sample handbook" not in restarted.stdout
    left = subprocess.run([sys.executable, "-m", "core.cli", "docs", "ls"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert "The knowledge base is empty" in left.stdout


@pytest.mark.parametrize("how", ["SIGTERM to up alone", "SIGHUP to the terminal's process group"])
def test_up_stopped_from_outside_stops_its_processes_and_the_embedded_database(tmp_path: Path, how: str) -> None:
    """`kill PID` or `docker stop` sends SIGTERM to `flywheel up` only, not to its children; a
    closed terminal or SSH session sends SIGHUP to its whole foreground process group."""
    child_pid = tmp_path / "child.pid"
    child = ("import os, time; "  # a child of up (using the database through up's DATABASE_URL),
             f"open({str(child_pid)!r}, 'w').write(str(os.getpid())); time.sleep(600)")  # killed by SIGTERM
    procfile = tmp_path / "Procfile"
    procfile.write_text(f'child: {sys.executable} -c "{child}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE_URL"))}
    env["FLYWHEEL_DATA_DIR"] = str(tmp_path / "data")
    log = tmp_path / "up.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "core.cli", "up", "--procfile", str(procfile), "--no-samples"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (child_pid.exists() and child_pid.read_text()) and proc.poll() is None:
            assert time.monotonic() < deadline, "the Procfile's process never started"
            time.sleep(0.2)
        postmaster = tmp_path / "data" / "pg" / "postmaster.pid"
        assert postmaster.exists()

        if how.startswith("SIGTERM"):
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGHUP)
        assert proc.wait(timeout=90) == 0, log.read_text()[-3000:]
        deadline = time.monotonic() + 30
        while (postmaster.exists() or psutil.pid_exists(int(child_pid.read_text()))) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not psutil.pid_exists(int(child_pid.read_text())), "the Procfile's process was left running"
        assert not postmaster.exists(), "the embedded Postgres was left running"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_processes_read_env_settings_with_spaces_as_written(tmp_path: Path) -> None:
    """honcho, left to read `.env` itself, joined the words of a value ("security incident")."""
    seen = tmp_path / "seen.txt"
    (tmp_path / ".env").write_text("FLYWHEEL_SENSITIVE_TOPICS=salary,security incident\n")
    child = ("import time; from core.config import get_settings; "   # reads the .env of where `up` was typed
             f"open({str(seen)!r}, 'w').write('|'.join(get_settings().sensitive_topics)); time.sleep(600)")
    (tmp_path / "Procfile").write_text(f'child: {sys.executable} -c "{child}"\n')
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "DATABASE_URL", "FLYWHEEL_SENSITIVE_TOPICS", "FLYWHEEL_ENV_FILE"))}
    env["FLYWHEEL_DATA_DIR"] = str(tmp_path / "data")
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", "up", "--procfile", str(tmp_path / "Procfile"),
                             "--no-samples"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (seen.exists() and seen.read_text()) and proc.poll() is None:
            assert time.monotonic() < deadline, "the Procfile's process never started"
            time.sleep(0.2)
        assert seen.read_text() == "salary|security incident"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_llm_line_idles_when_another_backend_serves_the_model(tmp_path: Path) -> None:
    env = {**os.environ, "FLYWHEEL_LLM_BACKEND": "tgi", "FLYWHEEL_DATA_DIR": str(tmp_path)}
    llm = subprocess.Popen([sys.executable, "-m", "core.cli", "serve-llm", "--idle-unless-local"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        said = llm.stdout.readline()   # type: ignore[union-attr]
        assert "FLYWHEEL_LLM_BACKEND is tgi: no local model server is needed here." in said
        with pytest.raises(subprocess.TimeoutExpired):   # still up: under honcho an exit would stop the rest
            llm.wait(timeout=2)
        assert not any(tmp_path.iterdir())   # no model converted for nothing
    finally:
        llm.terminate()
        llm.communicate(timeout=30)


def test_a_second_up_says_flywheel_seems_to_be_running_instead_of_failing_on_a_port(tmp_path: Path) -> None:
    with socket.socket() as dashboard:   # what the first `make up`'s dashboard holds
        dashboard.bind(("127.0.0.1", 0))
        dashboard.listen()
        port = dashboard.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE_URL"))}
        env.update(FLYWHEEL_DATA_DIR=str(tmp_path / "data"), FLYWHEEL_DASHBOARD_PORT=str(port),
                   FLYWHEEL_LLM_BACKEND="extractive")
        (tmp_path / "Procfile").write_text(f'child: {sys.executable} -c "import time; time.sleep(600)"\n')
        second = subprocess.run([sys.executable, "-m", "core.cli", "up", "--procfile", str(tmp_path / "Procfile"),
                                 "--no-samples"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert second.stderr.startswith(f"Port {port} (dashboard) is in use already: is Flywheel running (another "
                                    "`make up`)?")
    assert not (tmp_path / "data" / "pg").exists()   # it stopped before starting anything


def test_up_ingests_the_handbook_on_a_first_start_after_an_interrupted_one_or_an_import_never_after_removals() -> None:
    from core.cli.run_cmds import handbook_sources, samples_left_to_ingest

    book = handbook_sources()
    handbook = sorted(book)
    assert samples_left_to_ingest([], [], False, book)                               # first start
    assert samples_left_to_ingest(handbook[:5], handbook[:5], False, book)           # Ctrl-C while ingesting it
    assert samples_left_to_ingest(handbook, [], False, book)                         # an import listed it, empty
    assert not samples_left_to_ingest(handbook, handbook, False, book)               # all there
    own = handbook[:5] + ["/docs/own.md"]   # the admin's own documents: left alone, even listed by an import
    assert not samples_left_to_ingest(own, own, False, book)
    assert not samples_left_to_ingest(["/docs/own.md"], [], False, book)
    # Once ingested whole, what an admin removed stays removed: part of it, or all of it.
    assert not samples_left_to_ingest(handbook[:5], handbook[:5], True, book)
    assert not samples_left_to_ingest([], [], True, book)
