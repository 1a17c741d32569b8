"""Export and import what the loop has learned: answers with their Slack threads, reviews and
feedback, curation, datasets, the adapter registry and retrain runs, as one JSONL file per table.

The knowledge base's content is not exported: its documents live where they came from and
re-ingest. What the files cannot tell is: each document's visibility (`documents.jsonl`, its
source, title and who may see it) and who is in each user group (`group_members.jsonl`). An
import lists those documents, empty until re-ingested, so that a re-ingest without
--channel/--group keeps them restricted rather than making them public. Adapter weights are
files under the adapters folder; back that folder up with the export."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from core import audit
from core.knowledge.parse import jsonl_lines

# In dependency order: a row's references are restored before it.
# slack_answers: where each Slack answer lives (thread, review card), so a restored database can
# still deliver a decision on a pending review to its asker.
TABLES: tuple[str, ...] = ("answers", "slack_answers", "reviews", "feedback", "deliveries", "curation_items",
                           "datasets", "dataset_items", "adapters", "training_runs", "training_schedule",
                           "audit_log")
IMPORT_ACTOR = "import"   # who the audit log says narrowed a document's visibility to the exported one
# What of the knowledge base a re-ingest cannot bring back, merged into what is there already.
_DOCUMENTS = ("SELECT jsonb_build_object('id', id, 'source', source, 'title', title, 'url', url, 'visible_channels', "
              "visible_channels, 'visible_groups', visible_groups) AS row FROM documents ORDER BY id")
_GROUP_MEMBERS = "SELECT to_jsonb(g) AS row FROM group_members g ORDER BY group_name, user_id"
# Tables a database being restored may already hold rows of: the single schedule row every
# database has, and the audit of knowledge ingested before the import (imported rows get new ids).
_MAY_HAVE_ROWS = ("training_schedule", "audit_log")


class ImportRefused(RuntimeError):
    """An export that cannot be imported here (the database already holds records, the export is
    incomplete or from a newer Flywheel, or a file is damaged: not UTF-8, bad JSON, a row the
    schema refuses); nothing was imported."""


def export_to(conn: psycopg.Connection, folder: Path) -> dict[str, int]:
    """Write `<table>.jsonl` for every table into `folder`; returns rows per table. Run it in a
    REPEATABLE READ transaction (as `flywheel export` does) for one snapshot: read table by table
    while the product runs, a vote could be exported without its answer, and not import."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    manifest = folder / "manifest.json"
    manifest.unlink(missing_ok=True)   # an export cut short over an earlier one is no export at all
    counts: dict[str, int] = {}
    for table, query in _export_queries():
        with _private(folder / f"{table}.jsonl") as out:
            n = 0
            for record in conn.execute(query):
                out.write(json.dumps(record["row"], ensure_ascii=False) + "\n")
                n += 1
        counts[table] = n
    migrations = [r["version"] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    partial = folder / "manifest.json.partial"
    with _private(partial) as out:
        out.write(json.dumps({"migrations": migrations, "tables": counts}, indent=2))
    partial.rename(manifest)   # last, whole: the files it lists are all written
    return counts


def _export_queries() -> Iterator[tuple[str, sql.Composable]]:
    for table in TABLES:
        yield table, sql.SQL("SELECT to_jsonb(t) AS row FROM {} t ORDER BY 1").format(sql.Identifier(table))
    yield "documents", sql.SQL(_DOCUMENTS)
    yield "group_members", sql.SQL(_GROUP_MEMBERS)


def _private(path: Path) -> TextIO:
    """`path` opened for writing, readable by its owner only: an export holds questions as
    asked, drafts from restricted documents and the audit log."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)   # a file there from an earlier export keeps its mode otherwise
    return os.fdopen(fd, "w", encoding="utf-8")


def is_export(folder: Path) -> bool:
    """Whether `folder` holds a Flywheel export (its manifest lists the tables)."""
    return _manifest(folder) is not None


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("tables"), dict) else None


def import_from(conn: psycopg.Connection, folder: Path) -> dict[str, int]:
    """Restore an export into a database with no records yet (migrated, knowledge base allowed).
    Runs in the caller's transaction: a bad file leaves nothing half-imported."""
    manifest = _manifest(folder)
    if manifest is None:
        raise FileNotFoundError(f"{folder} is not a Flywheel export (no manifest.json listing its tables).")
    known = {r["version"] for r in conn.execute("SELECT version FROM schema_migrations")}
    newer = sorted(set(manifest.get("migrations", [])) - known)   # exports from before the list have none
    if newer:
        raise ImportRefused(f"This export comes from a newer Flywheel (its database has {', '.join(newer)}); "
                            "upgrade Flywheel here first. Nothing was imported.")
    for table in TABLES:
        if table in _MAY_HAVE_ROWS:
            continue
        exists = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {}) AS e").format(sql.Identifier(table))).fetchone()
        if exists and exists["e"]:
            raise ImportRefused(f"The database already has {table}; import into a fresh database.")
    counts: dict[str, int] = {}
    for table in TABLES:
        path, rows = _rows_of(folder, manifest, table)
        if table == "training_schedule":
            conn.execute("DELETE FROM training_schedule")
        columns = _columns(conn, table)
        # audit_log: imported after the audit of knowledge ingested here, so under new ids
        imported = [c for c in columns if not (table == "audit_log" and c == "id")]
        inserts: dict[tuple[str, ...], sql.Composed] = {}   # one statement per set of columns present
        for number, row in rows:
            present = tuple(c for c in imported if c in row)   # a column newer than the export takes its default
            if not present:
                raise ImportRefused(f"{path.name}:{number}: none of its fields is a column of {table}; "
                                    "nothing was imported.")
            if present not in inserts:
                inserts[present] = sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM jsonb_populate_record(NULL::{t}, "
                                           "%(row)s)").format(t=sql.Identifier(table),
                                                              c=sql.SQL(", ").join(map(sql.Identifier, present)))
            insert = inserts[present]
            with _refused_unless_it_fits(path, number):
                conn.execute(insert, {"row": Jsonb(row)})
        if "id" in columns:
            _advance_sequence(conn, table)
        counts[table] = len(rows)
    counts["documents"] = _import_documents(conn, *_rows_of(folder, manifest, "documents"))
    counts["group_members"] = _import_group_members(conn, *_rows_of(folder, manifest, "group_members"))
    return counts


