"""Did people's ratings confirm the value a response was written to express?

Candidate responses are written to lean on one Schwartz value (``vp generate-items``, the
default study's items, the simulator's valid items). After a study, an item *confirms* its
intended value when that value is among the item's keyed PVQ dimensions, and *points to* it
when the intended value is the one its ratings correlate with most. With ten values, an
item pointing to its intended value by chance would do so one time in ten.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import instruments as inst

COLUMNS = ["group_id", "portrait_id", "option_id", "intended_value", "intended_rho", "intended_rank",
           "top_value", "top_rho", "keyed_values", "confirmed", "points_to_intended"]


def intended_values(items: pd.DataFrame) -> pd.DataFrame:
    """``portrait_id, option_id, intended_value`` from the items' meta (``intended_value`` or ``value``)."""
    values = [m.get("intended_value") or m.get("value") if isinstance(m, dict) else None for m in items["meta"]]
    out = items[["portrait_id", "option_id"]].assign(intended_value=values)
    return out[out["intended_value"].isin(inst.PVQ_VALUES)].reset_index(drop=True)


def intended_value_check(intended: pd.DataFrame, correlations: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """One row per item with an intended PVQ value (see the module docstring for the terms).

    ``intended_rank`` is 1 when the intended value has the item's highest rho of the ten
    values (ties share the lowest rank); ``keyed_values`` lists the item's keyed PVQ values.
    """
    pvq = correlations[correlations["family"] == "pvq"]
    wide = pvq.pivot_table(index=["group_id", "portrait_id", "option_id"], columns="dimension", values="rho",
                           aggfunc="first")[list(inst.PVQ_VALUES)]
    wide = wide.reset_index().merge(intended, on=["portrait_id", "option_id"])
    if wide.empty:
        return pd.DataFrame(columns=COLUMNS)
    rho = wide[list(inst.PVQ_VALUES)].to_numpy(float)
    column = np.array([inst.PVQ_VALUES.index(v) for v in wide["intended_value"]])
    own = rho[np.arange(len(rho)), column]
    keyed = (selection[selection["family"] == "pvq"].groupby(["portrait_id", "option_id"])["dimension"]
             .agg(lambda d: ";".join(sorted(d))).rename("keyed_values"))
    out = wide[["group_id", "portrait_id", "option_id", "intended_value"]].assign(
        intended_rho=own,
        intended_rank=1 + (np.nan_to_num(rho, nan=-np.inf) > own[:, None]).sum(axis=1),
        top_value=np.array(inst.PVQ_VALUES)[np.nanargmax(np.nan_to_num(rho, nan=-np.inf), axis=1)],
        top_rho=np.nanmax(rho, axis=1),
    ).merge(keyed, left_on=["portrait_id", "option_id"], right_index=True, how="left")
    out["keyed_values"] = out["keyed_values"].fillna("")
    out["confirmed"] = [v in k.split(";") for v, k in zip(out["intended_value"], out["keyed_values"])]
    out["points_to_intended"] = out["intended_rank"] == 1
    return out[COLUMNS]


def summary(check: pd.DataFrame) -> dict:
    """Counts and shares over the items with an intended value."""
    n = len(check)
    return {
        "items": n,
        "confirmed": int(check["confirmed"].sum()),
        "points_to_intended": int(check["points_to_intended"].sum()),
        "share_confirmed": float(check["confirmed"].mean()) if n else float("nan"),
        "share_points_to_intended": float(check["points_to_intended"].mean()) if n else float("nan"),
        "chance_points_to_intended": 1 / len(inst.PVQ_VALUES),
    }
