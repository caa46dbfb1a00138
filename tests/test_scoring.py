"""Participant scoring against hand computations and the published release."""

import json

import numpy as np
import pandas as pd
import pytest

import instruments as inst
from analysis.scoring import BFI_COLUMNS, PVQ_COLUMNS, higher_order_from_values, read_answers, score_bfi, score_pvq
from valueportrait.cli import main
from valueportrait.errors import InputError


def _row(pvq, bfi=None):
    data = {f"pvq{i + 1}": v for i, v in enumerate(pvq)}
    data.update({f"bfi{i + 1}": v for i, v in enumerate(bfi or [3] * 10)})
    return pd.DataFrame([data], dtype=float)


def test_pvq_centring_by_hand():
    # Every answer 3 except Self_Direction's items 1 and 11 (answers 6 and 5).
    answers = [3] * 21
    answers[0], answers[10] = 6, 5
    s = score_pvq(_row(answers)).iloc[0]
    person_mean = (19 * 3 + 6 + 5) / 21
    assert s["Self_Direction"] == pytest.approx(5.5 - person_mean, abs=1e-12)
    assert s["Power"] == pytest.approx(3 - person_mean, abs=1e-12)
    # Openness_to_Change = mean of items 1, 11 (SD) and 6, 15 (ST) minus the person mean.
    assert s["Openness_to_Change"] == pytest.approx((6 + 5 + 3 + 3) / 4 - person_mean, abs=1e-12)
    raw = score_pvq(_row(answers), centred=False).iloc[0]
    assert raw["Self_Direction"] == 5.5 and raw["Universalism"] == 3


def test_acquiescence_removed_by_centring():
    base_answers = np.clip(np.arange(21) % 6 + 1.0, 1, 5)
    base = score_pvq(_row(base_answers)).iloc[0]
    shifted = score_pvq(_row(base_answers + 1)).iloc[0]  # the same person, one step more agreeable
    np.testing.assert_allclose(shifted.to_numpy(), base.to_numpy(), atol=1e-12)
    raw_gap = score_pvq(_row(base_answers + 1), centred=False).iloc[0] - score_pvq(_row(base_answers), centred=False).iloc[0]
    np.testing.assert_allclose(raw_gap.to_numpy(), 1.0)  # raw means keep it


def test_bfi_reversal_by_hand():
    bfi = [1, 2, 3, 4, 5, 5, 4, 3, 2, 1]
    s = score_bfi(_row([3] * 21, bfi)).iloc[0]
    assert s["Extraversion"] == (6 - 1 + 5) / 2        # 1R, 6
    assert s["Agreeableness"] == (2 + 6 - 4) / 2       # 2, 7R
    assert s["Conscientiousness"] == (6 - 3 + 3) / 2   # 3R, 8
    assert s["Neuroticism"] == (6 - 4 + 2) / 2         # 4R, 9
    assert s["Openness"] == (6 - 5 + 1) / 2            # 5R, 10


def test_missing_answers_give_nan_and_reason(tmp_path):
    answers = [4.0] * 21
    answers[6] = np.nan  # Conformity item 7
    row = _row(answers, [3, 3, np.nan, 3, 3, 3, 3, 3, 3, 3])
    pvq = score_pvq(row).iloc[0]
    assert pvq.isna().all()  # no complete person mean to centre on
    raw = score_pvq(row, centred=False).iloc[0]
    assert np.isnan(raw["Conformity"]) and raw["Power"] == 4
    bfi = score_bfi(row).iloc[0]
    assert np.isnan(bfi["Conscientiousness"]) and bfi["Openness"] == 3


