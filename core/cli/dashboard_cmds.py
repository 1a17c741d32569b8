"""`flywheel dashboard`: run the Streamlit admin dashboard, bound to localhost unless a login is
configured. Streamlit runs in its own process (exec), so `core` never imports it.
`flywheel hash-password`: make the value of FLYWHEEL_DASHBOARD_PASSWORD_HASH."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from core import passwords
from core.config import Settings, for_children, get_settings, is_loopback

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dashboard" / "app.py"


def bind_address(settings: Settings, requested: str | None) -> str:
    """Where the server listens: every interface when a login protects it, else the loopback
    interface only. Asking for a public address without a login is refused."""
    if requested is None:
        return "0.0.0.0" if settings.dashboard_login else "127.0.0.1"
    if not is_loopback(requested) and settings.dashboard_login is None:
        raise ValueError(f"Refusing to serve the dashboard on {requested} without a login: set "
                         "FLYWHEEL_DASHBOARD_PASSWORD_HASH (from `flywheel hash-password`) or configure OIDC "
                         "(FLYWHEEL_DASHBOARD_OIDC=true and [auth] in .streamlit/secrets.toml).")
    return requested.strip("[]")  # Streamlit binds an IPv6 address given without brackets


def streamlit_argv(port: int, address: str) -> list[str]:
    """The `streamlit run` command line: headless, no usage statistics, no file watching, and no
    developer toolbar (no "Deploy" button) for the people using it."""
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.port", str(port), "--server.address", address,
            "--server.headless", "true", "--server.runOnSave", "false", "--server.fileWatcherType", "none",
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]


def register(app: typer.Typer) -> None:
    @app.command("hash-password")
    def hash_password() -> None:
        """Ask for a dashboard password (twice, not shown) and print the FLYWHEEL_DASHBOARD_PASSWORD_HASH
        line to put in .env. Prompts go to stderr, so `flywheel hash-password >> .env` works."""
        while True:   # a short one is refused as typed, before its confirmation, and asked for again
            password = typer.prompt("Dashboard password", hide_input=True, err=True)
            if len(password) < passwords.MIN_LENGTH:
                typer.echo(f"The password must have at least {passwords.MIN_LENGTH} characters.", err=True)
            elif typer.prompt("Repeat for confirmation", hide_input=True, err=True) != password:
                typer.echo("The two entries differ.", err=True)
            else:
                break
        typer.echo(f"FLYWHEEL_DASHBOARD_PASSWORD_HASH={passwords.hash_password(password)}")

    @app.command()
    def dashboard(port: int = typer.Option(None, "--port", help="Default: FLYWHEEL_DASHBOARD_PORT (8501)."),
                  address: str = typer.Option(None, "--address", "--host",
                                              help="Where to listen. Default: 127.0.0.1 without a login, "
                                                   "0.0.0.0 with one; a public address needs a login.")) -> None:
        """Serve the admin dashboard (curation, reviews, knowledge, training, models)."""
        settings = get_settings()
        try:
            address = bind_address(settings, address)
        except ValueError as e:
            typer.echo(str(e), err=True)
            raise typer.Exit(2) from e
        port = port or settings.dashboard_port
        shown = "localhost" if is_loopback(address) else address
        typer.echo(f"dashboard: http://{shown}:{port}"
                   + ("" if settings.dashboard_login else " (no login configured: localhost only)"))
        # Run from the repository root so `dashboard` and `core` import as packages, with this
        # folder's `.env` and data folder.
        os.environ.update(for_children(settings))
        os.chdir(ROOT)
        argv = streamlit_argv(port, address)
        os.execv(argv[0], argv)
