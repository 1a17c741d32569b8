"""`flywheel export` then `flywheel import` into a fresh database brings back every row."""
from __future__ import annotations

import itertools
import json
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner, Result

from bot import store
from core import backup, curation, db, feedback, models, training
from core.agent import run
from core.cli import app
from core.config import get_settings

_fresh = itertools.count()


@contextmanager
def _fresh_database(pg_server: str) -> Iterator[str]:
    """A migrated database with no records, dropped afterwards; yields its URL."""
    target = f"restore_{next(_fresh)}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{target}" TEMPLATE flywheel_template')
    try:
        yield pg_server.replace("/postgres?", f"/{target}?")
    finally:
        db.close_pools()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{target}" WITH (FORCE)')


PAY_PAGE = "# Salary bands\n\nBand C starts at 52,000 EUR.\n"   # a page for HR's eyes only


def _export_with_cli(folder: Path) -> Result:
    exported = CliRunner().invoke(app, ["export", str(folder)])
    assert exported.exit_code == 0, exported.output
    return exported


def _import_with_cli(folder: Path, target_url: str, monkeypatch: pytest.MonkeyPatch) -> Result:
    monkeypatch.setenv("DATABASE_URL", target_url)
    get_settings.cache_clear()
    imported = CliRunner().invoke(app, ["import", str(folder)])
    assert imported.exit_code == 0, imported.output
    return imported


def _seed(handbook_dir: Path) -> None:
    from core.knowledge import ingest

    ingest.ingest_paths([handbook_dir])
    context = run.default_context()
    answered = run.ask("How do I order a new laptop?", run.Asker(surface="cli", user_id="U1"), context=context)
    pending = run.ask("When are salary bands reviewed?", run.Asker(surface="slack", user_id="U2", channel_id="C1",
                                                                   thread_key="slack:C1:1.1"), context=context)
    assert pending.review_id is not None
    with db.connection() as conn:  # the Slack thread the pending answer lives in, as the bot records it
        slack_id = store.open_question(conn, channel_id="C1", question_ts="1.1", thread_ts="1.1", user_id="U2",
                                       event_id="Ev1", question="When are salary bands reviewed?", owner="bot-1")
        store.link_answer(conn, slack_id, pending.answer_id)  # type: ignore[arg-type]
    run.decide(pending.review_id, {"action": "approve", "reviewer": "UREV"}, context=context)
    with db.connection() as conn:
        feedback.record_rating(conn, answered.answer_id, "U1", "down", reason="incomplete",
                               suggested_answer="Use the IT portal.")
        curation.accept(conn, answered.answer_id, curated_by="admin@example.com", ideal_answer="Use the IT portal [1].")
        curation.create_dataset(conn, created_by="admin@example.com", note="first")
        adapter = models.register(conn, base_model="tiny", path="/adapters/v1", dataset_version=1,
                                  hyperparams={"rank": 4}, status="ready")
        models.mark_live(conn, adapter.version, actor="admin")
        run_row = training.create_run(conn, base_model="tiny", dataset_version=1, params={"epochs": 1},
                                      requested_by="admin@example.com")
        training.finish_run(conn, run_row.id, "succeeded", metrics={"f1": 0.5}, adapter_version=adapter.version)


def _rows(url: str) -> dict[str, list[dict]]:
    with psycopg.connect(url) as conn:
        return {t: [r[0] for r in conn.execute(f"SELECT to_jsonb(x) FROM {t} x ORDER BY 1")]  # noqa: S608
                for t in backup.TABLES}