def relocate_adapters(conn: psycopg.Connection, adapter_root: Path) -> list[str]:
    """Point each adapter whose files are not at the path on record to `adapter_root/<name>`
    when they are there (the adapters folder restored beside the export, on a machine whose data
    folder is elsewhere); returns the names of adapters whose files are in neither place."""
    missing = []
    for row in conn.execute("SELECT version, name, path FROM adapters WHERE status <> 'failed' ORDER BY version").fetchall():
        if row["path"] and Path(row["path"]).exists():
            continue
        here = adapter_root / row["name"]
        if (here / "adapter_config.json").exists():
            conn.execute("UPDATE adapters SET path = %(p)s WHERE version = %(v)s", {"p": str(here), "v": row["version"]})
        else:
            missing.append(row["name"])
    return missing


def _rows_of(folder: Path, manifest: dict[str, Any], table: str) -> tuple[Path, list[tuple[int, Any]]]:
    """The exported records of `table` (none from an export older than it), all of them."""
    path = folder / f"{table}.jsonl"
    rows = _read_rows(path) if path.exists() else []
    listed = manifest["tables"].get(table)
    if listed is not None and listed != len(rows):
        raise ImportRefused(f"{path.name} holds {len(rows)} records where the export wrote {listed}: "
                            "the export is incomplete. Nothing was imported.")
    return path, rows


def _import_documents(conn: psycopg.Connection, path: Path, rows: list[tuple[int, Any]]) -> int:
    """List each exported document with its visibility, empty (no chunks, no content hash) until a
    re-ingest fills it and keeps that visibility. A document ingested here before the import
    takes the exported visibility when it is public here (audited): restoring narrows, never
    widens. Each keeps its old id where that is free; where not, the sources recorded with the
    imported answers are renumbered, so they still name it (training leaves out what was drafted
    from a restricted document, and reads its text, through them)."""
    exported = [row["id"] for _, row in rows if type(row.get("id")) is int]
    # New ids come from above every id here and every exported one: a document whose old id is
    # taken never takes another's.
    conn.execute("SELECT setval(pg_get_serial_sequence('documents', 'id'), greatest((SELECT coalesce(max(id), 0)"
                 " FROM documents), %(top)s) + 1, false)", {"top": max(exported, default=0)})
    moved: dict[int, int] = {}
    for number, row in rows:
        old_id = row["id"] if type(row.get("id")) is int else None
        with _refused_unless_it_fits(path, number):
            new_id = _import_document(conn, row, old_id)
        if old_id is not None and new_id != old_id:
            moved[old_id] = new_id
    if moved:
        conn.execute(
            "UPDATE answers a SET sources = (SELECT jsonb_agg(CASE WHEN m.new_id IS NULL THEN e.s"
            " ELSE jsonb_set(e.s, '{document_id}', to_jsonb(m.new_id)) END ORDER BY e.n)"
            " FROM jsonb_array_elements(a.sources) WITH ORDINALITY AS e(s, n)"
            " LEFT JOIN unnest(%(old)s::text[], %(new)s::bigint[]) AS m(old_id, new_id) ON m.old_id = e.s->>'document_id')"
            " WHERE jsonb_typeof(a.sources) = 'array' AND EXISTS (SELECT 1 FROM jsonb_array_elements(a.sources) s"
            " WHERE s->>'document_id' = ANY(%(old)s::text[]))",
            {"old": [str(k) for k in moved], "new": list(moved.values())})
    _advance_sequence(conn, "documents")
    return len(rows)


