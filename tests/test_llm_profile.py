"""`vp score-llm`: the value profile definition by hand, and the release's three models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.llm.bank import parse_bank
from analysis.llm.profile import (
    LOW_CONSISTENCY, bootstrap_profile, item_answers, key_table, load_responses, parse_responses, score_models,
    score_profile, variant_consistency,
)
from valueportrait.cli import main as vp
from valueportrait.errors import InputError

from conftest import RELEASE, SKIP_REASON  # noqa: E402  (the shared copy, or `vp fetch-release --for-tests`'s)
MODELS = ["claude-3-5-sonnet-20241022", "gpt-4o-2024-11-20", "llama-3.1-8b-instruct"]


def _out(pid, oid, text="r"):
    return {"id": oid, "content": text}


# A-G as in the hand computation below.
HAND_BANK = [
    {"portrait_id": 1001, "content": {"title": "t", "text": "x"}, "outputs": [
        {**_out(1001, 1), "keyed": {"pvq": ["Benevolence"]}},                                   # A
        {**_out(1001, 2), "keyed": {"pvq": ["Benevolence", "Universalism"]}},                   # B
    ]},
    {"portrait_id": "3001", "content": {"title": None, "text": "x"}, "outputs": [
        {**_out(3001, 1), "keyed": {"pvq": ["Power"]}},                                         # C
        {**_out(3001, 2), "keyed": {"higher_pvq": ["Self_Enhancement"]}},                        # D
    ]},
    {"portrait_id": 1002, "content": {"title": "t", "text": "x"}, "outputs": [
        {**_out(1002, 1), "keyed": {"pvq": ["Power"]}, "reversed": {"pvq": ["Power"]}},         # F (rho < 0)
        {**_out(1002, 2), "keyed": {"pvq": ["Tradition"]}},                                      # G: never answered
    ]},
]
HAND_ANSWERS = [
    {"portrait_id": 1001, "option_id": 1, "numeric_response": 5.0},                                       # A = 5
    {"portrait_id": "1001", "option_id": 2, "numeric_response": None,
     "version_responses": {"v1": 6.0, "v1_reversed": 6.0, "v2": None}},                                # B = 6
    {"portrait_id": 3001, "option_id": 1, "numeric_response": 2.0},                                       # C = 2
    {"portrait_id": 3001, "option_id": 2, "numeric_response": 3.0},                                       # D = 3
    {"portrait_id": 1002, "option_id": 1, "numeric_response": 5.0},                                       # F = 5
    {"portrait_id": 9999, "option_id": 1, "numeric_response": 4.0},                                       # not in the bank
]


def _profile(keying):
    profiles, consistency = score_models(parse_bank(HAND_BANK), {"hand": parse_responses(HAND_ANSWERS, "hand")}, keying)
    return profiles.set_index(["family", "dimension"]), consistency.iloc[0]


def test_hand_computed_profile_pos_keying():
    # pos: F's only key is reversed, so F is left out. PVQ family items answered: A, B, C
    # (each once): m = (5 + 6 + 2) / 3 = 13/3.
    p, c = _profile("pos")
    ben = p.loc[("pvq", "Benevolence")]  # A, B: mean 5.5, SD sqrt(((5-5.5)^2 + (6-5.5)^2) / 1) = sqrt(0.5)
    assert ben.original_mean == pytest.approx(5.5) and ben.std_dev == pytest.approx(math.sqrt(0.5)) and ben.n == 2
    assert ben.centered_mean == pytest.approx(5.5 - 13 / 3)            # 1.1667
    uni = p.loc[("pvq", "Universalism")]  # B only: SD of one value is undefined
    assert uni.centered_mean == pytest.approx(6 - 13 / 3) and uni.n == 1 and math.isnan(uni.std_dev)
    assert p.loc[("pvq", "Power")].centered_mean == pytest.approx(2 - 13 / 3) and p.loc[("pvq", "Power")].n == 1
    trad = p.loc[("pvq", "Tradition")]   # G is keyed but unanswered
    assert trad.n == 0 and math.isnan(trad.centered_mean)
    se = p.loc[("higher_pvq", "Self_Enhancement")]  # D alone in its family: 3 - 3
    assert se.original_mean == 3 and se.centered_mean == 0
    assert list(p.loc["pvq"].index) == ["Universalism", "Benevolence", "Tradition", "Power"]  # circle order
    assert c.n_not_in_bank == 1 and c.n_bank_missing == 1


def test_hand_computed_profile_abs_keying():
    # abs: F counts for Power reversed (7 - 5 = 2). PVQ items A, B, C, F: m = (5+6+2+5)/4 = 4.5.
    p, _ = _profile("abs")
    assert p.loc[("pvq", "Benevolence")].centered_mean == pytest.approx(5.5 - 4.5)
    assert p.loc[("pvq", "Universalism")].centered_mean == pytest.approx(6 - 4.5)
    power = p.loc[("pvq", "Power")]
    # oriented answers C = 2, F = 7 - 5 = 2; half the items reversed, so the reference is
    # 0.5 * 4.5 + 0.5 * (7 - 4.5) = 3.5, and = mean(+(2 - 4.5), -(5 - 4.5)) = -1.5
    assert power.original_mean == 2 and power.std_dev == 0 and power.n == 2
    assert power.centered_mean == pytest.approx(-1.5)


def test_flat_answers_score_zero_whatever_the_keying():
    answers = [{**a, "numeric_response": 4.0, "version_responses": {}} for a in HAND_ANSWERS]
    for keying in ("pos", "abs"):
        profiles, _ = score_models(parse_bank(HAND_BANK), {"flat": parse_responses(answers, "f")}, keying)
        assert np.allclose(profiles["centered_mean"].dropna(), 0.0)


# ------------------------------------------------------------ the release's three models


@pytest.fixture(scope="module")
def release_bank(tmp_path_factory):
    """A bank from the release built here, independently of `vp analyze`: Spearman's rho
    of each item's ratings with the raters' scores (scipy), keyed at rho >= 0.3, p < 0.05."""
    if not RELEASE.exists():
        pytest.skip(SKIP_REASON)
    survey = json.loads((RELEASE / "data/prolific/survey/main/survey.json").read_text())
    values = json.loads((RELEASE / "data/prolific/value/main/value.json").read_text())
    texts = json.loads((RELEASE / "data/query-response-tagged/query-response-tagged.json").read_text())
    families = {f: list(next(iter(values.values()))[f]) for f in ("pvq", "higher_pvq", "bfi")}
    keyed = {}
    for group in survey:
        for pid, options in group.items():
            for opt in options:
                raters = [(r, p) for r, p in opt["data"] if p in values]
                ratings = np.array([r for r, _ in raters], float)
                k = keyed.setdefault((str(pid), opt["option_id"]), {})
                for fam, dims in families.items():
                    scores = np.array([[values[p][fam][d] for d in dims] for _, p in raters])
                    res = stats.spearmanr(np.column_stack([ratings, scores]))
                    k[fam] = [d for d, rho, pv in zip(dims, res.statistic[0, 1:], res.pvalue[0, 1:]) if rho >= 0.3 and pv < 0.05]
    bank = []
    for q in texts:
        outs = [{**o, "keyed": keyed[(str(q["portrait_id"]), o["id"])]} for o in q["outputs"]
                if any(keyed[(str(q["portrait_id"]), o["id"])].values())]
        if outs:
            bank.append({"portrait_id": q["portrait_id"], "content": q["content"], "outputs": outs})
    path = tmp_path_factory.mktemp("bank") / "item_bank.json"
    path.write_text(json.dumps(bank))
    return path, bank


@pytest.fixture(scope="module")
def release_scores(release_bank, tmp_path_factory):
    out = tmp_path_factory.mktemp("scores") / "llm_profiles.csv"
    status = vp(["score-llm", "--item-bank", str(release_bank[0]),
                 "--responses", str(RELEASE / "lm_evaluation/average_outputs"), "--out", str(out)])
    assert status == 0
    return pd.read_csv(out), pd.read_csv(out.with_name("llm_consistency.csv"))


def test_release_profile_equals_an_independent_pandas_computation(release_bank, release_scores):
    _, bank = release_bank
    profiles, consistency = release_scores
    assert sorted(profiles["model"].unique()) == MODELS
    assert list(profiles.columns)[:7] == ["model", "family", "dimension", "centered_mean", "original_mean", "std_dev", "n"]
    assert list(profiles.columns)[7:] == ["ci_low", "ci_high"]  # added at the end: the contract's columns come first
    inside = profiles.dropna(subset=["ci_low"])
    assert len(inside) > 0.9 * len(profiles)
    assert ((inside["ci_low"] <= inside["centered_mean"]) & (inside["centered_mean"] <= inside["ci_high"])).all()
    answers = pd.DataFrame(json.loads((RELEASE / "lm_evaluation/average_outputs/gpt-4o-2024-11-20_averaged_results.json").read_text()))
    answers["portrait_id"] = answers["portrait_id"].astype(str)
    a = answers.set_index(["portrait_id", "option_id"])["numeric_response"]
    keyed = pd.DataFrame([(str(q["portrait_id"]), o["id"], fam, d) for q in bank for o in q["outputs"]
                          for fam, dims in o["keyed"].items() for d in dims],
                         columns=["portrait_id", "option_id", "family", "dimension"])
    keyed["a"] = a.loc[list(zip(keyed.portrait_id, keyed.option_id))].to_numpy()
    got = profiles[profiles["model"] == "gpt-4o-2024-11-20"].set_index(["family", "dimension"])
    assert len(got) == keyed[["family", "dimension"]].drop_duplicates().shape[0]
    for fam, sub in keyed.groupby("family"):
        family_mean = sub.drop_duplicates(["portrait_id", "option_id"])["a"].mean()
        for dim, d in sub.groupby("dimension"):
            row = got.loc[(fam, dim)]
            assert row.n == len(d)
            assert row.original_mean == pytest.approx(d["a"].mean(), abs=1e-5)
            assert row.centered_mean == pytest.approx(d["a"].mean() - family_mean, abs=1e-5)
            if len(d) > 1:
                assert row.std_dev == pytest.approx(d["a"].std(ddof=1), abs=1e-5)
    n_bank = sum(len(q["outputs"]) for q in bank)
    assert (consistency["n_not_in_bank"] == 520 - n_bank).all() and (consistency["n_bank_missing"] == 0).all()


def _variants(model):
    data = json.loads((RELEASE / f"lm_evaluation/average_outputs/{model}_averaged_results.json").read_text())
    return pd.DataFrame([{**r["version_responses"], "item": f"{r['portrait_id']}/{r['option_id']}"} for r in data]).set_index("item")


def test_release_consistency_against_anova_and_scipy(release_bank, release_scores):
    _, bank = release_bank
    _, consistency = release_scores
    in_bank = {f"{q['portrait_id']}/{o['id']}" for q in bank for o in q["outputs"]}
    for model in MODELS:
        wide = _variants(model).loc[sorted(in_bank)].astype(float)
        row = consistency.set_index("model").loc[model]
        # ICC(C,1) of Shrout & Fleiss (ICC3) from the two-way ANOVA mean squares, by hand
        y = wide.dropna().to_numpy()
        n, k = y.shape
        gm = y.mean()
        ss_rows = k * ((y.mean(axis=1) - gm) ** 2).sum()
        ss_cols = n * ((y.mean(axis=0) - gm) ** 2).sum()
        ss_err = ((y - gm) ** 2).sum() - ss_rows - ss_cols
        ms_rows, ms_err = ss_rows / (n - 1), ss_err / ((n - 1) * (k - 1))
        assert row.icc_type == "ICC(C,1)" and row.n_items == n
        assert row.icc == pytest.approx((ms_rows - ms_err) / (ms_rows + (k - 1) * ms_err), abs=1e-5)
        # ICC(C,k) of the k-variant average the profile uses: (MS_rows - MS_err) / MS_rows
        assert row.icc_k_type == "ICC(C,k)" and row.n_variants == k == 6
        assert row.icc_k == pytest.approx((ms_rows - ms_err) / ms_rows, abs=1e-5)
        given = wide[["v1", "v2", "v3"]].mean(axis=1)
        reversed_ = wide[["v1_reversed", "v2_reversed", "v3_reversed"]].mean(axis=1)
        ok = given.notna() & reversed_.notna()
        t = stats.ttest_rel(given[ok], reversed_[ok])
        assert row.order_bias == pytest.approx((given[ok] - reversed_[ok]).mean(), abs=1e-5)
        assert row.order_bias_t == pytest.approx(t.statistic, rel=1e-4)
        assert row.order_bias_p == pytest.approx(t.pvalue, rel=1e-3)
        assert row.order_bias_wilcoxon_p == pytest.approx(stats.wilcoxon(given[ok] - reversed_[ok]).pvalue, rel=1e-3)


def test_folder_of_run_llm_outputs(tmp_path):
    folder = tmp_path / "llm"
    folder.mkdir()
    (folder / "m1.json").write_text(json.dumps(HAND_ANSWERS))
    (folder / "m1_raw.jsonl").write_text("{}\n")
    (folder / "m2__persona-old-man.json").write_text(json.dumps(HAND_ANSWERS[:3]))
    (folder / "llm_cache.sqlite").write_bytes(b"SQLite format 3\x00")
    (folder / "notes.json").write_text(json.dumps({"not": "answers"}))
    notes = []
    found = load_responses([folder], notes)
    assert sorted(found) == ["m1", "m2__persona-old-man"] and any("notes.json" in n for n in notes)
    with pytest.raises(InputError, match="also read from"):
        load_responses([folder, folder / "m1.json"])
    with pytest.raises(InputError, match="notes.json"):
        load_responses([folder / "notes.json"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"portrait_id": 1, "option_id": 1, "numeric_response": "five"}]))
    with pytest.raises(InputError, match="'five'"):
        load_responses([bad])
    bad.write_text(json.dumps([{"portrait_id": 1, "option_id": 1, "version_responses": {"v1": 7}}]))
    with pytest.raises(InputError, match="v1: 7 is outside 1..6"):
        load_responses([bad])


# ------------------------------------------------------------ ICC(C,k) and the bootstrap intervals

# Shrout & Fleiss (1979), Table 2: six targets rated by four judges. Their Table 4 gives
# ICC(3,1) = .71 and ICC(3,4) = .91; psych's ICC() prints ICC3 0.71 [0.34, 0.95] and
# ICC3k 0.91 [0.68, 0.99] for the same data.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)


def _long(matrix, variants):
    return pd.DataFrame([{"portrait_id": "1001", "option_id": i + 1, "variant": v, "value": matrix[i, j]}
                         for i in range(matrix.shape[0]) for j, v in enumerate(variants)])


def test_icc_single_and_average_against_shrout_fleiss():
    # Rescaled to the 1..6 answer scale: an ICC does not change under a linear change of units.
    scaled = 1 + 5 * (SHROUT_FLEISS - 1) / 9
    c = variant_consistency(_long(scaled, ["v1", "v2", "v1_reversed", "v2_reversed"]))
    assert c["icc_type"] == "ICC(C,1)" and c["icc_k_type"] == "ICC(C,k)" and c["n_variants"] == 4 and c["n_items"] == 6
    assert round(c["icc"], 2) == 0.71 and round(c["icc_k"], 2) == 0.91
    assert (c["icc_ci_low"], c["icc_ci_high"]) == pytest.approx((0.34, 0.95), abs=0.005)
    assert (c["icc_k_ci_low"], c["icc_k_ci_high"]) == pytest.approx((0.68, 0.99), abs=0.005)
    # by hand from the two-way ANOVA: F = MS_targets / MS_error = 11.027 (Shrout & Fleiss: 11.03)
    y = SHROUT_FLEISS
    n, k = y.shape
    ms_t = k * ((y.mean(axis=1) - y.mean()) ** 2).sum() / (n - 1)
    ss_j = n * ((y.mean(axis=0) - y.mean()) ** 2).sum()
    ms_e = (((y - y.mean()) ** 2).sum() - ms_t * (n - 1) - ss_j) / ((n - 1) * (k - 1))
    assert ms_t / ms_e == pytest.approx(11.027, abs=1e-3)
    assert c["icc_k"] == pytest.approx(1 - ms_e / ms_t, abs=1e-9)
    # the Spearman-Brown step from one variant to the average of k
    assert c["icc_k"] == pytest.approx(k * c["icc"] / (1 + (k - 1) * c["icc"]), abs=1e-9)
    # ICC(C,k) is Cronbach's alpha over the variants (pingouin's alpha, a different routine)
    import pingouin as pg
    assert c["icc_k"] == pytest.approx(pg.cronbach_alpha(pd.DataFrame(scaled))[0], abs=1e-9)
    assert c["icc_k"] >= LOW_CONSISTENCY


class _AllOnce:
    """A stand-in generator whose only 'resample' draws every item exactly once."""

    def multinomial(self, n, pvals, size):
        return np.ones((size, n), dtype=int)


def test_bootstrap_of_the_whole_sample_is_the_estimate():
    for keying in ("pos", "abs"):
        items = parse_bank(HAND_BANK)
        answers = item_answers(parse_responses(HAND_ANSWERS, "hand"))
        keys = key_table(items, keying)
        point = score_profile(answers, keys)
        ci = bootstrap_profile(answers, keys, n_boot=3, rng=_AllOnce())
        ok = point["n"] > 0
        assert np.allclose(ci.loc[ok, "ci_low"], point.loc[ok, "centered_mean"])
        assert np.allclose(ci.loc[ok, "ci_high"], point.loc[ok, "centered_mean"])
        assert ci.loc[~ok, "ci_low"].isna().all()  # Tradition: keyed, never answered


def test_bootstrap_interval_against_scipy():
    """Our vectorised resampling against scipy.stats.bootstrap (percentile) on the same items."""
    rng = np.random.default_rng(5)
    n = 60
    values = ["Benevolence", "Power", "Tradition"]
    bank, answers, key_rows = [], [], []
    for i in range(n):
        dims = [values[i % 3]] + ([values[(i + 1) % 3]] if i % 5 == 0 else [])
        bank.append({"portrait_id": 2000 + i, "content": {"title": "t", "text": "x"},
                     "outputs": [{"id": 1, "content": "r", "keyed": {"pvq": dims}}]})
        a = float(np.clip(np.round(3.5 + (1.0 if dims[0] == "Benevolence" else -0.5) + rng.normal(0, 1.2)), 1, 6))
        answers.append({"portrait_id": 2000 + i, "option_id": 1, "numeric_response": a})
        key_rows.append((a, [v in dims for v in values]))
    a = np.array([r[0] for r in key_rows])
    k = np.array([r[1] for r in key_rows], float)
    items = parse_bank(bank)
    ans = item_answers(parse_responses(answers, "sim"))
    ours = bootstrap_profile(ans, key_table(items), n_boot=20000, rng=np.random.default_rng(1)).set_index("dimension")

    def centred(idx, d):
        idx = np.asarray(idx, int)
        keyed = k[idx, d] > 0
        return a[idx][keyed].mean() - a[idx].mean()

    for d, value in enumerate(values):
        res = stats.bootstrap((np.arange(n),), lambda idx: centred(idx, d), vectorized=False, method="percentile",
                              n_resamples=20000, random_state=np.random.default_rng(2))
        ci = res.confidence_interval
        # intervals ~0.7 wide; Monte Carlo and the answers' discreteness move the ends by < .01
        assert ours.loc[value, "ci_low"] == pytest.approx(ci.low, abs=0.02), value
        assert ours.loc[value, "ci_high"] == pytest.approx(ci.high, abs=0.02), value
        point = centred(np.arange(n), d)
        assert ours.loc[value, "ci_low"] < point < ours.loc[value, "ci_high"]


def test_negative_bootstrap_is_refused_in_one_line(tmp_path, capsys):
    bank = tmp_path / "bank.json"
    bank.write_text(json.dumps(HAND_BANK))
    answers = tmp_path / "hand.json"
    answers.write_text(json.dumps(HAND_ANSWERS))
    out = tmp_path / "p.csv"
    assert vp(["score-llm", "--item-bank", str(bank), "--responses", str(answers), "--out", str(out),
               "--bootstrap", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "argument --bootstrap: -1 is not a whole number >= 0" in err and "\n" not in err and not out.exists()
    assert vp(["score-llm", "--item-bank", str(bank), "--responses", str(answers), "--out", str(out),
               "--bootstrap", "0"]) == 0
    assert pd.read_csv(out)[["ci_low", "ci_high"]].isna().all().all()  # 0 switches the intervals off


@pytest.mark.parametrize("seed", range(4))
def test_consistency_icc_equals_pingouin_intraclass_corr(seed):
    # The hand-written two-way ANOVA ICCs against pingouin's intraclass_corr (which rounds
    # its interval to 2 decimals) on random targets x raters tables.
    pg = pytest.importorskip("pingouin")
    from analysis.llm.profile import consistency_icc

    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(5, 300)), int(rng.integers(2, 8))
    y = np.clip(np.round(3.5 + rng.normal(size=(n, 1)) + 0.8 * rng.normal(size=(n, k)) + rng.normal(size=k)), 1, 6)
    long = pd.DataFrame({"t": np.repeat(np.arange(n), k), "r": np.tile(np.arange(k), n), "v": y.ravel()})
    ref = pg.intraclass_corr(long, targets="t", raters="r", ratings="v").set_index("Type")
    ours = consistency_icc(y)
    for kind in ("ICC(C,1)", "ICC(C,k)"):
        icc, low, high = ours[kind]
        assert icc == pytest.approx(ref.loc[kind, "ICC"], abs=1e-12)
        assert (round(low, 2), round(high, 2)) == pytest.approx(tuple(ref.loc[kind, "CI95"]), abs=1e-9)