def test_export_then_import_into_fresh_database_round_trips_every_row(
        database_url: str, pg_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    handbook = tmp_path / "handbook"
    handbook.mkdir()
    (handbook / "laptops.md").write_text("# Laptops\n\n## Ordering\nOrder a new laptop through the IT portal.\n")
    (handbook / "pay.md").write_text("# Salary bands\n\n## Reviews\nSalary bands are reviewed each March.\n")
    monkeypatch.setenv("FLYWHEEL_LLM_BACKEND", "extractive")
    get_settings.cache_clear()
    run._default_generator.cache_clear()
    _seed(handbook)
    before = _rows(database_url)
    assert all(before[t] for t in ("answers", "slack_answers", "reviews", "feedback", "curation_items",
                                   "dataset_items", "adapters"))

    out = tmp_path / "export"
    _export_with_cli(out)
    # Questions as asked and drafts from restricted documents: for the owner's eyes only.
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in out.iterdir()} == {0o600}

    db.close_pools()
    with _fresh_database(pg_server) as target_url:
        _import_with_cli(out, target_url, monkeypatch)
        assert _rows(target_url) == before

        again = CliRunner().invoke(app, ["import", str(out)])  # a second import would mix two histories
        assert again.exit_code == 2 and "fresh database" in again.output
        with db.connect(target_url) as conn:  # new rows get new ids after the imported ones
            with conn.transaction():
                new_id = feedback.create_answer(conn, thread_key="cli:x", surface="cli", question="q")
        assert new_id > max(r["id"] for r in before["answers"])


def test_a_restored_knowledge_base_keeps_who_may_see_each_document_through_a_re_ingest(
        database_url: str, pg_server: str, tmp_path: Path) -> None:
    from core.knowledge import ingest
    from core.knowledge import store as knowledge

    handbook = tmp_path / "handbook"
    (handbook / "hr").mkdir(parents=True)
    (handbook / "laptops.md").write_text("# Laptops\n\nOrder a new laptop through the IT portal.\n")
    (handbook / "hr" / "pay.md").write_text(PAY_PAGE)
    (tmp_path / "gone.md").write_text("# Gone\n\nA page deleted since.\n")
    ingest.ingest_paths([tmp_path / "gone.md"])
    ingest.ingest_paths([handbook / "laptops.md"])
    ingest.ingest_paths([handbook / "hr"], visible_groups=["hr"])
    with db.connection() as conn:
        knowledge.delete_document(conn, str((tmp_path / "gone.md").resolve()))   # ids here: 2 and 3
        knowledge.add_group_member(conn, "hr", "U0HR")
        pay_id = {d.title: d.id for d in knowledge.list_documents(conn)}["Salary bands"]
    out = tmp_path / "export"
    _export_with_cli(out)
    db.close_pools()

    def visibility(url: str) -> dict[str, tuple[list[str], int]]:
        with db.connect(url) as conn:
            return {d.title: (d.visible_groups, d.chunks) for d in knowledge.list_documents(conn)}

    with _fresh_database(pg_server) as target_url:
        with db.connect(target_url) as conn:   # the laptop page was re-ingested before the import
            ingest.ingest_paths([handbook / "laptops.md"], url=target_url)
            backup.import_from(conn, out)
            conn.commit()
            assert [(r["group_name"], r["user_id"]) for r in conn.execute("SELECT * FROM group_members")] == [
                ("hr", "U0HR")]
        assert visibility(target_url) == {"Laptops": ([], 1), "Salary bands": (["hr"], 0)}   # listed, empty
        with db.connect(target_url) as conn:   # under its old id, which the answers' sources name
            assert {d.title: d.id for d in knowledge.list_documents(conn)}["Salary bands"] == pay_id
        report = ingest.ingest_paths([handbook], url=target_url)   # re-ingest as a nightly job would: no flags
        assert (report.added, len(report.unchanged)) == ([str((handbook / "hr" / "pay.md").resolve())], 1)
        assert visibility(target_url) == {"Laptops": ([], 1), "Salary bands": (["hr"], 1)}   # still HR only


