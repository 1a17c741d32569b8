"""`flywheel doctor | export | import`: keep a running installation healthy and backed up."""
from __future__ import annotations

from pathlib import Path

import psycopg
import typer

from core import backup, db, doctor
from core.config import get_settings
from core.knowledge import ingest, store

_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor_cmd(embedder: bool = typer.Option(True, "--embedder/--no-embedder",
                                                 help="Load the embedding model (a few seconds).")) -> None:
        """Check the database, migrations, embedder, knowledge base, model server and live adapter,
        Slack and the job queue. Exits 1 when something is broken."""
        failed = False
        for check in doctor.run_checks(get_settings(), embedder=embedder):
            typer.echo(f"{_MARK[check.level]}  {check.name}: {check.detail}")
            failed = failed or check.level == "fail"
        if failed:
            raise typer.Exit(1)

    @app.command("export")
    def export_cmd(path: str = typer.Argument(..., metavar="FOLDER",
                                              help="A new or empty folder, or an earlier export.")) -> None:
        """Write answers, reviews, feedback, curation, datasets, adapters and retrain runs to FOLDER."""
        if not path.strip():
            raise typer.BadParameter("An empty path: name the folder to export into.")
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise typer.BadParameter(f"{folder} is a file: name a folder to export into.")
        if folder.is_dir() and any(folder.iterdir()) and not backup.is_export(folder):
            raise typer.BadParameter(f"{folder} holds other files: export into a new or empty folder "
                                     "(or over an earlier export, which is replaced).")
        try:
            with db.connect() as conn:   # one snapshot of every table, however busy the product is meanwhile
                conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
                counts = backup.export_to(conn, folder)
        except OSError as e:   # not writable, a missing parent that cannot be made, a full disk
            typer.echo(f"Cannot write the export to {folder}: {e.strerror or e}.", err=True)
            raise typer.Exit(1) from None
        typer.echo(", ".join(f"{table} {n}" for table, n in counts.items()))
        typer.echo(f"exported to {folder} (adapter weights live in {get_settings().adapter_root}: back that up too)")

    @app.command("import")
    def import_cmd(folder: Path = typer.Argument(..., exists=True, file_okay=False)) -> None:
        """Restore an export into a database that has no answers, curation or adapters yet."""
        adapter_root = get_settings().adapter_root
        try:
            with db.connection() as conn:
                counts = backup.import_from(conn, folder)
                without_files = backup.relocate_adapters(conn, adapter_root)
                empty = store.empty_documents(conn)
        except (backup.ImportRefused, FileNotFoundError) as e:
            typer.echo(str(e), err=True)
            raise typer.Exit(2) from e
        typer.echo("imported: " + ", ".join(f"{table} {n}" for table, n in counts.items()))
        if without_files:
            typer.echo(f"The files of {', '.join(without_files)} are not here: copy the adapters folder backed up with "
                       f"the export to {adapter_root}, or they cannot be promoted or rolled back to.", err=True)
        if empty:
            typer.echo(f"{_documents(len(empty))} listed with who may see them, but without content: ingest their "
                       "files again (`flywheel ingest PATH`), or upload them again under the same names; they keep "
                       "their visibility.")
        uploads = [s for s in empty if s.startswith(ingest.UPLOAD)]
        elsewhere = [s for s in empty if s not in uploads and not (Path(s).exists() or Path(s.rsplit("#", 1)[0]).exists())]
        if elsewhere:
            typer.echo(f"{_documents(len(elsewhere))} not at the old paths on this machine (e.g. {elsewhere[0]}): an "
                       "ingest from elsewhere makes new documents, public unless you give the same --channel or "
                       "--group (`flywheel docs ls` shows who may see each); then `flywheel docs rm` the empty "
                       "entries.", err=True)


def _documents(n: int) -> str:
    return "1 document is" if n == 1 else f"{n} documents are"
