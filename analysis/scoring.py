"""Score PVQ-21 and BFI-10 answers: centred value scores, higher-order values, Big Five traits.

Reads a CSV with columns ``participant_id, pvq1..pvq21, bfi1..bfi10`` (answers 1..6 and 1..5;
empty cells are missing answers) and writes one row per participant with one column per
dimension, named as in the Value Portrait release.

Method (DESIGN.md, as in the Value Portrait study):

* PVQ value score = mean of the value's items minus the person's mean over all 21 items
  (Schwartz's centring removes individual scale use, e.g. acquiescence).
* Higher-order value = item-weighted mean of its values' centred scores, i.e. the mean
  over all the items of its values, centred the same way. Hedonism belongs to none.
* BFI-10 trait = mean of its two items after reversing the keyed ones (6 - answer).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import instruments as inst
from valueportrait.atomic import write_csv_atomic
from valueportrait.errors import InputError
from valueportrait.files import read_csv_strict

PVQ_COLUMNS = [f"pvq{i}" for i in range(1, 22)]
BFI_COLUMNS = [f"bfi{i}" for i in range(1, 11)]
#: Participants with missing answers listed by name; the rest are counted.
SHOWN = 10


def _key_matrix(keys: dict[str, tuple[int, ...]], n_items: int) -> np.ndarray:
    """dimension x item indicator matrix (rows in the order of `keys`)."""
    m = np.zeros((len(keys), n_items))
    for row, ids in enumerate(keys.values()):
        m[row, [i - 1 for i in ids]] = 1.0
    return m


def _masked_means(answers: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Per participant and dimension, the mean of the dimension's items; NaN if any is missing."""
    missing = np.isnan(answers).astype(float) @ key.T > 0
    means = np.nan_to_num(answers) @ key.T / key.sum(axis=1)
    means[missing] = np.nan
    return means


def score_pvq(answers: pd.DataFrame, pvq: inst.PVQ21 | None = None, centred: bool = True) -> pd.DataFrame:
    """PVQ-21 value scores and the four higher-order values.

    Parameters
    ----------
    answers : DataFrame
        One row per participant, columns ``pvq1..pvq21`` holding answers 1..6 (NaN = missing).
    pvq : PVQ21, optional
        The instrument whose key to use (default: ours, which follows the published key).
    centred : bool
        True (default) for Schwartz's centred scores; False for raw means of the items.

    Returns
    -------
    DataFrame with the ten values (circle order) then the four higher-order values,
    indexed like `answers`. A value is NaN when one of its items is missing; centred
    scores are all NaN when any of the 21 answers is missing (no person mean to centre on).

    Examples
    --------
    >>> row = pd.DataFrame([[4] * 20 + [6]], columns=PVQ_COLUMNS)  # item 21 is Hedonism
    >>> round(score_pvq(row)["Hedonism"].iloc[0], 4)   # (4+6)/2 - (80+6)/21
    0.9048
    """
    pvq = pvq or inst.default_pvq21()
    key = pvq.key()
    x = answers[PVQ_COLUMNS].to_numpy(dtype=float)
    value_key = _key_matrix(key, 21)
    # A higher-order value is the mean over all items of its values (item-weighted).
    higher_key = np.stack([value_key[[list(key).index(v) for v in parts]].sum(axis=0) for parts in inst.HIGHER_ORDER.values()])
    means = _masked_means(x, np.vstack([value_key, higher_key]))
    if centred:
        means = means - x.mean(axis=1, keepdims=True)  # NaN rows stay NaN: no complete person mean
    return pd.DataFrame(means, index=answers.index, columns=list(key) + list(inst.HIGHER_ORDER))


def higher_order_from_values(values: pd.DataFrame, pvq: inst.PVQ21 | None = None) -> pd.DataFrame:
    """The four higher-order values from the ten centred value scores (item-weighted mean)."""
    key = (pvq or inst.default_pvq21()).key()
    out = {}
    for higher, parts in inst.HIGHER_ORDER.items():
        weights = np.array([len(key[v]) for v in parts], dtype=float)
        out[higher] = values[list(parts)].to_numpy(dtype=float) @ weights / weights.sum()
    return pd.DataFrame(out, index=values.index)


def score_bfi(answers: pd.DataFrame, bfi: inst.BFI10 | None = None, scale_max: int = 5) -> pd.DataFrame:
    """BFI-10 trait scores: mean of the trait's two items, reversed items as (scale_max + 1) - answer."""
    bfi = bfi or inst.default_bfi10()
    x = answers[BFI_COLUMNS].to_numpy(dtype=float)
    reverse = np.array([item.reversed for item in bfi.items])
    x = np.where(reverse, scale_max + 1 - x, x)
    key = _key_matrix({t: tuple(i for i, _ in ids) for t, ids in bfi.key().items()}, 10)
    return pd.DataFrame(_masked_means(x, key), index=answers.index, columns=list(bfi.key()))


