"""`vp fetch-release` against an archive of the shared release served on loopback.

The archive is built here as GitHub builds the authors' one: every file under a single
top folder ``ValuePortrait-<commit>/``, with files import-release does not read beside
them, served behind a redirect (github.com/.../archive/... answers 302 to codeload).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest

from analysis.fetch_release import COMMIT, PINNED_SHA256, TEST_MODELS, fetch_release
from valueportrait.cli import main
from valueportrait.errors import InputError


def _tar(release: Path, dest: Path, *, tamper: dict | None = None, link: str | None = None) -> Path:
    top = f"ValuePortrait-{COMMIT}"
    with tarfile.open(dest, "w:gz") as tar:
        for path in sorted(release.rglob("*")):
            if path.is_file():
                rel = path.relative_to(release).as_posix()
                data = (tamper or {}).get(rel, path.read_bytes())
                info = tarfile.TarInfo(f"{top}/{rel}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        extra = b'{"not": "read by import-release"}'
        for rel in ("data/query/Reddit.json", "lm_evaluation/average_outputs/qwen-max_metadata.json", "../evil.json"):
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = len(extra)
            tar.addfile(info, io.BytesIO(extra))
        if link:
            info = tarfile.TarInfo(f"{top}/{link}")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return dest


class _Server:
    """Serves files of a folder on 127.0.0.1; /archive/NAME answers 302 to /codeload/NAME, like GitHub."""

    def __init__(self, folder: Path):
        folder = Path(folder)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path.startswith("/archive/"):
                    self.send_response(302)
                    self.send_header("Location", "/codeload/" + self.path.split("/", 2)[2])
                    self.end_headers()
                    return
                path = folder / self.path.rsplit("/", 1)[-1]
                if not self.path.startswith("/codeload/") or not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def served(release_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    _tar(release_dir, folder / "good.tar.gz")
    survey = "data/prolific/survey/main/survey.json"
    _tar(release_dir, folder / "tampered.tar.gz", tamper={survey: (release_dir / survey).read_bytes().replace(b"[\n            6,", b"[\n            5,", 1)})
    _tar(release_dir, folder / "linked.tar.gz", link="lm_evaluation/average_outputs/evil_averaged_results.json")
    with _Server(folder) as server:
        yield server, folder


def test_fetches_checks_and_lays_out_what_import_release_reads(served, release_dir, tmp_path, capsys):
    server, folder = served
    to = tmp_path / "release"
    assert main(["fetch-release", "--url", f"{server.url}/archive/good.tar.gz", "--to", str(to), "--no-progress"]) == 0
    files = sorted(p.relative_to(to).as_posix() for p in to.rglob("*") if p.is_file())
    want = sorted(p.relative_to(release_dir).as_posix() for p in release_dir.rglob("*") if p.is_file()) + ["FETCHED.json"]
    assert files == sorted(want)  # the extra files of the repository are not kept, ../evil.json nowhere
    assert not (tmp_path / "evil.json").exists()
    for rel in want[:-1]:
        assert (to / rel).read_bytes() == (release_dir / rel).read_bytes(), rel
    record = json.loads((to / "FETCHED.json").read_text())
    assert record["archive_sha256"] == hashlib.sha256((folder / "good.tar.gz").read_bytes()).hexdigest()
    assert record["pinned_files_checked"] and record["files"]["data/prolific/value/main/value.json"] == \
        PINNED_SHA256["data/prolific/value/main/value.json"]
    assert "laid out the release in" in capsys.readouterr().out
    # What it laid out imports exactly as the shared copy does.
    assert main(["import-release", str(to), "--db", str(tmp_path / "s.db")]) == 0
    assert "12 groups, 520 items (104 queries), 569 participants" in capsys.readouterr().out
    # A second fetch of the same release into the same place changes nothing.
    assert main(["fetch-release", "--url", f"{server.url}/archive/good.tar.gz", "--to", str(to), "--no-progress"]) == 0
    assert "already holds this release" in capsys.readouterr().out


def test_pins_the_study_data(served, tmp_path, capsys):
    server, _ = served
    to = tmp_path / "release"
    assert main(["fetch-release", "--url", f"{server.url}/archive/tampered.tar.gz", "--to", str(to), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "data/prolific/survey/main/survey.json: sha256" in err and f"pinned for the authors' commit {COMMIT[:12]}" in err
    assert not to.exists() and [p.name for p in tmp_path.iterdir()] == []  # no temporary folder left either


def test_archive_sha256(served, tmp_path, capsys):
    server, folder = served
    good = hashlib.sha256((folder / "good.tar.gz").read_bytes()).hexdigest()
    url = f"{server.url}/archive/good.tar.gz"
    assert main(["fetch-release", "--url", url, "--to", str(tmp_path / "a"), "--sha256", "0" * 64, "--no-progress"]) == 2
    assert f"the archive's sha256 is {good}, not the {'0' * 64}" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert main(["fetch-release", "--url", url, "--to", str(tmp_path / "b"), "--sha256", good, "--no-progress"]) == 0
    assert json.loads((tmp_path / "b" / "FETCHED.json").read_text())["archive_sha256_checked"] is True


def test_refuses_links_missing_pages_and_full_folders(served, tmp_path, capsys):
    server, _ = served
    assert main(["fetch-release", "--url", f"{server.url}/archive/linked.tar.gz", "--to", str(tmp_path / "l"), "--no-progress"]) == 2
    assert "evil_averaged_results.json: not a regular file (a link?)" in capsys.readouterr().err
    assert main(["fetch-release", "--url", f"{server.url}/archive/none.tar.gz", "--to", str(tmp_path / "n"), "--no-progress"]) == 2
    assert "HTTP 404" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("mine")
    assert main(["fetch-release", "--url", f"{server.url}/archive/good.tar.gz", "--to", str(tmp_path / "full"), "--no-progress"]) == 2
    assert "the folder exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


def test_models_and_the_test_layout(served, tmp_path):
    server, _ = served
    url = f"{server.url}/archive/good.tar.gz"
    fetch_release(tmp_path / "one", url=url, models=(TEST_MODELS[0],), progress=False, log=lambda _: None)
    assert [p.name for p in (tmp_path / "one" / "lm_evaluation/average_outputs").iterdir()] == \
        [f"{TEST_MODELS[0]}_averaged_results.json"]
    with pytest.raises(InputError, match="--models: no answers of nonesuch in the archive"):
        fetch_release(tmp_path / "two", url=url, models=("nonesuch",), progress=False, log=lambda _: None)


def test_the_skip_message_names_the_command():
    from conftest import SKIP_REASON

    assert "vp fetch-release --for-tests" in SKIP_REASON
