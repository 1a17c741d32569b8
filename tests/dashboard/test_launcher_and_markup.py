"""`flywheel dashboard` (bind address, command line) and the Markdown the pages show."""
from __future__ import annotations

import sys

import pytest
import typer
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner, Result

from core import config, passwords
from core.cli import dashboard_cmds
from core.config import Settings
from dashboard import auth, markup


def settings(**values: object) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


def test_without_a_login_the_dashboard_binds_to_localhost_only() -> None:
    assert dashboard_cmds.bind_address(settings(), None) == "127.0.0.1"
    assert dashboard_cmds.bind_address(settings(), "localhost") == "localhost"
    with pytest.raises(ValueError, match="without a login"):
        dashboard_cmds.bind_address(settings(), "0.0.0.0")


@pytest.mark.parametrize(("requested", "bound"), [("[::1]", "::1"), ("::1", "::1"), ("127.0.0.2", "127.0.0.2")])
def test_without_a_login_the_cli_accepts_every_loopback_spelling(requested: str, bound: str) -> None:
    assert dashboard_cmds.bind_address(settings(), requested) == bound


def test_cli_and_dashboard_agree_on_what_is_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for address, loopback in [("[::1]", True), ("localhost", True), ("127.0.0.1", True), ("0.0.0.0", False),
                              ("::", False), ("10.0.0.5", False), ("", False)]:
        assert config.is_loopback(address) is loopback, address
        monkeypatch.setattr(auth.st, "get_option", lambda name, a=address: a)
        assert auth.server_is_loopback_only() is loopback, address


def test_empty_password_hash_means_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_DASHBOARD_PASSWORD_HASH", "")  # as deploy/.env.example ships it
    monkeypatch.delenv("FLYWHEEL_DASHBOARD_OIDC", raising=False)
    assert Settings().dashboard_password_hash is None and Settings().dashboard_login is None


def test_password_hash_that_is_no_scrypt_hash_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    made = passwords.hash_password("correct horse")
    for wrong in ("hunter2", made.replace(":32768:", ":3000:"), made[:-2]):  # the password itself; a typo
        monkeypatch.setenv("FLYWHEEL_DASHBOARD_PASSWORD_HASH", wrong)
        with pytest.raises(ValidationError) as failed:
            Settings()
        message = str(failed.value)
        assert "FLYWHEEL_DASHBOARD_PASSWORD_HASH must be a hash made by `flywheel hash-password`" in message
        assert "hunter2" not in message and made not in message
    monkeypatch.setenv("FLYWHEEL_DASHBOARD_PASSWORD_HASH", f" {made}\n")
    assert Settings().dashboard_password_hash.get_secret_value() == made  # type: ignore[union-attr]


def test_the_old_unsalted_sha256_setting_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_DASHBOARD_PASSWORD_SHA256", "ab" * 32)
    with pytest.raises(ValidationError, match="no longer read .* `flywheel hash-password`.* FLYWHEEL_DASHBOARD_PASSWORD_HASH"):
        Settings()
    monkeypatch.setenv("FLYWHEEL_DASHBOARD_PASSWORD_SHA256", "")  # as the old deploy/.env.example shipped it
    assert Settings().dashboard_login is None


def _hash_of(printed: Result) -> str:
    """The hash from the FLYWHEEL_DASHBOARD_PASSWORD_HASH=... line `hash-password` ends with."""
    return printed.stdout.strip().splitlines()[-1].split("=", 1)[1]


