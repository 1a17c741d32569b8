"""Who is looking at the dashboard, and whether they may act.

Three modes, chosen by settings: OIDC through Streamlit's `st.login` when `dashboard_oidc` is set
(with `[auth]` in `.streamlit/secrets.toml`), which lets in only the accounts listed as admins or
viewers; else a shared password whose salted hash is in `dashboard_password_hash`; else no login at
all, which is only allowed while the server listens on the loopback interface (the `flywheel
dashboard` launcher binds it there)."""
from __future__ import annotations

import getpass
import ipaddress
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import streamlit as st

from core import audit, db, passwords
from core.config import Settings, get_settings, is_loopback

Role = Literal["admin", "viewer"]
Mode = Literal["oidc", "password", "local"]
NO_ADMINS = ("Sign-in is switched off: OIDC is configured but nobody is listed as an admin. The operator must "
             "set FLYWHEEL_DASHBOARD_ADMINS to the e-mails that may act (and FLYWHEEL_DASHBOARD_VIEWERS to "
             "those that may only look), then restart the dashboard.")
_IDENTITY_KEY = "dashboard_identity"   # session state: who signed in with the password
# Guessing the password: this many failed sign-ins from one address lock it out until the
# oldest is this old. Failures are audited, so the count holds across sessions and processes.
# Streamlit gives no address for loopback peers (a proxy on the same host, `make up`): all of
# them count as one "unknown" address, with a higher limit so that one guesser cannot as easily
# lock everybody out.
SIGN_IN_ATTEMPTS = 10
SIGN_IN_ATTEMPTS_UNKNOWN_ADDRESS = 100
SIGN_IN_WINDOW_S = 600
UNKNOWN_ADDRESS = "ip:unknown"


@dataclass(frozen=True)
class Identity:
    actor: str     # how the audit log names this person: "oidc:ann@x.com", "password:Ann", "local:ann"
    role: Role
    mode: Mode

    @property
    def can_act(self) -> bool:
        return self.role == "admin"


def mode(settings: Settings) -> Mode:
    return settings.dashboard_login or "local"


def _emails(listed: list[str]) -> set[str]:
    return {e.strip().lower() for e in listed} - {""}


def oidc_role(email: str, settings: Settings) -> Role | None:
    """An e-mail listed as admin acts; one listed as viewer looks; anyone else is refused (None).
    A company login proves who someone is, not that they may see training data."""
    email = email.strip().lower()
    if email in _emails(settings.dashboard_admins):
        return "admin"
    if email in _emails(settings.dashboard_viewers):
        return "viewer"
    return None


def email_unverified(claim: object) -> bool:
    """True when the identity provider says the e-mail is not verified (some send "false" as a
    string): such an address may be anyone's, so it names no one on the lists."""
    return claim is False or str(claim).strip().lower() == "false"


def server_is_loopback_only() -> bool:
    """True when this Streamlit server listens on the loopback interface only (an unset
    address means every interface)."""
    address = st.get_option("server.address")
    return address is not None and is_loopback(str(address))


def signed_in(settings: Settings | None = None) -> Identity | None:
    """Who is signed in, or None; shows nothing (`gate` shows the login or the refusal)."""
    settings = settings or get_settings()
    current = mode(settings)
    if current == "password":
        identity = st.session_state.get(_IDENTITY_KEY)
        return identity if isinstance(identity, Identity) else None
    if current == "oidc":   # with no admin listed, no one (a viewer neither) until the operator lists one
        email = str(st.user.get("email") or "") if st.user.get("is_logged_in", False) else ""
        verified = not email_unverified(st.user.get("email_verified"))
        role = oidc_role(email, settings) if email and verified and _emails(settings.dashboard_admins) else None
        return Identity(actor=f"oidc:{email.lower()}", role=role, mode="oidc") if role else None
    if server_is_loopback_only() and not_from_this_machine(dict(st.context.headers)) is None:
        return Identity(actor=f"local:{getpass.getuser()}", role="admin", mode="local")
    return None


def gate(settings: Settings | None = None) -> Identity:
    """The signed-in identity. Shows the login (or why no one may sign in) and stops the run when
    there is none, so nothing below a call to `gate` renders for a stranger."""
    settings = settings or get_settings()
    identity = signed_in(settings)
    if identity is not None:
        return identity
    current = mode(settings)
    if current == "oidc":
        _oidc_refusal(settings)
    elif current == "password":
        _password_login(settings)
    elif not server_is_loopback_only():
        st.error("No login is configured, so this dashboard only runs bound to 127.0.0.1. Set "
                 "FLYWHEEL_DASHBOARD_PASSWORD_HASH (`flywheel hash-password`) or configure OIDC, or start it with "
                 "`flywheel dashboard`, which binds it to localhost.")
    else:
        why = not_from_this_machine(dict(st.context.headers))
        st.error(f"No login is configured, so this dashboard is only for a browser on its own machine, and {why}. "
                 "Set FLYWHEEL_DASHBOARD_PASSWORD_HASH (`flywheel hash-password`) or configure OIDC to use it "
                 "from elsewhere.")
    st.stop()


