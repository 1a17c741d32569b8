"""The `flywheel` command: one Typer app; each area adds its commands from its own module."""
from __future__ import annotations

import logging

import psycopg
import typer

from core import db, logs
from core.config import SettingsInvalid, get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Flywheel: a domain copilot that learns.")
eval_app = typer.Typer(no_args_is_help=True, help="Measure retrieval and answers.")
app.add_typer(eval_app, name="eval")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail.")) -> None:
    logs.setup(logging.DEBUG if verbose else logging.INFO)


@app.command()
def migrate() -> None:
    """Apply database migrations (also done by every process at start)."""
    applied = db.ensure_schema()
    typer.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")


def _register() -> None:
    from core.cli import agent_cmds, dashboard_cmds, knowledge_cmds, llm_cmds, ops_cmds, run_cmds, train_cmds

    knowledge_cmds.register(app, eval_app)
    llm_cmds.register(app)
    agent_cmds.register(app, eval_app)
    run_cmds.register(app)
    ops_cmds.register(app)
    dashboard_cmds.register(app)
    train_cmds.register(app)


_register()


def run() -> None:
    """The `flywheel` command. A wrong setting or an unreachable database is a message naming
    what to fix, not a traceback."""
    try:
        app()
    except SettingsInvalid as e:
        typer.echo(f"flywheel: {e}", err=True)
        raise SystemExit(2) from None
    except psycopg.OperationalError as e:
        if e.sqlstate is not None:  # the server answered (a deadlock, a full disk): not a connection failure
            raise
        settings = get_settings()
        where = "DATABASE_URL" if settings.database_url else f"the embedded Postgres in {settings.pg_dir}"
        typer.echo(f"flywheel: cannot use the database ({where}): {str(e).strip()}", err=True)
        raise SystemExit(1) from None