def test_hash_password_prints_a_salted_hash_the_settings_accept_and_the_sign_in_checks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = typer.Typer()
    dashboard_cmds.register(app)
    made = [CliRunner().invoke(app, ["hash-password"], input="correct horse\ncorrect horse\n") for _ in range(2)]
    assert all(r.exit_code == 0 for r in made), made[0].output
    assert all(r.stdout.strip().splitlines()[-1].startswith("FLYWHEEL_DASHBOARD_PASSWORD_HASH=scrypt:") for r in made)
    assert _hash_of(made[0]) != _hash_of(made[1])  # salted: the same password never gives the same hash
    monkeypatch.setenv("FLYWHEEL_DASHBOARD_PASSWORD_HASH", _hash_of(made[0]))
    stored = Settings().dashboard_password_hash.get_secret_value()  # type: ignore[union-attr]
    assert passwords.password_matches("correct horse", stored)
    assert not passwords.password_matches("correct horsE", stored)
    # A short one is refused at once and asked for again, not after typing it twice.
    retried = CliRunner().invoke(app, ["hash-password"], input="seven77\ncorrect horse\ncorrect horse\n")
    assert retried.exit_code == 0, retried.output
    assert "The password must have at least 8 characters." in retried.output
    assert passwords.password_matches("correct horse", _hash_of(retried))
    typo = CliRunner().invoke(app, ["hash-password"], input="correct horse\ncorrect horsE\ncorrect horse\ncorrect horse\n")
    assert typo.exit_code == 0 and "The two entries differ." in typo.output
    assert passwords.password_matches("correct horse", _hash_of(typo))   # the pair that agreed
    gave_up = CliRunner().invoke(app, ["hash-password"], input="seven77\n")   # end of input: nothing made
    assert gave_up.exit_code != 0 and "scrypt:" not in gave_up.output


def test_with_a_login_it_listens_everywhere_or_where_asked() -> None:
    with_password = settings(dashboard_password_hash=SecretStr(passwords.hash_password("correct horse")))
    assert dashboard_cmds.bind_address(with_password, None) == "0.0.0.0"
    assert dashboard_cmds.bind_address(settings(dashboard_oidc=True), "10.0.0.5") == "10.0.0.5"


def test_streamlit_command_line_is_headless_on_the_given_address() -> None:
    argv = dashboard_cmds.streamlit_argv(8600, "127.0.0.1")
    assert argv[:4] == [sys.executable, "-m", "streamlit", "run"] and argv[4].endswith("dashboard/app.py")
    options = dict(zip(argv[5::2], argv[6::2]))
    assert options["--server.address"] == "127.0.0.1" and options["--server.port"] == "8600"
    assert options["--server.headless"] == "true" and options["--browser.gatherUsageStats"] == "false"


def test_command_execs_streamlit_or_refuses_a_public_address(database_url: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLYWHEEL_DASHBOARD_PASSWORD_HASH", "FLYWHEEL_DASHBOARD_OIDC"):
        monkeypatch.delenv(name, raising=False)
    app = typer.Typer()
    dashboard_cmds.register(app)
    app.command("noop")(lambda: None)  # a second command, so `dashboard` is a subcommand as in `flywheel`
    execs: list[list[str]] = []
    monkeypatch.setattr(dashboard_cmds.os, "execv", lambda path, argv: execs.append(argv))
    monkeypatch.setattr(dashboard_cmds.os, "chdir", lambda path: None)
    refused = CliRunner().invoke(app, ["dashboard", "--address", "0.0.0.0"])
    assert refused.exit_code == 2 and "without a login" in refused.output and execs == []
    started = CliRunner().invoke(app, ["dashboard", "--port", "8601"])
    assert started.exit_code == 0, started.output
    assert "http://localhost:8601 (no login configured: localhost only)" in started.output
    assert execs == [dashboard_cmds.streamlit_argv(8601, "127.0.0.1")]


def test_markdown_is_escaped_so_text_cannot_format_the_page() -> None:
    assert markup.escape("**bold** [link](http://x) $x$ :red[hi]") == (
        "\\*\\*bold\\*\\* \\[link\\]\\(http\\:\\/\\/x\\) \\$x\\$ \\:red\\[hi\\]")
    assert markup.escape("line one\nline two") == "line one  \nline two"


def test_personal_data_is_highlighted_in_place() -> None:
    assert markup.highlight_pii("Mail ann@x.io now") == "Mail :red-background[ann\\@x\\.io] now"
    assert markup.has_pii("call +1 555 123 4567") and not markup.has_pii("nothing here", None)


def test_source_line_names_title_heading_score_and_link() -> None:
    line = markup.source_line({"n": 2, "title": "Laptops", "heading": "Ordering", "dense_score": 0.8123,
                               "url": "https://wiki/laptops"})
    assert line == "\\[2\\] Laptops › Ordering (0.81) — https\\:\\/\\/wiki\\/laptops"