def _import_document(conn: psycopg.Connection, row: dict[str, Any], old_id: int | None) -> int:
    """One exported document, listed or merged into the one here from the same source; its id here."""
    here = conn.execute("SELECT id, visible_channels = '{}' AND visible_groups = '{}' AS public"
                        " FROM documents WHERE source = %(s)s", {"s": row.get("source")}).fetchone()
    if here is not None:
        if here["public"] and (row.get("visible_channels") or row.get("visible_groups")):
            conn.execute("UPDATE documents d SET visible_channels = r.visible_channels, visible_groups = r.visible_groups,"
                         " updated_at = now() FROM jsonb_populate_record(NULL::documents, %(row)s) r"
                         " WHERE d.id = %(id)s", {"row": Jsonb(row), "id": here["id"]})
            audit.record(conn, IMPORT_ACTOR, "knowledge.visibility", f"document:{here['id']}",
                         {"channels": row.get("visible_channels"), "groups": row.get("visible_groups")})
        return int(here["id"])
    free = old_id is not None and conn.execute("SELECT 1 FROM documents WHERE id = %(id)s",
                                               {"id": old_id}).fetchone() is None
    inserted = conn.execute(
        "INSERT INTO documents (id, source, title, url, content_hash, visible_channels, visible_groups)"
        " SELECT coalesce(%(id)s, nextval(pg_get_serial_sequence('documents', 'id'))), r.source, r.title, r.url, '',"
        " r.visible_channels, r.visible_groups FROM jsonb_populate_record(NULL::documents, %(row)s) r RETURNING id",
        {"row": Jsonb(row), "id": old_id if free else None}).fetchone()
    return int(inserted["id"])  # type: ignore[index]


def _import_group_members(conn: psycopg.Connection, path: Path, rows: list[tuple[int, Any]]) -> int:
    for number, row in rows:
        with _refused_unless_it_fits(path, number):
            conn.execute("INSERT INTO group_members (group_name, user_id) SELECT group_name, user_id"
                         " FROM jsonb_populate_record(NULL::group_members, %(row)s) ON CONFLICT DO NOTHING",
                         {"row": Jsonb(row)})
    return len(rows)


@contextmanager
def _refused_unless_it_fits(path: Path, number: int) -> Iterator[None]:
    """A row the schema refuses ends the import, naming its line (the caller's transaction rolls back)."""
    try:
        yield
    except (psycopg.IntegrityError, psycopg.DataError) as e:
        raise ImportRefused(f"{path.name}:{number}: does not fit this database ({e.diag.message_primary}); "
                            "nothing was imported.") from None


def _read_rows(path: Path) -> list[tuple[int, Any]]:
    """The records of one exported table with their line numbers; a damaged line is refused."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ImportRefused(f"{path.name}: not valid UTF-8 (byte {e.start}); nothing was imported.") from None
    rows = []
    for number, line in jsonl_lines(text):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ImportRefused(f"{path.name}:{number}: not valid JSON ({e.msg}); nothing was imported.") from None
        if not isinstance(row, dict) or not row:
            raise ImportRefused(f"{path.name}:{number}: not a record (a JSON object of columns); "
                                "nothing was imported.")
        rows.append((number, row))
    return rows


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
    return [r["column_name"] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = %(t)s ORDER BY ordinal_position", {"t": table})]


def _advance_sequence(conn: psycopg.Connection, table: str) -> None:
    """After explicit ids, the next generated id must come after them."""
    seq = conn.execute("SELECT pg_get_serial_sequence(%(t)s, 'id') AS s", {"t": table}).fetchone()
    if seq and seq["s"]:
        conn.execute(sql.SQL("SELECT setval(%(s)s, coalesce((SELECT max(id) FROM {}), 0) + 1, false)").format(
            sql.Identifier(table)), {"s": seq["s"]})