def test_release_higher_order_reproduced(release_dir):
    """The higher-order rule reproduces every published higher-order score from the published values."""
    value = json.loads((release_dir / "data/prolific/value/main/value.json").read_text())
    pvq = pd.DataFrame({pid: rec["pvq"] for pid, rec in value.items()}).T
    published = pd.DataFrame({pid: rec["higher_pvq"] for pid, rec in value.items()}).T
    ours = higher_order_from_values(pvq)
    assert len(ours) == 569
    err = (ours[published.columns] - published).abs().to_numpy().max()
    assert err < 1e-12
    # Item-weighted centred PVQ scores sum to zero for every person (Hedonism included).
    weights = pd.Series({v: len(ids) for v, ids in inst.default_pvq21().key().items()})
    assert (pvq[weights.index] @ weights).abs().max() < 1e-12


def test_pvq_key_is_the_published_one():
    key = inst.default_pvq21().key()
    assert key == {
        "Self_Direction": (1, 11), "Power": (2, 17), "Universalism": (3, 8, 19), "Achievement": (4, 13),
        "Security": (5, 14), "Stimulation": (6, 15), "Conformity": (7, 16), "Tradition": (9, 20),
        "Hedonism": (10, 21), "Benevolence": (12, 18),
    }
    assert inst.default_bfi10().key()["Agreeableness"] == ((2, False), (7, True))


# --- the command and its bad input --------------------------------------------------

def _write(tmp_path, rows, columns=None):
    columns = columns or ["participant_id", *PVQ_COLUMNS, *BFI_COLUMNS]
    path = tmp_path / "answers.csv"
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


def _good_row(pid="P1"):
    return [pid, *([4] * 21), *([3] * 10)]


def test_score_instruments_cli(tmp_path):
    row = _good_row()
    row[1] = 6  # pvq1 (Self_Direction)
    src = _write(tmp_path, [row, _good_row("P2")])
    out = tmp_path / "scores.csv"
    assert main(["score-instruments", str(src), "--out", str(out)]) == 0
    scores = pd.read_csv(out, index_col="participant_id")
    assert list(scores.columns) == [*inst.PVQ_VALUES, *inst.HIGHER_ORDER, *inst.BFI_TRAITS]
    assert scores.loc["P1", "Self_Direction"] == pytest.approx(5 - (6 + 20 * 4) / 21)
    assert scores.loc["P2", "Extraversion"] == 3


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rows: rows[1].__setitem__(3, 7), "line 3, column pvq3: 7 is outside 1..6"),
        (lambda rows: rows[0].__setitem__(22, 6), "line 2, column bfi1: 6 is outside 1..5"),
        (lambda rows: rows[0].__setitem__(5, "often"), "line 2, column pvq5: 'often' is not a number"),
        (lambda rows: rows[1].__setitem__(0, "P1"), "line 3, column participant_id: duplicate participant 'P1'"),
        (lambda rows: rows[0].__setitem__(2, 2.5), "line 2, column pvq2: 2.5 is outside 1..6"),
    ],
)
def test_score_instruments_bad_input(tmp_path, capsys, mutate, message):
    rows = [_good_row("P1"), _good_row("P2")]
    mutate(rows)
    src = _write(tmp_path, rows)
    out = tmp_path / "scores.csv"
    assert main(["score-instruments", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"vp score-instruments: error: {src}: {message}"
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [src]  # no temporary file left either


def test_score_instruments_missing_column(tmp_path, capsys):
    columns = ["participant_id", *PVQ_COLUMNS, *BFI_COLUMNS[:-1]]
    src = _write(tmp_path, [_good_row()[:-1]], columns)
    assert main(["score-instruments", str(src), "--out", str(tmp_path / "o.csv")]) == 2
    assert "missing column 'bfi10'" in capsys.readouterr().err
    with pytest.raises(InputError, match="no such file"):
        read_answers(tmp_path / "absent.csv")


def test_shipped_example_scores(tmp_path):
    from valueportrait import PROJECT_ROOT

    out = tmp_path / "s.csv"
    assert main(["score-instruments", str(PROJECT_ROOT / "instruments/examples/answers.csv"), "--out", str(out)]) == 0
    scores = pd.read_csv(out)
    assert len(scores) == 6 and scores.iloc[5][list(inst.PVQ_VALUES)].isna().all()
