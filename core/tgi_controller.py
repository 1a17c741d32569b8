"""Promotion on TGI, which loads LoRA adapters only at start-up (TGI issue 2177): start a second
server with the new adapter, prove it answers with it, switch traffic, drain and stop the old.

The server is started by `settings.tgi_launch_command`, a command line with format fields
{port}, {host}, {model} and {lora_adapters} (`name=/path,...`, also passed as the
LORA_ADAPTERS environment variable), e.g.
`text-generation-launcher --model-id {model} --port {port} --lora-adapters {lora_adapters}` or a
`docker run --rm -p {port}:80 ...` that stays in the foreground. The switch is the serving
endpoint in Postgres, changed in the same transaction as the live adapter: every process
reads both from `models.LiveAdapterCache`, so none pairs the new adapter with the old server."""
from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from core import db, logs, models
from core.config import Settings, get_settings

logger = logging.getLogger(__name__)

# Processes this process started, so that stopping one also reaps it.
_children: dict[int, subprocess.Popen[bytes]] = {}


class TGIControllerError(RuntimeError):
    """The new server could not be started or proved; the old one still serves."""


@dataclass(frozen=True)
class Launched:
    url: str
    pid: int
    adapters: str
    log: Path


def promote(adapter: models.Adapter, settings: Settings | None = None, *, actor: str,
            rolling_back: bool = False, health_timeout_s: float = 900,
            drain_timeout_s: float | None = None) -> models.Adapter:
    """Start a TGI with `adapter` (and the live one, so both ids answer), smoke-check it,
    switch the live adapter and the serving URL together, then drain and stop the old server.
    On any failure before the switch the new server is stopped and nothing changes."""
    from core import serving  # the smoke check lives there (and serving dispatches here)

    settings = settings or get_settings()
    with db.connection() as conn:
        old = models.endpoint(conn) or models.Endpoint(url=settings.llm_url)
        live = models.live(conn)
    stop_leftovers(settings, serving_pid=old.pid)
    adapters = {adapter.name: adapter.path}
    # The live one rides along for the requests in flight, when TGI can load it: its files gone, or
    # trained on another model, it would stop the new server starting.
    if live is not None and live.version != adapter.version and serving.fits(live, settings.base_model):
        adapters[live.name] = live.path
    launched = launch(adapters, settings)
    try:
        wait_healthy(launched, timeout_s=health_timeout_s)
        if not serving.answers_with_adapter(launched.url, adapter.name, settings):
            raise TGIControllerError(
                f"The new server at {launched.url} answers {adapter.name!r} exactly like the base model: TGI "
                f"did not load the adapter (it falls back silently). Check the launch command and {launched.log}.")
        with db.connection() as conn:
            serving_now = models.Endpoint(url=launched.url, pid=launched.pid, host=socket.gethostname(),
                                          adapters=launched.adapters)
            promoted = models.mark_live(conn, adapter.version, actor=actor, rolling_back=rolling_back,
                                        endpoint=serving_now)
    except BaseException:
        stop(launched.pid, settings)
        raise
    logger.info("adapter %s is live on %s; draining %s", adapter.name, launched.url, old.url)
    drain(old.url, timeout_s=drain_timeout_s if drain_timeout_s is not None else _default_drain_s(settings),
          min_wait_s=models.LIVE_CACHE_MAX_AGE_S)
    if not answers(old.url):   # not running (crashed, stopped, rebooted): its pid may be another's by now
        logger.info("the previous server at %s is not answering: nothing to stop", old.url)
    elif old.pid is not None and old.host == socket.gethostname():
        stop(old.pid, settings)
    else:
        logger.warning("the previous server at %s was not started by Flywheel on this machine; "
                       "it no longer gets requests: stop it yourself", old.url)
    return promoted


def launch(adapters: Mapping[str, str], settings: Settings) -> Launched:
    """Run the launch command for a free port, in a process group of its own (so stopping it
    stops what it started); its output goes to a log file under the data folder."""
    if not settings.tgi_launch_command.strip():
        raise TGIControllerError("FLYWHEEL_TGI_LAUNCH_COMMAND is not set: Flywheel needs it to start a TGI "
                                 "with the new adapter (e.g. 'text-generation-launcher --model-id {model} "
                                 "--port {port} --lora-adapters {lora_adapters}').")
    port = _free_port(settings.llm_host)
    spec = ",".join(f"{name}={path}" for name, path in adapters.items())
    fields = {"port": port, "host": settings.llm_host, "model": settings.base_model, "lora_adapters": spec}
    try:
        argv = [part.format(**fields) for part in shlex.split(settings.tgi_launch_command)]
    except (KeyError, IndexError, ValueError) as e:
        raise TGIControllerError(f"FLYWHEEL_TGI_LAUNCH_COMMAND has a field Flywheel does not fill ({e}); "
                                 "use {port}, {host}, {model} and {lora_adapters}.") from e
    log = settings.data_dir / "tgi" / f"tgi-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LORA_ADAPTERS": spec, "PORT": str(port)}
    with log.open("ab") as out:
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as e:
            raise TGIControllerError(f"Could not run {argv[0]!r}: {e}") from e
    _children[proc.pid] = proc
    url = f"http://{settings.llm_address}:{port}"
    _record(settings, proc.pid, url)
    logger.info("started a model server (pid %d) on port %d with %s", proc.pid, port, spec)
    return Launched(url, proc.pid, spec, log)


# Each server launched is recorded under the data folder until it is stopped: a promotion cut
# short (Ctrl-C while the old server drains, a killed process while the new one starts) leaves
# one running that nothing else knows of, holding its GPU memory; the next promotion stops it.
def _records(settings: Settings) -> Path:
    return settings.data_dir / "tgi" / "servers"


