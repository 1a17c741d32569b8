"""End to end: `streamlit run` the dashboard, sign in with the password in headless Chromium, open
Curation, and keep a screenshot (artifacts/dashboard-curation.png); watch a running retrain move."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import db, training
from core.cli import dashboard_cmds
from dashboard_helpers import PASSWORD, PASSWORD_HASH, ROOT, seed_answer
from support.servers import free_port, stop, wait_healthy

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACT = ROOT / "artifacts" / "dashboard-curation.png"
START_DEADLINE_S = 90
UI_TIMEOUT_MS = 60_000
REFRESH_WAIT_MS = 60_000  # the Training page reads an active run again every few seconds; a busy machine is slow

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is not installed (/usr/bin/chromium): apt-get install chromium")


@pytest.fixture
def dashboard_url(dashboard_db: str, tmp_path: Path) -> Iterator[str]:
    """The real dashboard in its own process, on a free port, with a password login."""
    yield from _dashboard(dashboard_db, tmp_path, {"FLYWHEEL_DASHBOARD_PASSWORD_HASH": PASSWORD_HASH})


@pytest.fixture
def dashboard_without_login_url(dashboard_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv("FLYWHEEL_DASHBOARD_PASSWORD_HASH", raising=False)
    yield from _dashboard(dashboard_db, tmp_path, {})


def _dashboard(dashboard_db: str, tmp_path: Path, login: dict[str, str]) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": dashboard_db, **login,
           "FLYWHEEL_LLM_BACKEND": "extractive", "FLYWHEEL_DATA_DIR": str(tmp_path / "data")}
    log_path = tmp_path / "streamlit.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(dashboard_cmds.streamlit_argv(port, "127.0.0.1"), cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(server, f"{url}/_stcore/health", START_DEADLINE_S, log_path)
        yield url
    finally:
        stop(server)


def sign_in(page, url: str) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(url)
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.get_by_role("link", name="Curation")).to_have_count(0)   # no menu of pages before signing in
    page.get_by_role("textbox", name="Your name").fill("Ann")
    page.locator("input[type=password]").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def test_sign_in_and_open_curation_in_chromium(dashboard_url: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    seed_answer("How do I order a laptop? Mail me at oscar@northwind.example", "Through the IT portal [1].")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 2000})
        try:
            page = browser.new_page()
            sign_in(page, dashboard_url)
            expect(page.get_by_text("Signed in as")).to_contain_text("password:Ann (admin)")

            page.get_by_role("link", name="Curation").click()
            expect(page.get_by_role("heading", name="Curation")).to_be_visible()
            expect(page.get_by_text("Mail me at").first).to_be_visible()
            expect(page.get_by_role("button", name="Accept as delivered")).to_be_visible()
            # The table draws on a canvas once its data has arrived; wait for it, and for the run to end.
            expect(page.locator("[data-testid='stDataFrame'] canvas").first).to_be_visible()
            expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
            ARTIFACT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACT), full_page=True)

            page.get_by_role("button", name="Log out").click()
            expect(page.get_by_role("button", name="Sign in")).to_be_visible()
            expect(page.get_by_role("heading", name="Curation")).to_have_count(0)
        finally:
            browser.close()
    assert ARTIFACT.stat().st_size > 10_000
    with capsys.disabled():  # shown even when pytest captures output
        print(f"\nscreenshot of the Curation page: {ARTIFACT}")


def test_a_running_retrain_moves_on_the_training_page_without_a_click(dashboard_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with db.connection() as conn:
        run = training.create_run(conn, base_model="base", dataset_version=1, params={}, requested_by="ann")
        training.start_run(conn, run.id)
        training.report_progress(conn, run.id, step=1, total=4, train_loss=2.5, val_loss=None)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            sign_in(page, dashboard_url)
            page.get_by_role("link", name="Training").click()
            expect(page.get_by_text("running · 25%")).to_be_visible()
            with db.connection() as conn:
                training.report_progress(conn, run.id, step=3, total=4, train_loss=2.0, val_loss=None)
            expect(page.get_by_text("running · 75%")).to_be_visible(timeout=REFRESH_WAIT_MS)
            with db.connection() as conn:
                training.finish_run(conn, run.id, "succeeded")
            expect(page.get_by_text("succeeded · 100%")).to_be_visible(timeout=REFRESH_WAIT_MS)
            expect(page.get_by_role("button", name="Cancel this run")).to_have_count(0)
        finally:
            browser.close()


def test_without_a_login_only_a_browser_on_the_machine_gets_in_not_one_through_a_proxy(
        dashboard_without_login_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            here = browser.new_page()
            here.set_default_timeout(UI_TIMEOUT_MS)
            here.goto(dashboard_without_login_url)
            expect(here.get_by_role("heading", name="Overview")).to_be_visible()

            # What nginx on this host adds to every request it passes on from the internet.
            proxied = browser.new_page(extra_http_headers={"X-Forwarded-For": "203.0.113.7"})
            proxied.set_default_timeout(UI_TIMEOUT_MS)
            proxied.goto(dashboard_without_login_url)
            expect(proxied.get_by_text("this request came through a proxy")).to_be_visible()
            expect(proxied.get_by_role("heading", name="Overview")).to_have_count(0)
        finally:
            browser.close()
