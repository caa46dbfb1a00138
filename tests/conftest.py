from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RELEASE = ROOT.parent / "shared" / "valueportrait-release"


@pytest.fixture(scope="session")
def release_dir() -> Path:
    if not RELEASE.is_dir():
        pytest.skip(f"the shared Value Portrait release is not at {RELEASE}")
    return RELEASE
