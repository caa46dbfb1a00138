"""The bots' answer logic and reporting, without a browser (the browser runs are in test_app_browser.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest

import instruments
from valueportrait.errors import InputError

from collection_app import bots


def _profile(behaviour, seed=0):
    return bots.Profile(behaviour, random.Random(seed), bots._responses_by_text(None))


def test_percentile_is_nearest_rank_as_numpy_inverted_cdf():
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 20, 101):
        values = rng.exponential(size=n).tolist()
        for q in (50, 95, 99):
            assert bots.percentile(values, q) == pytest.approx(np.percentile(values, q, method="inverted_cdf"))


def test_checks_are_passed_or_failed_by_behaviour():
    checks = instruments.load_attention_checks()
    for check in checks:
        lo, hi = (1, 5) if check.scale == "bfi" else (1, 6)
        assert _profile("consistent").answer("question", check.text, lo, hi) == check.expected
        assert _profile("attention_failer").answer("question", check.text, lo, hi) != check.expected


def test_consistent_bot_answers_follow_its_values():
    # Over many bots, a PVQ item's answer correlates with the bot's level of that item's value.
    pvq = instruments.default_pvq21()
    item = pvq.items[0]
    levels, answers = [], []
    for seed in range(300):
        p = _profile("consistent", seed)
        levels.append(p.values[item.value])
        answers.append(p.answer("question", item.text, 1, 6))
    assert np.corrcoef(levels, answers)[0, 1] > 0.6
    # The default study's responses are tagged with values: ratings follow them too.
    response_value = bots._responses_by_text(None)
    text, value = next(iter(response_value.items()))
    levels, answers = [], []
    for seed in range(300):
        p = _profile("consistent", seed)
        levels.append(p.values[value])
        answers.append(p.answer("rating", text, 1, 6))
    assert np.corrcoef(levels, answers)[0, 1] > 0.6


def test_straightliner_gives_one_answer():
    p = _profile("straightliner", 5)
    texts = [i.text for i in instruments.default_pvq21().items]
    assert len({p.answer("question", t, 1, 6) for t in texts}) == 1


def test_behaviour_option_is_validated():
    assert bots.parse_behaviours("mix") == bots.MIX and set(bots.MIX) == set(bots.BEHAVIOURS)
    assert bots.parse_behaviours("random, speeder") == ("random", "speeder")
    with pytest.raises(InputError, match="--behaviour"):
        bots.parse_behaviours("consistent,lazy")


def test_latency_table_separates_page_loads():
    r = bots.BotResult("x", "consistent", latencies=[("load", 5.0), ("question", 0.2), ("rating", 0.4)])
    rows = {row["step"]: row for row in bots.latency_table([r])}
    assert rows["all steps"]["n"] == 2 and rows["all steps"]["max"] == 0.4
