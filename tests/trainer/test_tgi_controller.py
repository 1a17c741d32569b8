"""Promotion on TGI, with a launcher command that starts our local server (the same HTTP
contract) on a new port: start, smoke-check, switch, drain, stop; and a TGI that silently
answers with the base model, or cannot answer at all, is caught before anything switches."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core import audit, db, models, serving, tgi_controller
from core.config import get_settings
from retrain_support import Client
from support.polling import wait_until
from support.servers import free_port
from support.tiny_model import make_lora_adapter

LAUNCHER = Path(__file__).resolve().parent / "fake_tgi.py"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def tgi(tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[models.Adapter]:
    """TGI settings with the stand-in launcher, and two ready adapters that change the output."""
    monkeypatch.setenv("FLYWHEEL_LLM_BACKEND", "tgi")
    monkeypatch.setenv("FLYWHEEL_LLM_URL", f"http://127.0.0.1:{free_port()}")  # the operator's TGI: not running
    monkeypatch.setenv("FLYWHEEL_TGI_LAUNCH_COMMAND",
                       f"{sys.executable} {LAUNCHER} --model {{model}} --port {{port}} --lora-adapters {{lora_adapters}}")
    monkeypatch.setenv("FLYWHEEL_LLM_TIMEOUT_S", "10")
    monkeypatch.setattr(models, "LIVE_CACHE_MAX_AGE_S", 3.0)  # how long an old server is kept: short here
    get_settings.cache_clear()
    adapters = []
    with db.connection() as conn:
        for seed in (1, 2):
            path = make_lora_adapter(tiny_base, tmp_path / f"adapter-{seed}", seed=seed)
            adapter = models.register(conn, base_model=str(tiny_base), path=str(path), dataset_version=1,
                                      hyperparams={"rank": 4}, status="ready")
            adapters.append(adapter)
    return adapters


def test_tgi_promotion_starts_a_new_server_switches_traffic_then_stops_the_old_one(
        tgi: list[models.Adapter], database_url: str) -> None:
    v1, v2 = tgi
    serving.promote(v1.version, actor="admin")
    with db.connection() as conn:
        first = models.endpoint(conn)
    assert first is not None and first.pid is not None and f"{v1.name}=" in first.adapters

    with Client(database_url, get_settings().llm_url) as client:
        wait_until(lambda: client.answered_by(v1.name) >= 3, timeout_s=60, what="traffic on the first server")
        serving.promote(v2.version, actor="admin")  # returns once the old server has drained and stopped
        wait_until(lambda: client.answered_by(v2.name) >= 3, timeout_s=60, what="traffic on the new server")
    assert client.failures == []

    with db.connection() as conn:
        second = models.endpoint(conn)
        assert models.live(conn).name == v2.name  # type: ignore[union-attr]
        promoted = audit.recent(conn)[0]
    assert (promoted.action, promoted.target, promoted.details["url"]) == ("model.promote", f"adapter:v{v2.version}",
                                                                        second.url if second else None)
    assert second is not None and second.url != first.url
    assert {url for adapter, url in client.answered if adapter == v2.name} == {second.url}
    assert not _alive(first.pid)  # drained, then stopped
    assert serving.answers_with_adapter(second.url, v2.name)
    assert serving.answers_with_adapter(second.url, v1.name)  # the previous live adapter rides along

    tgi_controller.stop(second.pid)  # type: ignore[arg-type]


@pytest.mark.parametrize(("launcher_flag", "refusal"), [
    ("--drop-adapters", "exactly like the base model"),                # TGI's silent fallback (issue 2505)
    ("--fail-generate", "smoke request .* failed: HTTPStatusError"),   # healthy, but cannot answer
])
def test_a_new_tgi_that_fails_the_smoke_check_is_stopped_and_nothing_switches(
        tgi: list[models.Adapter], launcher_flag: str, refusal: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("FLYWHEEL_TGI_LAUNCH_COMMAND", f"{get_settings().tgi_launch_command} {launcher_flag}")
    get_settings.cache_clear()
    with caplog.at_level("INFO", logger="core.tgi_controller"), pytest.raises(serving.ServingError, match=refusal):
        serving.promote(tgi[0].version, actor="admin")
    with db.connection() as conn:
        assert models.live(conn) is None and models.endpoint(conn) is None
        assert models.get(conn, tgi[0].version).status == "ready"  # type: ignore[union-attr]
    [started] = [r for r in caplog.records if r.getMessage().startswith("started a model server")]
    pid = int(re.search(r"pid (\d+)", started.getMessage())[1])  # type: ignore[index]
    assert not _alive(pid)  # the refused server was stopped


def test_a_server_left_running_by_a_promotion_cut_short_is_stopped_by_the_next_promotion(
        tgi: list[models.Adapter], monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v2 = tgi
    serving.promote(v1.version, actor="admin")
    with db.connection() as conn:
        first = models.endpoint(conn)

    def ctrl_c(*args: object, **kwargs: object) -> bool:
        raise KeyboardInterrupt

    draining = tgi_controller.drain
    monkeypatch.setattr(tgi_controller, "drain", ctrl_c)   # the admin presses Ctrl-C while the old one drains
    with pytest.raises(KeyboardInterrupt):
        serving.promote(v2.version, actor="admin")
    monkeypatch.setattr(tgi_controller, "drain", draining)
    assert first is not None and _alive(first.pid)   # v2 is live on the new server; nothing else knows of this one

    serving.promote(v1.version, actor="admin")
    assert not _alive(first.pid)
    with db.connection() as conn:
        serving_now = models.endpoint(conn)
    assert serving_now is not None and serving.answers_with_adapter(serving_now.url, v1.name)
    tgi_controller.stop(serving_now.pid)  # type: ignore[arg-type]


def test_only_this_machines_leftover_servers_are_stopped_and_only_while_their_pid_is_theirs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import psutil

    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    records = get_settings().data_dir / "tgi" / "servers"
    records.mkdir(parents=True)
    servers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
               for _ in range(3)]
    try:
        started = [psutil.Process(s.pid).create_time() for s in servers]
        for server, at, host, note in [(servers[0], started[0] + 0.5, socket.gethostname(), "ours (clock stepped)"),
                                       (servers[1], started[1], "another-machine", "a shared data folder"),
                                       (servers[2], started[2] - 3600, socket.gethostname(), "its pid reused")]:
            (records / f"{server.pid}.json").write_text(json.dumps({"pid": server.pid, "url": note, "started": at,
                                                                    "host": host}))
        assert tgi_controller.stop_leftovers(get_settings(), serving_pid=None) == [servers[0].pid]
        assert servers[0].wait(10) is not None and servers[1].poll() is None and servers[2].poll() is None
        assert sorted(p.name for p in records.iterdir()) == [f"{servers[1].pid}.json"]   # the other machine's
    finally:
        for server in servers:
            server.kill()
            server.wait()
        get_settings.cache_clear()


def test_a_live_adapter_whose_files_are_gone_does_not_stop_the_new_server_starting(tgi: list[models.Adapter]) -> None:
    v1, v2 = tgi
    serving.promote(v1.version, actor="admin")
    shutil.rmtree(v1.path)   # cleaned up by hand: TGI would refuse to start with it
    serving.promote(v2.version, actor="admin")
    with db.connection() as conn:
        assert models.live(conn).name == v2.name  # type: ignore[union-attr]
        tgi_controller.stop(models.endpoint(conn).pid)  # type: ignore[union-attr, arg-type]


def test_a_previous_server_that_is_gone_is_not_stopped_by_its_old_pid(
        tgi: list[models.Adapter], tmp_path: Path) -> None:
    v1, _ = tgi
    # The server Flywheel started before has died, and its pid now belongs to some other process group.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        with db.connection() as conn:
            conn.execute("INSERT INTO serving_endpoint (id, url, pid, host) VALUES (1, %(u)s, %(p)s, %(h)s)",
                         {"u": f"http://127.0.0.1:{free_port()}", "p": other.pid, "h": socket.gethostname()})
        serving.promote(v1.version, actor="admin")
        assert other.poll() is None   # still running
        with db.connection() as conn:
            tgi_controller.stop(models.endpoint(conn).pid)  # type: ignore[union-attr, arg-type]
    finally:
        other.kill()
        other.wait()


def test_a_server_another_process_started_counts_as_stopped_once_it_exits(caplog: pytest.LogCaptureFixture) -> None:
    # Started by a process that is still running (the dashboard) and so not reaped: a zombie, not a server.
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        with caplog.at_level("WARNING", logger="core.tgi_controller"):
            tgi_controller.stop(server.pid, timeout_s=3)
        assert not [r for r in caplog.records if "did not stop" in r.getMessage()]
    finally:
        server.kill()
        server.wait()


def test_rolling_back_to_the_base_model_after_the_started_tgi_died_serves_from_the_configured_url(
        tgi: list[models.Adapter], monkeypatch: pytest.MonkeyPatch) -> None:
    from core.agent import run

    v1, _ = tgi
    gone = f"http://127.0.0.1:{free_port()}"
    with db.connection() as conn:   # v1 went live on a TGI a promotion started, which has died since
        models.mark_live(conn, v1.version, actor="admin", endpoint=models.Endpoint(url=gone, pid=None, host=None))
    assert serving.serving_url() == gone
    assert serving.rollback(actor="admin") is None
    with db.connection() as conn:
        assert models.endpoint(conn) is None and models.live(conn) is None
    assert serving.serving_url() == get_settings().llm_url

    # A row left by TGI does not bind another backend either.
    with db.connection() as conn:
        conn.execute("INSERT INTO serving_endpoint (id, url) VALUES (1, %(u)s)", {"u": gone})
    monkeypatch.setenv("FLYWHEEL_LLM_BACKEND", "local")
    get_settings.cache_clear()
    run._default_generator.cache_clear()
    assert serving.serving_url() == get_settings().llm_url
    assert run.default_context().generator.url == get_settings().llm_url


def test_an_old_server_too_busy_to_answer_its_metrics_is_neither_gone_nor_drained() -> None:
    # A TGI busy generating can take longer than the probe's timeout to answer /metrics: it is
    # still serving, so it must be stopped after the drain, and the drain must wait for it.
    with socket.socket() as busy:   # accepts connections, never answers
        busy.bind(("127.0.0.1", 0))
        busy.listen(8)
        url = f"http://127.0.0.1:{busy.getsockname()[1]}"
        assert tgi_controller.answers(url)
        assert tgi_controller.drain(url, timeout_s=3, quiet_s=0.1) is False   # ran out of time, still working


def test_the_launch_command_gets_the_model_retrains_are_made_on_when_none_is_configured(tmp_path: Path) -> None:
    from core.config import Settings, default_llm_dir

    said = tmp_path / "model-id"
    settings = Settings(_env_file=None, data_dir=tmp_path, llm_model="",
                        tgi_launch_command=f"{sys.executable} -c 'import sys; open(sys.argv[1], \"w\").write(sys.argv[2])'"
                                           f" {said} {{model}}")
    launched = tgi_controller.launch({"flywheel-v1": "/adapters/flywheel-v1"}, settings)
    wait_until(lambda: said.exists() and said.read_text(), what="the launch command to run")
    assert said.read_text() == str(default_llm_dir(tmp_path)) == settings.base_model
    tgi_controller.stop(launched.pid)
    everywhere = settings.model_copy(update={"llm_host": "0.0.0.0"})   # listening on every address
    launched = tgi_controller.launch({"flywheel-v1": "/adapters/flywheel-v1"}, everywhere)
    tgi_controller.stop(launched.pid)
    assert launched.url.startswith("http://127.0.0.1:")   # where it is reached, not the bind address
