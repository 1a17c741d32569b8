"""`flywheel up`: prepare the database and the knowledge base, then run every Procfile process."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import typer

from core import audit, db, doctor, serving
from core.config import Settings, for_children, get_settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "handbook"
SAMPLES_INGESTED = "knowledge.samples"   # audited once the handbook was ingested whole


def slack_status(settings: Settings) -> str:
    if settings.slack_bot_token is None:
        return ("not connected: set SLACK_BOT_TOKEN and SLACK_APP_TOKEN (see README, Slack set-up); "
                "meanwhile ask on the dashboard's Try it page or with `flywheel ask`")
    mode = doctor.slack_mode(settings)
    if mode is None:
        return "SLACK_BOT_TOKEN is set but neither SLACK_APP_TOKEN nor SLACK_SIGNING_SECRET: the bot cannot receive events"
    return f"connecting over {mode}" + (f" on port {settings.bot_port}" if mode == "HTTP events" else "")


def samples_left_to_ingest(sources: Sequence[str], filled: Sequence[str], ingested_before: bool,
                           handbook: set[str]) -> bool:
    """Whether `up` ingests the sample handbook: it was never ingested whole (`ingested_before`:
    after that, documents an admin removed stay removed, even all of them), and the knowledge
    base (`sources`, of which `filled` have content) is empty, or holds nothing but part of the
    handbook (a first start stopped while ingesting it, or an import listed it)."""
    return not ingested_before and set(sources) <= handbook and not handbook <= set(filled)


def handbook_sources() -> set[str]:
    from core.knowledge.ingest import files_under, source_of

    return {source_of(f) for f in files_under(SAMPLES)}


def taken_ports(settings: Settings) -> list[str]:
    """The ports the Procfile's processes will listen on that something holds already, as
    "8501 (dashboard)"."""
    wanted = {settings.dashboard_port: "dashboard"}
    if settings.llm_backend == "local":
        wanted[settings.llm_port] = "model server"
    if doctor.slack_mode(settings) == "HTTP events":
        wanted[settings.bot_port] = "Slack bot"
    return [f"{port} ({what})" for port, what in wanted.items() if _listening(port)]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def register(app: typer.Typer) -> None:
    @app.command()
    def up(procfile: Path = typer.Option(ROOT / "Procfile", "--procfile"),
           ingest_samples: bool = typer.Option(True, "--samples/--no-samples",
                                               help="Ingest the sample handbook when the knowledge base is empty.")) -> None:
        """Migrate, ingest the sample handbook on first start, then run the Procfile with honcho
        until Ctrl-C. The data stays for the next start."""
        from core import queue
        from core.knowledge import ingest, store

        # `kill`, `docker stop`, a closed terminal or SSH session: stop everything, as Ctrl-C does
        for stop_signal in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(stop_signal, _interrupt)
        settings = get_settings()
        taken = taken_ports(settings)
        if taken:
            ports = f"Port {taken[0]} is" if len(taken) == 1 else f"Ports {', '.join(taken)} are"
            typer.echo(f"{ports} in use already: is Flywheel running (another `make up`)? Stop "
                       "it with Ctrl-C in its terminal, or set FLYWHEEL_DASHBOARD_PORT, FLYWHEEL_LLM_PORT or "
                       "FLYWHEEL_BOT_PORT to free ports.", err=True)
            raise typer.Exit(1)
        url = db.database_url()
        applied = db.ensure_schema(url)
        queue.ensure_schema(url)
        where = "DATABASE_URL" if settings.database_url else f"embedded Postgres in {settings.pg_dir}"
        typer.echo(f"database: {where} ({len(applied)} migrations applied)")
        with db.connection() as conn:
            documents = store.list_documents(conn)
            ingested_before = audit.happened(conn, SAMPLES_INGESTED)
        filled, handbook = {d.source for d in documents if d.chunks}, handbook_sources()
        if ingest_samples and samples_left_to_ingest([d.source for d in documents], filled, ingested_before,
                                                     handbook):
            typer.echo(f"first start: ingesting the sample handbook from {SAMPLES.relative_to(ROOT)}")
            try:
                report = ingest.ingest_paths([SAMPLES])
            except KeyboardInterrupt:
                typer.echo("stopped while ingesting the sample handbook: the next `make up` finishes it", err=True)
                raise typer.Exit(130) from None
            typer.echo(report.summary())
            filled |= handbook - {source for source, _ in report.failed}   # a failed file: tried again next time
        if not ingested_before and handbook <= filled:
            with db.connection() as conn:
                audit.record(conn, "flywheel up", SAMPLES_INGESTED, str(SAMPLES.relative_to(ROOT)))
        typer.echo(f"generation: {settings.llm_backend} backend at {doctor.redacted(serving.serving_url(settings))} "
                   "(answers fall back to cited excerpts while it is unreachable)")
        typer.echo(f"dashboard: http://localhost:{settings.dashboard_port}")
        typer.echo(f"slack: {slack_status(settings)}")
        typer.echo('terminal: flywheel ask "How do I get a new laptop?"   (Ctrl-C stops everything)')
        bin_dir = Path(sys.executable).parent
        honcho = shutil.which("honcho", path=str(bin_dir)) or "honcho"
        # Every child opens the same embedded database; this process keeps it up while they run
        # and stops it once they have all exited.
        env = {**os.environ, **for_children(settings), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        if not settings.database_url:
            env["DATABASE_URL"] = url
        # `-e /dev/null`: honcho's own reading of `.env` drops the spaces inside values ("a, b c"
        # -> "a,bc") and would override what every process reads from it itself (pydantic).
        # In a session of its own, so that a hang-up (which honcho does not handle) reaches only this
        # process, which stops honcho and so every process, instead of leaving them orphaned.
        proc = subprocess.Popen([honcho, "start", "-f", str(procfile), "-d", str(procfile.resolve().parent),
                                 "-e", os.devnull], env=env, start_new_session=True)
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP, to this process only
            _wait_for(proc)
            code = 0  # stopped as asked
        for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(stop_signal, signal.SIG_DFL)
        raise typer.Exit(code)  # a normal exit, so the embedded Postgres is stopped on the way out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_for(proc: subprocess.Popen[bytes]) -> int:
    """Ask honcho (in a session of its own: no terminal signal reaches it) to stop, and give its
    processes time to finish what they are doing."""
    proc.terminate()
    try:
        return proc.wait(timeout=30)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()
        return proc.wait()