def _record(settings: Settings, pid: int, url: str) -> None:
    folder = _records(settings)
    folder.mkdir(parents=True, exist_ok=True)
    # With the pid, its start time: the same process, not a later one given its pid.
    (folder / f"{pid}.json").write_text(json.dumps({"pid": pid, "url": url, "started": _started_at(pid),
                                                    "host": socket.gethostname()}))


def stop_leftovers(settings: Settings, *, serving_pid: int | None) -> list[int]:
    """Stop the servers launched here that a promotion cut short left running, all but the one
    serving (`serving_pid`); returns their pids."""
    stopped = []
    for path in sorted(_records(settings).glob("*.json")):   # none when the folder is not there
        try:
            record = json.loads(path.read_text())
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if pid == serving_pid or record.get("host") != socket.gethostname():   # serving, or another machine's
            continue
        started = _started_at(pid)
        # Start times are derived from the boot time, which a clock step moves a little.
        if started is not None and abs(started - float(record.get("started") or 0)) < 2.0:
            logger.warning("stopping the model server (pid %d, %s) left by a promotion cut short", pid, record.get("url"))
            stop(pid, settings)   # forgets its record too
            stopped.append(pid)
        else:   # gone, or its pid another process's now
            path.unlink(missing_ok=True)
    return stopped


def _started_at(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def wait_healthy(launched: Launched, *, timeout_s: float) -> None:
    """Until /health answers 200; fails early when the process exits."""
    deadline = time.monotonic() + timeout_s
    proc = _children.get(launched.pid)
    while True:
        if proc is not None and proc.poll() is not None:
            raise TGIControllerError(f"The new model server exited with {proc.returncode} before it was healthy; "
                                     f"see {launched.log}:\n{logs.tail(launched.log, 20)}")
        try:
            if httpx.get(f"{launched.url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TGIControllerError(f"The new model server at {launched.url} was not healthy after {timeout_s:.0f} s; "
                                     f"see {launched.log}")
        time.sleep(0.5)


def drain(url: str, *, timeout_s: float, quiet_s: float = 2.0, min_wait_s: float = 0.0) -> bool:
    """Wait at least `min_wait_s` (a process that missed the switch's notification re-reads
    within its cache age, and until then sends here), and until the old server has nothing
    queued or running and has received no new request for `quiet_s`. Reads TGI's Prometheus
    gauges; True when drained, False when `timeout_s` ran out."""
    started = time.monotonic()
    deadline = started + max(timeout_s, min_wait_s)
    last_total, quiet_since = None, started
    while time.monotonic() < deadline:
        try:
            gauges = _metrics(url)
        except httpx.ReadTimeout:   # too busy to answer within the probe's timeout: still working
            last_total, quiet_since = None, time.monotonic()
            continue
        if gauges is None:
            return True  # gone already: nothing left to drain
        if not gauges:  # no Prometheus endpoint: nothing tells when it is idle, so wait it out
            time.sleep(max(0.0, deadline - time.monotonic()))
            return True
        busy = gauges.get("tgi_queue_size", 0) + gauges.get("tgi_batch_current_size", 0)
        total = gauges.get("tgi_request_count")
        if busy or total != last_total:
            last_total, quiet_since = total, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s and time.monotonic() - started >= min_wait_s:
            return True
        time.sleep(0.2)
    logger.warning("the old model server at %s still had work after %.0f s; stopping it anyway", url, timeout_s)
    return False


def stop(pid: int, settings: Settings | None = None, *, timeout_s: float = 30) -> None:
    """SIGTERM the server's process group (TGI shuts down its shards; `docker run` passes the
    signal on), then SIGKILL if it lingers; it is no longer recorded as launched."""
    (_records(settings or get_settings()) / f"{pid}.json").unlink(missing_ok=True)
    proc = _children.pop(pid, None)
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        logger.warning("not allowed to stop process group %d", pid)
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not _running(pid):
            return
        time.sleep(0.1)
    logger.warning("model server %d did not stop in %.0f s; killing it", pid, timeout_s)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(timeout=10)


def answers(url: str) -> bool:
    """Whether a model server runs at `url` at all (one too busy to answer in time does)."""
    try:
        return _metrics(url) is not None
    except httpx.ReadTimeout:
        return True


def _running(pid: int) -> bool:
    """Whether the process runs: one that exited but that its parent (another process, which
    started it) has not reaped yet is a zombie, and stopped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _metrics(url: str) -> dict[str, float] | None:
    """TGI's request gauges; {} from a server that answers without them; None when nothing
    answers at `url`. A server that takes the connection but does not answer within the timeout
    is busy, not gone: that raises httpx.ReadTimeout for the caller to read as such."""
    try:
        r = httpx.get(f"{url.rstrip('/')}/metrics", timeout=2)
    except httpx.ReadTimeout:
        raise
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return {}  # answers, but shows no gauges
    values: dict[str, float] = {}
    for line in r.text.splitlines():
        m = re.match(r"^(tgi_request_count|tgi_queue_size|tgi_batch_current_size)(?:\{[^}]*\})?\s+(\S+)", line)
        if m:
            values[m.group(1)] = values.get(m.group(1), 0.0) + float(m.group(2))
    return values


def _default_drain_s(settings: Settings) -> float:
    # A request may take the generator's whole timeout; a process that missed the NOTIFY
    # re-reads the live adapter within the cache age.
    return settings.llm_timeout_s + models.LIVE_CACHE_MAX_AGE_S


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
