"""valueportrait: psychometrically validated benchmarks of the values of LLMs."""

from importlib.metadata import PackageNotFoundError, version as _version
from pathlib import Path

try:
    __version__ = _version("valueportrait")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

#: The project's root (the folder holding pyproject.toml): default paths hang off it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = Path("data/raw/study.db")
DEFAULT_PROCESSED = Path("data/processed")
DEFAULT_REPORTS = Path("reports")

#: The libraries whose versions an analysis records (they decide its figures).
ANALYSIS_LIBRARIES = ("numpy", "scipy", "pandas", "statsmodels", "pingouin", "factor_analyzer", "semopy", "matplotlib")


def software_versions(packages=ANALYSIS_LIBRARIES) -> dict[str, str]:
    """Python's version and the installed versions of the analysis libraries (those not installed are left out)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "valueportrait": __version__}
    for package in packages:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out
