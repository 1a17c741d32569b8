"""What every page shares: sign-in, the title and banners, one-shot messages, running an admin
action so that expected failures read as a clear message and unexpected ones are logged, and
remembering what a page showed, so that an edit made on an old view of a row is caught."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from core import db
from core.config import get_settings
from dashboard import auth

logger = logging.getLogger(__name__)
T = TypeVar("T")

LOCAL_BANNER = ("No login is configured: this dashboard listens on 127.0.0.1 only, and everyone who can "
                "reach it on this machine is an admin. Set FLYWHEEL_DASHBOARD_PASSWORD_HASH or configure "
                "OIDC before you expose it.")
VIEWER_NOTE = "You are signed in as a viewer: you can look at everything here, but not change it."
_FLASH_KEY = "dashboard_flash"
_FLASH_ERROR_KEY = "dashboard_flash_error"


def page(title: str) -> auth.Identity:
    """Start a page: require a signed-in user (nothing renders for a stranger), then the title,
    the banners that apply, and the message the previous action left."""
    identity = auth.gate()
    st.title(title)
    if identity.mode == "local":
        st.warning(LOCAL_BANNER, icon="⚠️")
    if not identity.can_act:
        st.info(VIEWER_NOTE)
    message = st.session_state.pop(_FLASH_KEY, None)
    if message:
        st.success(message)
    error = st.session_state.pop(_FLASH_ERROR_KEY, None)
    if error:
        st.error(error)
    return identity


def done(message: str) -> None:
    """Finish a successful action: rerun, so every table on the page shows the change, and say
    what happened at the top."""
    st.session_state[_FLASH_KEY] = message
    st.rerun()


def attempt(what: str, action: Callable[[], T], *expected: type[Exception], refill: str | None = None) -> T | None:
    """Run an admin action. An expected error (by type) is the user's to fix: its message is
    shown as it is. Anything else is logged with its traceback and reported briefly. Returns the
    action's result, or None when it failed (and then nothing was committed).

    `refill`: the `filled_from` key of the form the action saves. Once saved, or refused because
    the row changed since (`db.ChangedSince`, said at the top), the form is filled again from
    what is stored now."""
    refused = None
    try:
        result = action()
    except Exception as e:
        if refill is not None and isinstance(e, db.ChangedSince):
            refused = str(e)
        elif isinstance(e, expected):
            st.error(str(e))
            return None
        else:
            logger.exception("dashboard action failed: %s", what)
            st.error(f"{what} failed unexpectedly ({type(e).__name__}); the details are in the dashboard's log.")
            return None
    if refill is not None:
        st.session_state.pop(refill, None)
    if refused is not None:
        flash_error(refused)
        st.rerun()
    return result


def filled_from(key: str, item: object, version: T) -> T:
    """The version of `item` a form was filled from (its `updated_at`, say), kept across runs
    until `attempt(refill=key)` saves it or another item is opened: saving that form over a newer
    version can then be refused. Put it in the fields' keys, so a new version fills a new form."""
    kept = st.session_state.get(key)
    if kept is None or kept[0] != item:
        st.session_state[key] = kept = (item, version)
    return kept[1]  # type: ignore[no-any-return]


def last_shown(key: str, item: object, now: T) -> T:
    """What the previous run of the page showed of `item` (`now` the first time), and remember
    `now` for the next: a click means what the admin saw, even if another admin, or their own
    first click, has changed it since. `forget(key)` after their own change: it is no news."""
    before = st.session_state.get(key)
    st.session_state[key] = (item, now)
    return before[1] if before is not None and before[0] == item else now  # type: ignore[no-any-return]


def forget(key: str) -> None:
    st.session_state.pop(key, None)


def flash_error(message: str) -> None:
    """Leave an error for the next run of the page to show (from a callback)."""
    st.session_state[_FLASH_ERROR_KEY] = message


def attempt_in_callback(what: str, action: Callable[[], T], success: Callable[[T], str],
                        *expected: type[Exception]) -> None:
    """`attempt` for a button's on_click callback, which runs before the page does: the outcome
    is left for `page` to show. A callback still fires when its item has vanished from the page
    in the meantime (a review decided in Slack), so the person always learns what happened."""
    try:
        result = action()
    except expected as e:
        flash_error(str(e))
        return
    except Exception as e:
        logger.exception("dashboard action failed: %s", what)
        flash_error(f"{what} failed unexpectedly ({type(e).__name__}); the details are in the dashboard's log.")
        return
    st.session_state[_FLASH_KEY] = success(result)


def refuse_viewer(identity: auth.Identity) -> bool:
    """True (and says why) when this person may not act. Buttons are disabled for viewers too;
    this is the check that counts."""
    if identity.can_act:
        return False
    st.error("Viewers cannot change anything here; ask an admin.")
    return True


def time_columns(*names: str) -> dict[str, Any]:
    """Column settings for a table's times: headed with the zone they are shown in
    (`FLYWHEEL_TIMEZONE`, which every time read from the database is in), to the minute."""
    zone = get_settings().timezone
    return {name: st.column_config.DatetimeColumn(f"{name.replace('_', ' ')} ({zone})", format="YYYY-MM-DD HH:mm")
            for name in names}
