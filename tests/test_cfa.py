"""CFA fit indices against lavaan's published Holzinger-Swineford figures.

lavaan's tutorial (https://lavaan.ugent.be/tutorial/cfa.html) fits the three-factor
model to HolzingerSwineford1939 (N = 301) and prints: chi2 85.306, df 24,
CFI 0.931, TLI 0.896, RMSEA 0.092 [0.071, 0.114], SRMR 0.065, and standardised
loadings x1 0.772, x2 0.424, x3 0.581 (``standardizedSolution``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import cfa
from analysis.covariance import DataError
from valueportrait.cli import main

semopy = pytest.importorskip("semopy")
from semopy.examples import holzinger39  # noqa: E402

HS_MODEL = "visual =~ x1 + x2 + x3\ntextual =~ x4 + x5 + x6\nspeed =~ x7 + x8 + x9"


@pytest.fixture(scope="module")
def hs() -> pd.DataFrame:
    return holzinger39.get_data()


@pytest.fixture(scope="module")
def hs_fit(hs):
    return cfa.fit_cfa(hs, HS_MODEL)


def test_three_factor_model_reproduces_lavaan(hs_fit):
    fit = hs_fit
    assert fit["n"] == 301
    assert fit["df"] == 24
    assert round(fit["chi2"], 3) == 85.306
    assert round(fit["cfi"], 3) == 0.931
    assert round(fit["tli"], 3) == 0.896
    assert round(fit["rmsea"], 3) == 0.092
    assert round(fit["rmsea_ci_low"], 3) == 0.071
    assert round(fit["rmsea_ci_high"], 3) == 0.114
    assert round(fit["srmr"], 3) == 0.065
    assert fit["p"] < 1e-7
    assert fit["note"] == ""


def test_standardised_loadings_match_lavaan(hs_fit):
    loadings = {(x["factor"], x["indicator"]): x["loading"] for x in hs_fit["loadings"]}
    assert len(loadings) == 9
    # lavaan standardizedSolution(fit)$est.std for the visual factor
    assert loadings[("visual", "x1")] == pytest.approx(0.772, abs=5e-4)
    assert loadings[("visual", "x2")] == pytest.approx(0.424, abs=5e-4)
    assert loadings[("visual", "x3")] == pytest.approx(0.581, abs=5e-4)
    assert loadings[("textual", "x4")] == pytest.approx(0.852, abs=5e-4)
    assert loadings[("speed", "x7")] == pytest.approx(0.570, abs=5e-4)


def test_rmsea_interval_is_the_noncentral_chi2_inversion():
    chi2, df, n = 85.306, 24, 301
    low, high = cfa.rmsea_ci(chi2, df, n)
    # The defining property: at the limits' noncentralities, chi2 sits at the 95th and 5th percentiles.
    assert stats.ncx2.cdf(chi2, df, low**2 * n * df) == pytest.approx(0.95, abs=1e-6)
    assert stats.ncx2.cdf(chi2, df, high**2 * n * df) == pytest.approx(0.05, abs=1e-6)
    # A perfect fit (chi2 below df) has lower limit 0 and RMSEA 0.
    assert cfa.rmsea_ci(10.0, 24, 301)[0] == 0.0
    assert cfa.rmsea(10.0, 24, 301) == 0.0


def test_srmr_hand_case():
    sample = np.array([[1.0, 0.5], [0.5, 1.0]])
    implied = np.array([[4.0, 1.2], [1.2, 1.0]])  # as a correlation: 0.6
    # residuals over the lower triangle with the diagonal: 0, -0.1, 0
    assert cfa.srmr(sample, implied) == pytest.approx(math.sqrt(0.01 / 3))


def test_just_identified_model_is_flagged_not_crashed(hs):
    fit = cfa.fit_cfa(hs, "visual =~ x1 + x2 + x3")
    assert fit["df"] == 0
    assert math.isnan(fit["rmsea"]) and math.isnan(fit["cfi"])
    assert "just identified" in fit["note"]
    assert len(fit["loadings"]) == 3


def test_unfit_models_give_a_row_with_a_note(hs):
    row = cfa.cfa_row("bad", hs, "f =~ x1 + x2 + nowhere", group_id="g1")
    assert row["group_id"] == "g1" and math.isnan(row["chi2"]) and "nowhere" in row["note"]
    constant = hs.assign(x3=1.0)
    row = cfa.cfa_row("flat", constant, "f =~ x1 + x2 + x3 + x4")
    assert math.isnan(row["chi2"]) and "constant" in row["note"]


def test_pvq_syntax_names_all_items():
    ten = cfa.measurement_part(cfa.pvq_value_syntax())
    assert len(ten) == 10
    assert sorted(int(i[3:]) for items in ten.values() for i in items) == list(range(1, 22))
    four = cfa.measurement_part(cfa.pvq_higher_syntax())
    items = sorted(int(i[3:]) for v in four.values() for i in v)
    assert items == sorted(set(range(1, 22)) - {10, 21})  # Hedonism's items are out


def test_cli_writes_json(tmp_path, hs, capsys):
    data = tmp_path / "hs.csv"
    hs.to_csv(data, index=False)
    model_file = tmp_path / "hs.lav"
    model_file.write_text(HS_MODEL)
    out = tmp_path / "out" / "fit.json"
    assert main(["cfa", "--data", str(data), "--model", str(model_file), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "85.306" in printed and "0.065" in printed
    payload = json.loads(out.read_text())
    assert set(cfa.FIT_KEYS) <= set(payload)
    assert round(payload["tli"], 3) == 0.896
    assert len(payload["loadings"]) == 9
    # The inline syntax gives the same figures as the file.
    assert main(["cfa", "--data", str(data), "--model", HS_MODEL]) == 0
    assert "85.306" in capsys.readouterr().out


def test_cli_bad_input(tmp_path, hs, capsys):
    data = tmp_path / "hs.csv"
    hs.to_csv(data, index=False)
    assert main(["cfa", "--data", str(tmp_path / "none.csv"), "--model", HS_MODEL]) == 2
    assert "none.csv" in capsys.readouterr().err

    assert main(["cfa", "--data", str(data), "--model", "f =~ x1 + x2 + x99"]) == 2
    err = capsys.readouterr().err
    assert "hs.csv" in err and "x99" in err

    text = hs.astype({"x2": object})
    text.iloc[3, text.columns.get_loc("x2")] = "n/a?"
    bad = tmp_path / "text.csv"
    text.to_csv(bad, index=False)
    assert main(["cfa", "--data", str(bad), "--model", HS_MODEL]) == 2
    err = capsys.readouterr().err
    assert "text.csv" in err and "x2" in err and "n/a?" in err and "line 5" in err

    assert main(["cfa", "--data", str(data), "--model", str(tmp_path / "no_model.txt")]) == 2
    assert "no_model.txt" in capsys.readouterr().err


# --------------------------------------------------------------------------- lavaan's whole solution

# lavaan 0.6 summary(cfa(HS.model, data = HolzingerSwineford1939), standardized = TRUE, rsquare = TRUE):
# (lhs, op, rhs): (Estimate, Std.Err, Std.all); the tutorial's printed output.
LAVAAN_HS = {
    ("visual", "=~", "x2"): (0.554, 0.100, 0.424), ("visual", "=~", "x3"): (0.729, 0.109, 0.581),
    ("textual", "=~", "x5"): (1.113, 0.065, 0.855), ("textual", "=~", "x6"): (0.926, 0.055, 0.838),
    ("speed", "=~", "x8"): (1.180, 0.165, 0.723), ("speed", "=~", "x9"): (1.082, 0.151, 0.665),
    ("visual", "~~", "textual"): (0.408, 0.074, 0.459), ("visual", "~~", "speed"): (0.262, 0.056, 0.471),
    ("textual", "~~", "speed"): (0.173, 0.049, 0.283),
    ("x1", "~~", "x1"): (0.549, 0.114, 0.404), ("x2", "~~", "x2"): (1.134, 0.102, 0.821),
    ("x3", "~~", "x3"): (0.844, 0.091, 0.662), ("x4", "~~", "x4"): (0.371, 0.048, 0.275),
    ("x5", "~~", "x5"): (0.446, 0.058, 0.269), ("x6", "~~", "x6"): (0.356, 0.043, 0.298),
    ("x7", "~~", "x7"): (0.799, 0.081, 0.676), ("x8", "~~", "x8"): (0.488, 0.074, 0.477),
    ("x9", "~~", "x9"): (0.566, 0.071, 0.558), ("visual", "~~", "visual"): (0.809, 0.145, 1.000),
    ("textual", "~~", "textual"): (0.979, 0.112, 1.000), ("speed", "~~", "speed"): (0.384, 0.086, 1.000),
}
LAVAAN_HS_R2 = {"x1": 0.596, "x2": 0.179, "x3": 0.338, "x4": 0.725, "x5": 0.731, "x6": 0.702,
                "x7": 0.324, "x8": 0.523, "x9": 0.442}


def test_parameter_table_standard_errors_and_r2_match_lavaan(hs_fit):
    table = {(r["lhs"], r["op"], r["rhs"]): r for r in hs_fit["parameters"]}
    assert len(table) == 24  # 9 loadings, 9 residual variances, 3 latent variances, 3 covariances
    for key, (est, se, std) in LAVAAN_HS.items():
        row = table[key]
        assert round(row["est"], 3) == est, key
        assert round(row["se"], 3) == se, key
        assert round(row["std_all"], 3) == std, key
        assert row["z"] == pytest.approx(row["est"] / row["se"])
    marker = table[("visual", "=~", "x1")]
    assert marker["est"] == 1.0 and not marker["free"] and math.isnan(marker["se"])
    assert {k: round(v, 3) for k, v in hs_fit["r2"].items()} == LAVAAN_HS_R2
    corr = hs_fit["factor_correlations"]
    assert list(corr) == ["visual", "textual", "speed"]
    assert round(corr["visual"]["textual"], 3) == 0.459 and round(corr["speed"]["visual"], 3) == 0.471
    assert round(corr["textual"]["speed"], 3) == 0.283 and corr["speed"]["speed"] == pytest.approx(1.0)
    assert hs_fit["converged"] and not hs_fit["warning"]


@pytest.mark.parametrize("change", ["x1 / 1000", "x1 * 100", "all * 10000"])
def test_fit_does_not_depend_on_the_units(hs, change):
    # Before: x1 / 1000 gave chi2 6357.6 and CFI 0.000, x1 * 100 86.913, all * 10,000 1750.
    data = hs[[f"x{i}" for i in range(1, 10)]].copy()
    if change == "x1 / 1000":
        data["x1"] /= 1000
    elif change == "x1 * 100":
        data["x1"] *= 100
    else:
        data *= 10_000
    fit = cfa.fit_cfa(data, HS_MODEL)
    assert round(fit["chi2"], 3) == 85.306 and round(fit["cfi"], 3) == 0.931
    assert round(fit["rmsea"], 3) == 0.092 and round(fit["srmr"], 3) == 0.065
    assert fit["note"] == ""
    # Unstandardised estimates follow the units: x1 is the marker, so the visual loadings
    # of x2, x3 scale by 1 / c(x1) and x1's residual variance by c(x1)^2.
    table = {(r["lhs"], r["op"], r["rhs"]): r["est"] for r in fit["parameters"]}
    c1 = {"x1 / 1000": 1e-3, "x1 * 100": 100.0, "all * 10000": 1.0}[change]
    assert table[("visual", "=~", "x2")] == pytest.approx(0.5535 / c1, rel=1e-3)
    assert table[("x1", "~~", "x1")] == pytest.approx(0.549 * (c1 if change != "all * 10000" else 1e4) ** 2, rel=2e-3)


def _invariants(fit):
    return np.array([fit[k] for k in ("chi2", "cfi", "tli", "rmsea", "srmr")] + [x["loading"] for x in fit["loadings"]])


def test_property_random_rescalings_change_nothing_scale_free():
    """For random data and random positive rescalings of the variables, the ML fit indices and
    the standardised loadings stay the same (to 1e-4): maximum likelihood is scale invariant."""
    rng = np.random.default_rng(20261201)
    for case in range(8):
        n, k = int(rng.integers(120, 400)), int(rng.integers(1, 4))
        per = int(rng.integers(3, 5))
        names = [f"v{j}" for j in range(k * per)]
        loadings = np.kron(np.eye(k), rng.uniform(0.4, 0.9, (1, per)))
        phi = np.full((k, k), rng.uniform(0, 0.5))
        np.fill_diagonal(phi, 1.0)
        factors = rng.multivariate_normal(np.zeros(k), phi, n)
        x = factors @ loadings + rng.normal(size=(n, k * per)) * rng.uniform(0.5, 1.0, k * per)
        data = pd.DataFrame(x * rng.uniform(0.5, 2, k * per) + rng.normal(0, 5, k * per), columns=names)
        model = "\n".join(cfa.one_factor_syntax(f"f{i}", names[i * per:(i + 1) * per]) for i in range(k))
        base = cfa.fit_cfa(data, model)
        scale = 10.0 ** rng.uniform(-4, 4, len(names))
        moved = cfa.fit_cfa(data * scale + rng.normal(0, 100, len(names)), model)
        assert base["converged"] and moved["converged"], case
        assert np.allclose(_invariants(moved), _invariants(base), atol=1e-4, rtol=0, equal_nan=True), case


# --------------------------------------------------------------------------- improper solutions are named


def exact_sample(cov: np.ndarray, n: int, seed: int = 0, names=None) -> pd.DataFrame:
    """n rows whose sample covariance (divisor n) is exactly ``cov``."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, len(cov)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T, bias=True)).T)  # whiten: covariance I
    x = z @ np.linalg.cholesky(cov).T
    return pd.DataFrame(x, columns=names or [f"v{i}" for i in range(1, len(cov) + 1)])


