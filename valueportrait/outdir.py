"""Output folders a researcher can publish from: one run at a time, and a manifest that describes exactly the tables beside it.

A command that writes a set of tables and a ``manifest.json`` (``vp analyze``) does it
through :class:`StagedOutput`:

1. it takes the folder's lock (``.vp.lock``, ``flock``): a second run into the same folder
   stops at once with a message naming the run that holds it (the lock goes with the
   process, so a killed run never leaves it behind);
2. every file is written into a fresh hidden staging folder inside the output folder
   (same file system, so moves are renames); the steps write there whatever files they
   like, and nothing in the output folder changes while they work;
3. at the end, :meth:`StagedOutput.commit` records every staged file's sha256, size and
   row count in the manifest, then swaps: the old manifest goes first, then the tables
   of the previous run that this one did not write, then the new tables move in, and
   the new manifest moves in last.

So at any moment, whatever kills the run (Ctrl-C, SIGTERM, kill -9, a full disk), the
folder holds either the previous run's tables with their manifest, or the new run's
tables with theirs, or (killed inside the swap, which takes milliseconds) tables and no
manifest; a journal (``.vp-commit.json``) lets the next run finish that cleanup. A
manifest never describes other tables than the ones beside it, and :func:`verify` (used
by ``vp report``) checks that they still are the ones it describes.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import inspect
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

from valueportrait.atomic import json_safe
from valueportrait.errors import InputError

LOCK = ".vp.lock"
JOURNAL = ".vp-commit.json"
STAGING_PREFIX = ".vp-staging-"
MANIFEST = "manifest.json"


# -- describing and checking files ------------------------------------------------------------
def count_rows(path: Path) -> int | None:
    """Data rows of a CSV (records after the header, quoted newlines allowed), entries of a
    JSON list or object, lines of a JSONL file; None for other files or unreadable ones."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as handle:
                return max(0, sum(1 for record in csv.reader(handle) if record) - 1)
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return len(data) if isinstance(data, (list, dict)) else None
        if suffix == ".jsonl":
            with open(path, "rb") as handle:
                return sum(1 for line in handle if line.strip())
    except (OSError, ValueError, csv.Error):
        return None
    return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_file(path: Path) -> dict:
    """``{"sha256", "bytes", "rows"}`` of one output file."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size, "rows": count_rows(path)}


def _visible_files(folder: Path) -> list[str]:
    """Relative paths of the files under `folder`, hidden ones (temporary, lock) left out."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(root).relative_to(folder)
        out += [str(rel / f) if str(rel) != "." else f for f in sorted(files) if not f.startswith(".")]
    return out


def verify(folder: str | Path, manifest: dict) -> list[str]:
    """Problems with the tables a manifest lists: missing, or not the file it describes.

    Returns one sentence per problem (empty when every table is the one recorded: same
    sha256, so same content and row count; also empty when nothing is recorded, see
    :func:`unverifiable`).
    """
    folder = Path(folder)
    tables = manifest.get("tables")
    if not isinstance(tables, dict):
        return []  # nothing recorded to check against: see `unverifiable`
    problems = []
    for name, entry in tables.items():
        path = folder / name
        if not isinstance(entry, dict) or "sha256" not in entry:
            problems.append(f"{name}: manifest.json's entry for it is malformed")
            continue
        if not path.is_file():
            problems.append(f"{name}: listed in manifest.json but missing from the folder")
            continue
        if sha256_file(path) != entry["sha256"]:
            rows, then = count_rows(path), entry.get("rows")
            size = (f"{rows:,} rows now, {then:,} when the analysis wrote it" if rows is not None and then is not None
                    else f"{path.stat().st_size:,} bytes now, {entry.get('bytes', 0):,} when written")
            problems.append(f"{name}: not the file manifest.json describes ({size}): written by another run, "
                            "edited, or cut off")
    return problems


def unverifiable(manifest: dict) -> str | None:
    """Why a manifest's tables cannot be checked at all (None when they can)."""
    if not isinstance(manifest.get("tables"), dict):
        return ("manifest.json records no checksums of its tables (written by an older version, or by hand): nothing "
                "shows that the tables beside it are the ones it describes; run `vp analyze` again to be sure")
    return None


