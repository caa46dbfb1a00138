"""Run the collection app: a Streamlit study that crowdworkers take, writing every answer to the study database at once.

Starts ``streamlit run collection_app/app.py`` headless with settings for a public study:
participants never see tracebacks (``client.showErrorDetails=none``), the toolbar is
minimal, no file watcher. The database and study file reach the script through the
environment (``VP_DB``, ``VP_STUDY``). The admin page is ``?admin=1`` and needs the password
in ``VP_ADMIN_PASSWORD`` (or ``admin_password`` in Streamlit secrets).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path

from valueportrait import DEFAULT_DB
from valueportrait import options as opt
from valueportrait.errors import InputError

APP = Path(__file__).resolve().parent / "app.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="study database (created if missing)")
    parser.add_argument("--port", type=opt.port(), default=8501, help="port to listen on")
    parser.add_argument("--study", type=Path, default=None,
                        help="study definition (YAML); default: the shipped demo study")
    parser.add_argument("--address", default=None, help="address to bind (default: Streamlit's, all interfaces)")


def streamlit_command(args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP),
           "--server.headless=true", f"--server.port={args.port}",
           "--client.showErrorDetails=none", "--client.toolbarMode=minimal",
           "--server.fileWatcherType=none", "--server.runOnSave=false",
           "--browser.gatherUsageStats=false", "--global.developmentMode=false",
           # Streamlit's default full gc.collect() after every script run took 62 of 78 ms
           # per page and held the interpreter lock: with 50 participants at once, p95 3.4 s
           # with it, 0.05 s without (benchmarks/app_load.py). Python's own GC still runs.
           "--runner.postScriptGC=false"]
    if args.address:
        cmd.append(f"--server.address={args.address}")
    return cmd


def _why(exc: BaseException) -> str:
    """What went wrong opening a database, in words a researcher can act on."""
    text = str(exc).split(": ", 1)[-1] if isinstance(exc, RuntimeError) else str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
        return "it is not an SQLite database; give a new file name or an existing study database"
    if isinstance(exc, OSError):
        return f"{exc.strerror or type(exc).__name__}" + (f": {exc.filename}" if exc.filename else "")
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
        return "cannot open or create a file there (a folder, or no permission to write?)"
    return text


def run(args: argparse.Namespace) -> int:
    from collection_app.study import load_study
    from valueportrait.storage import open_db
    from collection_app.store import sync_study

    # Fail here, in one line, rather than in the participant's browser.
    study = load_study(args.study)
    db_path = Path(args.db).resolve()
    try:
        with open_db(db_path) as db:
            sync_study(db, study)
    except (sqlite3.Error, OSError, RuntimeError) as exc:
        raise InputError(f"{args.db}: --db: cannot use it as the study database ({_why(exc)})") from None
    env = dict(os.environ, VP_DB=str(db_path))
    if args.study:
        env["VP_STUDY"] = str(Path(args.study).resolve())
    else:
        env.pop("VP_STUDY", None)
    print(f"vp app: study {study.study_id!r}, database {db_path}, http://localhost:{args.port}/", file=sys.stderr)
    # exec: the server is this process, so signals (and kill -9) reach it directly.
    os.execve(sys.executable, streamlit_command(args), env)
    return 0  # pragma: no cover
