"""How well the pipeline recovered a simulated study's known truth (`recovery.json`).

Selection is judged against the population item-value correlation under the simulation
model: a keyed pair is a true find when its population correlation is at least
`min_real` (0.1, "some real relation"); a pair is one the rule should find when its
population correlation is at least `strong` (0.3, the rule's own threshold).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

KEY = ["portrait_id", "option_id", "dimension"]


def selection_recovery(keyed: pd.DataFrame, population: pd.DataFrame, *, min_real: float = 0.1,
                       strong: float = 0.3) -> dict[str, float]:
    """Precision and recall of a set of keyed pairs against population correlations.

    Parameters
    ----------
    keyed : DataFrame
        The keyed pairs: columns ``portrait_id, option_id, dimension``.
    population : DataFrame
        Every pair considered: ``portrait_id, option_id, dimension, population_rho``.

    Returns
    -------
    dict with ``precision`` = share of keyed pairs whose population rho >= `min_real`
    (NaN when nothing is keyed), ``recall`` = share of pairs with population rho >= `strong`
    that were keyed (NaN when there are none), and the counts behind them.
    """
    pop = population.assign(portrait_id=population["portrait_id"].astype(str))
    marks = keyed[KEY].assign(portrait_id=keyed["portrait_id"].astype(str), keyed=True).drop_duplicates(KEY)
    merged = pop.merge(marks, on=KEY, how="left")
    merged["keyed"] = merged["keyed"].astype("boolean").fillna(False).astype(bool)
    unknown = len(marks) - int(merged["keyed"].sum())
    if unknown:
        raise ValueError(f"{unknown} keyed pairs are not among the population pairs")
    n_keyed = int(merged["keyed"].sum())
    real = merged["population_rho"] >= min_real
    should = merged["population_rho"] >= strong
    return {
        "precision": float((merged["keyed"] & real).sum() / n_keyed) if n_keyed else float("nan"),
        "recall": float((merged["keyed"] & should).sum() / should.sum()) if should.any() else float("nan"),
        "keyed": n_keyed,
        "true_positives": int((merged["keyed"] & real).sum()),
        "strong_pairs": int(should.sum()),
    }


def score_recovery(estimated: pd.DataFrame, true: pd.DataFrame) -> pd.Series:
    """Per dimension, Pearson r between estimated and true scores over the shared participants."""
    shared = estimated.index.intersection(true.index)
    dims = [d for d in true.columns if d in estimated.columns]
    est = estimated.loc[shared, dims].to_numpy(float)
    tru = true.loc[shared, dims].to_numpy(float)
    ok = ~(np.isnan(est) | np.isnan(tru)).any(axis=1)
    est, tru = est[ok], tru[ok]
    est = (est - est.mean(0)) / est.std(0)
    tru = (tru - tru.mean(0)) / tru.std(0)
    return pd.Series((est * tru).mean(0), index=dims)


def profile_rank_corr(recovered: pd.Series, true: pd.Series) -> float:
    """Spearman correlation between a recovered and a true value profile (shared dimensions)."""
    dims = [d for d in true.index if d in recovered.index and pd.notna(recovered[d])]
    return float(stats.spearmanr(recovered[dims].to_numpy(float), true[dims].to_numpy(float))[0])
