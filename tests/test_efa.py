"""Parallel analysis, EFA, KMO and Bartlett against simulated truth, hand computations and lavaan's ML EFA."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import efa as efa_mod
from analysis.covariance import DataError


def three_factor_data(n=400, seed=1):
    """9 items, three per factor, loadings .8, uncorrelated factors."""
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((n, 3))
    loadings = np.kron(np.eye(3), np.full((1, 3), 0.8))  # 3 x 9 block structure
    x = f @ loadings + 0.6 * rng.standard_normal((n, 9))
    return pd.DataFrame(x, columns=[f"i{j}" for j in range(1, 10)])


def test_parallel_analysis_finds_three_factors():
    data = three_factor_data()
    for kind in ("components", "factors"):
        result = efa_mod.parallel_analysis(data, n_iter=100, seed=0, kind=kind)
        assert result["n_factors"] == 3, kind
        eig = result["eigenvalues"]
        assert list(eig.columns) == ["index", "observed", "random_mean", "random_quantile"]
    # Component eigenvalues of a correlation matrix sum to p; they are numpy's own.
    pca = efa_mod.parallel_analysis(data, kind="components")["eigenvalues"]
    assert np.allclose(pca.observed, np.sort(np.linalg.eigvalsh(np.corrcoef(data.T)))[::-1])
    # Pure noise has nothing to retain.
    noise = np.random.default_rng(2).standard_normal((300, 10))
    assert efa_mod.parallel_analysis(noise, seed=1)["n_factors"] == 0


def test_random_eigenvalues_match_a_loop():
    data = three_factor_data(n=60)
    table = efa_mod.parallel_analysis(data, n_iter=20, seed=7, quantile=0.5)["eigenvalues"]
    rng = np.random.default_rng(7)
    sims = rng.standard_normal((20, 60, 9))
    eig = np.array([np.sort(np.linalg.eigvalsh(np.corrcoef(s.T)))[::-1] for s in sims])
    assert np.allclose(table.random_quantile, np.median(eig, axis=0))


def test_efa_recovers_the_block_structure():
    data = three_factor_data()
    result = efa_mod.efa(data)
    assert result["n_factors"] == 3
    loadings = result["loadings"].abs()
    # each item loads mainly on one factor, and items 1-3, 4-6, 7-9 share theirs
    main = loadings.to_numpy().argmax(axis=1)
    assert len(set(main[:3])) == len(set(main[3:6])) == len(set(main[6:])) == 1
    assert len(set(main)) == 3
    assert (loadings.max(axis=1) > 0.7).all()
    # communality = row sum of squared loadings for an orthogonal fit is close to 0.64 / (0.64 + 0.36)
    assert result["communalities"].mean() == pytest.approx(0.64, abs=0.08)


def test_kmo_and_bartlett_against_hand_computation():
    data = three_factor_data(n=150, seed=4)
    result = efa_mod.efa(data, n_factors=3)
    r = np.corrcoef(data.to_numpy().T)
    inv = np.linalg.inv(r)
    partial = -inv / np.sqrt(np.outer(np.diag(inv), np.diag(inv)))
    off = ~np.eye(9, dtype=bool)
    kmo = (r[off] ** 2).sum() / ((r[off] ** 2).sum() + (partial[off] ** 2).sum())
    assert result["kmo"] == pytest.approx(kmo, abs=1e-10)
    n, p = data.shape
    chi2 = -(n - 1 - (2 * p + 5) / 6) * np.log(np.linalg.det(r))
    assert result["bartlett_chi2"] == pytest.approx(chi2, rel=1e-10)
    assert result["bartlett_df"] == 36
    assert result["bartlett_p"] == pytest.approx(stats.chi2.sf(chi2, 36))


def test_more_items_than_raters_is_refused_with_the_reason():
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.integers(1, 7, size=(20, 30)).astype(float))
    with pytest.raises(DataError, match="20 complete rows for 30 variables"):
        efa_mod.efa(x, n_factors=2)
    screened = efa_mod.screen(x)
    assert screened["reason"].startswith("20 raters for 30 items") and math.isnan(screened["kmo"])
    rows = efa_mod.efa_skipped(screened, group_id="g1")
    assert list(rows.columns[:4]) == ["group_id", "item", "factor", "loading"]
    assert rows["status"].item() == "skipped" and rows["note"].item().startswith("not factored: 20 raters")
    assert math.isnan(rows["loading"].item())


# --------------------------------------------------------------------------- against psych / lavaan

HS_ITEMS = [f"x{i}" for i in range(1, 10)]


@pytest.fixture(scope="module")
def hs() -> pd.DataFrame:
    holzinger39 = pytest.importorskip("semopy.examples.holzinger39")
    return holzinger39.get_data()[HS_ITEMS]


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("method", ["minres", "ml"])
@pytest.mark.parametrize("k", [2, 3])
def test_communalities_are_rotation_invariant(hs, method, k):
    # Communalities are diag(L Phi L'), the same under every rotation: the unrotated
    # solution's row sums of squared loadings. factor_analyzer's get_communalities() sums
    # squared pattern loadings, off by up to .105 on these data under oblimin.
    from factor_analyzer import FactorAnalyzer

    unrotated = FactorAnalyzer(n_factors=k, rotation=None, method=method).fit(hs.to_numpy(float)).loadings_
    truth = (unrotated**2).sum(axis=1)
    for rotation in efa_mod.ROTATIONS:
        result = efa_mod.efa(hs, n_factors=k, rotation=rotation, method=method)
        assert np.allclose(result["communalities"].to_numpy(), truth, atol=1e-6), rotation
        assert np.allclose(result["uniquenesses"].to_numpy(), 1 - truth, atol=1e-6)
        phi = result["factor_correlations"].to_numpy()
        assert np.allclose(np.diag(phi), 1) and np.allclose(phi, phi.T)
        if rotation not in efa_mod.OBLIQUE:
            assert np.allclose(phi, np.eye(k))
    if k == 3 and method == "minres":
        oblimin = FactorAnalyzer(n_factors=k, rotation="oblimin", method=method).fit(hs.to_numpy(float))
        assert np.abs(oblimin.get_communalities() - truth).max() > 0.1  # the library's figure is wrong


def test_ml_efa_reproduces_lavaan(hs):
    # lavaan: efa(data = HolzingerSwineford1939[, 7:15], nfactors = 2:3) -> chi2 130.306 (df 19)
    # and 22.897 (df 12). RMSEA with N as lavaan: sqrt((chi2 - df) / (N df)).
    for k, chi2, df in [(2, 130.306, 19), (3, 22.897, 12)]:
        result = efa_mod.efa(hs, n_factors=k, method="ml")
        assert round(result["chi2"], 3) == chi2 and result["df"] == df
        assert result["rmsea"] == pytest.approx(math.sqrt((result["chi2"] - df) / (301 * df)))
        assert result["p"] == pytest.approx(stats.chi2.sf(result["chi2"], df))
    assert math.isnan(efa_mod.efa(hs, n_factors=3)["chi2"])  # minres has no likelihood test


def test_parallel_analysis_picks_three_factors_for_hs_and_bartlett_matches_the_formula(hs):
    result = efa_mod.efa(hs)
    assert result["n_factors"] == 3 and result["parallel"]["n_factors"] == 3
    assert np.allclose(result["eigenvalues"], np.sort(np.linalg.eigvalsh(np.corrcoef(hs.to_numpy(float).T)))[::-1])
    # psych::cortest.bartlett on these data: chi2 904.1, df 36; the formula by hand:
    r = np.corrcoef(hs.to_numpy(float).T)
    assert result["bartlett_chi2"] == pytest.approx(-(301 - 1 - (2 * 9 + 5) / 6) * np.log(np.linalg.det(r)), rel=1e-10)
    assert round(result["bartlett_chi2"], 1) == 904.1 and result["bartlett_df"] == 36
    assert result["note"] == ""


# --------------------------------------------------------------------------- data a factor model cannot use


def test_constant_and_collinear_columns_give_clear_errors(hs):
    constant = hs.assign(x1=1.0)
    with pytest.raises(DataError, match="constant variables .*: x1"):  # was LinAlgError: Eigenvalues did not converge
        efa_mod.parallel_analysis(constant)
    result = efa_mod.efa(constant, n_factors=2)
    assert "constant items left out: x1" in result["note"] and "x1" not in result["loadings"].index
    with pytest.raises(DataError, match="0 variables that vary"):  # was scikit-learn's "Found array with 0 feature(s)"
        efa_mod.efa(hs * 0 + 1, n_factors=2)
    with pytest.raises(DataError, match=r"x10 = 1\*x1 \+ 1\*x2"):
        efa_mod.efa(hs.assign(x10=hs.x1 + hs.x2))
    assert "collinear" in efa_mod.screen(hs.assign(x10=hs.x1 + hs.x2))["reason"]


def test_screen_refuses_low_kmo():
    rng = np.random.default_rng(3)
    noise = pd.DataFrame(rng.standard_normal((60, 20)))
    screened = efa_mod.screen(noise)
    assert screened["kmo"] < 0.5 and screened["reason"].startswith(f"KMO {screened['kmo']:.2f} < 0.5")
    assert efa_mod.screen(noise, min_kmo=0.0)["reason"] == ""
    assert efa_mod.screen(three_factor_data())["reason"] == ""


def test_heywood_case_in_efa_is_named():
    # One item nearly a copy of another: its uniqueness hits factor_analyzer's floor (.005).
    data = three_factor_data(n=300, seed=5)
    data["i10"] = data["i1"] + np.random.default_rng(1).normal(0, 0.01, 300)
    result = efa_mod.efa(data, n_factors=3, method="ml")
    assert "Heywood case" in result["note"] and ("i10" in result["note"] or "i1," in result["note"])


def test_cli(tmp_path, hs, capsys):
    from valueportrait.cli import main

    path = tmp_path / "hs.csv"
    hs.assign(school="Pasteur").to_csv(path, index=False)
    out = tmp_path / "efa.json"
    columns = ",".join(HS_ITEMS)
    assert main(["efa", "--data", str(path), "--columns", columns, "--method", "ml", "--factors", "3",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "chi2 22.897  df 12" in printed and "factor correlations:" in printed
    payload = json.loads(out.read_text())
    assert {"n", "n_factors", "method", "rotation", "loadings", "communalities", "factor_correlations", "eigenvalues",
            "parallel_analysis", "kmo", "bartlett_chi2", "bartlett_df", "bartlett_p", "chi2", "df", "rmsea",
            "note"} <= set(payload)
    assert payload["n"] == 301 and payload["n_factors"] == 3 and len(payload["loadings"]["x1"]) == 3
    assert np.array(payload["factor_correlations"]).shape == (3, 3)
    assert main(["efa", "--data", str(path), "--columns", columns]) == 0
    assert "parallel analysis: 3 factor(s)" in capsys.readouterr().out
    # Bad input: one line each, exit 2.
    assert main(["efa", "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert "column school" in err and "'Pasteur' is not a number" in err and err.count("\n") == 1
    hs.assign(x3=5.0, x4=5.0, x5=5.0, x6=5.0, x7=5.0, x8=5.0, x9=5.0).to_csv(path, index=False)
    assert main(["efa", "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert "2 variables that vary" in err and "hs.csv" in err and err.count("\n") == 1
    assert main(["efa", "--data", str(path), "--factors", "0"]) == 2