def missing_reasons(answers: pd.DataFrame) -> pd.Series:
    """Per participant, why some scores are NaN ('' when nothing is missing)."""
    def describe(columns, prefix):
        miss = answers[columns].isna().to_numpy()
        names = np.array(columns)
        return pd.Series([f"{prefix}: missing {', '.join(names[row])}" if row.any() else "" for row in miss],
                         index=answers.index, dtype=object)

    pvq = describe(PVQ_COLUMNS, "pvq (no centred scores)")
    bfi = describe(BFI_COLUMNS, "bfi")
    return (pvq + ";" + bfi).str.strip(";")


def score_instruments(answers: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Every dimension for every participant, and the reasons for any NaN.

    `answers` must already be validated (see `read_answers`); it is indexed by participant_id.
    """
    scores = pd.concat([score_pvq(answers), score_bfi(answers)], axis=1)
    return scores, missing_reasons(answers)


def check_range(values: pd.DataFrame, low: int, high: int, source: str, row_labels=None) -> None:
    """Raise an InputError naming the first answer that is not a whole number in low..high."""
    x = values.to_numpy(dtype=float)
    bad = ~np.isnan(x) & ((x < low) | (x > high) | (x != np.round(x)))
    if bad.any():
        r, c = map(int, np.argwhere(bad)[0])
        who = row_labels[r] if row_labels is not None else values.index[r]
        raise InputError(f"{source}: {who}, column {values.columns[c]}: {x[r, c]:g} is outside {low}..{high}")


def read_answers(path: Path) -> pd.DataFrame:
    """Read and validate a raw-answers CSV; errors name the file, the line and the column."""
    path = Path(path)
    raw, line_numbers = read_csv_strict(path, what="CSV of answers")
    for column in ["participant_id", *PVQ_COLUMNS, *BFI_COLUMNS]:
        if column not in raw.columns:
            raise InputError(f"{path}: missing column {column!r}")
    if raw.empty:
        raise InputError(f"{path}: no participants: the file has a header row and nothing else")
    lines = [f"line {n}" for n in line_numbers]
    ids = raw["participant_id"].str.strip()
    if (ids == "").any():
        raise InputError(f"{path}: {lines[int(np.argmax(ids == ''))]}, column participant_id: empty")
    dup = ids.duplicated()
    if dup.any():
        i = int(np.argmax(dup))
        raise InputError(f"{path}: {lines[i]}, column participant_id: duplicate participant {ids[i]!r}")
    numeric = {}
    for column in PVQ_COLUMNS + BFI_COLUMNS:
        text = raw[column].str.strip()
        values = pd.to_numeric(text.where(text != ""), errors="coerce")
        bad = values.isna() & (text != "")
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"{path}: {lines[i]}, column {column}: {text[i]!r} is not a number")
        numeric[column] = values
    answers = pd.DataFrame(numeric)
    check_range(answers[PVQ_COLUMNS], 1, 6, str(path), lines)
    check_range(answers[BFI_COLUMNS], 1, 5, str(path), lines)
    answers.index = pd.Index(ids, name="participant_id")
    return answers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="INPUT.csv",
                        help="raw answers: participant_id, pvq1..pvq21 (1..6), bfi1..bfi10 (1..5); empty = missing")
    parser.add_argument("--out", type=Path, default=None, help="output CSV (default: print to standard output)")


def run(args) -> int:
    answers = read_answers(args.input)
    scores, reasons = score_instruments(answers)
    incomplete = reasons[reasons != ""]
    if len(incomplete):
        # One line per participant would bury the terminal for a large file: counts and the first few.
        print(f"vp score-instruments: {len(incomplete):,} of {len(scores):,} participants have missing answers "
              f"(the scores that need them are empty):", file=sys.stderr)
        for pid, reason in list(incomplete.items())[:SHOWN]:
            print(f"  {pid}: {reason}", file=sys.stderr)
        if len(incomplete) > SHOWN:
            print(f"  ... and {len(incomplete) - SHOWN:,} more", file=sys.stderr)
    if args.out is None:
        scores.to_csv(sys.stdout)
    else:
        write_csv_atomic(scores, args.out)
        print(f"scored {len(scores)} participants -> {args.out}", file=sys.stderr)
    return 0
