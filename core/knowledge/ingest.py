"""Ingest files and folders: parse, chunk, embed, store; one transaction per document.

Re-ingesting skips documents whose content hash has not changed; a changed document replaces
its chunks; a record since removed from a JSONL file is deleted. A bad file is reported by name
and the rest of the batch still goes in."""
from __future__ import annotations

import collections
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from core import audit, db
from core.config import get_settings
from core.knowledge import chunk, embed, store
from core.knowledge.parse import SUPPORTED, ParsedDocument, ParseError, parse_bytes, parse_jsonl

logger = logging.getLogger(__name__)
BATCH_DOCUMENTS = 64  # documents embedded together (one encode call), each still its own transaction


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)              # records no longer in their JSONL file
    failed: list[tuple[str, str]] = field(default_factory=list)   # (source, message)
    # Stored documents not read this time (their file failed, or is gone) given the visibility asked for.
    visibility_only: list[str] = field(default_factory=list)
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)   # in folders: type -> files
    chunks: int = 0

    def add(self, other: IngestReport) -> None:
        """Count `other`'s documents in this report too (several ingests shown as one)."""
        for name in ("added", "updated", "unchanged", "removed", "failed", "visibility_only"):
            getattr(self, name).extend(getattr(other, name))
        self.skipped.update(other.skipped)
        self.chunks += other.chunks

    def tally(self) -> str:
        """The counts, on one line."""
        return (f"{len(self.added)} added, {len(self.updated)} updated, {len(self.unchanged)} unchanged, "
                + (f"{len(self.removed)} removed, " if self.removed else "")
                + f"{len(self.failed)} failed ({self.chunks} chunks written)")

    def summary(self) -> str:
        lines = [self.tally()]
        lines += [f"  failed: {message}" for _, message in self.failed]
        lines += [f"  visibility set, content as stored before: {source}" for source in self.visibility_only]
        # Uploads are known by their file name only: say so when one replaced another of that name.
        lines += [f"  replaced the document uploaded before as {source.removeprefix(UPLOAD)}; it keeps who may see "
                  "it unless visibility was given" for source in self.updated if source.startswith(UPLOAD)]
        if self.skipped:
            most_first = sorted(self.skipped.items(), key=lambda kind: (-kind[1], kind[0]))
            kinds = ", ".join(f"{n} {suffix or 'without an extension'}" for suffix, n in most_first)
            lines.append(f"  skipped in the folders, not a type Flywheel reads: {kinds} (it reads {', '.join(SUPPORTED)})")
        return "\n".join(lines)


UPLOAD = "upload:"   # the source of a file uploaded on the dashboard, before its name


# (channels, groups) a document is visible in / to, both empty for everyone; None keeps what a
# document already has (a new one is public), so re-ingesting a folder never widens visibility.
Visibility = tuple[tuple[str, ...], tuple[str, ...]] | None


def visibility(channels: Sequence[str] | None, groups: Sequence[str] | None) -> Visibility:
    """None when neither is given; otherwise both, a missing one as empty. A channel that is not
    a channel id is refused (`store.VisibilityError`) before anything is stored."""
    if channels is None and groups is None:
        return None
    return tuple(store.channel_ids(channels or ())), tuple(groups or ())


def ingest_paths(paths: Sequence[Path], *, visible_channels: Sequence[str] | None = None,
                 visible_groups: Sequence[str] | None = None, url: str | None = None,
                 audited_by: str | None = None, on_batch: Callable[[IngestReport], None] | None = None) -> IngestReport:
    """Ingest files and folders (recursively, supported types only). With `audited_by`, each
    stored document (or visibility change) gets an audit row in its own transaction. `on_batch`
    sees the report so far after each batch of documents is stored."""
    report = IngestReport()
    visible = visibility(visible_channels, visible_groups)
    _store_all(_documents_from_paths(paths, report), visible, report, url, audited_by, on_batch)
    _set_visibility_of_the_rest([source_of(p) for p in paths], visible, report, url, audited_by)
    return report


def ingest_file_bytes(name: str, data: bytes, *, source: str | None = None,
                      visible_channels: Sequence[str] | None = None, visible_groups: Sequence[str] | None = None,
                      url: str | None = None, audited_by: str | None = None) -> IngestReport:
    """Ingest one uploaded file (the dashboard's path); same rules as files on disk."""
    report = IngestReport()
    visible, source = visibility(visible_channels, visible_groups), source or f"{UPLOAD}{name}"
    _store_all(_documents_from_bytes(name, data, source, report), visible, report, url, audited_by)
    _set_visibility_of_the_rest([source], visible, report, url, audited_by)
    return report


def _set_visibility_of_the_rest(sources: Sequence[str], visible: Visibility, report: IngestReport,
                                url: str | None, audited_by: str | None) -> None:
    """The visibility asked for holds for everything stored from `sources` (files, folders), not
    only what was read this time: a file that failed to parse, or is gone from disk, keeps its
    old content, but an admin restricting a folder must not find it still public."""
    if visible is None:
        return
    with db.connection(url) as conn:
        for source in sources:
            report.visibility_only += _set_visibility(conn, source, visible, audited_by, and_under=True)


