"""`flywheel up`: prepare the database and knowledge base, then start the product's processes."""
from __future__ import annotations

from pathlib import Path

import typer

from core import db

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "handbook"


def register(app: typer.Typer) -> None:
    @app.command()
    def up() -> None:
        """Migrate, ingest the sample handbook on first start, and start the product."""
        from core.knowledge import ingest, store

        applied = db.ensure_schema()
        typer.echo(f"database ready ({db.database_url().split('?')[0]}), migrations applied: {len(applied)}")
        with db.connection() as conn:
            empty = store.count_documents(conn) == 0
        if empty and SAMPLES.exists():
            report = ingest.ingest_paths([SAMPLES])
            typer.echo(report.summary())
        typer.echo("knowledge base ready: try `flywheel search \"how do I get a new laptop\"`")