def test_an_import_over_documents_ingested_first_narrows_them_audited_and_renumbers_the_answers_sources(
        database_url: str, pg_server: str, tmp_path: Path) -> None:
    from core import audit
    from core.knowledge import ingest
    from core.knowledge import store as knowledge

    pages = {"gone": "# Gone\n\nDeleted since.\n", "laptops": "# Laptops\n\nOrder one in the IT portal.\n",
             "pay": PAY_PAGE, "canteen": "# Canteen\n\nOpens at noon.\n"}
    for name, text in pages.items():
        (tmp_path / f"{name}.md").write_text(text)
    ingest.ingest_paths([tmp_path / "gone.md"])
    ingest.ingest_paths([tmp_path / "laptops.md"])
    ingest.ingest_paths([tmp_path / "pay.md"], visible_groups=["hr"])
    with db.connection() as conn:
        knowledge.delete_document(conn, str((tmp_path / "gone.md").resolve()))
        old = {d.title: d.id for d in knowledge.list_documents(conn)}
        answer_id = feedback.create_answer(conn, thread_key="cli:1", surface="cli", question="Pay and laptops?")
        feedback.update_answer(conn, answer_id, sources=[{"n": n, "document_id": old[title], "title": title}
                                                         for n, title in enumerate(["Laptops", "Salary bands"], 1)])
        backup.export_to(conn, tmp_path / "export")
    with _fresh_database(pg_server) as target_url:
        # Before the import this machine ingested the canteen page and, carelessly, the pay page for everyone:
        # they hold the ids the exported documents had.
        ingest.ingest_paths([tmp_path / "canteen.md"], url=target_url)
        ingest.ingest_paths([tmp_path / "pay.md"], url=target_url)
        with db.connect(target_url) as conn:
            shown = {d.title: d.updated_at for d in knowledge.list_documents(conn)}
            backup.import_from(conn, tmp_path / "export")
            conn.commit()
            here = {d.title: d for d in knowledge.list_documents(conn)}
            [answer] = conn.execute("SELECT sources FROM answers").fetchall()
            narrowed = [(e.actor, e.target) for e in audit.recent(conn) if e.action == "knowledge.visibility"]
    assert here["Salary bands"].visible_groups == ["hr"] and here["Salary bands"].chunks == 1   # narrowed, kept
    assert here["Salary bands"].updated_at > shown["Salary bands"]   # a Knowledge page shown before cannot undo it
    assert narrowed == [("import", f"document:{here['Salary bands'].id}")]
    assert here["Laptops"].id not in {here["Canteen"].id, here["Salary bands"].id, *old.values()}
    assert [(s["title"], s["document_id"]) for s in answer["sources"]] == [
        ("Laptops", here["Laptops"].id), ("Salary bands", here["Salary bands"].id)]   # the answer names them still


