"""The admin dashboard's entry point (`streamlit run dashboard/app.py`): the pages, each behind the sign-in."""
from __future__ import annotations

import streamlit as st

from dashboard import auth

st.set_page_config(page_title="Flywheel admin", page_icon="🛞", layout="wide")
identity = auth.signed_in()

if identity is not None:
    with st.sidebar:
        st.caption(f"Signed in as **{identity.actor}** ({identity.role})")
        if identity.mode != "local" and st.button("Log out"):
            auth.log_out(identity)

pages = {
    "The loop": [
        st.Page("pages/overview.py", title="Overview", icon="📈", default=True),
        st.Page("pages/curation.py", title="Curation", icon="🧺"),
        st.Page("pages/reviews.py", title="Reviews", icon="🧑‍⚖️"),
        st.Page("pages/try_it.py", title="Try it", icon="💬"),
    ],
    "Knowledge and models": [
        st.Page("pages/knowledge.py", title="Knowledge", icon="📚"),
        st.Page("pages/training.py", title="Training", icon="🏋️"),
        st.Page("pages/models.py", title="Models", icon="🧩"),
    ],
}
# A stranger sees no menu, and whichever page the address names shows only the login: every page
# starts with `frame.page`, which stops at the gate.
st.navigation(pages, position="sidebar" if identity is not None else "hidden").run()