def _set_visibility(conn: psycopg.Connection, source: str, visible: tuple[tuple[str, ...], tuple[str, ...]],
                    audited_by: str | None, *, and_under: bool = False) -> list[str]:
    """Set (and audit) the visibility of what is stored from `source`; the sources it changed."""
    changed = store.set_visibility_of_source(conn, source, *visible, and_under=and_under)
    for document_id, _ in changed if audited_by is not None else []:
        audit.record(conn, audited_by, "knowledge.visibility", f"document:{document_id}",
                     {"channels": list(visible[0]), "groups": list(visible[1])})
    return [s for _, s in changed]


def reindex_document(conn: psycopg.Connection, document_id: int) -> int:
    """Embed a document's chunks again with the current embedding model (after a model change,
    or for chunks stored before heading vectors existed); returns how many were re-embedded."""
    chunks = store.chunk_texts(conn, document_id)
    vectors = embed.embed_texts([c.text for c in chunks])
    labels = list(dict.fromkeys(c.label for c in chunks))
    label_vectors = dict(zip(labels, embed.embed_texts(labels)))
    store.update_embeddings(conn, [c.id for c in chunks], vectors, [label_vectors[c.label] for c in chunks])
    return len(chunks)


def _documents_from_paths(paths: Sequence[Path], report: IngestReport) -> Iterator[ParsedDocument]:
    limit = get_settings().max_file_mb * 1024 * 1024
    for path in _files(paths, report):
        source = source_of(path)
        if not _is_utf8(source):   # bytes the file system allows but Postgres text cannot hold
            shown = os.fsencode(source).decode("utf-8", "backslashreplace")   # the odd bytes as \xe9
            report.failed.append((shown, f"{shown}: the file name is not valid UTF-8; rename the file"))
            continue
        size = path.stat().st_size
        if size > limit:
            report.failed.append((str(path), f"{path}: {size / 1e6:.0f} MB is over the "
                                               f"{get_settings().max_file_mb} MB limit (FLYWHEEL_MAX_FILE_MB)"))
            continue
        try:
            data = path.read_bytes()
        except OSError as e:
            report.failed.append((str(path), f"{path}: cannot read ({e.strerror})"))
            continue
        yield from _documents_from_bytes(str(path), data, source, report)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def delete(conn: psycopg.Connection, name: str) -> list[str]:
    """Delete what `name` names: a document id (unless a file or folder of that name is here: a
    folder named `2024`); a source as typed or as its absolute path (a file is stored under it,
    even once it is gone from disk); else everything ingested from under that folder, and the
    files reached through a symlinked folder inside it (stored under their real paths) while the
    link is there. Returns the sources deleted."""
    if is_document_id(name):
        return store.delete_document(conn, int(name))
    path = source_of(Path(name))
    for source in dict.fromkeys([path] if name.isdigit() else [name, path]):
        if found := store.delete_document(conn, source):
            return found
    deleted = store.delete_under(conn, path)
    if Path(name).is_dir():
        linked = (source_of(file) for file in files_under(Path(name)))
        for source in [s for s in linked if not s.startswith(path.rstrip("/") + "/")]:   # the rest went above
            deleted += store.delete_document(conn, source)
    return deleted


def is_document_id(name: str) -> bool:
    """Whether a name an admin typed is a document id: digits, and no file or folder of that name here."""
    return name.isdigit() and not Path(name).exists()


def source_of(path: Path) -> str:
    """How a file on disk is known in the knowledge base: its absolute path."""
    return str(path.resolve())


def _documents_from_bytes(name: str, data: bytes, source: str, report: IngestReport) -> Iterator[ParsedDocument]:
    if len(data) > get_settings().max_file_mb * 1024 * 1024:
        report.failed.append((source, f"{name}: over the {get_settings().max_file_mb} MB limit"))
        return
    try:
        if name.lower().endswith(".jsonl"):
            for item in parse_jsonl(name, data, source):
                if isinstance(item, ParseError):
                    report.failed.append((source, str(item)))
                else:
                    yield item
        else:
            yield from parse_bytes(name, data, source)
    except ParseError as e:
        report.failed.append((source, str(e)))
    except Exception as e:  # a parser's own bug on an odd file: that file fails, the rest go in
        logger.exception("parsing %s failed", name)
        report.failed.append((source, f"{name}: could not be read ({type(e).__name__}: {e})"))


def _files(paths: Sequence[Path], report: IngestReport) -> Iterator[Path]:
    """The files `paths` name, each once (`docs docs/a.md`, a folder linked in twice)."""
    seen: set[str] = set()
    for path in paths:
        if path.is_dir():
            found = sorted(files_under(path, skipped=report.skipped))
        elif path.is_file():
            found = [path]
        else:
            report.failed.append((str(path), f"{path}: no such file or folder"))
            continue
        for file in found:
            if (source := source_of(file)) not in seen:
                seen.add(source)
                yield file


