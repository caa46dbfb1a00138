"""Download the authors' public Value Portrait release and lay it out as `vp import-release` reads it.

The release is the authors' GitHub repository (holi-lab/ValuePortrait, MIT license) at a
pinned commit. Its archive (about the whole repository: queries, model outputs, the
project page) is downloaded, checked, and only what ``vp import-release`` reads is kept,
at the same paths::

    data/prolific/survey/main/survey.json          item ratings
    data/prolific/value/main/value.json            participants' value and trait scores
    data/query-response-tagged/query-response-tagged.json   item texts
    lm_evaluation/average_outputs/*_averaged_results.json   LLM answers (--models)
    LICENSE, README.md                              the authors' licence and description

Checks, before anything is moved into place: the archive's sha256 when ``--sha256`` is
given; otherwise the sha256 of the two files that hold the study's data (ratings and
scores), pinned for that commit (GitHub does not promise that its generated archives
keep the same bytes, so the archive itself is not pinned); then the whole folder is
read and validated exactly as ``vp import-release`` does. Everything is written into a
temporary folder beside ``--to`` and renamed into place at the end: a failed or
interrupted fetch leaves nothing. ``FETCHED.json`` records where it came from.

``--for-tests`` lays out what the test suite expects (the three models of the project's
shared test copy) in ``data/release-tests``, where ``tests/conftest.py`` looks for it.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath

from valueportrait import PROJECT_ROOT, __version__
from valueportrait import options as opt
from valueportrait.errors import InputError

REPOSITORY = "holi-lab/ValuePortrait"
#: The authors' commit this version was checked against (its README describes data/ and
#: lm_evaluation/, the layout read here).
COMMIT = "c6ea9bff43db5a5f8738175e79620c28d5f4517a"
DEFAULT_URL = f"https://github.com/{REPOSITORY}/archive/{COMMIT}.tar.gz"
#: sha256 of the files holding the study's data at COMMIT: the ratings and the scores
#: (the same bytes as the project's shared copy of the release).
PINNED_SHA256 = {
    "data/prolific/survey/main/survey.json": "7ba9e06ed8f479c7be1df331e9f05d7b6167df664ead7fef4364b5b95d845540",
    "data/prolific/value/main/value.json": "fea8b8fd8513d2e003d4e689ccc22fc6ebaa7876964b5f0e8b192702f5ff0000",
}
FILES = (*PINNED_SHA256, "data/query-response-tagged/query-response-tagged.json", "LICENSE", "README.md")
LLM_PATTERN = "lm_evaluation/average_outputs/*_averaged_results.json"
REQUIRED = (*PINNED_SHA256, "data/query-response-tagged/query-response-tagged.json")
#: The models of the shared test copy the test suite was written against.
TEST_MODELS = ("claude-3-5-sonnet-20241022", "gpt-4o-2024-11-20", "llama-3.1-8b-instruct")
DEFAULT_TO = Path("data/release")
TEST_TO = PROJECT_ROOT / "data" / "release-tests"
MAX_MB = 2048
PROVENANCE = "FETCHED.json"


def find_release() -> Path | None:
    """Where a copy of the release is for the tests and benchmarks: ``$VP_RELEASE``, the
    shared copy beside the project (``../shared/valueportrait-release``), or the one
    ``vp fetch-release --for-tests`` lays out; None when there is none."""
    candidates = [Path(os.environ["VP_RELEASE"])] if os.environ.get("VP_RELEASE") else []
    candidates += [PROJECT_ROOT.parent / "shared" / "valueportrait-release", TEST_TO]
    return next((c for c in candidates if (c / REQUIRED[0]).is_file()), None)


# -- download ---------------------------------------------------------------------------------
def download(url: str, dest: Path, *, max_bytes: int, progress: bool = True, timeout: float = 60.0) -> str:
    """Fetch `url` (http(s), file:// or a local path) into `dest`; returns its sha256."""
    digest = hashlib.sha256()
    local = url[len("file://"):] if url.startswith("file://") else url if "://" not in url else None
    if local is not None:
        source = Path(local)
        if not source.is_file():
            raise InputError(f"{url}: --url: no such archive file")
        with open(source, "rb") as src, open(dest, "wb") as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        return digest.hexdigest()
    import httpx
    from tqdm import tqdm

    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout) as response:
            if response.status_code != 200:
                raise InputError(f"{url}: HTTP {response.status_code} {response.reason_phrase}: the archive could not be downloaded")
            total = int(response.headers.get("content-length") or 0) or None
            if total and total > max_bytes:
                raise InputError(f"{url}: the archive is {total / 2**20:,.0f} MB, more than --max-mb {max_bytes // 2**20:,}")
            got = 0
            with open(dest, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc="downloading",
                                               file=sys.stderr, disable=not progress) as bar:
                for block in response.iter_bytes(1 << 20):
                    got += len(block)
                    if got > max_bytes:
                        raise InputError(f"{url}: the archive is larger than --max-mb {max_bytes // 2**20:,}")
                    digest.update(block)
                    out.write(block)
                    bar.update(len(block))
    except httpx.HTTPError as exc:
        raise InputError(f"{url}: download failed: {type(exc).__name__}: {exc}") from None
    return digest.hexdigest()


# -- unpacking --------------------------------------------------------------------------------
def _wanted(rel: str, models: tuple[str, ...] | None) -> bool:
    if rel in FILES:
        return True
    if fnmatch.fnmatchcase(rel, LLM_PATTERN) and "/" not in rel[len("lm_evaluation/average_outputs/"):]:
        model = rel.rsplit("/", 1)[1][: -len("_averaged_results.json")]
        return models is None or model in models
    return False