# -- one run at a time ------------------------------------------------------------------------
def _as_folder(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"{folder}: is a file; a folder is needed here") from None
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(folder)) from exc
    return folder


@contextlib.contextmanager
def folder_lock(folder: str | Path, command: str):
    """Hold `folder`'s lock while the block runs; refuse at once if another run holds it.

    The lock is an ``flock`` on ``folder/.vp.lock``: the operating system drops it when its
    holder dies, however it dies, so there is no stale lock to clear by hand.
    """
    import fcntl

    folder = _as_folder(Path(folder))
    lock_path = folder / LOCK
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(folder)) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1000, 0).decode("utf-8", "replace").strip() or "another process"
            raise InputError(f"{folder}: another run is writing into this folder ({holder}); wait for it to "
                             "finish, or choose another output folder") from None
        with contextlib.suppress(OSError):  # who holds it, for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{command}, pid {os.getpid()} on {socket.gethostname()}, since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        yield folder
    finally:
        os.close(fd)


# -- staged writing ---------------------------------------------------------------------------
def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _owned_names(manifest) -> set[str]:
    """The files a manifest says its run wrote."""
    if not isinstance(manifest, dict):
        return set()
    names = set()
    if isinstance(manifest.get("tables"), dict):
        names |= {str(n) for n in manifest["tables"]}
    if isinstance(manifest.get("files"), dict):
        names |= {str(n) for n in manifest["files"].values()}
    return _safe_names(names)


def _safe_names(names) -> set[str]:
    """Relative paths inside the folder only (a hand-edited manifest must not name /etc/passwd)."""
    return {str(n) for n in names if isinstance(n, str) and n and not Path(n).is_absolute() and ".." not in Path(n).parts}


class StagedOutput:
    """Write a run's files into a staging folder, then swap them into `folder` with the manifest.

    >>> with StagedOutput("out", "vp analyze") as output:          # doctest: +SKIP
    ...     (output.staging / "table.csv").write_text("a\\n1\\n")
    ...     output.commit({"settings": {}})

    Leaving the block without :meth:`commit` (an error, Ctrl-C, SIGTERM) discards the
    staged files and leaves the folder as it was.
    """

    def __init__(self, folder: str | Path, command: str, *, log=None):
        self.folder = Path(folder)
        self.command = command
        self.log = log or (lambda line: None)
        self.staging: Path | None = None
        self._lock = None

    def __enter__(self) -> StagedOutput:
        self._created = not self.folder.exists()
        self._lock = folder_lock(self.folder, self.command)
        self._lock.__enter__()
        try:
            self._recover()
            self.staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.folder))
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.staging is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self._lock.__exit__(*exc)
        if exc[0] is not None and self._created:  # a failed first run leaves no folder behind
            with contextlib.suppress(OSError):
                (self.folder / LOCK).unlink()
                self.folder.rmdir()

    def _recover(self) -> None:
        """Clean up after a run that died here: its staging folder, a swap it did not finish."""
        for stale in self.folder.glob(STAGING_PREFIX + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        journal = _read_json(self.folder / JOURNAL)
        if not isinstance(journal, dict):
            (self.folder / JOURNAL).unlink(missing_ok=True)
            return
        manifest = _read_json(self.folder / MANIFEST)
        run_id = manifest.get("run_id") if isinstance(manifest, dict) else None
        if run_id is None or run_id not in (journal.get("run"), journal.get("previous_run")):
            # Killed inside the swap: the tables here may come from two runs. Remove them all.
            listed = journal.get("names") if isinstance(journal.get("names"), list) else []
            names = sorted(n for n in _safe_names(listed) if (self.folder / n).is_file())
            for name in names:
                (self.folder / name).unlink(missing_ok=True)
            (self.folder / MANIFEST).unlink(missing_ok=True)
            if names:
                self.log(f"removed {', '.join(names)}: an earlier run was stopped while it replaced them")
        (self.folder / JOURNAL).unlink(missing_ok=True)

    def commit(self, manifest: dict, *, also_remove=()) -> list[str]:
        """Record the staged files in `manifest` (``tables``), then swap them in; returns the files removed.

        `also_remove` names files an older version may have left here without listing them
        in its manifest; like the previous run's tables, they are removed when this run
        does not write them.
        """
        staged = _visible_files(self.staging)
        staged = [n for n in staged if n != MANIFEST]
        manifest = dict(manifest)
        manifest["run_id"] = uuid.uuid4().hex
        manifest["tables"] = {name: describe_file(self.staging / name) for name in staged}
        (self.staging / MANIFEST).write_text(
            json.dumps(json_safe(manifest), ensure_ascii=False, indent=1, allow_nan=False) + "\n", encoding="utf-8")

        old_manifest = _read_json(self.folder / MANIFEST)
        old = (_owned_names(old_manifest) | set(also_remove)) - {MANIFEST}
        removed = sorted(n for n in old - set(staged) if (self.folder / n).is_file())
        journal = {"run": manifest["run_id"],
                   "previous_run": old_manifest.get("run_id") if isinstance(old_manifest, dict) else None,
                   "names": sorted(old | set(staged))}
        journal_tmp = self.staging / JOURNAL
        journal_tmp.write_text(json.dumps(journal), encoding="utf-8")
        os.replace(journal_tmp, self.folder / JOURNAL)
        # From here the old manifest is gone first and the new one comes last: no moment
        # where a manifest stands beside tables it does not describe.
        (self.folder / MANIFEST).unlink(missing_ok=True)
        for name in removed:
            (self.folder / name).unlink(missing_ok=True)
        for name in staged:
            target = self.folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.staging / name, target)
        os.replace(self.staging / MANIFEST, self.folder / MANIFEST)
        (self.folder / JOURNAL).unlink(missing_ok=True)
        self.manifest = manifest
        return removed


