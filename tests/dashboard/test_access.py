"""Who may see and do what: no page content without a login; viewers look but do not act."""
from __future__ import annotations

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from core.config import get_settings
from dashboard import auth, frame
from dashboard_helpers import PASSWORD, PASSWORD_HASH, ROOT, audit_rows, open_page, seed_answer, texts


@pytest.fixture
def password_env(dashboard_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FLYWHEEL_DASHBOARD_PASSWORD_HASH", PASSWORD_HASH)
    get_settings.cache_clear()
    return dashboard_db


def test_logged_out_visitor_sees_only_the_login_form(password_env: str) -> None:
    at = open_page()
    assert [t.value for t in at.title] == ["Flywheel admin"]
    assert [b.label for b in at.button] == ["Sign in"]
    assert "Questions" not in texts(at) and not at.metric and not at.dataframe


def test_wrong_password_is_refused(password_env: str) -> None:
    at = open_page()
    at.text_input[0].input("Ann")
    at.text_input[1].input("guess")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["Wrong password."]
    assert not at.metric


def test_repeated_wrong_passwords_lock_the_address_out_even_for_the_right_one(
        password_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The test runner's browser has no address: it counts as the unknown one, whose limit is
    # higher; the rule is the same.
    monkeypatch.setattr(auth, "SIGN_IN_ATTEMPTS_UNKNOWN_ADDRESS", auth.SIGN_IN_ATTEMPTS)
    at = open_page()
    for _ in range(auth.SIGN_IN_ATTEMPTS):
        at.text_input[0].input("Mallory")
        at.text_input[1].input("guess")
        at.button[0].click().run()
        assert [e.value for e in at.error] == ["Wrong password."]
    at.text_input[0].input("Mallory")
    at.text_input[1].input(PASSWORD)
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["Too many failed sign-ins from this address: try again in 10 minutes."]
    assert "dashboard_identity" not in at.session_state and not at.metric
    assert [(r["actor"], r["action"]) for r in audit_rows()] == [("password:Mallory", "login.failed")] * 10


def test_right_password_signs_in_as_admin_and_shows_the_overview(password_env: str) -> None:
    at = open_page()
    at.text_input[0].input("Ann")
    at.text_input[1].input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    assert at.title[0].value == "Overview"   # the sidebar's "Signed in as": test_browser_e2e, in a real browser
    assert at.session_state["dashboard_identity"] == auth.Identity("password:Ann", "admin", "password")
    assert [(r["actor"], r["action"]) for r in audit_rows()] == [("password:Ann", "login")]


PAGES = ["overview", "curation", "reviews", "try_it", "knowledge", "training", "models"]


@pytest.mark.parametrize("page", PAGES)
def test_each_page_file_alone_refuses_a_logged_out_visitor(password_env: str, page: str) -> None:
    at = AppTest.from_file(str(ROOT / "dashboard" / "pages" / f"{page}.py"), default_timeout=60).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Flywheel admin"] and [b.label for b in at.button] == ["Sign in"]
    assert not at.dataframe and not at.metric and not at.selectbox


@pytest.mark.parametrize("page", PAGES)
def test_each_page_renders_for_a_signed_in_admin(password_env: str, page: str) -> None:
    at = open_page(page, session={"dashboard_identity": auth.Identity("password:Ann", "admin", "password")})
    assert not at.error, [e.value for e in at.error]
    assert frame.LOCAL_BANNER not in texts(at)


@pytest.fixture
def oidc_env(dashboard_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_DASHBOARD_OIDC", "true")
    monkeypatch.setenv("FLYWHEEL_DASHBOARD_ADMINS", '["ann@northwind.example"]')
    monkeypatch.setenv("FLYWHEEL_DASHBOARD_VIEWERS", '["vic@northwind.example"]')
    get_settings.cache_clear()


def test_oidc_logged_out_sees_only_the_login_button(oidc_env: None) -> None:
    at = open_page(user={"is_logged_in": False})
    assert [b.label for b in at.button] == ["Log in"] and not at.metric


def test_oidc_account_not_listed_is_refused(oidc_env: None) -> None:
    at = open_page(user={"is_logged_in": True, "email": "mallory@elsewhere.example"})
    assert "may not use this dashboard" in at.error[0].value
    assert [b.label for b in at.button] == ["Log out"] and not at.metric


@pytest.mark.parametrize("email", ["anyone@northwind.example", "vic@northwind.example"])   # a listed viewer too
def test_oidc_with_no_admin_listed_refuses_everyone_and_tells_the_operator(
        dashboard_db: str, monkeypatch: pytest.MonkeyPatch, email: str) -> None:
    monkeypatch.setenv("FLYWHEEL_DASHBOARD_OIDC", "true")
    monkeypatch.setenv("FLYWHEEL_DASHBOARD_VIEWERS", '["vic@northwind.example"]')
    get_settings.cache_clear()
    at = open_page(user={"is_logged_in": True, "email": email})
    assert [e.value for e in at.error] == [auth.NO_ADMINS] and "FLYWHEEL_DASHBOARD_ADMINS" in auth.NO_ADMINS
    assert not at.button and not at.metric and not at.dataframe


@pytest.mark.parametrize(("verified", "signed_in"), [(False, False), ("false", False), (True, True)])
def test_oidc_lets_in_a_listed_email_only_when_verified(oidc_env: None, verified: object, signed_in: bool) -> None:
    at = open_page(user={"is_logged_in": True, "email": "ann@northwind.example", "email_verified": verified})
    if signed_in:
        assert not at.error and at.title[0].value == "Overview"
    else:
        assert "has not verified the e-mail address ann@northwind.example" in at.error[0].value
        assert [b.label for b in at.button] == ["Log out"] and not at.metric


def test_viewer_gets_no_dataset_download(oidc_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.runtime.media_file_manager import MediaFileManager

    from core import curation, db

    answer_id = seed_answer("How do I order a laptop?", "In the IT portal.")
    with db.connection() as conn:
        curation.accept(conn, answer_id, curated_by="ann")
        curation.create_dataset(conn, created_by="ann")
    # What a page hands Streamlit to make a file on a click: one for an admin, nothing for a viewer.
    made: list = []
    add_deferred = MediaFileManager.add_deferred
    monkeypatch.setattr(MediaFileManager, "add_deferred",
                        lambda self, data, *a, **kw: made.append(data) or add_deferred(self, data, *a, **kw))
    admin = open_page("curation", user={"is_logged_in": True, "email": "ann@northwind.example"})
    assert [b.proto.label for b in admin.get("download_button")] == ["Download v1 as JSONL"]
    assert len(made) == 1  # so the hook does see a download when a page offers one
    made.clear()
    viewer = open_page("curation", user={"is_logged_in": True, "email": "vic@northwind.example"})
    assert viewer.dataframe and viewer.get("download_button") == [] and made == []
    assert "dataset.export" not in [e["action"] for e in audit_rows()]


def test_oidc_admin_acts_and_viewer_only_looks(oidc_env: None) -> None:
    seed_answer("How do I order a laptop?", "In the IT portal.")
    admin = open_page("curation", user={"is_logged_in": True, "email": "Ann@northwind.example"})
    assert admin.button(key="cur_accept").disabled is False

    viewer = open_page("curation", user={"is_logged_in": True, "email": "vic@northwind.example"})
    assert frame.VIEWER_NOTE in texts(viewer)
    assert viewer.dataframe  # may look
    assert all(viewer.button(key=k).disabled for k in ("cur_accept", "cur_accept_edit", "cur_reject", "ds_make"))
    assert viewer.text_area(key=f"cur_ideal_{1}").disabled


def test_without_login_the_dashboard_runs_only_on_loopback(dashboard_db: str) -> None:
    at = open_page()
    assert frame.LOCAL_BANNER in texts(at) and at.title[0].value == "Overview"
    st_config.set_option("server.address", "0.0.0.0")
    at = open_page()
    assert at.error[0].value.startswith("No login is configured, so this dashboard only runs bound to 127.0.0.1")
    assert not at.metric


def test_without_login_a_request_naming_another_host_is_not_taken_for_this_machine() -> None:
    # A page on evil.example whose DNS name was rebound to 127.0.0.1 still sends its own Host.
    assert auth.not_from_this_machine({"Host": "evil.example:8501"}) == "this request names the host 'evil.example:8501'"
    for host in ("localhost:8501", "127.0.0.1:8501", "[::1]:8501", "LOCALHOST"):
        assert auth.not_from_this_machine({"host": host}) is None, host
    assert auth.not_from_this_machine({"Forwarded": "for=203.0.113.7", "Host": "localhost"}) is not None


def test_behind_a_trusted_proxy_the_browser_address_comes_from_x_forwarded_for() -> None:
    proxies = ["10.0.0.0/8", "loopback"]
    assert auth.client_address("10.0.0.5", "203.0.113.7, 10.0.0.9", proxies) == "203.0.113.7"
    assert auth.client_address(None, "203.0.113.7", proxies) == "203.0.113.7"  # a proxy on this host
    # A browser's own X-Forwarded-For is further left than what the proxy appended: not believed.
    assert auth.client_address("10.0.0.5", "1.2.3.4, 198.51.100.2", proxies) == "198.51.100.2"
    assert auth.client_address("198.51.100.2", "1.2.3.4", proxies) == "198.51.100.2"  # not via a proxy
    assert auth.client_address("10.0.0.5", "1.2.3.4", []) == "10.0.0.5"  # no proxy configured
    assert auth.client_address(None, None, []) is None


def test_a_trusted_proxy_that_is_no_address_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.config import Settings

    monkeypatch.setenv("FLYWHEEL_DASHBOARD_TRUSTED_PROXIES", '["10.0.0.0/8", "proxy.internal"]')
    with pytest.raises(ValueError, match="FLYWHEEL_DASHBOARD_TRUSTED_PROXIES: 'proxy.internal' is not an address"):
        Settings()


def test_password_check_and_roles_are_plain_functions() -> None:
    settings = get_settings().model_copy(update={"dashboard_admins": ["a@x.io"], "dashboard_viewers": ["v@x.io"]})
    assert [auth.oidc_role(e, settings) for e in ("A@x.io", "v@x.io", "z@x.io")] == ["admin", "viewer", None]
    no_admins = settings.model_copy(update={"dashboard_admins": []})
    assert [auth.oidc_role(e, no_admins) for e in ("z@x.io", "v@x.io")] == [None, "viewer"]
