"""Catch the factor_analyzer / scikit-learn break before an analysis does.

factor_analyzer 0.5.1 calls ``check_array(force_all_finite=...)``; scikit-learn 1.8 removed
that keyword, so every ``FactorAnalyzer.fit`` raises TypeError there. pyproject pins
scikit-learn < 1.8; this test fails loudly if an environment slips past the pin and the
fit is broken.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest


def _sklearn_version() -> tuple[int, int]:
    import sklearn

    major, minor = sklearn.__version__.split(".")[:2]
    return int(major), int(minor)


def test_factor_analyzer_fits_with_installed_scikit_learn():
    from factor_analyzer import FactorAnalyzer

    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 1)) + 0.5 * rng.standard_normal((100, 6))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fa = FactorAnalyzer(n_factors=1, rotation=None).fit(x)
    except TypeError as exc:  # pragma: no cover - the failure this test exists for
        pytest.fail(
            f"FactorAnalyzer.fit is broken with scikit-learn {_sklearn_version()}: {exc}. "
            "Keep scikit-learn < 1.8 (pyproject) or upgrade factor_analyzer."
        )
    assert fa.loadings_.shape == (6, 1)
    assert np.all(np.abs(fa.loadings_) > 0.5)


def test_installed_scikit_learn_satisfies_the_pin():
    """The environment is the one pyproject describes (a stray upgrade fails here first)."""
    import sklearn
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pin = next(Requirement(d) for d in deps if Requirement(d).name == "scikit-learn")
    assert pin.specifier.contains(sklearn.__version__), f"scikit-learn {sklearn.__version__} not in {pin.specifier}"
    # The pin must keep out 1.8, the release that broke factor_analyzer 0.5.1.
    assert not pin.specifier.contains("1.8.0")


def test_efa_module_runs_end_to_end():
    from analysis.efa import efa

    rng = np.random.default_rng(2)
    x = rng.standard_normal((120, 2)) @ np.kron(np.eye(2), np.ones((1, 3))) + 0.5 * rng.standard_normal((120, 6))
    assert efa(x, rotation="oblimin")["n_factors"] == 2