def files_under(folder: Path, *, skipped: collections.Counter[str] | None = None) -> Iterator[Path]:
    """The supported files under `folder`; the others are counted by type in `skipped`.
    Symlinked folders (a shared drive linked in) are followed, each real folder once, so a link
    back up cannot loop; hidden files and folders (.git, .venv, .flywheel) are not documents."""
    seen: set[str] = set()
    for root, folders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            folders.clear()
            continue
        seen.add(real)
        folders[:] = [f for f in folders if not f.startswith(".")]
        for name in names:
            if name.startswith(".") or not Path(root, name).is_file():
                continue
            if Path(name).suffix.lower() in SUPPORTED:
                yield Path(root, name)
            elif skipped is not None:
                skipped[Path(name).suffix.lower()] += 1


def _content_hash(doc: ParsedDocument) -> str:
    """The document, how it is cut and what embeds it: a new chunk size, a changed chunker or
    another embedder (FLYWHEEL_EMBED_MODEL) re-chunks and re-embeds it."""
    settings = get_settings()
    cut = f"chunks v{chunk.VERSION} {settings.chunk_tokens}/{settings.chunk_overlap}"
    embedder = [f"embedder {settings.embed_model}"] if settings.embed_model else []   # the default: as before
    return hashlib.sha256("\x1f".join([doc.title, doc.url or "", doc.text, cut, *embedder]).encode()).hexdigest()


def _store_all(documents: Iterable[ParsedDocument], visible: Visibility, report: IngestReport,
               url: str | None, audited_by: str | None = None,
               on_batch: Callable[[IngestReport], None] | None = None) -> None:
    batch: list[ParsedDocument] = []
    records: dict[str, set[str]] = {}  # JSONL file: the sources of the records read from it
    for doc in documents:
        if "record_id" in doc.metadata:
            records.setdefault(doc.source.removesuffix(f"#{doc.metadata['record_id']}"), set()).add(doc.source)
        batch.append(doc)
        if len(batch) >= BATCH_DOCUMENTS:
            _store_batch(batch, visible, report, url, audited_by)
            batch = []
            if on_batch is not None:
                on_batch(report)
    if batch:
        _store_batch(batch, visible, report, url, audited_by)
    failed = {source for source, _ in report.failed}
    for file_source, kept in records.items():
        if file_source in failed:  # a bad line may be a record still meant to be there: delete none
            continue
        with db.connection(url) as conn:
            removed = store.delete_records_not_in(conn, file_source, kept)
            if audited_by is not None:
                for source in removed:
                    audit.record(conn, audited_by, "knowledge.delete", source, {"reason": "no longer in its file"})
        report.removed += removed
    if report.added or report.updated or report.removed:
        with db.connection(url) as conn:
            store.refresh_statistics(conn)


def _store_batch(docs: list[ParsedDocument], visible: Visibility, report: IngestReport, url: str | None,
                 audited_by: str | None = None) -> None:
    settings = get_settings()
    with db.connection(url) as conn:
        known = {d.source: store.content_hash_of(conn, d.source) for d in docs}
    todo: list[tuple[ParsedDocument, str, list[chunk.Chunk]]] = []
    for doc in docs:
        digest = _content_hash(doc)
        if known[doc.source] == digest:  # content unchanged: keep chunks, set visibility if given
            if visible is not None:
                with db.connection(url) as conn:
                    report.visibility_only += _set_visibility(conn, doc.source, visible, audited_by)
            report.unchanged.append(doc.source)
            continue
        chunks = chunk.chunk_document(doc, settings.chunk_tokens, settings.chunk_overlap, fits=embed.fits_window)
        todo.append((doc, digest, chunks))
    all_chunks = [c for _, _, chunks in todo for c in chunks]
    vectors = embed.embed_texts([c.text for c in all_chunks])
    labels = list(dict.fromkeys(c.label for c in all_chunks))  # chunks of one section share a label
    label_vectors = dict(zip(labels, embed.embed_texts(labels)))
    offset = 0
    for doc, digest, chunks in todo:
        doc_vectors = vectors[offset: offset + len(chunks)]
        offset += len(chunks)
        try:
            with db.connection(url) as conn:
                document_id = store.upsert_document(conn, source=doc.source, title=doc.title, url=doc.url,
                                                    content_hash=digest, visibility=visible, metadata=doc.metadata)
                store.replace_chunks(conn, document_id, chunks, doc_vectors,
                                     [label_vectors[c.label] for c in chunks])
                if audited_by is not None:
                    audit.record(conn, audited_by, "knowledge.ingest", f"document:{document_id}",
                                 {"source": doc.source, "chunks": len(chunks)})
        except psycopg.Error as e:  # one document's failure must not stop the batch
            logger.exception("storing %s failed", doc.source)
            report.failed.append((doc.source, f"{doc.source}: could not be stored ({type(e).__name__}: {e})"))
            continue
        (report.updated if known[doc.source] else report.added).append(doc.source)
        report.chunks += len(chunks)