def _members(archive: Path):
    """(name, is_regular_file, open()) for each member of a .tar(.gz|.bz2|.xz) or .zip archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                yield info.filename, not info.is_dir() and not is_link, lambda info=info: z.open(info)
        return
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                yield member.name, member.isfile(), lambda member=member: tar.extractfile(member)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise InputError(f"{archive.name}: not a readable .tar.gz or .zip archive ({exc})") from None


def unpack(archive: Path, dest: Path, models: tuple[str, ...] | None, source: str) -> dict[str, str]:
    """Copy the wanted files of `archive` into `dest`; returns {relative path: sha256}.

    The archive's single top folder (``ValuePortrait-<commit>/`` on GitHub) is dropped.
    Only regular files at the expected paths are taken: links, devices and anything
    outside the expected paths are never written.
    """
    found: dict[str, str] = {}
    for name, regular, opener in _members(archive):
        parts = PurePosixPath(name).parts
        if len(parts) < 2 or name.startswith("/") or ".." in parts:
            continue
        rel = "/".join(parts[1:])
        if not _wanted(rel, models):
            continue
        if not regular:
            raise InputError(f"{source}: {name}: not a regular file (a link?) where the release has a data file")
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with opener() as src, open(target, "wb") as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        found[rel] = digest.hexdigest()
    missing = [r for r in REQUIRED if r not in found]
    if missing:
        raise InputError(f"{source}: {missing[0]} is not in the archive: not the Value Portrait repository's layout")
    if models is not None:
        absent = [m for m in models if f"lm_evaluation/average_outputs/{m}_averaged_results.json" not in found]
        if absent:
            raise InputError(f"{source}: --models: no answers of {', '.join(absent)} in the archive")
    return found


# -- the command ------------------------------------------------------------------------------
def fetch_release(to: Path, *, url: str = DEFAULT_URL, sha256: str | None = None, models: tuple[str, ...] | None = None,
                  max_mb: int = MAX_MB, progress: bool = True, log=print) -> dict:
    """Download, check and lay out the release in `to`; returns the provenance record."""
    to = Path(to)
    if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256.lower())):
        raise InputError(f"--sha256: {sha256!r} is not a sha256 (64 hexadecimal digits)")
    if to.exists():
        if not to.is_dir():
            raise InputError(f"{to}: --to: is a file; a folder is needed here")
        previous = _read_provenance(to)
        if previous and previous.get("url") == url and previous.get("models") == (list(models) if models else None):
            log(f"{to}: already holds this release (fetched {previous.get('fetched_at')}); nothing to do")
            return previous
        if any(to.iterdir()):
            raise InputError(f"{to}: --to: the folder exists and is not empty; choose another or remove it")
    to.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{to.name}.fetch-", dir=to.parent))
    try:
        archive = work / "archive"
        log(f"downloading {url}")
        archive_sha = download(url, archive, max_bytes=max_mb * 2**20, progress=progress)
        if sha256 is not None and archive_sha != sha256.lower():
            raise InputError(f"{url}: the archive's sha256 is {archive_sha}, not the {sha256.lower()} given with --sha256: "
                             "refusing it")
        staged = work / "release"
        staged.mkdir()
        files = unpack(archive, staged, models, url)
        if sha256 is None:
            for rel, want in PINNED_SHA256.items():
                if files[rel] != want:
                    raise InputError(f"{url}: {rel}: sha256 {files[rel]} is not the {want} pinned for the authors' commit "
                                     f"{COMMIT[:12]}: not the release this version was checked against (pass --sha256 "
                                     "with the archive's own sha256 to accept another one)")
        from analysis.release import read_release

        release = read_release(staged)  # exactly what vp import-release will read and check
        record = {"source": f"https://github.com/{REPOSITORY}", "url": url, "commit": COMMIT if url == DEFAULT_URL else None,
                  "archive_sha256": archive_sha, "archive_sha256_checked": sha256 is not None,
                  "pinned_files_checked": sha256 is None, "models": list(models) if models else None,
                  "files": dict(sorted(files.items())), "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "tool": f"valueportrait {__version__}"}
        (staged / PROVENANCE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        if to.exists():
            to.rmdir()  # empty (checked above)
        os.replace(staged, to)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"laid out the release in {to}: {len(release.groups)} groups, {len(release.items)} items, "
        f"{len(release.ratings):,} ratings, {len(release.models)} models' answers ({len(files)} files; see {to / PROVENANCE})")
    log(f"next: vp import-release {to} --db data/raw/study.db")
    return record


def _read_provenance(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", type=Path, default=None,
                        help=f"folder to lay the release out in (default {DEFAULT_TO}; with --for-tests, data/release-tests)")
    parser.add_argument("--url", default=DEFAULT_URL,
                        help="the archive (.tar.gz or .zip; http(s), file:// or a path); default: the authors' repository "
                             "at the pinned commit")
    parser.add_argument("--sha256", default=None,
                        help="the archive's expected sha256; without it, the ratings and scores files are checked "
                             "against the sha256s pinned for the default commit")
    parser.add_argument("--models", default=None,
                        help="comma-separated models whose LLM answers to keep (default: all in the archive)")
    parser.add_argument("--for-tests", action="store_true",
                        help=f"the layout the test suite expects: only {', '.join(TEST_MODELS)}, in data/release-tests")
    parser.add_argument("--max-mb", type=opt.count(1), default=MAX_MB, help="largest archive accepted, in MB")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    models = tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else None
    if args.for_tests:
        models = models or TEST_MODELS
    to = args.to or (TEST_TO if args.for_tests else DEFAULT_TO)
    fetch_release(to, url=args.url, sha256=args.sha256, models=models, max_mb=args.max_mb, progress=not args.no_progress)
    return 0
