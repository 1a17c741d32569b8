"""`flywheel doctor` names what is broken, clearly, without leaking secrets."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.cli import app
from core.config import Settings, get_settings
from support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_doctor_reports_a_broken_database_url_clearly_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://flywheel:s3cret-pw@127.0.0.1:9/flywheel")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["doctor", "--no-embedder"])
    get_settings.cache_clear()
    assert result.exit_code == 1
    assert "FAIL  database: cannot connect to postgresql://flywheel:***@127.0.0.1:9/flywheel" in result.output
    assert "DATABASE_URL" in result.output and "s3cret-pw" not in result.output


def test_doctor_on_a_healthy_install_checks_every_part(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_LLM_URL", "http://127.0.0.1:9")  # no model server: a warning, not a failure
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    lines = {line.split(":")[0].split()[-1] if "knowledge" not in line else "knowledge": line
             for line in result.output.splitlines()}
    assert lines["database"].startswith("ok") and "pgvector" in lines["database"]
    assert lines["migrations"].startswith("ok") and "none pending" in lines["migrations"]
    assert lines["embedder"].startswith("ok") and "384 dimensions" in lines["embedder"]
    assert lines["knowledge"].startswith("WARN") and "flywheel ingest" in lines["knowledge"]
    assert lines["generation"].startswith("WARN") and "not answering" in lines["generation"]
    assert lines["slack"].startswith("WARN") and "not configured" in lines["slack"]
    assert "queue" in lines


def test_doctor_fails_slack_with_a_bot_token_but_no_way_to_receive_events(database_url: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1234567890-abcdefghij")
    monkeypatch.setenv("FLYWHEEL_LLM_BACKEND", "extractive")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["doctor", "--no-embedder"])
    assert result.exit_code == 1
    assert "FAIL  slack: SLACK_BOT_TOKEN is set but neither SLACK_APP_TOKEN" in result.output
    assert "xoxb-1234567890" not in result.output


def test_blank_secrets_as_the_env_example_ships_them_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "FLYWHEEL_LLM_API_KEY"):
        monkeypatch.setenv(name, " ")
    settings = Settings()
    assert [settings.database_url, settings.slack_bot_token, settings.slack_app_token,
            settings.slack_signing_secret, settings.llm_api_key] == [None] * 5


def test_doctor_never_prints_a_password_given_as_a_keyword_or_in_the_model_server_url(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_LLM_URL", "https://bob:S3cretTok@127.0.0.1:9")
    get_settings.cache_clear()
    healthy = CliRunner().invoke(app, ["doctor", "--no-embedder"])
    assert "S3cretTok" not in healthy.output and "bob:***@127.0.0.1:9" in healthy.output
    monkeypatch.setenv("DATABASE_URL", "host=127.0.0.1 port=9 user=fly password=TopSecret dbname=x")
    get_settings.cache_clear()
    broken = CliRunner().invoke(app, ["doctor", "--no-embedder"])
    get_settings.cache_clear()
    assert broken.exit_code == 1 and "TopSecret" not in broken.output and "password=***" in broken.output


@pytest.mark.parametrize(("raw", "expected"), [("U012, U034", ["U012", "U034"]), ('["U012","U034"]', ["U012", "U034"]),
                                               ("U012", ["U012"]), ("", []), ("[]", [])])
def test_list_settings_take_items_separated_by_commas_or_a_json_list(
        raw: str, expected: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_REVIEWERS", raw)
    assert Settings().reviewers == expected


def _run(module: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m module` in `cwd` (no .env there), with only the settings given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "SLACK_", "DATABASE_URL"))}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd,
                          env={**clean, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True, timeout=120)


def test_a_wrong_setting_is_one_message_naming_the_variable_not_a_traceback(tmp_path: Path) -> None:
    cli = _run("core.cli", "docs", "ls", cwd=tmp_path, FLYWHEEL_DATA_DIR=str(tmp_path), FLYWHEEL_DB_POOL_MAX="ten")
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert "FLYWHEEL_DB_POOL_MAX: Input should be a valid integer" in cli.stderr
    bot = _run("bot", cwd=tmp_path, FLYWHEEL_DATA_DIR=str(tmp_path), FLYWHEEL_REVIEWERS='["U012"',
               SLACK_BOT_TOKEN="xoxb-1")
    assert bot.returncode == 1 and "Traceback" not in bot.stderr
    assert "FLYWHEEL_REVIEWERS: not a JSON list" in bot.stderr and "xoxb-1" not in bot.stderr


def test_an_unreachable_database_is_one_message_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql://flywheel:TopSecret@127.0.0.1:{free_port()}/flywheel"
    cli = _run("core.cli", "docs", "ls", cwd=tmp_path, DATABASE_URL=url)
    assert cli.returncode == 1 and "Traceback" not in cli.stderr and "TopSecret" not in cli.stderr
    assert "cannot use the database (DATABASE_URL): connection failed" in cli.stderr


@pytest.mark.parametrize("url", ["postgresql:///flywheel?host=/tmp/socket", "postgresql://u:p%40s@[::1]:5432/db",
                                 "postgresql://u@db1:5432,db2:5433/db?sslmode=require", "host=db password=x"])
def test_a_well_formed_database_url_is_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    assert Settings().database_url.get_secret_value() == url  # type: ignore[union-attr]


@pytest.mark.parametrize(("url", "says"), [
    ("postgres//fly:TopSecret@db/flywheel", "DATABASE_URL is not a connection string libpq can read"),
    ("postgresql://fly:Top@Secret@db/flywheel", "DATABASE_URL has an @, / or # inside its password"),
    ("postgresql://fly:Top/Secret@db/flywheel", "DATABASE_URL has an @, / or # inside its password"),
    ("postgresql://fly:TopSecret@db/flywheel?sslmod=require", "DATABASE_URL is not a connection string"),
])
def test_a_malformed_database_url_is_refused_without_quoting_it(tmp_path: Path, url: str, says: str) -> None:
    cli = _run("core.cli", "docs", "ls", cwd=tmp_path, DATABASE_URL=url)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr and "Secret" not in cli.stderr
    assert says in cli.stderr


def test_a_setting_is_named_by_the_variable_that_sets_it() -> None:
    from core.config import env_name

    assert [env_name("reviewers"), env_name("database_url"), env_name("SLACK_API_URL")] == [
        "FLYWHEEL_REVIEWERS", "DATABASE_URL", "SLACK_API_URL"]  # pydantic names an aliased field by its alias


def test_doctor_warns_when_the_model_server_lost_the_live_adapter(
        database_url: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core import db, models
    from support.servers import serve_llm

    with serve_llm(tiny_model_dir) as url:
        with db.connection() as conn:   # promoted, then the server restarted without it
            live = models.register(conn, base_model=str(tiny_model_dir), path="/gone", dataset_version=1,
                                   hyperparams={}, status="ready")
            models.mark_live(conn, live.version, actor="admin")
        monkeypatch.setenv("FLYWHEEL_LLM_URL", url)
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["doctor", "--no-embedder"])
    [generation] = [line for line in result.output.splitlines() if "generation:" in line]
    assert generation.startswith("WARN") and "does not hold the live adapter flywheel-v1" in generation
    assert f"flywheel models promote {live.version}" in generation


def test_doctor_on_a_database_without_tables_says_so_once_not_with_sql_errors(
        pg_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "doctor_bare"')
        conn.execute('CREATE DATABASE "doctor_bare"')   # a new, empty Postgres database before any process ran
    try:
        monkeypatch.setenv("DATABASE_URL", pg_server.replace("/postgres?", "/doctor_bare?"))
        monkeypatch.setenv("FLYWHEEL_LLM_BACKEND", "extractive")
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["doctor", "--no-embedder"])
    finally:
        get_settings.cache_clear()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute('DROP DATABASE "doctor_bare" WITH (FORCE)')
    assert result.exit_code == 0, result.output
    lines = {line.split(":")[0][6:]: line for line in result.output.splitlines()}
    assert lines["migrations"].startswith("WARN") and "no tables yet: `flywheel migrate`" in lines["migrations"]
    assert lines["knowledge base"] == "WARN  knowledge base: not checked: the database has no tables yet"
    assert lines["generation"] == "WARN  generation: not checked: the database has no tables yet"
    assert "does not exist" not in result.output and "Error" not in result.output


@pytest.mark.parametrize(("app_token", "says"), [
    ("xapp-1-revoked", "FAIL  slack: Slack refused the app token (SLACK_APP_TOKEN): invalid_auth"),
    (None, "ok    slack: Socket Mode as @flywheel in Flywheel Test"),
])
def test_doctor_checks_the_app_token_socket_mode_connects_with(
        database_url: str, monkeypatch: pytest.MonkeyPatch, app_token: str | None, says: str) -> None:
    from support import fake_slack

    with fake_slack.FakeSlack().running() as slack:
        for name, value in [("SLACK_API_URL", slack.url), ("SLACK_BOT_TOKEN", fake_slack.TOKEN),
                            ("SLACK_APP_TOKEN", app_token or fake_slack.APP_TOKEN),
                            ("FLYWHEEL_REVIEW_CHANNEL", "C0REVIEW"), ("FLYWHEEL_LLM_BACKEND", "extractive")]:
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["doctor", "--no-embedder"])
    get_settings.cache_clear()
    [slack_line] = [line for line in result.output.splitlines() if "slack:" in line]
    assert slack_line.startswith(says), result.output
    assert "xapp-1" not in result.output


def test_the_model_server_url_follows_the_port_serve_llm_is_moved_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYWHEEL_LLM_URL", raising=False)
    monkeypatch.setenv("FLYWHEEL_LLM_PORT", "8090")   # 8080 taken on this machine
    assert Settings(_env_file=None).llm_url == "http://127.0.0.1:8090"
    monkeypatch.setenv("FLYWHEEL_LLM_HOST", "0.0.0.0")   # listening everywhere: asked on loopback
    assert Settings(_env_file=None).llm_url == "http://127.0.0.1:8090"
    monkeypatch.setenv("FLYWHEEL_LLM_URL", "http://gpu-box:80")   # a server elsewhere is named
    assert Settings(_env_file=None).llm_url == "http://gpu-box:80"


def test_a_process_started_in_another_folder_reads_the_env_file_and_data_folder_of_its_parent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.config import for_children

    (tmp_path / ".env").write_text("FLYWHEEL_REVIEW_CHANNEL=C0FROMHERE\n")
    monkeypatch.chdir(tmp_path)   # where the operator typed `flywheel dashboard` / `flywheel up`
    monkeypatch.delenv("FLYWHEEL_ENV_FILE", raising=False)
    monkeypatch.delenv("FLYWHEEL_DATA_DIR", raising=False)
    env = {**os.environ, **for_children(Settings())}
    child = subprocess.run([sys.executable, "-c", "from core.config import Settings; s = Settings(); "
                            "print(s.review_channel, s.data_dir)"],
                           cwd=ROOT, env=env, capture_output=True, text=True, check=True)   # as the dashboard runs
    assert child.stdout.split() == ["C0FROMHERE", str(tmp_path / ".flywheel")]
