"""item_bank.json: the release's tagged shape plus keyed, checked against the release's own texts and our tables."""

import json

import pandas as pd

from analysis.dataset import load_study
from analysis.item_bank import build_item_bank
from analysis.release import TAGGED
from analysis.selection import select
from valueportrait.storage import now, open_db


def test_bank_shape_and_content(release_analysis, release_dir):
    study, table = release_analysis
    sel = select(table)
    bank = build_item_bank(table, sel, study.items)
    tagged = {str(q["portrait_id"]): q for q in json.loads((release_dir / TAGGED).read_text())}
    keyed_items = set(zip(sel.portrait_id, sel.option_id))
    assert sum(len(q["outputs"]) for q in bank) == len(keyed_items)
    rho = table.set_index(["portrait_id", "option_id", "dimension"])["rho"]
    for query in bank:
        assert set(query) == {"portrait_id", "content", "outputs"}
        assert isinstance(query["portrait_id"], str)
        source = tagged[query["portrait_id"]]
        assert query["content"] == source["content"]  # title null for chat queries, as in the release
        texts = {o["id"]: o["content"] for o in source["outputs"]}
        for out in query["outputs"]:
            assert set(out) == {"id", "content", "correlations", "higher_pvq_correlations", "bfi_correlations", "keyed"}
            assert out["content"] == texts[out["id"]]
            for name, size in (("correlations", 10), ("higher_pvq_correlations", 4), ("bfi_correlations", 5)):
                pairs = out[name]
                assert len(pairs) == size
                magnitudes = [abs(r) for _, r in pairs]
                assert magnitudes == sorted(magnitudes, reverse=True)
                for dim, r in pairs:
                    assert r == rho[(query["portrait_id"], out["id"], dim)]
            expected = sel[(sel.portrait_id == query["portrait_id"]) & (sel.option_id == out["id"])]
            for family in ("pvq", "higher_pvq", "bfi"):
                assert set(out["keyed"][family]) == set(expected.loc[expected.family == family, "dimension"])
            assert any(out["keyed"].values())


def test_bank_reads_back_with_the_llm_loader(release_analysis, tmp_path):
    from analysis.llm.bank import parse_bank

    study, table = release_analysis
    bank = build_item_bank(table, select(table, keying="abs"), study.items, keying="abs")
    items = parse_bank(json.loads(json.dumps(bank)))
    assert len(items) == sum(len(q["outputs"]) for q in bank)
    out = bank[0]["outputs"][0]
    assert set(out["reversed"]) == {"pvq", "higher_pvq", "bfi"}
    reversed_pairs = [(q["portrait_id"], o["id"], d) for q in bank for o in q["outputs"] for ds in o["reversed"].values() for d in ds]
    assert reversed_pairs and all(table.set_index(["portrait_id", "option_id", "dimension"]).loc[k, "rho"] < 0
                                  for k in reversed_pairs)


def test_true_loadings_are_copied(tmp_path):
    db = open_db(tmp_path / "s.db")
    with db.transaction():
        db.upsert("studies", [dict(study_id="sim", source="simulation", created_at=now())])
        db.upsert("item_groups", [dict(study_id="sim", group_id="g01", position=1)])
        db.upsert("items", [dict(study_id="sim", portrait_id="9001", option_id=1, group_id="g01", title=None,
                                 query_text="q", response="r", meta_json=json.dumps({"true_loadings": {"Power": 0.5}}))])
    study = load_study(db)
    table = pd.DataFrame({"group_id": "g01", "portrait_id": "9001", "option_id": 1, "family": "pvq",
                          "dimension": ["Power", "Benevolence"], "rho": [0.5, -0.1], "p_value": [0.001, 0.5]})
    bank = build_item_bank(table, select(table), study.items)
    assert bank == [{"portrait_id": "9001", "content": {"title": None, "text": "q"}, "outputs": [{
        "id": 1, "content": "r", "correlations": [["Power", 0.5], ["Benevolence", -0.1]],
        "higher_pvq_correlations": [], "bfi_correlations": [],
        "keyed": {"pvq": ["Power"], "higher_pvq": [], "bfi": []}, "true_loadings": {"Power": 0.5}}]}]
