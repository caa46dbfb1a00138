"""The report shows the psychometric warnings beside the numbers they concern (issue 13)."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd

from analysis.report import build_report
from tests.test_report import synthetic_processed


def _section(text: str, start: str, end: str) -> str:
    return html.unescape(text[text.index(f'id="{start}"'):text.index(f'id="{end}"')])


def test_warnings_stand_beside_the_numbers(tmp_path):
    out = synthetic_processed(tmp_path)
    rel = pd.read_csv(out / "reliability.csv", keep_default_na=False, na_values={"alpha": [""], "omega": [""]})
    rel = pd.concat([rel, pd.DataFrame([{"family": "pvq", "dimension": "Stimulation", "scope": "g10", "n_items": 2, "n": 48,
                         "alpha": -0.4147, "alpha_ci_low": -1.5, "alpha_ci_high": 0.2, "spearman_brown": -0.45,
                         "omega": np.nan,
                         "note": "negative alpha (-0.41): the items correlate negatively on average; "
                                 "two items: Spearman-Brown of r = -0.184"}])], ignore_index=True)
    rel["warning"] = rel["note"].fillna("").str.startswith("negative")
    rel.to_csv(out / "reliability.csv", index=False)
    pd.DataFrame([{"family": "pvq", "dimension": "Stimulation", "scope": "g10", "item": "3049/4", "n": 48,
                   "mean": 3.1, "sd": 1.2, "item_rest_r": -0.18, "alpha_if_dropped": np.nan, "omega_loading": np.nan}]
                 ).to_csv(out / "reliability_items.csv", index=False)
    cfa = pd.read_csv(out / "cfa_fit.csv")
    cfa.loc[1, "note"] = "negative residual variance: i4001_4 = -0.122 (Heywood case); standardised loading beyond 1: Power =~ i4001_4 = 1.032"
    cfa["warning"] = [False, True]
    cfa.to_csv(out / "cfa_fit.csv", index=False)
    efa = pd.read_csv(out / "efa_loadings.csv").assign(status="fitted")
    skipped = {"group_id": "g02", "item": "", "factor": "", "n": 48, "kmo": 0.21, "status": "skipped",
               "note": "not factored: KMO 0.21 < 0.5: the items share too little for a factor model"}
    pd.concat([efa, pd.DataFrame([skipped])]).to_csv(out / "efa_loadings.csv", index=False)

    text = build_report(out)
    instruments = _section(text, "instruments", "correlations")
    assert "1 of 2 item-bank scales carry a warning (negative alpha: 1)" in instruments
    assert "None of the 10 questionnaire scales carries a warning." in instruments
    row = re.search(r"<tr><td>PVQ values</td><td>Stimulation</td><td>g10</td>.*?</tr>", instruments)
    assert row and "-0.41" in row.group(0) and "negative alpha (-0.41)" in row.group(0)  # number and warning, one row
    assert "background:rgba(230,159,0" in row.group(0)
    assert "alpha if dropped" in instruments and "3049/4" in instruments
    factors = _section(text, "factor-analyses", "llm-profiles")
    assert "1 of 1 one-factor models carry a warning (negative residual variance (Heywood case): 1; " \
           "standardised loading beyond 1: 1)" in factors
    assert "negative residual variance: i4001_4 = -0.122" in factors
    assert "1 of 2 groups were not factored" in factors and "not factored: KMO 0.21 < 0.5" in factors
    assert "Loadings in g01" in factors and "Loadings in g02" not in factors
