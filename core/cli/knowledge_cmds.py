"""`flywheel ingest | search | docs ... | eval retrieval`: the knowledge base from the terminal."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from core import audit, db
from core.knowledge import evaluate, ingest, search, store
from core.knowledge.parse import SUPPORTED


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    docs_app = typer.Typer(no_args_is_help=True, help="Documents in the knowledge base.")
    app.add_typer(docs_app, name="docs")

    @app.command("ingest")
    def ingest_cmd(paths: list[str] = typer.Argument(..., help="Files or folders."),
                   channel: list[str] = typer.Option([], "--channel", help="Visible only in this Slack channel."),
                   group: list[str] = typer.Option([], "--group", help="Visible only to this user group."),
                   public: bool = typer.Option(False, "--public", help="Visible to everyone."),
                   by: str = typer.Option("cli", "--as", help="Who ingests (recorded).")) -> None:
        """Ingest Markdown, text, HTML, PDF and JSONL; unchanged documents are skipped. Without
        --channel, --group or --public, documents already here keep their visibility (new ones
        are public)."""
        if public and (channel or group):
            raise typer.BadParameter("--public cannot go with --channel or --group.")
        if not all(p.strip() for p in paths):
            raise typer.BadParameter("An empty path: name the files or folders to ingest ('.' for this folder).")
        given = public or channel or group
        so_far: list[ingest.IngestReport] = []   # the report as the last batch left it

        def progress(report: ingest.IngestReport) -> None:
            so_far[:] = [report]
            typer.echo(f"  {report.tally()} so far", err=True)

        try:
            report = ingest.ingest_paths([Path(p) for p in paths], visible_channels=channel if given else None,
                                         visible_groups=group if given else None, audited_by=by, on_batch=progress)
        except store.VisibilityError as e:
            raise typer.BadParameter(str(e), param_hint="--channel") from None
        except KeyboardInterrupt:
            stored = f" ({so_far[0].tally()})" if so_far else ""
            typer.echo(f"Stopped: what was stored is kept{stored}; run the same command again to go on "
                       "(unchanged documents are skipped).", err=True)
            raise typer.Exit(130) from None
        if not (report.added or report.updated or report.unchanged or report.failed):
            typer.echo(f"No files to ingest there (supported: {', '.join(SUPPORTED)}; hidden folders are skipped).",
                       err=True)
            raise typer.Exit(1)
        typer.echo(report.summary())
        _warn_of_empty_groups(group)
        if report.failed and not (report.added or report.updated or report.unchanged):
            raise typer.Exit(1)

    @app.command("search")
    def search_cmd(query: str, user: str = typer.Option(None, "--user"), channel: str = typer.Option(None, "--channel"),
                   k: int = typer.Option(5, "-k", min=1, max=100)) -> None:
        """Print the chunks a question retrieves, best first, with scores."""
        try:
            with db.connection() as conn:
                hits = search.hybrid_search(conn, query, search.Viewer(user_id=user, channel_id=channel), k=k)
        except search.QueryError as e:
            typer.echo(str(e), err=True)
            raise typer.Exit(2) from e
        if not hits:
            typer.echo("Nothing found.")
        for rank, hit in enumerate(hits, start=1):
            where = f"{hit.title} > {hit.heading}" if hit.heading else hit.title
            dense = f"{hit.dense_score:.3f}" if hit.dense_score is not None else "-"
            lexical = f"{hit.lexical_score:.3f}" if hit.lexical_score is not None else "-"
            typer.echo(f"{rank}. {where}  [score {hit.score:.4f}, dense {dense}, lexical {lexical}]")
            typer.echo(f"   {hit.url or hit.source}")
            body = hit.text.split("\n\n", 1)[-1].replace("\n", " ")
            typer.echo(f"   {body[:240]}{'…' if len(body) > 240 else ''}")

    @docs_app.command("ls")
    def docs_ls() -> None:
        """List documents with chunk counts and visibility."""
        with db.connection() as conn:
            rows = store.list_documents(conn)
        if not rows:
            typer.echo("The knowledge base is empty: `flywheel ingest PATH`.")
        for d in rows:
            typer.echo(f"{d.id}\t{d.chunks} chunks\t{d.visibility}\t{d.updated_at:%Y-%m-%d %H:%M}\t{d.title}\t{d.source}")

    @docs_app.command("rm")
    def docs_rm(documents: list[str] = typer.Argument(..., help="Document ids or sources."),
                by: str = typer.Option("cli", "--as", help="Who deletes (recorded).")) -> None:
        """Delete documents and their chunks: by id, by source (a file's path as typed, even
        once the file is gone), or every document ingested from under a folder."""
        if any(not doc.strip() for doc in documents):
            typer.echo("An empty document name names nothing; give an id, a file or a folder.", err=True)
            raise typer.Exit(2)
        if any(ingest.source_of(Path(doc)) == "/" for doc in documents if not ingest.is_document_id(doc)):
            typer.echo("Refusing to delete every document under /; name the folder they came from.", err=True)
            raise typer.Exit(2)
        missing, deleted = [], 0
        with db.connection() as conn:
            for doc in documents:
                sources = ingest.delete(conn, doc)
                if not sources:
                    missing.append(doc)
                    continue
                for target in [f"document:{doc}"] if ingest.is_document_id(doc) else sources:   # each, as a re-ingest does
                    audit.record(conn, by, "knowledge.delete", target)
                deleted += len(sources)
        for doc in missing:
            typer.echo(f"No document {doc!r}.", err=True)
        typer.echo(f"deleted {deleted}")
        if missing:
            raise typer.Exit(1)

    @docs_app.command("visibility")
    def docs_visibility(document_id: int, channel: list[str] = typer.Option([], "--channel"),
                        group: list[str] = typer.Option([], "--group"),
                        public: bool = typer.Option(False, "--public"),
                        by: str = typer.Option("cli", "--as", help="Who changes it (recorded).")) -> None:
        """Make a document public, or visible only in channels / to user groups."""
        if public == bool(channel or group):
            typer.echo("Give either --public or at least one --channel/--group.", err=True)
            raise typer.Exit(2)
        try:
            channel = store.channel_ids(channel)
        except store.VisibilityError as e:
            raise typer.BadParameter(str(e), param_hint="--channel") from None
        with db.connection() as conn:
            found = store.set_visibility(conn, document_id, channel, group)
            if found:
                audit.record(conn, by, "knowledge.visibility", f"document:{document_id}",
                             {"channels": channel, "groups": group})
        if not found:
            typer.echo(f"No document {document_id}.", err=True)
            raise typer.Exit(1)
        typer.echo("updated")
        _warn_of_empty_groups(group)

    @docs_app.command("group-add")
    def group_add(group: str, users: list[str], by: str = typer.Option("cli", "--as", help="Who adds (recorded).")) -> None:
        """Add Slack users (by member id) to a user group known to visibility rules."""
        try:
            users = store.user_ids(users)
        except store.VisibilityError as e:
            raise typer.BadParameter(str(e), param_hint="USERS") from None
        with db.connection() as conn:
            for user in users:
                store.add_group_member(conn, group, user)
            audit.record(conn, by, "knowledge.group_add", f"group:{group}", {"users": users})
        typer.echo(f"{group}: added {len(users)}")

    @eval_app.command("retrieval")
    def eval_retrieval(corpus: Path = typer.Option(..., exists=True, dir_okay=False),
                       queries: Path = typer.Option(..., exists=True, dir_okay=False),
                       qrels: Path = typer.Option(..., exists=True, dir_okay=False),
                       k: int = typer.Option(3, "-k", min=1, max=100)) -> None:
        """Measure retrieval on a BEIR-layout set in a scratch schema; last line is JSON."""
        try:
            result = evaluate.evaluate_retrieval(corpus, queries, qrels, k=k, progress=typer.echo)
        except ValueError as e:
            typer.echo(str(e), err=True)
            raise typer.Exit(2) from e
        typer.echo(json.dumps(result))


def _warn_of_empty_groups(groups: list[str]) -> None:
    if not groups:
        return
    with db.connection() as conn:
        note = store.empty_groups_note(conn, groups)
    if note:
        typer.echo(note, err=True)