def test_an_import_names_restricted_documents_whose_files_are_not_where_they_were(
        database_url: str, pg_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core import doctor
    from core.knowledge import ingest

    old = tmp_path / "old" / "pay.md"
    old.parent.mkdir()
    old.write_text(PAY_PAGE)
    ingest.ingest_paths([old], visible_groups=["hr"])
    out = tmp_path / "export"
    _export_with_cli(out)
    old.rename(tmp_path / "pay.md")   # another machine, another checkout
    db.close_pools()
    with _fresh_database(pg_server) as target_url:
        imported = _import_with_cli(out, target_url, monkeypatch)
        assert "1 document is listed with who may see them, but without content" in imported.output
        assert f"1 document is not at the old paths on this machine (e.g. {old.resolve()})" in imported.output
        [check] = [c for c in doctor.run_checks(get_settings(), embedder=False) if c.name == "knowledge base"]
        assert check.level == "warn" and "1 without content" in check.detail


def test_an_import_points_adapters_to_the_adapters_folder_restored_here(
        database_url: str, pg_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with db.connection() as conn:   # trained on a machine whose data folder was elsewhere
        for name in ("flywheel-v1", "flywheel-v2"):
            models.register(conn, base_model="tiny", path=f"/elsewhere/adapters/{name}", dataset_version=None,
                            hyperparams={}, status="ready")
        backup.export_to(conn, tmp_path / "export")
    db.close_pools()
    root = tmp_path / "adapters-here"   # the adapters folder copied over, v2's files missing
    (root / "flywheel-v1").mkdir(parents=True)
    (root / "flywheel-v1" / "adapter_config.json").write_text("{}")
    monkeypatch.setenv("FLYWHEEL_ADAPTERS_DIR", str(root))
    with _fresh_database(pg_server) as target_url:
        imported = _import_with_cli(tmp_path / "export", target_url, monkeypatch)
        with db.connect(target_url) as conn:
            paths = {a.name: a.path for a in models.list_adapters(conn)}
    assert paths == {"flywheel-v1": str(root / "flywheel-v1"), "flywheel-v2": "/elsewhere/adapters/flywheel-v2"}
    assert (f"The files of flywheel-v2 are not here: copy the adapters folder backed up with the export to {root}"
            in imported.output)


def test_import_of_a_folder_that_is_not_an_export_is_refused(database_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["import", str(tmp_path)])
    assert result.exit_code == 2 and "not a Flywheel export" in result.output


def test_import_keeps_the_audit_of_knowledge_ingested_before_it(database_url: str, pg_server: str,
                                                                tmp_path: Path) -> None:
    from core import audit

    with db.connection() as conn:
        audit.record(conn, "ann", "knowledge.ingest", "document:1")
        backup.export_to(conn, tmp_path / "export")
    with _fresh_database(pg_server) as target_url, db.connect(target_url) as conn:
        audit.record(conn, "bob", "knowledge.ingest", "document:9")  # `flywheel ingest` before the import
        conn.commit()
        backup.import_from(conn, tmp_path / "export")
        conn.commit()
        actors = [r["actor"] for r in conn.execute("SELECT actor FROM audit_log ORDER BY id")]
    assert actors == ["bob", "ann"]


def test_export_refuses_an_empty_path_and_a_folder_of_other_files(database_url: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.md").write_text("mine")
    for folder in ["", " ", str(tmp_path)]:
        refused = CliRunner().invoke(app, ["export", folder])
        assert refused.exit_code == 2, refused.output
    assert [p.name for p in tmp_path.iterdir()] == ["notes.md"]
    assert "holds other files" in refused.output
    (tmp_path / "webapp").mkdir()
    (tmp_path / "webapp" / "manifest.json").write_text('{"name": "my app"}')  # someone else's manifest
    for folder, message in [("notes.md", "is a file"), ("webapp", "holds other files")]:
        refused = CliRunner().invoke(app, ["export", folder])
        assert refused.exit_code == 2 and message in refused.output, refused.output
    assert (tmp_path / "webapp" / "manifest.json").read_text() == '{"name": "my app"}'
    first = CliRunner().invoke(app, ["export", "backup"])
    again = CliRunner().invoke(app, ["export", "backup"])  # over an earlier export
    assert first.exit_code == again.exit_code == 0 and (tmp_path / "backup" / "manifest.json").exists()


@pytest.mark.parametrize(("damage", "says"), [
    (lambda lines: [*lines, lines[0][: len(lines[0]) // 2]], "answers.jsonl:2: not valid JSON"),
    (lambda lines: [lines[0].replace('"question": "Where is the canteen?"', '"question": null')],
     'answers.jsonl:1: does not fit this database (null value in column "question"'),
    (lambda lines: ["[1, 2]"], "answers.jsonl:1: not a record"),
])
def test_import_of_a_damaged_export_names_the_line_and_imports_nothing(
        database_url: str, pg_server: str, tmp_path: Path, damage: object, says: str) -> None:
    with db.connection() as conn:
        answer_id = feedback.create_answer(conn, thread_key="cli:1", surface="cli", question="Where is the canteen?")
        feedback.record_rating(conn, answer_id, "U1", "up")
        backup.export_to(conn, tmp_path / "export")
    answers = tmp_path / "export" / "answers.jsonl"
    answers.write_text("\n".join(damage(answers.read_text().splitlines())) + "\n")  # type: ignore[operator]
    _assert_refused_and_nothing_imported(pg_server, tmp_path / "export", says)


def _assert_refused_and_nothing_imported(pg_server: str, export: Path, says: str) -> None:
    with _fresh_database(pg_server) as restored:
        try:
            with pytest.MonkeyPatch.context() as env:
                env.setenv("DATABASE_URL", restored)
                get_settings.cache_clear()
                refused = CliRunner().invoke(app, ["import", str(export)])
        finally:
            get_settings.cache_clear()
        assert refused.exit_code == 2 and says in refused.output, refused.output
        assert "nothing was imported" in refused.output.lower() and "Traceback" not in refused.output
        with psycopg.connect(restored) as conn:
            assert conn.execute("SELECT count(*) FROM answers").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM feedback").fetchone() == (0,)


def test_export_where_nothing_can_be_written_says_so(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("mine")
    refused = CliRunner().invoke(app, ["export", str(tmp_path / "notes.md" / "backup")])
    assert refused.exit_code == 1 and "Cannot write the export to" in refused.output
    assert isinstance(refused.exception, SystemExit)   # a message, not an OSError


def test_an_export_taken_while_people_vote_imports(database_url: str, pg_server: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with db.connection() as conn:
        feedback.create_answer(conn, thread_key="cli:1", surface="cli", question="Where is the canteen?")

    class AnAnswerAndAVoteMeanwhile(tuple):   # written by the bot between the export's reads of two tables
        def __iter__(self):  # type: ignore[no-untyped-def]
            for table in tuple.__iter__(self):
                yield table
                if table == "answers":
                    with db.connection() as other:
                        answer_id = feedback.create_answer(other, thread_key="slack:C1:2", surface="slack",
                                                           question="And the gym?")
                        feedback.record_rating(other, answer_id, "U1", "up")

    monkeypatch.setattr(backup, "TABLES", AnAnswerAndAVoteMeanwhile(backup.TABLES))
    _export_with_cli(tmp_path / "export")
    monkeypatch.setattr(backup, "TABLES", tuple(backup.TABLES))
    with _fresh_database(pg_server) as target_url, db.connect(target_url) as conn:
        counts = backup.import_from(conn, tmp_path / "export")
    assert (counts["answers"], counts["feedback"]) == (1, 0)   # as it was when the export began


def _an_export(folder: Path) -> Path:
    with db.connection() as conn:
        answer_id = feedback.create_answer(conn, thread_key="cli:1", surface="cli", question="Where is the canteen?")
        feedback.record_rating(conn, answer_id, "U1", "up")
        backup.export_to(conn, folder)
    return folder


def test_an_export_cut_short_over_an_earlier_one_is_not_an_export(database_url: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    export = _an_export(tmp_path / "export")
    written: list[str] = []

    class DiskFullAfterTwoTables(tuple):
        def __iter__(self):  # type: ignore[no-untyped-def]
            for table in tuple.__iter__(self):
                if len(written) == 2:
                    raise OSError(28, "No space left on device")
                written.append(table)
                yield table

    monkeypatch.setattr(backup, "TABLES", DiskFullAfterTwoTables(backup.TABLES))
    cut = CliRunner().invoke(app, ["export", str(export)])
    assert cut.exit_code == 1 and "No space left on device" in cut.output
    assert not backup.is_export(export)   # its old manifest would have vouched for a mix of two exports
    refused = CliRunner().invoke(app, ["import", str(export)])
    assert refused.exit_code == 2 and "not a Flywheel export" in refused.output


def test_import_of_an_export_missing_records_is_refused(database_url: str, pg_server: str, tmp_path: Path) -> None:
    export = _an_export(tmp_path / "export")
    (export / "feedback.jsonl").write_text("")   # lost in a copy
    _assert_refused_and_nothing_imported(pg_server, export,
                                         "feedback.jsonl holds 0 records where the export wrote 1")


def test_import_of_an_export_from_a_newer_flywheel_is_refused(database_url: str, pg_server: str,
                                                              tmp_path: Path) -> None:
    export = _an_export(tmp_path / "export")
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["migrations"].append("099_from_the_future")
    (export / "manifest.json").write_text(json.dumps(manifest))
    _assert_refused_and_nothing_imported(pg_server, export, "newer Flywheel (its database has 099_from_the_future)")


def test_text_with_unicode_line_separators_round_trips(database_url: str, pg_server: str, tmp_path: Path) -> None:
    with db.connection() as conn:   # a paste from a web page, text mis-decoded from Windows-1252
        feedback.create_answer(conn, thread_key="cli:1", surface="cli", question="Line one\u2028line two\x85 end")
        backup.export_to(conn, tmp_path / "export")
    with _fresh_database(pg_server) as target_url, db.connect(target_url) as conn:
        assert backup.import_from(conn, tmp_path / "export")["answers"] == 1
        assert conn.execute("SELECT question FROM answers").fetchone() == {"question": "Line one\u2028line two\x85 end"}


def test_an_export_from_before_a_column_existed_imports_with_its_default(database_url: str, pg_server: str,
                                                                         tmp_path: Path) -> None:
    export = _an_export(tmp_path / "export")
    answers = export / "answers.jsonl"
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    answers.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "timings"}) + "\n" for r in rows))
    with _fresh_database(pg_server) as target_url, db.connect(target_url) as conn:
        counts = backup.import_from(conn, export)
        timings = conn.execute("SELECT timings FROM answers").fetchone()
    assert counts["answers"] == 1 and timings == {"timings": {}}
