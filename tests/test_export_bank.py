"""`vp export-bank`: every format carries run-llm's prompts and parser, and gives run-llm's profile.

The outside figures: the statistics written into the analysis tables by the test (the
export must carry them unchanged), `datasets` reading the parquet back, Inspect running the
exported task on its mock model and lm-evaluation-harness loading and running the exported
task with its own task loader, both against the answers our runner gets from the loopback
server for the same questions.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_server import FakeLLM, LoopbackServer, question_key  # noqa: E402

from analysis.llm.bank import load_bank  # noqa: E402
from analysis.llm.client import OpenAIBackend  # noqa: E402
from analysis.llm.export import PARSER_SOURCE, export_bank  # noqa: E402
from analysis.llm.profile import load_responses, score_models, score_profile, key_table  # noqa: E402
from analysis.llm.prompts import load_prompts  # noqa: E402
from analysis.llm.runner import run_llm  # noqa: E402
from valueportrait.cli import main as vp  # noqa: E402
from valueportrait.errors import InputError  # noqa: E402

PROMPTS = load_prompts()
# inspect_ai 0.3.285 passes tenacity a keyword tenacity deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The 'initial' parameter is deprecated:DeprecationWarning")
PVQ = ["Universalism", "Benevolence", "Tradition", "Conformity", "Security", "Power", "Achievement", "Hedonism",
       "Stimulation", "Self_Direction"]


def make_study(folder: Path, n_queries: int = 6, texts: dict | None = None) -> Path:
    """A bank (several keys per item, a reversed key) and the analysis tables beside it; returns the bank's path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    bank, corr, rep = [], [], []
    for q in range(n_queries):
        pid = str((1000 if q % 2 == 0 else 3000) + q)
        outputs = []
        for oid in (1, 2, 3):
            dims = [PVQ[(q + oid) % 10], PVQ[(q + 2 * oid + 3) % 10]]
            keyed = {"pvq": dims, "higher_pvq": ["Self_Transcendence"] if oid == 2 else [], "bfi": []}
            out = {"id": oid, "content": (texts or {}).get((pid, oid), f"response {oid} to query {pid}"),
                   "correlations": [[d, 0.4] for d in dims], "keyed": keyed}
            if oid == 3:
                out["reversed"] = {"pvq": [dims[1]]}
            outputs.append(out)
            for fam, ds in keyed.items():
                for d in ds:
                    rho = float(np.round(rng.uniform(0.3, 0.6), 6)) * (-1 if oid == 3 and d == dims[1] else 1)
                    corr.append(dict(group_id="g01", portrait_id=pid, option_id=oid, family=fam, dimension=d, rho=rho,
                                     p_value=0.01, q_value=float(np.round(rng.uniform(0.05, 0.9), 6)), n=44 + q,
                                     ci_low=rho - 0.25, ci_high=rho + 0.2))
                    rep.append(dict(group_id="g01", portrait_id=pid, option_id=oid, family=fam, dimension=d,
                                    times_selected=10 + q, replication_rate=0.1, heldout_rho_mean=rho / 3,
                                    selected_rho_mean=rho + 0.1, full_rho=rho, keyed_full=True))
        title = (texts or {}).get((pid, "title"), f"title {pid}")
        bank.append({"portrait_id": pid, "content": {"title": title if pid < "3" else None,
                                                     "text": (texts or {}).get((pid, "text"), f"text of query {pid}")},
                     "outputs": outputs})
    path = folder / "item_bank.json"
    path.write_text(json.dumps(bank))
    pd.DataFrame(corr).to_csv(folder / "correlations.csv", index=False)
    pd.DataFrame(rep).to_csv(folder / "replication.csv", index=False)
    manifest = {"version": "0.1.0", "study_id": "hand", "study_source": "test", "input_sha256": "abc",
                "settings": {"threshold": 0.3, "alpha": 0.05, "keying": "abs", "ci_method": "bootstrap percentile",
                             "ci_level": 0.95},
                "counts": {"included_participants": 45, "excluded_participations": 3, "groups": 1, "items": 18,
                           "keyed": {"pvq": {"pairs": 180, "keyed_pairs": 36, "keyed_items": 18}}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return path


# ------------------------------------------------------------------ hf


def test_hf_export_round_trips_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    bank_path = make_study(tmp_path / "processed")
    out = tmp_path / "hf"
    assert vp(["export-bank", "--item-bank", str(bank_path), "--format", "hf", "--out", str(out), "--license", "mit"]) == 0
    cache = str(tmp_path / "hf-cache")
    loaded = datasets.load_dataset("parquet", data_dir=str(out), cache_dir=cache)["test"]
    via_card = datasets.load_dataset(str(out), cache_dir=cache)["test"]  # the split from the file name, as on the Hub
    items = load_bank(bank_path)
    assert len(loaded) == len(via_card) == len(items) * 6 == 108
    corr = pd.read_csv(bank_path.parent / "correlations.csv", dtype={"portrait_id": str})
    rep = pd.read_csv(bank_path.parent / "replication.csv", dtype={"portrait_id": str})
    stats = corr.merge(rep, on=["portrait_id", "option_id", "family", "dimension"]).set_index(
        ["portrait_id", "option_id", "family", "dimension"])
    by_key = {it.key: it for it in items}
    for row in loaded:
        item = by_key[(row["portrait_id"], row["option_id"])]
        assert row["prompt"] == PROMPTS.messages(item, row["variant"])[0]["content"]
        assert row["messages"] == PROMPTS.messages(item, row["variant"])
        assert row["options"] == PROMPTS.options(row["variant"])
        assert row["option_values"] == ([1, 2, 3, 4, 5, 6] if row["variant"].endswith("_reversed") else [6, 5, 4, 3, 2, 1])
        assert (row["query"], row["response"], row["title"]) == (item.text, item.response, item.title)
        keyed = {(k["family"], k["dimension"]) for k in row["keys"]}
        assert keyed == {(f, d) for f, ds in item.keyed.items() for d in ds}
        for key in row["keys"]:
            s = stats.loc[(row["portrait_id"], row["option_id"], key["family"], key["dimension"])]
            assert key["rho"] == s.rho and key["q_value"] == s.q_value and key["n"] == s.n
            assert (key["ci_low"], key["ci_high"]) == (s.ci_low, s.ci_high)
            assert key["heldout_rho"] == s.heldout_rho_mean and key["times_selected"] == s.times_selected
            assert key["direction"] == ("reversed" if key["dimension"] in item.reversed.get(key["family"], ()) else "positive")
            assert (key["sign"] < 0) == (key["rho"] < 0)  # the reversed keys are the negative ones written above
    assert [r["variant"] for r in loaded][:6] == PROMPTS.variants
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "mit" and header["size_categories"] == ["n<1K"]
    assert "multiple-choice" in header["task_categories"] and header["language"] == ["en"]
    for section in ("## How the items were validated", "## Known limitations", "## Citation", "han-etal-2025-value",
                    "No permutation baseline was found", "expected by chance (analytic)", "|rho| >= 0.3 and p < 0.05", "45 raters passed quality control"):
        assert section in card, section


def test_hf_card_shows_the_chance_baseline_when_the_analysis_wrote_one(tmp_path):
    pytest.importorskip("datasets")
    bank_path = make_study(tmp_path / "processed")
    from analysis.chance import CHANCE_COLUMNS, TRAILING_COLUMNS

    rows = [["pvq", "Power", 180, 7, 4.25, 1.0, 8.0, 0.607, 0.04, None],
            ["pvq", "all", 180, 36, 40.0, 30.0, 51.0, 1.0, 0.7, "capped at 1 | chance keys as many"]]
    pd.DataFrame(rows, columns=CHANCE_COLUMNS + TRAILING_COLUMNS).to_csv(bank_path.parent / "chance.csv", index=False)
    export_bank(bank_path, "hf", tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "| pvq | Power | 180 | 7 | 4.25 | 1.00 | 8.00 | 0.61 | 0.040 |  |" in card
    assert "| pvq | all | 180 | 36 | 40.00 | 30.00 | 51.00 | 1.00 | 0.700 | capped at 1 / chance keys as many |" in card
    assert "No permutation baseline" not in card


# ------------------------------------------------------------------ one profile whatever the route


def _runner_profile(bank_path: Path, out: Path, keying: str, salt: str):
    items = load_bank(bank_path)
    with LoopbackServer(pgarbage=0.15, salt=salt) as server:
        backend = OpenAIBackend(server.url, "fake-model", timeout=5, backoff_base=0.01)
        _, json_path = run_llm(items, backend, "fake-model", out_dir=out, concurrency=4, progress=False)
    return score_models(items, load_responses([json_path]), keying)


def _fake_answer(fake: FakeLLM, prompt: str) -> str:
    return fake.answer_text(question_key([{"role": "user", "content": prompt}]))


def _assert_same_profiles(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = ["family", "dimension"]
    a, b = a.sort_values(cols).reset_index(drop=True), b.sort_values(cols).reset_index(drop=True)
    assert a[cols].equals(b[cols]) and a["n"].tolist() == b["n"].tolist()
    for column in ("centered_mean", "original_mean", "std_dev"):
        np.testing.assert_allclose(a[column], b[column], rtol=0, atol=1e-9)


@pytest.mark.parametrize("keying", ["pos", "abs"])
def test_inspect_task_on_the_mock_model_gives_the_runners_profile(tmp_path, monkeypatch, keying):
    pytest.importorskip("inspect_ai")
    from inspect_ai import eval as inspect_eval
    from inspect_ai.model import ModelOutput, ModelUsage, get_model

    bank_path = make_study(tmp_path / "processed", n_queries=4)
    expected, expected_consistency = _runner_profile(bank_path, tmp_path / "llm", keying, salt="inspect")
    out = tmp_path / "inspect"
    export_bank(bank_path, "inspect", out)
    assert (out / "vp_parse.py").read_bytes() == PARSER_SOURCE.read_bytes()
    fake = FakeLLM(pgarbage=0.15, salt="inspect")  # the same answers as the loopback server's
    asked = []

    def answer(messages, tools, tool_choice, config):
        assert len(messages) == 1 and messages[0].role == "user"
        asked.append(config)
        output = ModelOutput.from_content(model="mockllm", content=_fake_answer(fake, messages[0].text))
        output.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)  # else mockllm fetches a tokenizer
        return output

    monkeypatch.chdir(out)
    logs = inspect_eval("task.py", model=get_model("mockllm/model", custom_outputs=answer), task_args={"keying": keying},
                        log_dir=str(tmp_path / "logs"), display="none")
    log = logs[0]
    assert log.status == "success" and len(log.samples) == 4 * 3 * 6
    assert asked[0].temperature == 0 and asked[0].max_tokens == 24 and asked[0].seed == 0  # run-llm's settings
    profiles, consistency = score_models(load_bank(bank_path), load_responses([Path(log.location)]), keying)
    _assert_same_profiles(profiles, expected)
    np.testing.assert_allclose(consistency[["icc", "order_bias"]].to_numpy(float),
                               expected_consistency[["icc", "order_bias"]].to_numpy(float), atol=1e-9)
    assert profiles["model"].unique().tolist() == ["mockllm_model"]
    # the task's own metric is the same profile
    metrics = log.results.scores[0].metrics
    for row in expected.itertuples():
        value = metrics[f"{row.family}.{row.dimension}"].value
        assert (value is None and math.isnan(row.centered_mean)) or value == pytest.approx(row.centered_mean, abs=1e-9)
    unparseable = sum(1 for s in log.samples if math.isnan(s.scores["rating"].value))
    assert unparseable == log.results.scores[0].unscored_samples > 0
    if keying == "pos":
        # the same log as JSON reads the same; a log of some other task is refused in one line
        from inspect_ai.log import read_eval_log, write_eval_log

        full = read_eval_log(log.location)
        write_eval_log(full, str(tmp_path / "same.json"), format="json")
        again, _ = score_models(load_bank(bank_path), load_responses([tmp_path / "same.json"]), keying)
        _assert_same_profiles(again, expected)
        full.samples[3].metadata = {"question": "something else"}
        write_eval_log(full, str(tmp_path / "other.json"), format="json")
        with pytest.raises(InputError, match=r"other\.json: sample .*: no portrait_id.*not a log of the task"):
            load_responses([tmp_path / "other.json"])


def test_lm_eval_task_loads_with_the_harness_and_gives_the_runners_profile(tmp_path):
    pytest.importorskip("lm_eval")
    from lm_eval import simple_evaluate
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    bank_path = make_study(tmp_path / "processed", n_queries=4)
    expected, _ = _runner_profile(bank_path, tmp_path / "llm", "pos", salt="lm-eval")
    out = tmp_path / "lm-eval"
    export_bank(bank_path, "lm-eval", out)
    loader = type("Loader", (yaml.SafeLoader,), {})
    loader.add_constructor("!function", lambda ld, node: "function:" + ld.construct_scalar(node))
    config = yaml.load((out / "valueportrait.yaml").read_text(), Loader=loader)
    assert config["output_type"] == "generate_until" and config["doc_to_text"] == "{{prompt}}"
    assert config["filter_list"][0]["filter"][0] == {"function": "custom", "filter_fn": "function:utils.parse_ratings"}
    fake = FakeLLM(pgarbage=0.15, salt="lm-eval")

    class FakeLM(LM):
        def generate_until(self, requests, disable_tqdm=False):
            assert all(r.args[1]["until"] == [] and r.args[1]["max_gen_toks"] == 24 for r in requests)
            return [_fake_answer(fake, r.args[0]) for r in requests]

        def loglikelihood(self, requests):
            raise AssertionError("the task generates; it asks no log-likelihoods")

        loglikelihood_rolling = loglikelihood

    manager = TaskManager(include_path=str(out), include_defaults=False)
    assert "valueportrait" in manager.all_tasks
    results = simple_evaluate(model=FakeLM(), tasks=["valueportrait"], task_manager=manager)["results"]["valueportrait"]
    assert results["sample_len"] == 4 * 3 * 6
    for row in expected.itertuples():
        assert results[f"{row.family}.{row.dimension},parsed"] == pytest.approx(row.centered_mean, abs=1e-9)
    answers = [json.loads(line) for line in (tmp_path / "llm" / "fake-model_raw.jsonl").read_text().splitlines()]
    share = sum(a["value"] is not None for a in answers) / len(answers)
    assert results["answered,parsed"] == pytest.approx(share, abs=1e-12) and share < 1


def test_exported_profile_module_matches_score_llm_on_random_answers():
    from analysis.llm.export_files import vp_profile

    bank = json.loads(make_study_bank_json())
    from analysis.llm.bank import parse_bank
    items = parse_bank(bank)
    rng = np.random.default_rng(3)
    answers = {it.key: float(rng.integers(1, 7, size=rng.integers(1, 7)).mean()) for it in items[:-2]}  # 2 unanswered
    series = pd.Series(answers, name="answer")
    series.index = pd.MultiIndex.from_tuples(series.index, names=["portrait_id", "option_id"])
    for keying in ("pos", "abs"):
        expected = score_profile(series, key_table(items, keying)).set_index(["family", "dimension"])
        keys = key_table(items, "abs")
        ours = vp_profile.centred_profile(answers, [((p, o), f, d, s) for p, o, f, d, s in keys.itertuples(index=False)],
                                          keying)
        for (fam, dim), row in expected.iterrows():
            value, n = ours[(fam, dim)]
            assert n == row.n and value == pytest.approx(row.centered_mean, abs=1e-12, nan_ok=True)


def make_study_bank_json() -> str:
    return json.dumps([
        {"portrait_id": "1001", "content": {"title": "t", "text": "x"}, "outputs": [
            {"id": 1, "content": "a", "keyed": {"pvq": ["Benevolence", "Power"], "higher_pvq": ["Self_Transcendence"]},
             "reversed": {"pvq": ["Power"]}},
            {"id": 2, "content": "b", "keyed": {"pvq": ["Benevolence"]}},
            {"id": 3, "content": "c", "keyed": {"pvq": ["Power"], "bfi": ["Openness"]}},
        ]},
        {"portrait_id": "3002", "content": {"title": None, "text": "y"}, "outputs": [
            {"id": 1, "content": "d", "keyed": {"pvq": ["Tradition", "Benevolence"]}, "reversed": {"pvq": ["Tradition"]}},
            {"id": 2, "content": "e", "keyed": {"bfi": ["Openness"], "higher_pvq": ["Conservation"]}},
            {"id": 3, "content": "f", "keyed": {"pvq": ["Tradition"]}},
            {"id": 4, "content": "g", "keyed": {"pvq": ["Universalism"]}},
        ]},
    ])


# ------------------------------------------------------------------ csv and bad input


def test_csv_export_is_flat_and_spreadsheet_safe(tmp_path):
    hostile = {("1000", "text"): "=HYPERLINK(\"http://x\",\"click\")", ("1000", 1): "+1 agreed", ("1000", 2): "-minus",
               ("1000", 3): "@SUM(A1)", ("1000", "title"): "\tTabbed"}
    bank_path = make_study(tmp_path / "processed", n_queries=2, texts=hostile)
    export_bank(bank_path, "csv", tmp_path / "csv")
    table = pd.read_csv(tmp_path / "csv" / "valueportrait.csv", dtype={"portrait_id": str})
    items = load_bank(bank_path)
    assert len(table) == 6 * sum(len(d) for it in items for d in it.keyed.values())
    first = table[table["portrait_id"] == "1000"]
    assert set(first["query"]) == {"'=HYPERLINK(\"http://x\",\"click\")"} and set(first["title"]) == {"'\tTabbed"}
    assert set(first.loc[first.option_id == 1, "response"]) == {"'+1 agreed"}
    assert set(first.loc[first.option_id == 2, "response"]) == {"'-minus"}
    assert set(first.loc[first.option_id == 3, "response"]) == {"'@SUM(A1)"}
    assert table["rho"].dtype == float and (table["rho"] < 0).any()  # numbers stay numbers, negative ones too
    assert not any(isinstance(v, str) and v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in table.to_numpy().ravel())
    assert table["prompt"].iloc[0] == PROMPTS.messages(items[0], table["variant"].iloc[0])[0]["content"]


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, capsys):
    bank_path = make_study(tmp_path / "processed", n_queries=2)
    broken = tmp_path / "broken.json"
    data = json.loads(bank_path.read_text())
    del data[1]["outputs"][0]["content"]
    broken.write_text(json.dumps(data))
    out = tmp_path / "out"
    assert vp(["export-bank", "--item-bank", str(broken), "--format", "csv", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.json" in err and "content" in err and "3001/1" in err
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    assert vp(["export-bank", "--item-bank", str(bank_path), "--format", "csv", "--out", str(tmp_path / "taken")]) == 2
    assert "holds other files" in capsys.readouterr().err and (tmp_path / "taken" / "mine.txt").read_text() == "keep"
    # an earlier export is replaced whole
    assert vp(["export-bank", "--item-bank", str(bank_path), "--format", "inspect", "--out", str(out)]) == 0
    assert vp(["export-bank", "--item-bank", str(bank_path), "--format", "csv", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "valueportrait.csv", "valueportrait_export.json"]
    bad_corr = tmp_path / "processed" / "correlations.csv"
    good = bad_corr.read_text()
    bad_corr.write_text("portrait_id,option_id\n1000,1\n")
    assert vp(["export-bank", "--item-bank", str(bank_path), "--format", "csv", "--out", str(tmp_path / "o2")]) == 2
    assert "correlations.csv: missing column(s) family, dimension" in capsys.readouterr().err
    lines = good.splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("rho")] = "high"
    bad_corr.write_text("\n".join(lines[:3] + [",".join(cells)] + lines[4:]) + "\n")
    assert vp(["export-bank", "--item-bank", str(bank_path), "--format", "hf", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("correlations.csv: line 4, column rho: 'high' is not a number") and len(err.splitlines()) == 1
    assert not (tmp_path / "o2").exists()


def test_without_analysis_tables_the_statistics_are_empty_and_said_so(tmp_path, capsys):
    bank_path = make_study(tmp_path / "processed", n_queries=2)
    for name in ("correlations.csv", "replication.csv", "manifest.json"):
        (bank_path.parent / name).unlink()
    assert vp(["export-bank", "--item-bank", str(bank_path), "--format", "csv", "--out", str(tmp_path / "csv")]) == 0
    printed = capsys.readouterr().out
    assert "correlations.csv not found" in printed and "replication.csv not found" in printed
    table = pd.read_csv(tmp_path / "csv" / "valueportrait.csv")
    pvq = table["family"] == "pvq"
    assert (table.loc[pvq, "rho"] == 0.4).all() and table.loc[~pvq, "rho"].isna().all()  # the bank's own lists (pvq only)
    assert table[["p_value", "q_value", "n", "heldout_rho"]].isna().all().all()


@pytest.mark.parametrize("n", [46, 20])  # at 20 raters p < .05 binds before rho >= .3 does
def test_analytic_chance_of_a_key_matches_scipy_spearman_on_null_data(n):
    """The card's chance stand-in against Monte Carlo: scipy's spearmanr on unrelated, tied ratings."""
    from analysis.llm.dataset_card import null_key_probability

    rng = np.random.default_rng(n)
    draws = 20000
    ratings, scores = rng.integers(1, 7, size=(draws, n)), rng.standard_normal((draws, n))
    rx, ry = (stats.rankdata(a, axis=1) for a in (ratings, scores))
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    rho = (rx * ry).sum(1) / np.sqrt((rx**2).sum(1) * (ry**2).sum(1))
    for keying, candidates in (("pos", rho >= 0.3), ("abs", np.abs(rho) >= 0.3)):
        keyed = sum(stats.spearmanr(ratings[i], scores[i]).pvalue < 0.05 for i in np.flatnonzero(candidates))
        share = keyed / draws
        se = math.sqrt(share * (1 - share) / draws)
        assert abs(float(null_key_probability(n, 0.3, 0.05, keying)) - share) < 3.5 * se


def test_variants_file_and_persona_are_rendered_as_run_llm_renders_them(tmp_path):
    bank_path = make_study(tmp_path / "processed", n_queries=2)
    variants = tmp_path / "variants.yaml"
    variants.write_text("wordings:\n  short: |-\n    {item}\n    Options:\n    {options}\n  terse: |-\n    Rate: {item}\n    {options}\n")
    persona = "a retired farmer"
    export_bank(bank_path, "csv", tmp_path / "csv", variants=variants, persona=persona)
    table = pd.read_csv(tmp_path / "csv" / "valueportrait.csv", dtype={"portrait_id": str})
    prompts = load_prompts(variants)
    items = {it.key: it for it in load_bank(bank_path)}
    assert set(table["variant"]) == {"short", "short_reversed", "terse", "terse_reversed"}
    for row in table.drop_duplicates("question_id").itertuples():
        item = items[(row.portrait_id, row.option_id)]
        assert row.prompt == prompts.messages(item, row.variant, persona)[0]["content"]
        assert row.prompt.startswith(prompts.persona.format(persona=persona)) and row.persona == persona
