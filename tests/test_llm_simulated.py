"""The simulated LLM backend: it answers in words, through the runner, and its profile is recoverable."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import instruments
from analysis.llm.bank import Item
from analysis.llm.simulated import CUTS, answer_value, latent_mean
from valueportrait.cli import main as vp

TRUE_PROFILE = {  # centred PVQ scores of the simulated respondent
    "Benevolence": 1.0, "Universalism": 0.8, "Self_Direction": 0.6, "Security": 0.3, "Conformity": 0.05,
    "Hedonism": -0.1, "Stimulation": -0.25, "Achievement": -0.4, "Tradition": -0.7, "Power": -1.2,
}


def synthetic_bank(n_items=240, seed=3):
    """Items loading on one main value (0.5..0.9) and sometimes a neighbour on the circle (0.1..0.3),
    keyed to the values with loading >= 0.3, as a study would find them."""
    rng = np.random.default_rng(seed)
    values = instruments.PVQ_VALUES
    bank = []
    for q in range(n_items // 4):
        outputs = []
        for j in range(1, 5):
            main = int(rng.integers(10))
            loadings = {values[main]: float(rng.uniform(0.5, 0.9))}
            if rng.random() < 0.5:
                loadings[values[(main + 1) % 10]] = float(rng.uniform(0.1, 0.3))
            outputs.append({"id": j, "content": f"response {j}", "true_loadings": loadings,
                            "keyed": {"pvq": [d for d, w in loadings.items() if w >= 0.3]}})
        bank.append({"portrait_id": 1000 + q, "content": {"title": f"q{q}", "text": "text"}, "outputs": outputs})
    return bank


def run_cli(tmp_path, bank, profile, *extra, name="sim"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    bank_path, profile_path = tmp_path / "bank.json", tmp_path / f"{name}_profile.json"
    bank_path.write_text(json.dumps(bank))
    profile_path.write_text(json.dumps(profile))
    status = vp(["run-llm", "--backend", "simulated", "--profile", str(profile_path), "--model", name,
                 "--item-bank", str(bank_path), "--out", str(tmp_path / "llm"), "--no-progress", *extra])
    return status, bank_path


def test_answer_mapping_by_the_fixed_cut_points():
    assert list(CUTS) == [-0.6, -0.3, 0.0, 0.3, 0.6]
    assert [answer_value(z) for z in (-2, -0.45, -0.1, 0.0, 0.1, 0.45, 0.61, 3)] == [1, 2, 3, 3, 4, 5, 6, 6]
    item = Item("1", 1, "t", "x", "r", true_loadings={"Benevolence": 0.5, "Power": 0.25})
    assert latent_mean(item, {**dict.fromkeys(instruments.PVQ_VALUES, 0.0), "Benevolence": 1.0, "Power": -2.0}) == pytest.approx(0.0)


def test_recovers_the_true_profile_through_the_bank(tmp_path, capsys):
    status, bank_path = run_cli(tmp_path, synthetic_bank(), TRUE_PROFILE, "--seed", "11")
    out = capsys.readouterr().out
    assert status == 0 and "simulated" in out and "not a language model" in out
    raw = [json.loads(line) for line in (tmp_path / "llm" / "sim_raw.jsonl").read_text().splitlines()]
    assert len(raw) == 240 * 6 and {r["backend"] for r in raw} == {"simulated"}
    assert {r["status"] for r in raw} == {"answered"}
    assert len({r["raw"] for r in raw}) > 6  # phrases wrapped in sentences and cases: the parser reads them
    profiles_path = tmp_path / "profiles.csv"
    assert vp(["score-llm", "--item-bank", str(bank_path), "--responses", str(tmp_path / "llm"),
               "--out", str(profiles_path)]) == 0
    profiles = pd.read_csv(profiles_path)
    pvq = profiles[(profiles.family == "pvq") & (profiles.model == "sim")].set_index("dimension")["centered_mean"]
    assert len(pvq) == 10
    rho = stats.spearmanr([TRUE_PROFILE[d] for d in pvq.index], pvq.to_numpy()).statistic
    assert rho >= 0.8, f"recovered profile rank-correlates {rho:.2f} with the true one"
    # the simulated variants agree with each other beyond chance, yet not perfectly (noise)
    icc = pd.read_csv(tmp_path / "llm_consistency.csv").set_index("model").loc["sim", "icc"]
    assert 0.3 < icc < 0.99


def test_deterministic_from_the_seed(tmp_path):
    bank = synthetic_bank(40)
    run_cli(tmp_path / "a", bank, TRUE_PROFILE, "--seed", "5")
    run_cli(tmp_path / "b", bank, TRUE_PROFILE, "--seed", "5")
    run_cli(tmp_path / "c", bank, TRUE_PROFILE, "--seed", "6")
    a, b, c = ((tmp_path / x / "llm" / "sim.json").read_text() for x in "abc")
    assert a == b and a != c


def test_keyed_fallback_and_persona_profile(tmp_path):
    # no true loadings: answers follow the profile on the items' keyed values (reversed keys flip)
    bank = [{"portrait_id": 3000 + q, "content": {"title": None, "text": "m"}, "outputs": [
        {"id": 1, "content": "kind", "keyed": {"pvq": ["Benevolence"]}},
        {"id": 2, "content": "bossy", "keyed": {"pvq": ["Power"]}},
        {"id": 3, "content": "meek", "keyed": {"pvq": ["Power"]}, "reversed": {"pvq": ["Power"]}},
    ]} for q in range(30)]
    profile = {"Benevolence": 1.5, "Power": -1.5}
    persona_path = tmp_path / "persona.json"
    persona_path.write_text(json.dumps({"Benevolence": -1.5, "Power": 1.5}))
    status, _ = run_cli(tmp_path, bank, profile, "--persona", "a ruthless executive",
                        "--persona-profile", str(persona_path))
    assert status == 0
    run_cli(tmp_path, bank, profile)
    plain = pd.DataFrame(json.loads((tmp_path / "llm" / "sim.json").read_text()))
    persona = pd.DataFrame(json.loads((tmp_path / "llm" / "sim__persona-a-ruthless-executive.json").read_text()))
    mean = lambda df, oid: df.loc[df.option_id == oid, "numeric_response"].mean()  # noqa: E731
    assert mean(plain, 1) > 5 and mean(plain, 2) < 2 and mean(plain, 3) > 5
    assert mean(persona, 1) < 2 and mean(persona, 2) > 5 and mean(persona, 3) < 2


def test_simulated_needs_a_profile(tmp_path, capsys):
    bank_path = tmp_path / "bank.json"
    bank_path.write_text(json.dumps(synthetic_bank(4)))
    assert vp(["run-llm", "--backend", "simulated", "--model", "s", "--item-bank", str(bank_path),
               "--out", str(tmp_path)]) == 2
    assert "--profile" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Kindness": 1.0}))
    assert vp(["run-llm", "--backend", "simulated", "--profile", str(bad), "--model", "s",
               "--item-bank", str(bank_path), "--out", str(tmp_path)]) == 2
    assert "Kindness" in capsys.readouterr().err
