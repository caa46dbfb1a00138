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
