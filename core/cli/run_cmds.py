"""`flywheel up`: prepare the database and the knowledge base, then run every Procfile process."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import typer

from core import db
from core.config import get_settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "handbook"


def register(app: typer.Typer) -> None:
    @app.command()
    def up(procfile: Path = typer.Option(ROOT / "Procfile", "--procfile"),
           ingest_samples: bool = typer.Option(True, "--samples/--no-samples",
                                               help="Ingest the sample handbook when the knowledge base is empty.")) -> None:
        """Migrate, ingest the sample handbook on first start, then start the product with honcho."""
        from core.knowledge import ingest, store

        settings = get_settings()
        applied = db.ensure_schema()
        where = "DATABASE_URL" if settings.database_url else f"embedded Postgres in {settings.pg_dir}"
        typer.echo(f"database: {where} ({len(applied)} migrations applied)")
        with db.connection() as conn:
            empty = store.count_documents(conn) == 0
        if empty and ingest_samples:
            typer.echo(f"first start: ingesting the sample handbook from {SAMPLES.relative_to(ROOT)}")
            typer.echo(ingest.ingest_paths([SAMPLES]).summary())
        typer.echo(f"generation: {settings.llm_backend} backend at {settings.llm_url} "
                   "(answers fall back to cited excerpts while it is unreachable)")
        typer.echo('try it: flywheel ask "How do I get a new laptop?"')
        honcho = shutil.which("honcho", path=str(Path(sys.executable).parent)) or "honcho"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        # honcho takes over this process. Each child opens the same database (the embedded server is
        # shared between processes and stops when the last one exits).
        os.execvpe(honcho, [honcho, "start", "-f", str(procfile), "-d", str(ROOT)], env)
