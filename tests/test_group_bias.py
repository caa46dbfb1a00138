"""Group-bias statistics on a hand-made case whose answers are worked out below by hand."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis import group_bias as gb
from valueportrait.errors import InputError

V = list(gb.VALUES)  # U, B, Tr, C, S, P, A, H, St, SD (circle order)
assert V[0] == "Universalism" and V[-1] == "Self_Direction"

# Human group means (three participants each: mean + e, mean - e, mean, so the mean is exact
# and the sd is e), and two persona profiles of one model.
H_F = np.array([0.6, 0.5, 0.1, 0.0, 0.2, -0.8, -0.3, -0.1, -0.4, 0.3])
H_M = np.array([0.2, 0.3, 0.1, 0.1, 0.3, -0.4, -0.1, 0.0, -0.2, 0.4])
E_F, E_M = 0.3, 0.6
L_F = np.array([1.0, 0.45, 0.1, 0.3, 0.25, -1.2, 0.0, -0.05, -0.6, 0.4])
L_M = H_M.copy()  # the model gets men exactly right

# By hand (see the module docstring for the rules):
#   human gap h = H_F - H_M = [.4, .2, 0, -.1, -.1, -.4, -.2, -.1, -.2, -.1]
#   LLM gap   l = L_F - L_M = [.8, .15, 0, .2, -.05, -.8, .1, -.05, -.4, 0]
# With no tolerance and raw gaps (the old rule):
EXPECTED_RAW_LABELS = ["exaggerates", "attenuates", "attenuates", "reverses", "attenuates",
                       "exaggerates", "reverses", "attenuates", "exaggerates", "attenuates"]  # fmt: skip
#   sum(h l) = .32+.03+0-.02+.005+.32-.02+.005+.08+0 = .72 ; sum(h^2) = .48 -> slope 1.5
EXPECTED_SLOPE = 1.5
# One scale. Humans' spread: mean of the two group profiles (H_F + H_M) / 2 =
#   [.4, .4, .1, .05, .25, -.6, -.2, -.05, -.3, .35], mean .04, squared deviations sum .994:
S_H = math.sqrt(0.994 / 10)
# The model's: (L_F + L_M) / 2 = [.6, .375, .1, .2, .275, -.8, -.05, -.025, -.4, .4], mean .0675,
#   squared deviations .28355625 + .09455625 + .00105625 + .01755625 + .04305625 + .75255625
#   + .01380625 + .00855625 + .21855625 + .11055625 = 1.5438125:
S_L = math.sqrt(1.5438125 / 10)
#   h / S_H = [1.27, .63, 0, -.32, -.32, -1.27, -.63, -.32, -.63, -.32]
#   l / S_L = [2.04, .38, 0, .51, -.13, -2.04, .25, -.13, -1.02, 0]
# Tolerance .2: Tradition is near zero on both sides; Security, Hedonism and Self-Direction
# keep 'attenuates' (the model's gap is near zero), Conformity and Achievement still reverse.
EXPECTED_LABELS = ["exaggerates", "attenuates", "near zero", "reverses", "attenuates",
                   "exaggerates", "reverses", "attenuates", "exaggerates", "attenuates"]  # fmt: skip
EXPECTED_SLOPE_STD = EXPECTED_SLOPE * S_H / S_L
#   L_F - H_F = [.4, -.05, 0, .3, .05, -.4, .3, .05, -.2, .1]: sum of squares .5575
EXPECTED_DIST_F = math.sqrt(0.5575)
#   ranks of H_F [10,9,6,5,7,1,3,4,2,8], of L_F [10,9,5,7,6,1,4,3,2,8]: sum d^2 = 8
#   rho = 1 - 6*8 / (10*99)
EXPECTED_RHO_F = 1 - 48 / 990
T_975_DF2 = 4.302652729749464  # Student's t, 97.5th percentile, 2 df (tables: 4.303)


def _people():
    rows, demo = {}, []
    ages = {"f1": 22, "f2": 35, "f3": 61, "m1": 25, "m2": 40, "m3": 70}
    politics = {"f1": "left", "f2": "left", "f3": "centre", "m1": "centre", "m2": "right", "m3": "right"}
    for prefix, mean, e in (("f", H_F, E_F), ("m", H_M, E_M)):
        for k, shift in enumerate((e, -e, 0.0), start=1):
            rows[f"{prefix}{k}"] = mean + shift
    for pid in rows:
        demo.append({"participant_id": pid, "gender": "female" if pid[0] == "f" else "male", "age": ages[pid],
                     "education": np.nan, "politics": politics[pid], "country": np.nan})
    scores = pd.DataFrame.from_dict(rows, orient="index", columns=V)
    return scores, gb.normalise_demographics(pd.DataFrame(demo))


def test_age_bands():
    assert gb.age_band(pd.Series([18, 29, 30, 44, 45, 59, 60, 95, 17])).tolist()[:8] == [
        "18-29", "18-29", "30-44", "30-44", "45-59", "45-59", "60+", "60+"]
    assert pd.isna(gb.age_band(pd.Series([17])).iloc[0])


def test_group_profiles_means_and_t_intervals():
    scores, demo = _people()
    prof = gb.group_profiles(scores, demo)
    g = prof[prof["attribute"] == "gender"].set_index(["group", "dimension"])
    assert np.allclose(g.loc["female"].loc[V, "mean"], H_F)
    assert np.allclose(g.loc["male"].loc[V, "mean"], H_M)
    assert np.allclose(g.loc["female"]["sd"], E_F) and np.allclose(g.loc["male"]["sd"], E_M)
    # 0.6 +- t(.975, 2) * 0.3 / sqrt(3)
    half = T_975_DF2 * 0.3 / math.sqrt(3)
    assert g.loc[("female", "Universalism"), "ci_low"] == pytest.approx(0.6 - half, abs=1e-9)
    assert g.loc[("female", "Universalism"), "ci_high"] == pytest.approx(0.6 + half, abs=1e-9)
    assert (g["n"] == 3).all()
    bands = prof[prof["attribute"] == "age_band"]
    # 22, 25 -> 18-29; 35, 40 -> 30-44; 61, 70 -> 60+ (in band order, not alphabetical)
    assert list(dict.fromkeys(bands["group"])) == ["18-29", "30-44", "60+"]


def test_welch_and_anova_by_hand():
    from scipy import stats

    scores, demo = _people()
    tests = gb.group_tests(scores, demo)
    gender = tests[tests["attribute"] == "gender"].set_index("dimension")
    assert (gender["test"] == "welch_t").all()
    # Welch: se^2 = .3^2/3 + .6^2/3 = .15; t = (.6 - .2) / sqrt(.15)
    # df = .15^2 / ((.03^2 + .12^2) / 2) = .0225 / .00765
    t = 0.4 / math.sqrt(0.15)
    df = 0.0225 / 0.00765
    assert gender.loc["Universalism", "statistic"] == pytest.approx(t, rel=1e-9)
    assert gender.loc["Universalism", "p_value"] == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9)
    assert gender.loc["Universalism", "difference"] == pytest.approx(0.4)
    # Tradition has the same mean in both groups
    assert gender.loc["Tradition", "statistic"] == pytest.approx(0.0, abs=1e-12)
    # BH across the ten values: q = min over j >= rank of p_(j) * m / j
    p = gender["p_value"].to_numpy()
    order = np.argsort(p)
    ranked = p[order] * 10 / np.arange(1, 11)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    assert np.allclose(gender["q_value"].to_numpy()[order], np.minimum(q, 1))

    pol = tests[tests["attribute"] == "politics"].set_index("dimension")
    assert (pol["test"] == "anova").all() and (pol["n_groups"] == 3).all()
    # Universalism by hand: left {.9, .3}, centre {.6, .8}, right {-.4, .2}
    groups = [np.array([0.9, 0.3]), np.array([0.6, 0.8]), np.array([-0.4, 0.2])]
    grand = np.concatenate(groups).mean()
    ssb = sum(len(x) * (x.mean() - grand) ** 2 for x in groups)
    ssw = sum(((x - x.mean()) ** 2).sum() for x in groups)
    assert pol.loc["Universalism", "statistic"] == pytest.approx((ssb / 2) / (ssw / 3), rel=1e-9)
    assert pol.loc["Universalism", "eta_squared"] == pytest.approx(ssb / (ssb + ssw), rel=1e-9)


def _llm_profiles():
    rows = []
    for slug, prof in (("a-woman", L_F), ("a-man", L_M)):
        for v, x in zip(V, prof):
            rows.append({"model": f"toy__persona-{slug}", "family": "pvq", "dimension": v, "centered_mean": x,
                         "original_mean": 3.5 + x, "std_dev": 1.0, "n": 4})
    for v in V:  # a plain run of the same model, and another family: neither is a persona
        rows.append({"model": "toy", "family": "pvq", "dimension": v, "centered_mean": 0.0,
                     "original_mean": 3.5, "std_dev": 1.0, "n": 4})
    rows.append({"model": "toy__persona-a-woman", "family": "bfi", "dimension": "Openness", "centered_mean": 9.0,
                 "original_mean": 9.0, "std_dev": 1.0, "n": 4})
    return pd.DataFrame(rows)


PERSONAS = [{"slug": "a-woman", "attribute": "gender", "group": "Female", "persona": "a woman"},
            {"attribute": "gender", "group": "male", "persona": "a man"}]  # slug derived: "a-man"


def test_distances_gaps_and_summary_by_hand():
    scores, demo = _people()
    human = gb.group_profiles(scores, demo)
    lp, notes = gb.persona_profiles(_llm_profiles(), gb.load_personas(PERSONAS))
    assert notes == [] and set(lp["model"]) == {"toy"}
    dist = gb.profile_distances(human, lp).set_index("group")
    assert dist.loc["female", "euclidean"] == pytest.approx(EXPECTED_DIST_F, abs=1e-9)
    assert dist.loc["female", "spearman_rho"] == pytest.approx(EXPECTED_RHO_F, abs=1e-12)
    assert dist.loc["male", "euclidean"] == pytest.approx(0.0, abs=1e-9)
    assert dist.loc["male", "spearman_rho"] == pytest.approx(1.0)
    assert dist.loc["female", "n_humans"] == 3

    gaps = gb.gap_analysis(human, lp)
    assert set(zip(gaps["group_a"], gaps["group_b"])) == {("female", "male")}
    g = gaps.set_index("dimension").loc[V]
    assert g["label"].tolist() == EXPECTED_LABELS
    assert g["human_scale"].iloc[0] == pytest.approx(S_H, rel=1e-12) and g["llm_scale"].iloc[0] == pytest.approx(S_L, rel=1e-12)
    assert np.allclose(g["human_gap_std"], (H_F - H_M) / S_H) and np.allclose(g["llm_gap_std"], (L_F - L_M) / S_L)
    assert gb.gap_labels(g["human_gap"], g["llm_gap"]).tolist() == EXPECTED_RAW_LABELS

    summary = gb.summarise_gaps(gaps, dist.reset_index()).set_index("attribute")
    row = summary.loc["all"]
    assert (row["share_exaggerated"], row["share_reversed"], row["share_attenuated"], row["share_near_zero"]) == \
        pytest.approx((0.3, 0.2, 0.4, 0.1))
    assert row["slope"] == pytest.approx(EXPECTED_SLOPE, rel=1e-9)
    assert row["slope_std"] == pytest.approx(EXPECTED_SLOPE_STD, rel=1e-9)
    assert row["tolerance"] == gb.DEFAULT_TOLERANCE
    assert row["mean_euclidean"] == pytest.approx(EXPECTED_DIST_F / 2, abs=1e-9)
    # the standardised distance for women: |L_F / S_L - H_F / S_H|
    assert dist.loc["female", "euclidean_std"] == pytest.approx(np.linalg.norm(L_F / S_L - H_F / S_H), rel=1e-12)


def test_one_scale_removes_a_change_of_units():
    """Personas that exaggerate every human gap by 2, read on another scale (a + b * x), give a
    standardised slope of exactly 2 and the same labels whatever a and b are; the raw slope is 2b."""
    scores, demo = _people()
    human = gb.group_profiles(scores, demo, attributes=("gender",))
    everyone = (H_F + H_M) / 2  # the mean of the group profiles, as the standardisation takes it
    results = []
    for a, b in ((0.0, 1.0), (0.3, 0.25), (-1.0, 4.0)):
        rows = []
        for slug, group_mean in (("a-woman", H_F), ("a-man", H_M)):
            persona = a + b * (everyone + 2 * (group_mean - everyone))
            rows += [{"model": "toy", "slug": slug, "attribute": "gender", "group": "female" if slug == "a-woman" else "male",
                      "dimension": v, "centered_mean": x} for v, x in zip(V, persona)]
        gaps = gb.gap_analysis(human, pd.DataFrame(rows))
        summary = gb.summarise_gaps(gaps, pd.DataFrame(columns=gb.BIAS_COLUMNS)).set_index("attribute").loc["all"]
        assert summary["slope_std"] == pytest.approx(2.0, rel=1e-9)
        assert summary["slope"] == pytest.approx(2.0 * b, rel=1e-9)
        assert np.allclose(gaps["llm_gap_std"], 2 * gaps["human_gap_std"])
        results.append(gaps["label"].tolist())
    assert results[0] == results[1] == results[2]
    # a doubled gap exaggerates unless both are within the tolerance (Tradition: no gap at all)
    assert results[0] == ["near zero" if v == "Tradition" else "exaggerates" for v in V]


def test_near_zero_gaps_are_not_reversals():
    # standardised gaps: tiny opposite-signed gaps are near zero, not reversals
    labels = gb.gap_labels([0.05, -0.15, 0.5, 0.5, 0.1, -0.3], [-0.05, 0.19, -0.5, -0.1, -0.6, 0.25], tolerance=0.2)
    assert labels.tolist() == ["near zero", "near zero", "reverses", "attenuates", "exaggerates", "reverses"]
    assert gb.gap_labels([0.05], [-0.05]).tolist() == ["reverses"]  # without a tolerance it would be called one
    assert gb.gap_labels([np.nan], [0.3], tolerance=0.2).tolist() == [""]


def test_slope_does_not_depend_on_pair_order():
    h = np.array([0.4, -0.2, 0.1])
    l = np.array([0.5, 0.1, 0.3])
    one = pd.DataFrame({"model": "m", "attribute": "gender", "human_gap": h, "llm_gap": l,
                        "label": gb.gap_labels(h, l)})
    flipped = one.assign(human_gap=-h, llm_gap=-l)
    empty = pd.DataFrame(columns=gb.BIAS_COLUMNS)
    a = gb.summarise_gaps(one, empty).iloc[-1]
    b = gb.summarise_gaps(flipped, empty).iloc[-1]
    # (.2 - .02 + .03) / (.16 + .04 + .01)
    assert a["slope"] == pytest.approx(0.21 / 0.21) and b["slope"] == pytest.approx(a["slope"])
    assert a["share_reversed"] == pytest.approx(1 / 3) and b["share_reversed"] == pytest.approx(1 / 3)


def test_prolific_export_is_read(tmp_path):
    path = tmp_path / "prolific_export.csv"
    path.write_text(
        "Submission id,Participant id,Status,Time taken,Age,Sex,Country of residence\n"
        "s1,P1,APPROVED,612,34,Female,United Kingdom\n"
        "s2,P2,APPROVED,480,DATA_EXPIRED,Male,United States\n"
        "s3,P3,RETURNED,,67,CONSENT_REVOKED,\n",
        encoding="utf-8",
    )
    demo = gb.read_demographics_csv(path).set_index("participant_id")
    assert demo.loc["P1", "gender"] == "female" and demo.loc["P1", "age_band"] == "30-44"
    assert demo.loc["P1", "time_taken"] == 612 and demo.loc["P1", "country"] == "United Kingdom"
    assert pd.isna(demo.loc["P2", "age"]) and pd.isna(demo.loc["P2", "age_band"]) and demo.loc["P2", "gender"] == "male"
    assert pd.isna(demo.loc["P3", "gender"]) and demo.loc["P3", "age_band"] == "60+"


def test_bad_inputs_name_file_field_value(tmp_path):
    bad = tmp_path / "d.csv"
    bad.write_text("who,Age\nx,3\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"d\.csv: participant id"):
        gb.read_demographics_csv(bad)
    with pytest.raises(InputError, match=r"\[0\]\.attribute: 'hair'"):
        gb.load_personas([{"slug": "x", "attribute": "hair", "group": "red"}])


def test_run_group_bias_end_to_end(tmp_path):
    scores, demo = _people()
    long = scores.rename_axis("participant_id").reset_index().melt("participant_id", var_name="dimension",
                                                                    value_name="score")
    long.insert(1, "family", "pvq")
    long.to_csv(tmp_path / "scores.csv", index=False)
    # a Prolific export: the Sex column, ages as text
    pd.DataFrame({"Participant id": demo["participant_id"], "Sex": demo["gender"].str.title(),
                  "Age": demo["age"].astype(int).astype(str)}).to_csv(tmp_path / "demographics.csv", index=False)
    _llm_profiles().to_csv(tmp_path / "llm_profiles.csv", index=False)
    (tmp_path / "personas.json").write_text(json.dumps(PERSONAS), encoding="utf-8")
    tables = gb.run_group_bias(tmp_path)
    assert tables["notes"].empty
    dist = tables["group_bias"].set_index("group")
    assert dist.loc["female", "euclidean"] == pytest.approx(EXPECTED_DIST_F, abs=1e-9)
    prof = tables["group_profiles"]
    assert set(prof["source"]) == {"humans", "toy"}
    written = gb.write_group_bias(tables, tmp_path / "out")
    assert {p.name for p in written} >= {"group_profiles.csv", "group_bias.csv", "group_gaps.csv"}
    back = pd.read_csv(tmp_path / "out" / "group_gaps.csv", keep_default_na=False)
    assert back.set_index("dimension").loc[V, "label"].tolist() == EXPECTED_LABELS


def test_without_demographics_says_so(tmp_path):
    tables = gb.run_group_bias(tmp_path)
    assert tables["group_bias"].empty
    assert any("No demographics" in n for n in tables["notes"]["note"])
