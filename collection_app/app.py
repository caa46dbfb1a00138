"""The Streamlit script of the collection app (run it through `vp app`).

The database and the study file come from the environment (``VP_DB``, ``VP_STUDY``), which
`vp app` sets. ``?admin=1`` opens the password-protected admin page instead of the study.
"""

from __future__ import annotations

import os

import streamlit as st

from valueportrait.storage import open_db

from collection_app import pages
from collection_app.store import sync_study
from collection_app.study import load_study


@st.cache_resource(show_spinner=False)
def _study(study_path: str | None, mtime: float, db_path: str):
    """Load the study once per process (and again if its file changes); put it in the database."""
    study = load_study(study_path)
    with open_db(db_path) as db:
        sync_study(db, study)
    return study


def main() -> None:
    params = st.query_params.to_dict()
    # The admin page uses the whole width for its tables; participants get a narrow column.
    st.set_page_config(page_title="Study", page_icon=None, layout="wide" if "admin" in params else "centered",
                       initial_sidebar_state="collapsed")
    db_path = pages.db_path_from_env()
    study_path = os.environ.get("VP_STUDY") or None
    mtime = os.path.getmtime(study_path) if study_path and os.path.exists(study_path) else 0.0
    study = _study(study_path, mtime, db_path)
    if "admin" in params:
        from collection_app import admin
        admin.render(study, db_path)
        return
    pages.run(study, db_path, params)


main()
