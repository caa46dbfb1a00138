"""A simulated LLM: answers like a respondent with a given value profile, plus noise.

This is a simulator, not a language model. It exists so that the demo and the tests can
run offline and so that recovering a known profile through the bank tests the bank.
Its answers are text (the scale phrase, sometimes inside a short sentence), so they go
through the same cache, parser and output as a real endpoint's answers.

Answer model, per item ``i`` and prompt variant ``v`` (noise drawn afresh per variant):

* with the item's ``true_loadings`` (a simulated study's known truth on the ten PVQ
  values): ``z = sum_d loading_id * profile_d + noise * e``, ``e ~ N(0, 1)``;
* otherwise from the bank's keys: ``z = KEY_GAIN * mean_d (s_id * profile_d) + noise * e``
  over the item's keyed PVQ values (``s = -1`` for a reversed key), or over the members
  of its keyed higher-order values when it has no PVQ key; ``z = noise * e`` when
  it has neither;
* the answer is ``1 + #{c in CUTS : z > c}``, i.e. 1..6 with ``z = 0`` between 3 and 4.

The profile is a centred PVQ profile, ``{"Benevolence": 0.8, "Power": -1.1, ...}``
(values not given count as 0; a higher-order name sets all its member values). The
noise is deterministic given ``seed``, model, item, variant and persona.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import numpy as np

import instruments
from analysis.llm.client import Question, Reply
from valueportrait.errors import InputError
from valueportrait.files import brief, read_data_file

CUTS = np.array([-0.6, -0.3, 0.0, 0.3, 0.6])
KEY_GAIN = 0.5
# A few harmless wrappers, so the parser is exercised the way a chatty model would.
_WRAPPERS = ("{phrase}", "{Phrase}.", "Answer: {phrase}", "{PHRASE}", "I would say {phrase}.")


def load_profile(path: str | Path) -> dict[str, float]:
    """Read ``{"Benevolence": 0.8, ...}``; higher-order names expand to their values."""
    return check_profile(read_data_file(path, "json"), path)


def check_profile(data, path: str | Path = "profile") -> dict[str, float]:
    if not isinstance(data, dict):
        raise InputError(f"{path}: top level: expected an object of PVQ value -> centred score")
    profile = dict.fromkeys(instruments.PVQ_VALUES, 0.0)
    for name, score in data.items():
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not np.isfinite(score):
            raise InputError(f"{path}: {name}: {brief(score)} is not a number")
        if name in instruments.HIGHER_ORDER:
            for member in instruments.HIGHER_ORDER[name]:
                profile[member] = float(score)
        elif name in profile:
            profile[name] = float(score)
        else:
            raise InputError(f"{path}: {name!r} is not a PVQ value (one of {', '.join(instruments.PVQ_VALUES)})")
    return profile


def latent_mean(item, profile: dict[str, float]) -> float:
    """The noise-free latent answer ``z`` of a respondent with ``profile`` to ``item``."""
    if item.true_loadings:
        return float(sum(w * profile.get(d, 0.0) for d, w in item.true_loadings.items()))
    reversed_ = set(item.reversed.get("pvq", ())) | set(item.reversed.get("higher_pvq", ()))
    terms = [(-1.0 if d in reversed_ else 1.0) * profile[d] for d in item.keyed.get("pvq", ()) if d in profile]
    if not terms:
        for d in item.keyed.get("higher_pvq", ()):
            members = instruments.HIGHER_ORDER.get(d, ())
            if members:
                terms.append((-1.0 if d in reversed_ else 1.0) * float(np.mean([profile[m] for m in members])))
    return KEY_GAIN * float(np.mean(terms)) if terms else 0.0


def answer_value(z: float) -> int:
    """Map a latent ``z`` to 1..6 by the fixed cut points ``CUTS``."""
    return int(1 + np.sum(z > CUTS))


class SimulatedBackend:
    """A respondent with a known PVQ profile, answering in words (see the module docstring)."""

    name = "simulated"

    def __init__(
        self,
        profile: dict[str, float],
        labels: tuple[tuple[int, str], ...],
        *,
        seed: int = 0,
        noise: float = 0.3,
        model: str = "simulated",
        persona_profile: dict[str, float] | None = None,
    ):
        self.profile = profile
        self.persona_profile = persona_profile
        self.phrases = {value: phrase for value, phrase in labels}
        self.seed = int(seed)
        self.noise = float(noise)
        self.model = model

    def settings(self) -> dict:
        """Part of the cache key: a different profile, seed or noise is a different respondent."""
        return {
            "simulated": True, "seed": self.seed, "noise": self.noise,
            "profile": self.profile, "persona_profile": self.persona_profile,
        }

    def _rng(self, q: Question) -> np.random.Generator:
        tag = f"{self.seed}\x1f{self.model}\x1f{q.persona}\x1f{q.item.portrait_id}\x1f{q.item.option_id}\x1f{q.variant}"
        return np.random.default_rng(int.from_bytes(hashlib.sha256(tag.encode()).digest()[:8], "little"))

    def value_for(self, q: Question, rng: np.random.Generator | None = None) -> int:
        profile = self.persona_profile if (q.persona and self.persona_profile is not None) else self.profile
        rng = self._rng(q) if rng is None else rng
        z = latent_mean(q.item, profile) + self.noise * rng.standard_normal()
        return answer_value(z)

    async def ask(self, q: Question) -> Reply:
        await asyncio.sleep(0)  # yield like a network call would
        rng = self._rng(q)
        phrase = self.phrases[self.value_for(q, rng)]
        wrapper = _WRAPPERS[int(rng.integers(len(_WRAPPERS)))]
        text = wrapper.format(phrase=phrase, Phrase=phrase.capitalize(), PHRASE=phrase.upper())
        return Reply(text, 1, 0.0)

    async def aclose(self) -> None:
        return None
