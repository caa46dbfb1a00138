"""A value profile from parsed ratings, with the standard library only (exported with the bank).

This is the definition ``vp score-llm`` uses (``analysis/llm/profile.py``), written for the
exported Inspect and lm-evaluation-harness tasks, which may run without valueportrait.
``tests/test_export_bank.py`` checks that both give the same profile to 1e-9.

Let ``a_i`` be the mean of item ``i``'s parsed ratings over its prompt variants, ``K_d``
the answered items keyed to dimension ``d`` (with sign ``s_id``: -1 for a reversed key),
``K_f`` the answered items keyed to any dimension of family ``f``, each once, and
``m_f`` the mean of ``a_i`` over ``K_f``. Then

    centred_d = mean over i in K_d of s_id * (a_i - m_f)

which with only positive keys is the study's mean over ``K_d`` minus ``m_f``.
"""

from __future__ import annotations

import math
from collections import defaultdict


def item_means(ratings):
    """``{item: mean of its parsed ratings}`` from ``(item, rating or None)`` pairs; items with none left out."""
    sums, counts = defaultdict(float), defaultdict(int)
    for item, rating in ratings:
        if rating is None or (isinstance(rating, float) and math.isnan(rating)):
            continue
        sums[item] += float(rating)
        counts[item] += 1
    return {item: sums[item] / counts[item] for item in counts}


def centred_profile(answers, keys, keying="pos"):
    """``{(family, dimension): (centred mean, n)}``.

    Parameters
    ----------
    answers : ``{item: a_i}`` (see :func:`item_means`).
    keys : iterable of ``(item, family, dimension, sign)``, ``sign`` +1 or -1.
    keying : ``"pos"`` leaves reversed keys out (as ``vp score-llm --keying pos``); ``"abs"`` keeps them.

    Dimensions with no answered item get ``(nan, 0)``.
    """
    if keying not in ("pos", "abs"):
        raise ValueError(f"keying: {keying!r} is not pos or abs")
    kept = [(item, fam, dim, sign) for item, fam, dim, sign in keys if keying == "abs" or sign > 0]
    family_items = defaultdict(set)
    for item, fam, _, _ in kept:
        if item in answers:
            family_items[fam].add(item)
    level = {fam: sum(answers[i] for i in items) / len(items) for fam, items in family_items.items()}
    sums, counts = defaultdict(float), defaultdict(int)
    for item, fam, dim, sign in kept:
        counts[(fam, dim)] += 0
        if item in answers:
            sums[(fam, dim)] += sign * (answers[item] - level[fam])
            counts[(fam, dim)] += 1
    return {pair: ((sums[pair] / n) if n else math.nan, n) for pair, n in counts.items()}