HEYWOOD = np.array([[1, .8, .8, .3], [.8, 1, .5, .3], [.8, .5, 1, .3], [.3, .3, .3, 1]])


def test_heywood_case_is_shown_with_a_negative_variance_and_a_note():
    # The first item's implied squared loading is .8 * .8 / .5 = 1.28: no proper one-factor
    # solution. lavaan (unbounded variances, its default) gives chi2 18.008 and a residual
    # variance of -0.204 with a warning; bounding at 0 gave chi2 40.12 and an empty note.
    data = exact_sample(HEYWOOD, 200, names=list("abcd"))
    fit = cfa.fit_cfa(data, "f =~ a + b + c + d")
    assert round(fit["chi2"], 3) == 18.008 and fit["df"] == 2
    table = {(r["lhs"], r["op"], r["rhs"]): r for r in fit["parameters"]}
    assert round(table[("a", "~~", "a")]["est"], 3) == -0.204
    assert table[("f", "=~", "a")]["std_all"] > 1
    assert fit["r2"]["a"] > 1
    assert "negative residual variance: a = -0.204" in fit["note"]
    assert "standardised loading beyond 1: f =~ a" in fit["note"]
    assert fit["warning"] and fit["converged"]
    row = cfa.cfa_row("one_factor", data, "f =~ a + b + c + d", scope="g1")
    assert row["warning"] and "negative residual variance" in row["note"]


