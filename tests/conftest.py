from pathlib import Path

import pytest

from analysis.fetch_release import find_release

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "valueportrait-release"
#: The shared copy beside the project, or the one `vp fetch-release --for-tests` lays out.
RELEASE = find_release() or SHARED
SKIP_REASON = (f"the public Value Portrait release is not at {SHARED} nor in data/release-tests: "
               "run `vp fetch-release --for-tests` (or set VP_RELEASE to a copy)")


@pytest.fixture(scope="session")
def release_dir() -> Path:
    if not RELEASE.is_dir():
        pytest.skip(SKIP_REASON)
    return RELEASE


@pytest.fixture(scope="session")
def release_analysis(release_dir, tmp_path_factory):
    """The release imported into a fresh database: (study, correlation table over the included raters)."""
    from analysis.correlations import correlation_table
    from analysis.dataset import load_study
    from analysis.quality import quality_control
    from analysis.release import import_release
    from valueportrait.storage import open_db

    path = tmp_path_factory.mktemp("release") / "study.db"
    with open_db(path) as db:
        import_release(release_dir, db)
        study = load_study(db)
    return study, correlation_table(study, quality_control(study).included)