def not_from_this_machine(headers: Mapping[str, str]) -> str | None:
    """Why a request is not a browser on this machine, though it reaches a loopback address:
    it came through a proxy on this host (every browser behind it looks local), or it names
    another host (a page whose DNS name was rebound to 127.0.0.1). None when nothing says so."""
    named = {k.lower(): v for k, v in headers.items()}
    if any(named.get(h) for h in ("x-forwarded-for", "forwarded", "x-real-ip")):
        return "this request came through a proxy"
    host = named.get("host")
    if host and not is_loopback(urllib.parse.urlsplit(f"//{host}").hostname):
        return f"this request names the host {host!r}"
    return None


def _oidc_refusal(settings: Settings) -> None:
    """Why this OIDC session is not signed in, with the button that helps."""
    st.title("Flywheel admin")
    email = str(st.user.get("email") or "")
    if not _emails(settings.dashboard_admins):
        st.error(NO_ADMINS)
    elif not st.user.get("is_logged_in", False):
        st.info("Sign in with your company account to continue.")
        st.button("Log in", on_click=st.login, type="primary")
    elif email_unverified(st.user.get("email_verified")):
        st.error(f"The identity provider has not verified the e-mail address {email or '(none)'}, so it cannot "
                 "be used to sign in here. Verify it with your identity provider, then sign in again.")
        st.button("Log out", on_click=st.logout)
    else:
        st.error(f"The account {email or '(no e-mail)'} may not use this dashboard. Ask an admin to add it "
                 "to FLYWHEEL_DASHBOARD_ADMINS or FLYWHEEL_DASHBOARD_VIEWERS.")
        st.button("Log out", on_click=st.logout)


def _password_login(settings: Settings) -> None:
    """The sign-in form; a right password remembers who signed in and runs the page again."""
    st.title("Flywheel admin")
    with st.form("login"):
        name = st.text_input("Your name", max_chars=80, help="Recorded in the audit log with everything you do.")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        expected = settings.dashboard_password_hash.get_secret_value()  # type: ignore[union-attr]
        address = _client_address()
        actor = f"password:{name.strip()}"
        limit = SIGN_IN_ATTEMPTS_UNKNOWN_ADDRESS if address == UNKNOWN_ADDRESS else SIGN_IN_ATTEMPTS
        with db.connection() as conn:
            # One attempt per address at a time: parallel guesses cannot all pass the count.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%(a)s))", {"a": f"sign-in:{address}"})
            locked = audit.count_since(conn, "login.failed", SIGN_IN_WINDOW_S, address) >= limit
            if locked:
                st.error(f"Too many failed sign-ins from this address: try again in {SIGN_IN_WINDOW_S // 60} minutes.")
            elif not name.strip():
                st.error("Please give your name: the audit log records who did what.")
            elif not passwords.password_matches(password, expected):
                audit.record(conn, actor, "login.failed", address)
                st.error("Wrong password.")
            else:
                audit.record(conn, actor, "login", address)
                st.session_state[_IDENTITY_KEY] = Identity(actor=actor, role="admin", mode="password")
        if _IDENTITY_KEY in st.session_state:
            st.rerun()


def _client_address() -> str:
    """The browser's address (`client_address`); `UNKNOWN_ADDRESS` when there is none."""
    peer = st.context.ip_address
    ip = client_address(peer if isinstance(peer, str) else None, st.context.headers.get("X-Forwarded-For"),
                        get_settings().dashboard_trusted_proxies)
    return f"ip:{ip}" if ip else UNKNOWN_ADDRESS


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: list[str]) -> str | None:
    """The browser's address: the peer's (None: Streamlit gives none for a loopback peer), or,
    when the peer is a trusted proxy, the nearest address in X-Forwarded-For that is not one:
    the proxy appended it, while whatever a client sent itself sits further left."""
    if not trusted_proxies or not _trusted(peer, trusted_proxies):
        return peer
    hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


def _trusted(address: str | None, trusted_proxies: list[str]) -> bool:
    if (address is None or is_loopback(address)) and "loopback" in trusted_proxies:
        return True  # None: how Streamlit shows a loopback peer
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(p, strict=False) for p in trusted_proxies if p != "loopback")


def log_out(identity: Identity) -> None:
    """End the session: OIDC through Streamlit, the password by forgetting who signed in."""
    if identity.mode == "oidc":
        st.logout()
    elif identity.mode == "password":
        st.session_state.pop(_IDENTITY_KEY, None)
        st.rerun()