def test_latent_correlation_beyond_one_is_named():
    # Two factors that are one construct: population loadings .6, factor correlation 1.2
    # (Phi not positive definite, Sigma still is). ML reproduces the data exactly, so the
    # estimates are the population's: the correlation 1.2 must come out and be named.
    lam = np.kron(np.eye(2), np.full((3, 1), 0.6))
    phi = np.array([[1.0, 1.2], [1.2, 1.0]])
    sigma = lam @ phi @ lam.T + np.eye(6) * 0.64
    data = exact_sample(sigma, 300, names=["a1", "a2", "a3", "b1", "b2", "b3"])
    fit = cfa.fit_cfa(data, "f1 =~ a1 + a2 + a3\nf2 =~ b1 + b2 + b3")
    assert fit["chi2"] == pytest.approx(0, abs=1e-6)
    assert fit["factor_correlations"]["f1"]["f2"] == pytest.approx(1.2, abs=1e-6)
    assert "latent correlation beyond ±1: f1 ~~ f2 = 1.200" in fit["note"]
    assert "covariance matrix of the latent variables is not positive definite" in fit["note"]
    assert all(x["loading"] == pytest.approx(0.6, abs=1e-6) for x in fit["loadings"])


def test_singular_sample_covariance_is_refused_naming_the_collinear_variables(hs, tmp_path, capsys):
    # x10 = x1 + x2: lavaan refuses the data; semopy swapped in a nearby matrix (chi2 10310).
    data = hs.assign(x10=hs.x1 + hs.x2)
    model = HS_MODEL + "\nvisual =~ x10"
    with pytest.raises(DataError, match=r"x10 = 1\*x1 \+ 1\*x2"):
        cfa.fit_cfa(data, model)
    row = cfa.cfa_row("m", data, model)
    assert math.isnan(row["chi2"]) and row["warning"] and "not positive definite" in row["note"]
    path = tmp_path / "hs10.csv"
    data.to_csv(path, index=False)
    assert main(["cfa", "--data", str(path), "--model", model]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "hs10.csv" in err and "x10 = 1*x1 + 1*x2" in err and "Traceback" not in err


def test_unidentified_and_unconverged_fits_are_named(hs, monkeypatch):
    # Two two-indicator factors forced uncorrelated: each is unidentified on its own.
    fit = cfa.fit_cfa(hs, "f =~ x1 + x2\ng =~ x4 + x5\nf ~~ 0*g")
    assert "information matrix singular" in fit["note"] and fit["warning"]
    monkeypatch.setattr(cfa, "_fisher_scoring", lambda sem, x, max_iter=200: (x, False))
    fit = cfa.fit_cfa(hs, HS_MODEL)
    assert fit["note"].startswith("did not converge") and not fit["converged"]


def test_cli_prints_and_writes_the_solution(tmp_path, hs, capsys):
    data = tmp_path / "hs.csv"
    hs.to_csv(data, index=False)
    out = tmp_path / "fit.json"
    assert main(["cfa", "--data", str(data), "--model", HS_MODEL, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "factor correlations:" in printed and "R-squared:" in printed
    line = next(x for x in printed.splitlines() if x.strip().startswith("visual =~ x2"))
    assert line.split()[3:] == ["0.554", "0.100", "5.55", "0.424"]  # estimate, SE, z, std.all as lavaan
    payload = json.loads(out.read_text())
    assert {"factor_correlations", "r2", "parameters", "note"} <= set(payload)
    assert round(payload["factor_correlations"]["visual"]["textual"], 3) == 0.459
    assert round(payload["r2"]["x9"], 3) == 0.442
    se = {(r["lhs"], r["rhs"]): r["se"] for r in payload["parameters"]}
    assert round(se[("speed", "x8")], 3) == 0.165 and se[("visual", "x1")] is None  # fixed: no SE


def test_structural_model_matches_lavaan_in_any_units():
    # lavaan's SEM tutorial, PoliticalDemocracy (N = 75): measurement model, regressions and
    # residual covariances: "Test statistic 38.125, Degrees of freedom 35", and the
    # regressions' estimates and standard errors printed below. The rescaling
    # that carries estimates back to the data's units must also hold for regressions
    # between latent variables.
    from semopy.examples import political_democracy

    data = political_democracy.get_data()
    model = political_democracy.get_model()
    fit = cfa.fit_cfa(data, model)
    assert round(fit["chi2"], 3) == 38.125 and fit["df"] == 35 and fit["note"] == ""
    # Regressions: dem60 ~ ind60 1.483 (0.399); dem65 ~ ind60 0.572 (0.221); dem65 ~ dem60 0.837 (0.098).
    table = {(r["lhs"], r["op"], r["rhs"]): (round(r["est"], 3), round(r["se"], 3)) for r in fit["parameters"]}
    assert table[("dem60", "~", "ind60")] == (1.483, 0.399)
    assert table[("dem65", "~", "ind60")] == (0.572, 0.221)
    assert table[("dem65", "~", "dem60")] == (0.837, 0.098)
    rng = np.random.default_rng(5)
    moved = cfa.fit_cfa(data * 10.0 ** rng.uniform(-3, 3, data.shape[1]), model)
    assert moved["chi2"] == pytest.approx(fit["chi2"], abs=1e-6)
    std = {(r["lhs"], r["op"], r["rhs"]): r["std_all"] for r in fit["parameters"]}
    std_moved = {(r["lhs"], r["op"], r["rhs"]): r["std_all"] for r in moved["parameters"]}
    assert std.keys() == std_moved.keys() and ("dem65", "~", "dem60") in std
    assert all(std[k] == pytest.approx(std_moved[k], abs=1e-6) for k in std)


def test_one_factor_route_gives_lavaans_heywood_figures_without_semopy():
    # The same lavaan figures as the Heywood test above (chi2 18.008, residual variance
    # -0.204), reached by the closed-form one-factor route that `vp analyze` uses per scale.
    data = exact_sample(HEYWOOD, 200, names=list("abcd"))
    fit = cfa.one_factor_fit_indices(data, "f =~ a + b + c + d")
    assert round(fit["chi2"], 3) == 18.008 and fit["df"] == 2
    assert "negative residual variance: a = -0.204 (Heywood case)" in fit["note"]
    assert "standardised loading beyond 1: f =~ a" in fit["note"] and fit["warning"]


@pytest.mark.parametrize("items", [["x1", "x2", "x3", "x4", "x5", "x6"], ["x9", "x4", "x7", "x1", "x8"]])
def test_one_factor_route_equals_the_general_fit_and_factor_analyzer(hs, items):
    # The general route (fit_cfa, checked against lavaan above) and the closed-form route
    # find the same ML optimum; factor_analyzer's ML one-factor solution (another library,
    # another optimiser) gives the same chi2 = N * F_ML(L L' + Psi).
    model = "f =~ " + " + ".join(items)
    fast = cfa.one_factor_fit_indices(hs, model)
    full = cfa.fit_cfa(hs, model)
    for key in cfa.FIT_KEYS:
        assert fast[key] == pytest.approx(full[key], rel=1e-6, abs=1e-8), key
    assert fast["note"] == full["note"] and fast["warning"] == full["warning"]
    fa = pytest.importorskip("factor_analyzer").FactorAnalyzer(n_factors=1, rotation=None, method="ml")
    x = hs[items].to_numpy(float)
    r = np.corrcoef(x.T)
    fa.fit(x)
    sigma = fa.loadings_ @ fa.loadings_.T + np.diag(fa.get_uniquenesses())
    f_ml = np.linalg.slogdet(sigma)[1] + np.trace(r @ np.linalg.inv(sigma)) - np.linalg.slogdet(r)[1] - len(items)
    assert fast["chi2"] == pytest.approx(len(x) * f_ml, rel=1e-4)


def test_one_factor_route_leaves_other_models_to_the_general_fit(hs):
    assert cfa.one_factor_fit_indices(hs, HS_MODEL) is None            # three factors
    assert cfa.one_factor_fit_indices(hs, "f =~ x1 + x2") is None      # two indicators
    assert cfa.one_factor_fit_indices(hs, "f =~ x1 + x2 + x99") is None  # not in the data
    assert cfa.one_factor_fit_indices(hs, "f =~ x1 + x2 + x3\nx1 ~~ x2") is None