def staged_output(command: str, *, folder_arg: str = "out_dir", also_remove=lambda: ()):
    """Decorator: run a function that writes tables and a ``manifest.json`` into its
    `folder_arg` folder inside a :class:`StagedOutput` of that folder.

    The function is handed the staging folder instead, writes what it likes there (its
    manifest last), and returns; the manifest it wrote is then completed with every
    table's checksum and swapped in with the tables. The decorated function returns the
    committed manifest. `also_remove()` names files an older version may have left.
    """
    def decorate(func):
        signature = inspect.signature(func)

        @functools.wraps(func)
        def run(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            log = bound.arguments.get("log") or (lambda line: print(line, file=sys.stderr))
            folder = Path(bound.arguments[folder_arg])
            with StagedOutput(folder, command, log=log) as output:
                bound.arguments[folder_arg] = output.staging
                try:
                    func(*bound.args, **bound.kwargs)
                except OSError as exc:  # name the output the user asked for, not the staging copy
                    name = Path(str(exc.filename or ""))
                    if output.staging in name.parents:
                        raise OSError(exc.errno, exc.strerror, str(folder / name.relative_to(output.staging))) from exc
                    raise
                manifest = _read_json(output.staging / MANIFEST)
                if not isinstance(manifest, dict):
                    raise RuntimeError(f"{command} wrote no manifest.json")
                removed = output.commit(manifest, also_remove=also_remove())
            if removed:
                log(f"removed {', '.join(removed)}: left by an earlier run, not written by this one")
            seconds = output.manifest.get("seconds")
            log(f"wrote {', '.join(sorted(output.manifest['tables']))}, manifest.json to {folder}"
                + (f" ({seconds:.1f} s)" if isinstance(seconds, (int, float)) else ""))
            return output.manifest

        return run

    return decorate


def holds_folder_lock(command: str, *, folder_arg: str = "out"):
    """Decorator: the function runs holding the lock of its `folder_arg` folder (see :func:`folder_lock`)."""
    def decorate(func):
        signature = inspect.signature(func)

        @functools.wraps(func)
        def run(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with folder_lock(bound.arguments[folder_arg], command):
                return func(*bound.args, **bound.kwargs)

        return run

    return decorate
