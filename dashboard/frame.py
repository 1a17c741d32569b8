"""What every page shares: sign-in, the title and banners, one-shot messages, and running an admin
action so that expected failures read as a clear message and unexpected ones are logged."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import streamlit as st

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


def attempt(what: str, action: Callable[[], T], *expected: type[Exception]) -> T | None:
    """Run an admin action. An expected error (by type) is the user's to fix: its message is
    shown as it is. Anything else is logged with its traceback and reported briefly. Returns the
    action's result, or None when it failed (and then nothing was committed)."""
    try:
        return action()
    except expected as e:
        st.error(str(e))
    except Exception as e:
        logger.exception("dashboard action failed: %s", what)
        st.error(f"{what} failed unexpectedly ({type(e).__name__}); the details are in the dashboard's log.")
    return None


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
