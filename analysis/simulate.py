"""A simulated Value Portrait study with known truth.

Everything is drawn from one seed by a generative model whose parts are written out
below, so every statistic in the project can be checked against a known answer and
``vp demo`` can run the whole method offline. `write_to_db` stores the result through the
storage module in the same tables and shapes the collection app writes, so the analysis
cannot tell simulated from collected data (apart from ``studies.source = 'simulation'``
and the obviously simulated item texts and participant ids).

The model
---------
Units: latent PVQ and BFI responses are on their answer scales (1..6 and 1..5); an answer
is the latent response cut at the midpoints 1.5, 2.5, ... (``round`` with clipping).

People. Latent values ``v`` (10) and Big Five traits ``t`` (5) are jointly normal.
Values: ``corr(v_i, v_j) = a cos(theta_i - theta_j) + b`` on Schwartz's circle
(`circle_angles`), so adjacent values correlate positively and opposite ones
negatively; the higher-order values inherit that structure. Traits: modest
inter-correlations and cosine-shaped correlations with the values (`BFI_VALUE_LINKS`,
e.g. Openness at Self_Direction). The joint matrix is made positive definite by
eigenvalue clipping. Means: the value hierarchy of the release plus demographic
effects (`DEMOGRAPHIC_EFFECTS`, documented there as answer-scale points and Cohen's d).
Acquiescence ``q ~ N(0, acquiescence_sd)`` is each person's individual scale use.

PVQ-21: item ``k`` of value ``V``: ``y = pvq_level + m_V + (1 - c)(v_V - m_V) + c (v_N - m_N) + q + e``,
``e ~ N(0, pvq_noise_sd)``: half (``c = pvq_cross_loading``) of an item's value content
belongs to a neighbour N of V on the circle (`pvq_item_content`), as real PVQ items
cross-load on adjacent values. With the noise this gives real PVQ-21's reliability
(alpha about .45-.70 for its two- and three-item scales) and a ten-value CFA that fits
about as badly as real data do (CFI about .90-.94, a latent correlation of neighbours
beyond 1), where items that measured their value alone gave alpha .70-.84 and a perfect fit.
BFI-10: ``y = t + q + e`` for a plain item, ``y = (6 - t) + q + e`` for a reversed one
(the latent trait is reversed before cutting; reversing the answer back cancels ``q``).

Items. Each item has an angle ``phi`` on the value circle and an amplitude ``A``; its
true loadings are ``L_v = A cos(theta_v - phi)`` (an item written for value V loads on V,
less on V's neighbours, negatively on the opposite values). Kinds: ``none`` (A = 0),
``weak`` (small A, random angle), ``single`` (angle at one value) and ``double`` (angle
midway between two adjacent values). Ratings:
``r* = d_i + sum_v L_iv z_pv + w_i s_p + e``, ``e ~ N(0, rating_noise_sd)``, where ``z`` is the
person's standardised true centred value profile and ``s_p`` the person's rating style
(acquiescence plus small links to Self-Enhancement and to Agreeableness,
Conscientiousness and low Neuroticism, as seen in the release, plus noise). Items differ in
how much they follow that style: ``w_i ~ Gamma`` with mean 1 and SD `style_item_sd`
(the release's item-rest correlations spread more than equal weights allow: SD 0.166
against 0.13; 0.35 reproduces it). The five
thresholds are solved so that the expected rating distribution equals
`SimulationConfig.rating_shares` (the release's).

Bad respondents (disjoint groups, each breaks exactly one quality rule, so each rule can be
tested alone): straight-liners (one answer for every rating and every PVQ/BFI item;
attention checks passed), speeders (3-6 minutes in all, random answers; checks passed),
attention-check failers (every check wrong, random answers, normal time). One good
participant takes part in two groups.

Truth. The population item-dimension correlations are what the analysis estimates:
Spearman's rho between an item's rating and the OBSERVED score (centred PVQ-21 value,
higher-order value, BFI-10 trait, scored by `analysis.scoring` from ordinal answers),
computed by Monte Carlo on `population_n` simulated good respondents (standard error
about ``1 / sqrt(population_n)``, 0.003 at the default 100,000). Monte Carlo rather than a formula
because the ordinal cuts, the centring and the rank transform have no simple closed form
together.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special, stats

import instruments as inst
from analysis.scoring import BFI_COLUMNS, PVQ_COLUMNS, score_bfi, score_pvq
from valueportrait.atomic import write_json_atomic
from valueportrait.errors import InputError

VALUES = inst.PVQ_VALUES
TRAITS = inst.BFI_TRAITS
HIGHER = tuple(inst.HIGHER_ORDER)
N_V, N_T = len(VALUES), len(TRAITS)

#: Centred PVQ means in the release (569 participants): the value hierarchy to reproduce.
RELEASE_VALUE_MEANS = {
    "Universalism": 0.55, "Benevolence": 0.59, "Tradition": 0.08, "Conformity": -0.40, "Security": 0.34,
    "Power": -0.73, "Achievement": -0.53, "Hedonism": -0.32, "Stimulation": -0.39, "Self_Direction": 0.53,
}
MEAN_STRETCH = 1.2
#: Latent BFI trait means (answer scale 1..5), set so the observed means come near the release's.
BFI_MEANS = {"Extraversion": 2.65, "Agreeableness": 4.0, "Conscientiousness": 4.35, "Neuroticism": 2.35, "Openness": 3.85}
#: Latent trait inter-correlations (the release's observed ones disattenuated for two-item scales).
BFI_CORR = {
    ("Extraversion", "Agreeableness"): 0.25, ("Extraversion", "Conscientiousness"): 0.30,
    ("Extraversion", "Neuroticism"): -0.40, ("Extraversion", "Openness"): 0.20,
    ("Agreeableness", "Conscientiousness"): 0.45, ("Agreeableness", "Neuroticism"): -0.45,
    ("Agreeableness", "Openness"): 0.08, ("Conscientiousness", "Neuroticism"): -0.50,
    ("Conscientiousness", "Openness"): 0.12, ("Neuroticism", "Openness"): -0.05,
}
#: trait -> (where on the value circle it points, peak correlation with a latent value):
#: corr(t, v_j) = peak * cos(theta_j - angle). Openness ~ Self_Direction/Universalism,
#: Extraversion ~ Stimulation/Hedonism, Agreeableness ~ Benevolence,
#: Conscientiousness ~ Conformity/Security, Neuroticism weakly ~ Benevolence (as in the release).
BFI_VALUE_LINKS = {
    "Openness": (("Self_Direction",), 0.40),
    "Extraversion": (("Stimulation", "Hedonism"), 0.30),
    "Agreeableness": (("Benevolence",), 0.30),
    "Conscientiousness": (("Conformity", "Security"), 0.25),
    "Neuroticism": (("Benevolence",), 0.12),
}

#: Demographic effects on the latent means, in answer-scale points (PVQ 1..6, BFI 1..5).
#: Divide by `SimulationConfig.value_sd` (0.75) for Cohen's d on the latent value, e.g.
#: conservative - liberal on Tradition: 0.60 / 0.75 = d 0.8; female - male on Benevolence:
#: 0.25 / 0.75 = d 0.33; ten years of age on Stimulation: -0.18 / 0.75 = d -0.24 per decade.
#: Directions follow Schwartz & Rubel (2005) for gender, Schwartz (2006) / Robinson (2013)
#: for age, Caprara et al. (2006) / Schwartz et al. (2010) for politics; sizes are round
#: figures in the ranges those papers report, made a little larger on politics so the
#: group-bias demo has gaps worth showing. Keys: ``age_per_decade`` (from 40),
#: ``female_minus_male`` (non-binary in the middle), ``conservative_minus_liberal``
#: (moderate in the middle), ``education_per_level`` (4 levels, centred).
DEMOGRAPHIC_EFFECTS: dict[str, dict[str, float]] = {
    "age_per_decade": {
        "Tradition": 0.15, "Conformity": 0.12, "Security": 0.10, "Benevolence": 0.04, "Universalism": 0.04,
        "Power": -0.03, "Achievement": -0.10, "Hedonism": -0.15, "Stimulation": -0.18, "Self_Direction": -0.03,
        "Conscientiousness": 0.06, "Agreeableness": 0.05, "Neuroticism": -0.06, "Openness": -0.02,
    },
    "female_minus_male": {
        "Benevolence": 0.25, "Universalism": 0.20, "Security": 0.10, "Conformity": 0.05,
        "Power": -0.25, "Achievement": -0.15, "Stimulation": -0.15, "Hedonism": -0.10, "Self_Direction": -0.05,
        "Agreeableness": 0.25, "Neuroticism": 0.35, "Extraversion": 0.05, "Conscientiousness": 0.05,
    },
    "conservative_minus_liberal": {
        "Tradition": 0.60, "Security": 0.40, "Conformity": 0.40, "Power": 0.20, "Achievement": 0.05,
        "Universalism": -0.60, "Self_Direction": -0.25, "Stimulation": -0.10, "Benevolence": -0.05, "Hedonism": -0.05,
        "Openness": -0.20, "Conscientiousness": 0.10,
    },
    "education_per_level": {
        "Self_Direction": 0.08, "Universalism": 0.08, "Achievement": 0.04, "Stimulation": 0.03,
        "Tradition": -0.08, "Conformity": -0.08, "Security": -0.06, "Power": -0.01, "Openness": 0.08,
    },
}

GENDERS = ("female", "male", "non-binary")
GENDER_P = (0.49, 0.48, 0.03)
EDUCATION = ("secondary", "some college", "bachelor", "postgraduate")
EDUCATION_P = (0.22, 0.20, 0.38, 0.20)
POLITICS = ("liberal", "moderate", "conservative")
POLITICS_P = (0.45, 0.30, 0.25)  # at age 40; older people lean a little more conservative
COUNTRIES = ("United Kingdom", "United States", "Canada", "Australia", "South Africa", "Ireland")
COUNTRY_P = (0.45, 0.40, 0.05, 0.04, 0.03, 0.03)
AGE_BANDS = ((18, 29, "18-29"), (30, 44, "30-44"), (45, 59, "45-59"), (60, 200, "60+"))

#: A typical assistant model's centred PVQ profile: high Universalism, Self_Direction and
#: Benevolence, low Power and Security. Like people's profiles it follows the value circle
#: (a cosine peaking 10 degrees from Universalism towards Self_Direction, amplitude 1.2):
#: an item bank reads a profile through items whose correlations are cosines around the
#: circle, so a profile with no circular shape could not be recovered by any bank.
LLM_BASE_PROFILE = {v: round(1.2 * float(np.cos(np.deg2rad(36.0 * i + 10.0))), 4) for i, v in enumerate(VALUES)}

PVQ_KEY = inst.default_pvq21().key()
#: value of each PVQ-21 item (index 0 = item 1), as an index into VALUES
PVQ_ITEM_VALUE = np.array([VALUES.index(next(v for v, ids in PVQ_KEY.items() if k in ids)) for k in range(1, 22)])
#: item-count weights of the values in the person mean over 21 items
PVQ_WEIGHTS = np.bincount(PVQ_ITEM_VALUE, minlength=N_V) / 21.0
_BFI = inst.default_bfi10()
BFI_ITEM_TRAIT = np.array([TRAITS.index(item.trait) for item in _BFI.items])
BFI_ITEM_REVERSED = np.array([item.reversed for item in _BFI.items])

GOOD, STRAIGHT, SPEEDER, ATTENTION = "good", "straight_liner", "speeder", "attention_failer"
KINDS = ("none", "weak", "single", "double")


@dataclass(frozen=True)
class SimulationConfig:
    """Settings of a simulated study. Defaults are calibrated to the public release
    (``tests/test_simulate.py::test_calibrated_to_release`` compares them)."""

    seed: int = 0
    n_groups: int = 12
    participants_per_group: int = 48
    queries_per_group: int = 8
    responses_per_query: int = 5
    # people
    circle: str = "equal"               # 'equal' (36 degrees apart) or 'wedge' (Tradition+Conformity share one)
    circumplex_a: float = 0.27          # corr(v_i, v_j) = a cos(dtheta) + b
    circumplex_b: float = 0.15
    value_sd: float = 0.75              # latent value SD, PVQ answer points
    bfi_sd: float = 0.85
    pvq_level: float = 4.1              # a person's mean latent PVQ response before acquiescence
    pvq_noise_sd: float = 0.9
    pvq_cross_loading: float = 0.5     # share of a PVQ item's value content from a neighbouring value
    bfi_noise_sd: float = 0.7
    acquiescence_sd: float = 0.5
    # items
    item_kind_shares: tuple[float, float, float, float] = (0.40, 0.40, 0.12, 0.08)  # none, weak, single, double
    weak_amplitude: tuple[float, float] = (0.05, 0.20)
    valid_amplitude: tuple[float, float] = (0.44, 0.90)  # SD of the value signal, latent rating points
    difficulty_sd: float = 0.50
    rating_noise_sd: float = 1.0
    rating_shares: tuple[float, ...] = (0.0646, 0.1202, 0.1405, 0.2289, 0.2774, 0.1683)  # the release's
    # rating style s_p (latent rating points): acquiescence weight, links, residual SD
    style_acquiescence: float = 0.95
    style_self_enhancement: float = 0.28   # per SD of the centred Self-Enhancement direction
    style_bfi: tuple[float, ...] = (0.02, 0.22, 0.0, 0.0, 0.0)  # per trait SD, TRAITS order
    style_sd: float = 0.10
    style_item_sd: float = 0.35            # SD over items of their weight w_i on s_p (mean 1)
    # bad respondents (shares of unique participants) and the two-group participant
    straight_liner_share: float = 0.02
    speeder_share: float = 0.02
    attention_failer_share: float = 0.03
    two_group_participant: bool = True
    # timing
    start: str = "2025-03-03T09:00:00+00:00"
    median_minutes: float = 21.0
    # truth
    population_n: int = 100_000
    llm_seed: int | None = None         # None: the study seed
    raters_seed: int | None = None      # None: the study seed; else fresh raters for the same items
    persona_gap_factor: float = 2.0

    def __post_init__(self):
        for name in ("n_groups", "participants_per_group", "queries_per_group", "responses_per_query"):
            if getattr(self, name) < 1:
                raise InputError(f"simulation config: {name}: {getattr(self, name)!r} must be at least 1")
        if self.style_item_sd < 0:
            raise InputError(f"simulation config: style_item_sd: {self.style_item_sd!r} must be >= 0")
        if self.circle not in ("equal", "wedge"):
            raise InputError(f"simulation config: circle: {self.circle!r} is not 'equal' or 'wedge'")
        if len(self.rating_shares) != 6 or abs(sum(self.rating_shares) - 1) > 1e-3 or min(self.rating_shares) <= 0:
            raise InputError(f"simulation config: rating_shares: {self.rating_shares!r} must be 6 positive shares summing to 1")
        if len(self.item_kind_shares) != 4 or abs(sum(self.item_kind_shares) - 1) > 1e-6:
            raise InputError(f"simulation config: item_kind_shares: {self.item_kind_shares!r} must be 4 shares summing to 1")
        if self.responses_per_query > 9:
            raise InputError(f"simulation config: responses_per_query: {self.responses_per_query} must be at most 9")
        if self.n_groups * self.queries_per_group > 4 * 999:
            raise InputError("simulation config: n_groups x queries_per_group: more queries than 4-digit portrait ids")
        if self.two_group_participant and self.n_groups < 2:
            raise InputError("simulation config: two_group_participant: needs at least 2 groups")

    @property
    def n_participants(self) -> int:
        """Unique participants (the two-group one fills a place in both groups)."""
        return self.n_groups * self.participants_per_group - int(self.two_group_participant)

    @property
    def items_per_group(self) -> int:
        return self.queries_per_group * self.responses_per_query


# --------------------------------------------------------------------------------------
# The circle and the person model
# --------------------------------------------------------------------------------------
def circle_angles(circle: str = "equal") -> np.ndarray:
    """Angles (radians) of the ten values in `PVQ_VALUES` order.

    'equal': 36 degrees apart, Universalism at 0. 'wedge': Tradition and Conformity share
    one position (Schwartz's 1992 circle), the nine positions 40 degrees apart.
    """
    if circle == "equal":
        return np.deg2rad(np.arange(N_V) * 36.0)
    slots = np.array([0, 1, 2, 2, 3, 4, 5, 6, 7, 8])
    return np.deg2rad(slots * 40.0)


def _direction_angle(values: tuple[str, ...], angles: np.ndarray) -> float:
    """The circular mean angle of some values (the midpoint for two adjacent ones)."""
    idx = [VALUES.index(v) for v in values]
    return float(np.arctan2(np.sin(angles[idx]).mean(), np.cos(angles[idx]).mean()))


def _nearest_pd_correlation(r: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Clip eigenvalues at `floor` and rescale to a unit diagonal (a positive definite correlation)."""
    w, u = np.linalg.eigh((r + r.T) / 2)
    if w.min() >= floor:
        return r
    fixed = (u * np.maximum(w, floor)) @ u.T
    d = np.sqrt(np.diag(fixed))
    return fixed / np.outer(d, d)


def latent_correlation(config: SimulationConfig) -> np.ndarray:
    """The 15 x 15 correlation of the latent values (circle order) and traits (`BFI_TRAITS` order).

    Values: ``a cos(theta_i - theta_j) + b`` off the diagonal; traits: `BFI_CORR`;
    trait-value: ``peak cos(theta_j - angle_t)`` (`BFI_VALUE_LINKS`); then made positive definite.
    """
    th = circle_angles(config.circle)
    r = np.eye(N_V + N_T)
    vv = config.circumplex_a * np.cos(th[:, None] - th[None, :]) + config.circumplex_b
    np.fill_diagonal(vv, 1.0)
    r[:N_V, :N_V] = vv
    for (a, b), c in BFI_CORR.items():
        i, j = N_V + TRAITS.index(a), N_V + TRAITS.index(b)
        r[i, j] = r[j, i] = c
    for trait, (where, peak) in BFI_VALUE_LINKS.items():
        row = peak * np.cos(th - _direction_angle(where, th))
        i = N_V + TRAITS.index(trait)
        r[i, :N_V] = r[:N_V, i] = row
    return _nearest_pd_correlation(r)


def _effects_matrix() -> tuple[np.ndarray, list[str]]:
    """Demographic effects as a (4 x 15) matrix over values then traits."""
    dims = list(VALUES) + list(TRAITS)
    keys = list(DEMOGRAPHIC_EFFECTS)
    m = np.zeros((len(keys), len(dims)))
    for i, key in enumerate(keys):
        for dim, eff in DEMOGRAPHIC_EFFECTS[key].items():
            m[i, dims.index(dim)] = eff
    return m, keys


def _draw_demographics(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    age = np.clip(np.round(18 + rng.gamma(3.0, 6.5, n)), 18, 80).astype(int)
    gender = rng.choice(len(GENDERS), n, p=GENDER_P)
    education = rng.choice(len(EDUCATION), n, p=EDUCATION_P)
    # Older people lean conservative: shift the log-odds of each category by age.
    logits = np.log(POLITICS_P)[None, :] + np.outer((age - 40) / 10.0, [-0.15, 0.0, 0.15])
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    politics = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    country = rng.choice(len(COUNTRIES), n, p=COUNTRY_P)
    return {"age": age, "gender": gender, "education": education, "politics": np.minimum(politics, 2), "country": country}


def _demographic_design(demo: dict[str, np.ndarray]) -> np.ndarray:
    """Per person the covariates the effects multiply (order of DEMOGRAPHIC_EFFECTS)."""
    female = np.select([demo["gender"] == 0, demo["gender"] == 1], [0.5, -0.5], 0.0)
    conservative = demo["politics"] - 1.0  # liberal -1, moderate 0, conservative +1
    return np.column_stack([(demo["age"] - 40) / 10.0, female, conservative / 2.0, demo["education"] - 1.5])


@dataclass
class _People:
    demo: dict[str, np.ndarray]
    values: np.ndarray       # latent values, answer points (n x 10)
    traits: np.ndarray       # latent traits, answer points (n x 5)
    acquiescence: np.ndarray
    style: np.ndarray        # rating style s_p
    z: np.ndarray            # standardised true centred values


@dataclass(frozen=True)
class _Model:
    """Quantities derived from the config once: the latent covariance and the z scaling."""
    chol: np.ndarray
    means: np.ndarray
    effects: np.ndarray
    centre_mean: np.ndarray
    centre_sd: np.ndarray
    trait_sd: np.ndarray
    z_cov: np.ndarray          # covariance (= correlation) of z
    se_direction: np.ndarray   # weights of z giving the unit-variance Self-Enhancement direction


def _model(config: SimulationConfig) -> _Model:
    r = latent_correlation(config)
    sd = np.r_[np.full(N_V, config.value_sd), np.full(N_T, config.bfi_sd)]
    cov = r * np.outer(sd, sd)
    # The ordinal cuts and centring shrink mean differences: stretch the latent means so the
    # observed centred means come out near the release's.
    means = np.r_[[MEAN_STRETCH * RELEASE_VALUE_MEANS[v] for v in VALUES], [BFI_MEANS[t] for t in TRAITS]]
    effects, _ = _effects_matrix()
    # z: centred values standardised by their population mean and SD. Mean: the centred
    # base means plus the centred effects at the mean covariates; the SD adds the covariate
    # variance to the latent one. Both from the model, not from a sample.
    centring = np.eye(N_V) - PVQ_WEIGHTS[None, :]
    cov_c = centring @ cov[:N_V, :N_V] @ centring.T
    design_mean, design_cov = _design_moments()
    eff_c = effects[:, :N_V] @ centring.T
    centre_mean = centring @ means[:N_V] + design_mean @ eff_c
    total_c = cov_c + eff_c.T @ design_cov @ eff_c
    centre_sd = np.sqrt(np.diag(total_c))
    z_cov = total_c / np.outer(centre_sd, centre_sd)
    eff_t = effects[:, N_V:]
    trait_sd = np.sqrt(np.full(N_T, config.bfi_sd**2) + np.diag(eff_t.T @ design_cov @ eff_t))
    th = circle_angles(config.circle)
    se_direction = unit_direction(np.array([_direction_angle(("Power", "Achievement"), th)]), th, z_cov)[0]
    return _Model(np.linalg.cholesky(cov), means, effects, centre_mean, centre_sd, trait_sd, z_cov, se_direction)


def unit_direction(phi: np.ndarray, theta: np.ndarray, z_cov: np.ndarray) -> np.ndarray:
    """Weights ``w_v = cos(theta_v - phi) / k(phi)`` with ``k = sqrt(c' Cov(z) c)``: ``z @ w`` has unit variance.

    An item at angle ``phi`` with amplitude ``A`` has loadings ``A w(phi)``, so ``A`` is the
    SD of its value signal in latent rating points whatever the angle.
    """
    c = np.cos(theta[None, :] - np.asarray(phi)[:, None])
    return c / np.sqrt(np.einsum("iv,vw,iw->i", c, z_cov, c))[:, None]


def _design_moments() -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the demographic covariates (from a fixed large draw: their law is fixed)."""
    demo = _draw_demographics(200_000, np.random.default_rng(20250303))
    x = _demographic_design(demo)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _draw_people(n: int, config: SimulationConfig, model: _Model, rng: np.random.Generator) -> _People:
    demo = _draw_demographics(n, rng)
    latent = model.means + _demographic_design(demo) @ model.effects + rng.standard_normal((n, N_V + N_T)) @ model.chol.T
    values, traits = latent[:, :N_V], latent[:, N_V:]
    acq = rng.normal(0.0, config.acquiescence_sd, n)
    centred = values - values @ PVQ_WEIGHTS[:, None]
    z = (centred - model.centre_mean) / model.centre_sd
    trait_z = (traits - model.means[N_V:]) / model.trait_sd
    se = z @ model.se_direction
    style = (config.style_acquiescence * acq + config.style_self_enhancement * se
             + trait_z @ np.asarray(config.style_bfi) + rng.normal(0.0, config.style_sd, n))
    return _People(demo, values, traits, acq, style, z)


def _cut(latent: np.ndarray, n_categories: int) -> np.ndarray:
    """Answers 1..n from latent responses on the answer scale (cuts at the midpoints)."""
    return np.clip(np.rint(latent), 1, n_categories).astype(np.int8)


def pvq_item_content(cross_loading: float) -> np.ndarray:
    """(10 x 21) weights of the latent values in each PVQ-21 item's content.

    Item k of value V measures ``(1 - c) v_V + c v_N``: part of its content belongs to a
    neighbour N of V on the circle, as real PVQ items cross-load on adjacent values
    (Knoppen & Saris 2009; Beierlein et al. 2012). The first item of a value leans to the
    value before it on the circle, the second to the value after it, a third (Universalism's
    item 19) to neither; so the two items of a value share only part of their content.
    """
    w = np.zeros((N_V, 21))
    seen = np.zeros(N_V, dtype=int)
    for k, v in enumerate(PVQ_ITEM_VALUE):
        j = seen[v]
        seen[v] += 1
        if j < 2 and cross_loading:
            w[v, k] = 1.0 - cross_loading
            w[(v - 1 if j == 0 else v + 1) % N_V, k] = cross_loading
        else:
            w[v, k] = 1.0
    return w


def _pvq_answers(people: _People, config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    n = len(people.acquiescence)
    # Items keep their own value's mean (an item intercept); what they share with a
    # neighbour is the person's deviation from it.
    base = np.array([MEAN_STRETCH * RELEASE_VALUE_MEANS[v] for v in VALUES])
    content = base[PVQ_ITEM_VALUE] + (people.values - base) @ pvq_item_content(config.pvq_cross_loading)
    latent = (config.pvq_level + content + people.acquiescence[:, None]
              + rng.normal(0.0, config.pvq_noise_sd, (n, 21)))
    return _cut(latent, 6)


def _bfi_answers(people: _People, config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    n = len(people.acquiescence)
    trait = people.traits[:, BFI_ITEM_TRAIT]
    trait = np.where(BFI_ITEM_REVERSED, 6.0 - trait, trait)
    latent = trait + people.acquiescence[:, None] + rng.normal(0.0, config.bfi_noise_sd, (n, 10))
    return _cut(latent, 5)


# --------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------
def _draw_items(config: SimulationConfig, model: _Model, rng: np.random.Generator) -> pd.DataFrame:
    """Queries with portrait ids like the release's, and their candidate responses with truth."""
    th = circle_angles(config.circle)
    n_q = config.n_groups * config.queries_per_group
    # As in the release, each group mixes advice (ids 1xxx, 2xxx) and chat (3xxx, 4xxx) queries.
    first = np.tile(np.arange(config.queries_per_group) % 4 + 1, config.n_groups)
    numbers = np.empty(n_q, dtype=int)
    for digit in range(1, 5):
        where = np.flatnonzero(first == digit)
        numbers[where] = rng.choice(np.arange(1, 1000), len(where), replace=False)
    portrait = np.array([f"{d}{k:03d}" for d, k in zip(first, numbers)])
    group = np.repeat(np.arange(config.n_groups), config.queries_per_group)

    n_r = config.responses_per_query
    n_items = n_q * n_r
    kind = rng.choice(len(KINDS), n_items, p=config.item_kind_shares)
    amp = np.zeros(n_items)
    weak = kind == 1
    amp[weak] = rng.uniform(*config.weak_amplitude, weak.sum())
    valid = kind >= 2
    amp[valid] = rng.uniform(*config.valid_amplitude, valid.sum())
    # Angles: within a query the responses are written to differ in value, so they start
    # from evenly spread positions with a random rotation.
    spread = (rng.uniform(0, 2 * np.pi, n_q)[:, None] + np.arange(n_r)[None, :] * 2 * np.pi / n_r).ravel()
    anchor = np.floor(spread / (2 * np.pi) * N_V).astype(int) % N_V     # the value nearest the spread position
    neighbour = (anchor + rng.choice([-1, 1], n_items)) % N_V
    angle = np.where(kind == 1, rng.uniform(0, 2 * np.pi, n_items), th[anchor] + rng.normal(0, np.deg2rad(5), n_items))
    mid = np.arctan2(np.sin(th[anchor]) + np.sin(th[neighbour]), np.cos(th[anchor]) + np.cos(th[neighbour]))
    angle = np.where(kind == 3, mid + rng.normal(0, np.deg2rad(5), n_items), angle)
    angle = np.mod(angle, 2 * np.pi)
    loadings = amp[:, None] * unit_direction(angle, th, model.z_cov)
    difficulty = rng.normal(0.0, config.difficulty_sd, n_items)
    style_weight = _style_weights(config.style_item_sd, n_items, rng)

    q = np.repeat(np.arange(n_q), n_r)
    items = pd.DataFrame({
        "portrait_id": portrait[q],
        "option_id": np.tile(np.arange(1, n_r + 1), n_q),
        "group_id": [f"g{g + 1:02d}" for g in group[q]],
        "kind": np.array(KINDS)[kind],
        "amplitude": amp,
        "angle_deg": np.where(kind == 0, np.nan, np.rad2deg(angle)),
        "difficulty": difficulty,
        "style_weight": style_weight,
        # object columns: a missing value stays None (pandas 3 would turn it into NaN in a str column)
        "intended_value": pd.Series(np.where(kind >= 2, np.array(VALUES)[anchor], None), dtype=object),
        "second_value": pd.Series(np.where(kind == 3, np.array(VALUES)[neighbour], None), dtype=object),
    })
    for j, v in enumerate(VALUES):
        items[f"L_{v}"] = loadings[:, j]
    return items


def _style_weights(sd: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Each item's sensitivity to the rater's style: Gamma with mean 1 and SD `sd` (1 when 0)."""
    if sd <= 0:
        return np.ones(n)
    shape = 1.0 / sd**2
    return rng.gamma(shape, 1.0 / shape, n)


def _loadings(items: pd.DataFrame) -> np.ndarray:
    return items[[f"L_{v}" for v in VALUES]].to_numpy()


def _rating_thresholds(config: SimulationConfig, model: _Model, items: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Cuts of the latent rating such that the expected share of each rating is `rating_shares`.

    Given an item, ``r*`` is normal with mean ``d_i`` and variance ``var(L_i z + s) + noise^2``;
    the marginal is the mixture over the items. The moments of ``(z, s)`` come from a
    calibration draw of 50,000 people; the five cuts solve ``mixture CDF = cumulative share``
    by bisection (all five at once).
    """
    people = _draw_people(50_000, config, model, rng)
    zs = np.column_stack([people.z, people.style])
    cov = np.cov(zs, rowvar=False)
    mean = zs.mean(axis=0)
    w = np.column_stack([_loadings(items), items["style_weight"].to_numpy()])
    mu = items["difficulty"].to_numpy() + w @ mean
    sd = np.sqrt(np.einsum("ij,jk,ik->i", w, cov, w) + config.rating_noise_sd**2)
    target = np.cumsum(config.rating_shares)[:-1]
    lo, hi = np.full(5, mu.min() - 10 * sd.max()), np.full(5, mu.max() + 10 * sd.max())
    for _ in range(60):
        mid = (lo + hi) / 2
        cdf = special.ndtr((mid[:, None] - mu[None, :]) / sd[None, :]).mean(axis=1)
        lo, hi = np.where(cdf < target, mid, lo), np.where(cdf < target, hi, mid)
    return (lo + hi) / 2


def _ratings(people: _People, loadings: np.ndarray, difficulty: np.ndarray, style_weight: np.ndarray,
             thresholds: np.ndarray, config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """Ratings 1..6 (people x items): ``r* = d + L z + w s + e`` cut at the thresholds."""
    latent = (difficulty[None, :] + people.z @ loadings.T + people.style[:, None] * style_weight[None, :]
              + rng.normal(0.0, config.rating_noise_sd, (len(people.style), len(difficulty))))
    return (np.searchsorted(thresholds, latent) + 1).astype(np.int8)


# --------------------------------------------------------------------------------------
# The population truth
# --------------------------------------------------------------------------------------
def _standardised_ranks(x: np.ndarray) -> np.ndarray:
    """Column-wise midranks, centred and scaled to unit norm (so a dot product is Spearman's rho)."""
    r = stats.rankdata(x, axis=0)
    r -= r.mean(axis=0)
    return r / np.linalg.norm(r, axis=0)


def _observed_scores(pvq: np.ndarray, bfi: np.ndarray) -> pd.DataFrame:
    """The scores the analysis uses, by `analysis.scoring` (values, higher-order, traits)."""
    pvq_frame = pd.DataFrame(pvq.astype(float), columns=PVQ_COLUMNS)
    bfi_frame = pd.DataFrame(bfi.astype(float), columns=BFI_COLUMNS)
    return pd.concat([score_pvq(pvq_frame), score_bfi(bfi_frame)], axis=1)


def spearman_ordinal(latent: np.ndarray, thresholds: np.ndarray, rank_scores: np.ndarray) -> np.ndarray:
    """Spearman's rho of ordinal ratings (``latent`` cut at ``thresholds``) with scores given as ranks.

    Parameters
    ----------
    latent : (n, items) latent responses; the rating is ``1 + #{k : latent > thresholds[k]}``.
    thresholds : increasing cuts.
    rank_scores : (n, dims) midranks of the scores, centred and scaled to unit norm per column.

    Spearman's rho is Pearson's r of midranks. With ``K_k`` the indicator of ``latent > t_k``,
    the sum of the score ranks over the people in rating category c is a difference of two
    products ``K_k' R`` (a matrix product, no per-person rank of the ratings is needed), and
    ``rho_id = sum_c (m_ic - mean) S_icd / sqrt(sum_c n_ic (m_ic - mean)^2)`` with ``m_ic`` the
    midrank and ``n_ic`` the size of category c. Equal to ``scipy.stats.spearmanr`` (tested).
    """
    n = latent.shape[0]
    # A column of ones makes the same product count the people above each cut.
    with_ones = np.column_stack([rank_scores, np.ones(n, dtype=rank_scores.dtype)])
    above = np.empty(latent.shape, dtype=rank_scores.dtype)
    exceed = [np.full(latent.shape[1], float(n))]
    sums = [np.zeros((latent.shape[1], rank_scores.shape[1]))]  # centred ranks sum to zero over everyone
    for t in thresholds:
        np.greater(latent, t, out=above, casting="unsafe")
        product = (above.T @ with_ones).astype(np.float64)
        sums.append(product[:, :-1])
        exceed.append(np.rint(product[:, -1]))
    exceed.append(np.zeros(latent.shape[1]))
    sums.append(np.zeros_like(sums[0]))
    exceed, sums = np.stack(exceed, axis=1), np.stack(sums, axis=1)   # items x (C+1) [x dims]
    counts = exceed[:, :-1] - exceed[:, 1:]                           # items x C, category 1 first
    cat_sums = sums[:, :-1] - sums[:, 1:]
    midrank = np.cumsum(counts, axis=1) - (counts - 1) / 2.0 - (n + 1) / 2.0
    cov = np.einsum("ic,icd->id", midrank, cat_sums)
    sd = np.sqrt((counts * midrank**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / sd[:, None]


def _one_blas_thread():
    """Limit BLAS to one thread: the products here are small, and on a busy 2-core machine
    BLAS threads waiting on each other cost more than they gain (2.4x slower, measured)."""
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:  # pragma: no cover
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _population_chunks(rho, z, style, loadings, difficulty, style_weight, noise, thresholds, rank_scores, chunk) -> None:
    n = len(style)
    for c, start in enumerate(range(0, len(rho), chunk)):
        sl = slice(start, min(start + chunk, len(rho)))
        m = sl.stop - sl.start
        e = noise[:, :m] if c == 0 else np.roll(noise[:, :m], (c * 7919) % n, axis=0)
        latent = z @ loadings[sl].T + difficulty[sl] + style[:, None] * style_weight[sl] + e
        rho[sl] = spearman_ordinal(latent, thresholds, rank_scores)


def _population(config: SimulationConfig, model: _Model, items: pd.DataFrame, thresholds: np.ndarray,
                rng: np.random.Generator, chunk: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Population Spearman rho of every item with every observed score, by Monte Carlo.

    Returns the long table (portrait_id, option_id, family, dimension, rho) and the
    group-mean centred PVQ scores of the simulated population by demographic group.

    Speed: the rating noise is drawn once for `chunk` items and reused for the next chunks
    with the people rolled by a chunk-specific offset, so each item still gets noise that
    is independent of the person it is added to (its estimate stays unbiased with standard
    error ~ 1/sqrt(n)); drawing fresh noise for every item would cost most of the time.
    """
    n = config.population_n
    people = _draw_people(n, config, model, rng)
    scores = _observed_scores(_pvq_answers(people, config, rng), _bfi_answers(people, config, rng))
    dims = list(scores.columns)
    rank_scores = _standardised_ranks(scores.to_numpy()).astype(np.float32)
    loadings = _loadings(items).astype(np.float32)
    difficulty = items["difficulty"].to_numpy().astype(np.float32)
    style_weight = items["style_weight"].to_numpy().astype(np.float32)
    z, style = people.z.astype(np.float32), people.style.astype(np.float32)
    noise = rng.standard_normal((n, min(chunk, len(items))), dtype=np.float32) * np.float32(config.rating_noise_sd)
    rho = np.empty((len(items), len(dims)))
    with _one_blas_thread():
        _population_chunks(rho, z, style, loadings, difficulty, style_weight, noise, thresholds, rank_scores, chunk)
    long = pd.DataFrame(rho, columns=dims)
    long["portrait_id"], long["option_id"] = items["portrait_id"].to_numpy(), items["option_id"].to_numpy()
    long = long.melt(["portrait_id", "option_id"], var_name="dimension", value_name="rho")
    long.insert(2, "family", long["dimension"].map(inst.FAMILY_OF))
    groups = _group_means(people.demo, scores[list(VALUES)])
    return long, groups


def _structural_summary(population: pd.DataFrame, theta: np.ndarray) -> pd.DataFrame:
    """The cosine fit of each item's population rho with the ten values around the circle.

    Structural summary method (Gurtman 1992; Zimmermann & Wright 2017): with ``r_v`` at
    angles ``theta_v``, ``x = (2/n) sum r_v cos theta_v``, ``y = (2/n) sum r_v sin theta_v``;
    elevation = mean r, amplitude = hypot(x, y), angle = atan2(y, x). This is the angle an
    analysis of the item's observed correlations should recover: it differs from the
    loading angle (`angle_deg`) by the rating style's pull towards Self-Enhancement.
    """
    m = population[population["family"] == "pvq"].pivot_table(
        index=["portrait_id", "option_id"], columns="dimension", values="rho", sort=False)[list(VALUES)]
    r = m.to_numpy()
    x, y = r @ np.cos(theta) * 2 / N_V, r @ np.sin(theta) * 2 / N_V
    return pd.DataFrame({"rho_elevation": r.mean(axis=1), "rho_amplitude": np.hypot(x, y),
                         "rho_angle_deg": np.rad2deg(np.arctan2(y, x)) % 360}, index=m.index)


def _demographic_labels(demo: dict[str, np.ndarray]) -> pd.DataFrame:
    age = demo["age"]
    band = np.select([(age >= lo) & (age <= hi) for lo, hi, _ in AGE_BANDS], [b for _, _, b in AGE_BANDS], "")
    return pd.DataFrame({
        "age": age, "age_band": band, "gender": np.array(GENDERS)[demo["gender"]],
        "education": np.array(EDUCATION)[demo["education"]], "politics": np.array(POLITICS)[demo["politics"]],
        "country": np.array(COUNTRIES)[demo["country"]],
    })


def age_band(age: int) -> str:
    """The age band ('18-29', '30-44', '45-59', '60+') used for the group comparisons."""
    return next(b for lo, hi, b in AGE_BANDS if lo <= age <= hi)


def _group_means(demo: dict[str, np.ndarray], values: pd.DataFrame) -> pd.DataFrame:
    """Mean profile per demographic group (grouping on integer codes: fast on 200,000 people)."""
    age = demo["age"]
    band = np.select([(age >= lo) & (age <= hi) for lo, hi, _ in AGE_BANDS], list(range(len(AGE_BANDS))), -1)
    names = {"gender": (demo["gender"], GENDERS), "age_band": (band, [b for _, _, b in AGE_BANDS]),
             "education": (demo["education"], EDUCATION), "politics": (demo["politics"], POLITICS)}
    x = values.to_numpy()
    rows, index = [x.mean(axis=0)], [("all", "all")]
    for variable, (codes, labels) in names.items():
        sums = np.zeros((len(labels), x.shape[1]))
        np.add.at(sums, codes, x)
        counts = np.bincount(codes, minlength=len(labels))
        for j, label in enumerate(labels):
            if counts[j]:
                rows.append(sums[j] / counts[j])
                index.append((variable, label))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["variable", "group"]), columns=values.columns)


# --------------------------------------------------------------------------------------
# The simulated LLM and personas
# --------------------------------------------------------------------------------------
def _weighted_centre(profile: np.ndarray) -> np.ndarray:
    """Centre a value profile the way PVQ scores are centred (item-weighted mean zero)."""
    return profile - profile @ PVQ_WEIGHTS


def true_llm_profile(seed: int = 0) -> dict[str, float]:
    """A simulated LLM's known centred PVQ profile (value -> score, release units).

    `LLM_BASE_PROFILE` plus ``N(0, 0.15)`` per value from `seed`, centred so the
    item-weighted mean is zero like a real centred PVQ profile.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    base = np.array([LLM_BASE_PROFILE[v] for v in VALUES]) + rng.normal(0.0, 0.15, N_V)
    return {v: round(float(x), 4) for v, x in zip(VALUES, _weighted_centre(base))}


def persona_profiles(sim: Simulation, factor: float | None = None, base: str = "human") -> dict:
    """Per demographic group the true human mean profile and a simulated LLM persona profile.

    Human: the population mean of the observed centred PVQ scores in the group.
    Persona: ``base + factor * (human_group - human_all)``, i.e. the LLM exaggerates every
    human group gap (group minus everyone) by `factor` (`persona_gap_factor`, default 2),
    so persona(a) - persona(b) = factor * (human(a) - human(b)). `base` is 'human' (the
    all-human mean: the persona differs from its group only by the exaggeration) or 'llm'
    (the simulated LLM's own profile).

    Returns ``{variable: {group: {"human": {value: score}, "llm_persona": {value: score}}}}``
    for variable in gender, age_band, education, politics.
    """
    factor = sim.config.persona_gap_factor if factor is None else factor
    g = sim.truth.human_group_profiles
    if g.empty:
        raise InputError("persona_profiles: the simulation has no population (population_n = 0): "
                         "the human group profiles come from it")
    everyone = g.loc[("all", "all")].to_numpy()
    if base == "human":
        origin = everyone
    elif base == "llm":
        origin = np.array([sim.truth.llm_profile[v] for v in VALUES])
    else:
        raise InputError(f"persona_profiles: base: {base!r} is not 'human' or 'llm'")
    out: dict = {}
    for (variable, group), row in g.iterrows():
        if variable == "all":
            continue
        human = row.to_numpy()
        persona = origin + factor * (human - everyone)
        out.setdefault(variable, {})[group] = {
            "human": {v: float(x) for v, x in zip(VALUES, human)},
            "llm_persona": {v: float(x) for v, x in zip(VALUES, persona)},
        }
    return out


# --------------------------------------------------------------------------------------
# The simulation
# --------------------------------------------------------------------------------------
@dataclass
class Truth:
    """What the simulation knows and an analysis should recover.

    participants : per participant_id: ``kind`` (good, straight_liner, speeder,
        attention_failer), ``two_groups``, ``groups`` (';'-joined), ``acquiescence``,
        ``style``, demographics, ``age_band``.
    values : per participant_id the true centred values (latent, item-weighted centring,
        answer points; circle order) and the four higher-order values.
    traits : per participant_id the latent Big Five traits.
    items : per item: group_id, kind, amplitude, angle_deg (the loading angle; NaN for
        kind none), difficulty, style_weight (``w_i``), intended_value, second_value, ``L_<value>`` true loadings,
        and (with a population) ``rho_elevation, rho_amplitude, rho_angle_deg``: the
        cosine fit of its population rho with the ten values, the target for a
        structural-summary analysis of observed correlations.
    population : long table ``portrait_id, option_id, family, dimension, rho``: the
        population Spearman rho of the item's rating with the observed score (good
        respondents); empty when ``population_n`` is 0.
    human_group_profiles : population mean observed centred PVQ profile by demographic group.
    llm_profile : the simulated LLM's centred PVQ profile.
    rating_thresholds : the five cuts of the latent rating.
    """

    participants: pd.DataFrame
    values: pd.DataFrame
    traits: pd.DataFrame
    items: pd.DataFrame
    population: pd.DataFrame
    human_group_profiles: pd.DataFrame
    llm_profile: dict[str, float]
    rating_thresholds: np.ndarray
    circle_angles_deg: dict[str, float] = field(default_factory=dict)

    def population_matrix(self, family: str | None = None) -> pd.DataFrame:
        """Population rho as items x dimensions (index portrait_id, option_id)."""
        pop = self.population if family is None else self.population[self.population["family"] == family]
        return pop.pivot_table(index=["portrait_id", "option_id"], columns="dimension", values="rho", sort=False)

    def true_pairs(self, threshold: float = 0.3) -> pd.DataFrame:
        """Item-dimension pairs whose population rho is at least `threshold`."""
        return self.population[self.population["rho"] >= threshold].reset_index(drop=True)


@dataclass
class Simulation:
    """A simulated study: tables shaped like the database's (without study_id) and the truth."""

    config: SimulationConfig
    items: pd.DataFrame
    participants: pd.DataFrame
    participations: pd.DataFrame
    instrument_answers: pd.DataFrame
    ratings: pd.DataFrame
    attention_checks: pd.DataFrame
    truth: Truth

    def answers_wide(self) -> pd.DataFrame:
        """PVQ-21 and BFI-10 answers as one row per participant (pvq1..21, bfi1..10), as `analysis.scoring` reads."""
        a = self.instrument_answers
        a = a.assign(column=np.where(a["instrument"] == "pvq21", "pvq", "bfi") + a["item_id"].astype(str))
        wide = a.pivot(index="participant_id", columns="column", values="answer")
        return wide[PVQ_COLUMNS + BFI_COLUMNS].astype(float)

    def truth_to_json(self, path: str | Path) -> None:
        """Write the truth as JSON (atomically): config, participants, items with loadings and
        population rho, the simulated LLM profile and the persona profiles."""
        t = self.truth
        pop = t.population
        pop_by_item: dict[tuple[str, int], dict] = {}
        for (pid, opt), sub in pop.groupby(["portrait_id", "option_id"], sort=False):
            pop_by_item[(pid, int(opt))] = {fam: dict(zip(s["dimension"], s["rho"].round(4).tolist()))
                                           for fam, s in sub.groupby("family")}
        items = []
        for rec in t.items.to_dict("records"):
            key = (rec["portrait_id"], int(rec["option_id"]))
            items.append({
                "portrait_id": rec["portrait_id"], "option_id": int(rec["option_id"]), "group_id": rec["group_id"],
                "kind": rec["kind"], "amplitude": round(rec["amplitude"], 4),
                "angle_deg": None if np.isnan(rec["angle_deg"]) else round(rec["angle_deg"], 2),
                "difficulty": round(rec["difficulty"], 4), "style_weight": round(rec["style_weight"], 4),
                "intended_value": rec["intended_value"],
                "second_value": rec["second_value"],
                "true_loadings": {v: round(rec[f"L_{v}"], 4) for v in VALUES},
                "population_rho_circle": ({k: round(float(rec[k]), 4) for k in ("rho_elevation", "rho_amplitude", "rho_angle_deg")}
                                          if "rho_angle_deg" in rec else None),
                "population_rho": pop_by_item.get(key, {}),
            })
        participants = t.participants.reset_index().to_dict("records")
        values = t.values.round(4).reset_index().to_dict("records")
        data = {
            "config": asdict(self.config),
            "circle_angles_deg": t.circle_angles_deg,
            "demographic_effects": DEMOGRAPHIC_EFFECTS,
            "rating_thresholds": [round(float(x), 4) for x in t.rating_thresholds],
            "llm_profile": t.llm_profile,
            "persona_profiles": persona_profiles(self) if len(t.human_group_profiles) else {},
            "participants": participants,
            "true_values": values,
            "items": items,
        }
        write_json_atomic(data, path)


def _iso(t: datetime) -> str:
    """ISO 8601 UTC with milliseconds, as `valueportrait.storage.now` writes."""
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _planted_kinds(config: SimulationConfig, n: int, two_group: int | None, r_bad: np.random.Generator) -> np.ndarray:
    """Who is a good respondent and who a planted bad one (at least one of each kind whose share is > 0)."""
    kind = np.full(n, GOOD, dtype=object)
    candidates = np.array([p for p in range(n) if p != two_group])
    shares = (config.straight_liner_share, config.speeder_share, config.attention_failer_share)
    counts = [int(round(s * n)) if s > 0 else 0 for s in shares]
    counts = [max(c, 1) if s > 0 else 0 for c, s in zip(counts, shares)]
    if sum(counts) > len(candidates):
        raise InputError(f"simulation config: bad respondent shares: {sum(counts)} bad of {n} participants")
    chosen = r_bad.permutation(candidates)[: sum(counts)]
    kind[chosen[: counts[0]]] = STRAIGHT
    kind[chosen[counts[0]: counts[0] + counts[1]]] = SPEEDER
    kind[chosen[counts[0] + counts[1]:]] = ATTENTION
    return kind


def _people_and_answers(config: SimulationConfig, model: _Model, kind: np.ndarray, r_people, r_answers, r_bad):
    """The people, their PVQ-21 and BFI-10 answers (bad respondents' overwritten) and each straight-liner's one answer."""
    n = len(kind)
    people = _draw_people(n, config, model, r_people)
    pvq = _pvq_answers(people, config, r_answers)
    bfi = _bfi_answers(people, config, r_answers)
    straight = kind == STRAIGHT
    random_ = (kind == SPEEDER) | (kind == ATTENTION)
    constant = r_bad.integers(2, 6, n)  # a straight-liner's one answer (2..5)
    pvq[straight] = constant[straight, None]
    bfi[straight] = np.minimum(constant[straight, None], 5)
    pvq[random_] = r_bad.integers(1, 7, (random_.sum(), 21))
    bfi[random_] = r_bad.integers(1, 6, (random_.sum(), 10))
    return people, pvq, bfi, constant


def _subset(people: _People, persons: np.ndarray) -> _People:
    return _People({k: v[persons] for k, v in people.demo.items()}, people.values[persons], people.traits[persons],
                   people.acquiescence[persons], people.style[persons], people.z[persons])


def _plant_bad_ratings(ratings: np.ndarray, kind: np.ndarray, constant: np.ndarray, r_bad: np.random.Generator) -> None:
    """Straight-liners rate everything with their one answer; speeders and attention failers at random (in place)."""
    straight = kind == STRAIGHT
    ratings[straight] = constant[straight, None]
    random_ = (kind == SPEEDER) | (kind == ATTENTION)
    ratings[random_] = r_bad.integers(1, 7, (random_.sum(), ratings.shape[1]))


def _participants_table(pids: list[str], labels: pd.DataFrame, participations: pd.DataFrame) -> pd.DataFrame:
    first_start = participations.groupby("participant_id")["started_at"].min()
    participants = pd.DataFrame({
        "participant_id": pids, "age": labels["age"], "gender": labels["gender"], "education": labels["education"],
        "politics": labels["politics"], "country": labels["country"], "demographics_json": None,
    })
    participants["created_at"] = participants["participant_id"].map(first_start)
    return participants


def _truth_of_people(people: _People, kind: np.ndarray, labels: pd.DataFrame, pids: list[str],
                     participations: pd.DataFrame, two_group: int | None):
    """Truth.participants, Truth.values and Truth.traits for the simulated people."""
    n = len(kind)
    groups_of = participations.groupby("participant_id")["group_id"].agg(";".join)
    truth_people = labels.assign(participant_id=pids, kind=kind, two_groups=np.arange(n) == (two_group if two_group is not None else -1),
                                 acquiescence=people.acquiescence, style=people.style)
    truth_people["groups"] = truth_people["participant_id"].map(groups_of)
    truth_people = truth_people.set_index("participant_id")[
        ["kind", "two_groups", "groups", "acquiescence", "style", "age", "age_band", "gender", "education", "politics", "country"]]
    centred = people.values - people.values @ PVQ_WEIGHTS[:, None]
    true_values = pd.DataFrame(centred, index=pd.Index(pids, name="participant_id"), columns=list(VALUES))
    for higher, parts in inst.HIGHER_ORDER.items():
        w = np.array([PVQ_WEIGHTS[VALUES.index(v)] for v in parts])
        true_values[higher] = centred[:, [VALUES.index(v) for v in parts]] @ w / w.sum()
    traits = pd.DataFrame(people.traits, index=true_values.index, columns=list(TRAITS))
    return truth_people, true_values, traits


def simulate_study(config: SimulationConfig | None = None) -> Simulation:
    """Simulate a study and its truth from `config` (everything from ``config.seed``).

    Examples
    --------
    >>> sim = simulate_study(SimulationConfig(n_groups=2, participants_per_group=10, population_n=0))
    >>> len(sim.participations), sim.ratings.shape[0]
    (20, 800)
    """
    config = config or SimulationConfig()
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(8)]
    r_items, r_people, r_answers, r_bad, r_time, r_pop, r_cal, r_order = streams
    if config.raters_seed is not None:
        # Another sample of raters for the same items (same truth): only the streams of the
        # people, their answers and their sessions change.
        fresh = [np.random.default_rng(s) for s in np.random.SeedSequence([config.seed, config.raters_seed]).spawn(5)]
        r_people, r_answers, r_bad, r_time, r_order = fresh
    model = _model(config)
    items = _draw_items(config, model, r_items)
    thresholds = _rating_thresholds(config, model, items, r_cal)

    # -- who is in which group --------------------------------------------------------
    g, per = config.n_groups, config.participants_per_group
    n = config.n_participants
    person_of_slot = np.arange(g * per)               # participation slot -> person
    two_group = None
    if config.two_group_participant:
        # One person of group a also fills a place in group b (as P186 in the release).
        a, b = np.sort(r_bad.choice(g, 2, replace=False))
        slot_a, slot_b = a * per + int(r_bad.integers(per)), b * per + int(r_bad.integers(per))
        person_of_slot = np.empty(g * per, dtype=int)
        person_of_slot[np.delete(np.arange(g * per), slot_b)] = np.arange(n)
        person_of_slot[slot_b] = person_of_slot[slot_a]
        two_group = int(person_of_slot[slot_a])
    slot_group = np.repeat(np.arange(g), per)

    kind = _planted_kinds(config, n, two_group, r_bad)

    # -- people and their answers -----------------------------------------------------
    people, pvq, bfi, constant = _people_and_answers(config, model, kind, r_people, r_answers, r_bad)

    # -- ratings, group by group (a group's people rate the group's items) ----------------
    loadings, difficulty, style_weight = _loadings(items), items["difficulty"].to_numpy(), items["style_weight"].to_numpy()
    n_slots, n_items = g * per, config.items_per_group
    item_of = np.arange(g * n_items).reshape(g, n_items)      # items are stored group by group
    slot_ratings = np.empty((n_slots, n_items), dtype=np.int8)  # in the group's item order
    for gi in range(g):
        slots = np.arange(gi * per, (gi + 1) * per)
        persons = person_of_slot[slots]
        slot_ratings[slots] = _ratings(_subset(people, persons), loadings[item_of[gi]], difficulty[item_of[gi]],
                                       style_weight[item_of[gi]], thresholds, config, r_answers)
    _plant_bad_ratings(slot_ratings, kind[person_of_slot], constant[person_of_slot], r_bad)

    tables = _study_tables(config, items, person_of_slot, slot_group, slot_ratings, kind, pvq, bfi, two_group,
                           r_time, r_order, r_bad)
    participations = tables["participations"]
    labels = _demographic_labels(people.demo)
    pids = [_participant_id(p) for p in range(n)]
    participants = _participants_table(pids, labels, participations)

    truth_people, true_values, traits = _truth_of_people(people, kind, labels, pids, participations, two_group)

    if config.population_n > 0:
        population, group_profiles = _population(config, model, items, thresholds, r_pop)
        items = items.join(_structural_summary(population, circle_angles(config.circle)), on=["portrait_id", "option_id"])
    else:
        population = pd.DataFrame(columns=["portrait_id", "option_id", "family", "dimension", "rho"])
        group_profiles = pd.DataFrame(columns=list(VALUES))
    truth = Truth(
        participants=truth_people, values=true_values, traits=traits, items=items.copy(),
        population=population, human_group_profiles=group_profiles,
        llm_profile=true_llm_profile(config.seed if config.llm_seed is None else config.llm_seed),
        rating_thresholds=thresholds,
        circle_angles_deg={v: float(a) for v, a in zip(VALUES, np.rad2deg(circle_angles(config.circle)))},
    )
    return Simulation(config=config, items=_item_rows(items), participants=participants, truth=truth, **tables)


def simulate_wave(config: SimulationConfig, layout: pd.DataFrame, *, raters_seed: int, id_prefix: str = "W2",
                  days_later: float = 14.0) -> Simulation:
    """A later wave of a simulated study: fresh raters for some of its items, in new groups.

    Parameters
    ----------
    config : the study's configuration (its seed fixes the items and their truth).
    layout : ``group_id, portrait_id, option_id, raters``: the wave's groups, their items and
        how many raters each takes (e.g. :meth:`analysis.design.Plan.layout`).
    raters_seed : seed of the new people (with ``config.seed``), as ``SimulationConfig.raters_seed``.
    id_prefix : prefix of the new participant ids, so no one can be mistaken for a rater of
        another wave (``W2SIM0001``, ...).
    days_later : the wave starts this long after ``config.start``.

    Returns
    -------
    Simulation of the wave: the same items (same truth, same rating thresholds) in the
    layout's groups, rated by new people drawn from the same population, planted bad
    respondents in the configured shares (no one in two groups). ``truth.population`` is
    empty: it is the study's (``simulate_study(config)``), the same for every wave.
    """
    need = {"group_id", "portrait_id", "option_id", "raters"}
    if not need <= set(layout.columns):
        raise InputError(f"wave layout: missing columns {sorted(need - set(layout.columns))}")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(8)]
    r_items, r_cal = streams[0], streams[6]
    fresh = [np.random.default_rng(s) for s in np.random.SeedSequence([config.seed, raters_seed]).spawn(5)]
    r_people, r_answers, r_bad, r_time, r_order = fresh
    model = _model(config)
    items = _draw_items(config, model, r_items)
    thresholds = _rating_thresholds(config, model, items, r_cal)
    position = pd.Series(np.arange(len(items)), index=pd.MultiIndex.from_frame(items[["portrait_id", "option_id"]]))
    wanted = pd.MultiIndex.from_arrays([layout["portrait_id"].astype(str), layout["option_id"].astype(int)])
    missing = wanted[~wanted.isin(position.index)]
    if len(missing):
        raise InputError(f"wave layout: item {missing[0][0]}-{missing[0][1]} is not an item of the simulated study (seed {config.seed})")
    groups = list(dict.fromkeys(layout["group_id"]))
    raters = layout.groupby("group_id", sort=False)["raters"].first()
    n = int(raters.sum())
    kind = _planted_kinds(dataclasses.replace(config, two_group_participant=False), n, None, r_bad)
    people, pvq, bfi, constant = _people_and_answers(config, model, kind, r_people, r_answers, r_bad)
    loadings, difficulty, style_weight = _loadings(items), items["difficulty"].to_numpy(), items["style_weight"].to_numpy()
    start = (datetime.fromisoformat(config.start) + timedelta(days=days_later)).isoformat()
    one = dataclasses.replace(config, n_groups=1, two_group_participant=False, start=start)
    pids = [f"{id_prefix}{_participant_id(p)}" for p in range(n)]
    parts, offset, wave_items = {}, 0, []
    for gid in groups:
        idx = position.loc[wanted[(layout["group_id"] == gid).to_numpy()]].to_numpy()
        persons = np.arange(offset, offset + int(raters[gid]))
        ratings = _ratings(_subset(people, persons), loadings[idx], difficulty[idx], style_weight[idx], thresholds,
                           config, r_answers)
        _plant_bad_ratings(ratings, kind[persons], constant[persons], r_bad)
        tables = _study_tables(one, items.iloc[idx], np.arange(len(persons)), np.zeros(len(persons), dtype=int), ratings,
                               kind[persons], pvq[persons], bfi[persons], None, r_time, r_order, r_bad)
        rename = {_participant_id(j): pids[p] for j, p in enumerate(persons)}
        for name, frame in tables.items():
            frame["participant_id"] = frame["participant_id"].map(rename)
            if "group_id" in frame:
                frame["group_id"] = gid
            parts.setdefault(name, []).append(frame)
        wave_items.append(items.iloc[idx].assign(group_id=gid))
        offset += len(persons)
    tables = {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}
    items = pd.concat(wave_items, ignore_index=True)
    labels = _demographic_labels(people.demo)
    participants = _participants_table(pids, labels, tables["participations"])
    truth_people, true_values, traits = _truth_of_people(people, kind, labels, pids, tables["participations"], None)
    truth = Truth(
        participants=truth_people, values=true_values, traits=traits, items=items.copy(),
        population=pd.DataFrame(columns=["portrait_id", "option_id", "family", "dimension", "rho"]),
        human_group_profiles=pd.DataFrame(columns=list(VALUES)),
        llm_profile=true_llm_profile(config.seed if config.llm_seed is None else config.llm_seed),
        rating_thresholds=thresholds,
        circle_angles_deg={v: float(a) for v, a in zip(VALUES, np.rad2deg(circle_angles(config.circle)))},
    )
    wave_config = dataclasses.replace(config, raters_seed=raters_seed, population_n=0, start=start)
    return Simulation(config=wave_config, items=_item_rows(items), participants=participants, truth=truth, **tables)


@dataclass
class TwoStageSimulation:
    """A simulated two-stage study: the screening wave, the plan made from it, the confirmation wave."""

    screen: Simulation
    confirm: Simulation
    plan: object           # analysis.design.Plan
    screen_id: str
    confirm_id: str

    @property
    def ratings(self) -> int:
        """Paid ratings of both waves (bad respondents' included: they were paid too)."""
        return int(len(self.screen.ratings) + len(self.confirm.ratings))


def simulate_two_stage(config: SimulationConfig, db, *, screen_raters: int = 24, total_ratings: int | None = None,
                       study_id: str = "demo", confirm_id: str | None = None, threshold: float = 0.3,
                       alpha: float = 0.05, power: float = 0.8, rho: float | None = None,
                       permutations: int = 200) -> TwoStageSimulation:
    """Run a simulated study as two waves at a given cost, through the database and `vp plan-wave`'s planner.

    Parameters
    ----------
    config : the one-stage study it replaces (items, truth, groups of
        ``items_per_group`` items). ``population_n`` > 0 computes the truth with the
        screening wave; ``raters_seed`` picks a fresh sample of raters for both waves.
    db : path or open StudyDB; both waves are written into it, under `study_id` and
        `confirm_id` (default ``<study_id>-w2``), with the same project.
    screen_raters : raters per group in the screening wave (each rates a whole group).
    total_ratings : paid ratings of both waves together; default the one-stage study's
        (``n_groups x participants_per_group x items_per_group``, 23,040 for the default).
    threshold, alpha, power, rho, permutations : passed to :func:`analysis.design.plan_from_study`.

    Returns
    -------
    TwoStageSimulation. The screening wave costs ``n_groups x screen_raters x items_per_group``
    ratings; the confirmation wave gets the rest as ``rest // items_per_group`` raters, whose
    groups and items the planner chooses from the screening wave as stored in `db`.
    """
    from analysis.dataset import load_study
    from analysis.design import next_study_id, plan_from_study
    from valueportrait.storage import StudyDB, open_db

    total = total_ratings if total_ratings is not None else config.n_groups * config.participants_per_group * config.items_per_group
    screen_cost = config.n_groups * screen_raters * config.items_per_group
    if screen_raters < 4:
        raise InputError(f"two-stage simulation: screen_raters: {screen_raters} must be at least 4")
    budget = (total - screen_cost) // config.items_per_group
    if budget < 5:
        raise InputError(f"two-stage simulation: total_ratings: {total} leaves {total - screen_cost} ratings after "
                         f"screening ({screen_cost}): not enough for a confirmation wave")
    base = 10_000 + 2 * (config.raters_seed or 0)
    screen = simulate_study(dataclasses.replace(config, participants_per_group=screen_raters, raters_seed=base + 1))
    confirm_id = confirm_id or next_study_id(study_id)
    own = not isinstance(db, StudyDB)
    store = open_db(db) if own else db
    try:
        write_to_db(screen, store, study_id, project=study_id)
        study = load_study(store, study_id)
        plan = plan_from_study(study, budget_participants=budget, items_per_participant=config.items_per_group,
                               threshold=threshold, rho=rho, alpha=alpha, power=power, permutations=permutations,
                               seed=config.seed)
        confirm = simulate_wave(config, plan.layout(), raters_seed=base + 2)
        write_to_db(confirm, store, confirm_id, project=study_id,
                    title=f"Simulated study (seed {config.seed}), wave 2: confirmation")
    finally:
        if own:
            store.close()
    return TwoStageSimulation(screen, confirm, plan, study_id, confirm_id)


def _study_tables(config, items, person_of_slot, slot_group, slot_ratings, kind, pvq, bfi, two_group,
                  r_time, r_order, r_bad) -> dict[str, pd.DataFrame]:
    """Participations, instrument answers, ratings and attention checks with their timing.

    A participation's timeline: a consent/demographics page, the PVQ-21 page (items in
    their order, the PVQ attention check at a random place), BFI-10, then the items in the
    participant's random order with the item attention checks at random places. Its total
    time is log-normal around `median_minutes` (speeders: 3-6 minutes), spread over the
    answers by page weights (a rating takes longer than a PVQ answer) with gamma noise.
    The second participation of the two-group person has no instrument answers or checks
    (those are stored once per participant).
    """
    n_slots, n_items = slot_ratings.shape
    checks = inst.load_attention_checks()
    pvq_checks = [c for c in checks if c.scale == "pvq"]
    item_checks = [c for c in checks if c.scale != "pvq"]
    n_pvq_page, n_item_page = 21 + len(pvq_checks), n_items + len(item_checks)
    bfi_col = 1 + n_pvq_page
    item_col = bfi_col + 10

    # Groups open one after another, a few hours apart; people start within two days.
    start_s = (slot_group * 6.0 + r_time.uniform(0, 48, n_slots)) * 3600.0
    minutes = np.clip(config.median_minutes * np.exp(r_time.normal(0, 0.2, n_slots)), 13, 45)
    speeders = kind[person_of_slot] == SPEEDER
    minutes[speeders] = r_time.uniform(3, 6, speeders.sum())
    first = np.ones(n_slots, dtype=bool)
    if two_group is not None:
        slot_a, slot_b = np.flatnonzero(person_of_slot == two_group)
        start_s[slot_b] = max(start_s[slot_b], start_s[slot_a] + minutes[slot_a] * 60 + 86_400)
        first[slot_b] = False
    weights = np.r_[40.0, np.full(n_pvq_page, 6.0), np.full(10, 5.0), np.full(n_item_page, 20.0)]
    weights = weights * r_time.gamma(8.0, 1 / 8.0, (n_slots, len(weights)))
    secs = minutes[:, None] * 60.0 * weights / weights.sum(axis=1, keepdims=True)
    base = np.datetime64(datetime.fromisoformat(config.start).astimezone(timezone.utc).replace(tzinfo=None), "ms")
    start_ms = base + np.rint(start_s * 1000).astype("timedelta64[ms]")
    stamps = start_ms[:, None] + np.rint(np.cumsum(secs, axis=1) * 1000).astype("timedelta64[ms]")
    stamp_text = np.char.add(np.datetime_as_string(stamps, unit="ms"), "+00:00")
    start_text = np.char.add(np.datetime_as_string(start_ms, unit="ms"), "+00:00")

    def slots_around(n_fixed, n_extra):
        """Random places for `n_extra` checks on a page; the fixed items fill the rest in order."""
        perm = np.argsort(r_order.random((n_slots, n_fixed + n_extra)), axis=1)
        return np.sort(perm[:, :n_fixed], axis=1), perm[:, n_fixed:]

    pvq_at, pvq_check_at = slots_around(21, len(pvq_checks))
    item_at, item_check_at = slots_around(n_items, len(item_checks))
    pvq_cols, pvq_check_cols = 1 + pvq_at, 1 + pvq_check_at
    item_cols, item_check_cols = item_col + item_at, item_col + item_check_at
    order = np.argsort(r_order.random((n_slots, n_items)), axis=1)   # order[s, j]: the j-th item shown
    rows = np.arange(n_slots)[:, None]

    pid = np.array([_participant_id(p) for p in range(len(kind))])[person_of_slot]
    gid = np.array([f"g{gi + 1:02d}" for gi in range(config.n_groups)])[slot_group]
    portrait = items["portrait_id"].to_numpy().reshape(config.n_groups, n_items)[slot_group]   # slot x item
    option = items["option_id"].to_numpy().reshape(config.n_groups, n_items)[slot_group]
    shown_portrait, shown_option = portrait[rows, order], option[rows, order]
    participations = pd.DataFrame({
        "participant_id": pid, "group_id": gid, "status": "completed", "platform_study_id": None,
        "platform_session_id": None, "test_mode": 0,
        "item_order_json": [json.dumps([[p, int(o)] for p, o in zip(ps, os_)]) for ps, os_ in zip(shown_portrait, shown_option)],
        "started_at": start_text, "last_seen_at": stamp_text[:, -1], "completed_at": stamp_text[:, -1],
        "completion_code": "SIMULATED",
    })
    ratings = pd.DataFrame({
        "participant_id": np.repeat(pid, n_items), "portrait_id": shown_portrait.ravel(),
        "option_id": shown_option.ravel().astype(int), "group_id": np.repeat(gid, n_items),
        "rating": slot_ratings[rows, order].ravel().astype(int), "position": np.tile(np.arange(1, n_items + 1), n_slots),
        "seconds": secs[rows, item_cols].ravel(), "answered_at": stamp_text[rows, item_cols].ravel(),
    })

    f = np.flatnonzero(first)
    persons = person_of_slot[f]
    pvq_rows = pd.DataFrame({
        "participant_id": np.repeat(pid[f], 21), "instrument": "pvq21", "item_id": np.tile(np.arange(1, 22), len(f)),
        "answer": pvq[persons].ravel().astype(int), "seconds": secs[f[:, None], pvq_cols[f]].ravel(),
        "answered_at": stamp_text[f[:, None], pvq_cols[f]].ravel(),
    })
    bfi_cols = np.broadcast_to(bfi_col + np.arange(10), (len(f), 10))
    bfi_rows = pd.DataFrame({
        "participant_id": np.repeat(pid[f], 10), "instrument": "bfi10", "item_id": np.tile(np.arange(1, 11), len(f)),
        "answer": bfi[persons].ravel().astype(int), "seconds": secs[f[:, None], bfi_cols].ravel(),
        "answered_at": stamp_text[f[:, None], bfi_cols].ravel(),
    })
    check_frames = []
    failer = kind[persons] == ATTENTION
    for check_list, cols in ((pvq_checks, pvq_check_cols[f]), (item_checks, item_check_cols[f])):
        for j, check in enumerate(check_list):
            scale = inst.load_scale(check.scale)
            # A failer picks any answer but the expected one.
            wrong = r_bad.integers(scale.min, scale.max, len(f))
            wrong = wrong + (wrong >= check.expected)
            answer = np.where(failer, wrong, check.expected)
            check_frames.append(pd.DataFrame({
                "participant_id": pid[f], "check_id": check.id, "expected": int(check.expected), "answer": answer.astype(int),
                "passed": (answer == check.expected).astype(int), "seconds": secs[f, cols[:, j]],
                "answered_at": stamp_text[f, cols[:, j]],
            }))
    checks_frame = pd.concat(check_frames).sort_values(["participant_id", "answered_at"], kind="stable").reset_index(drop=True)
    answers = pd.concat([pvq_rows, bfi_rows]).sort_values(["participant_id", "instrument", "item_id"], ascending=[True, False, True],
                                                            kind="stable").reset_index(drop=True)
    return {"participations": participations, "instrument_answers": answers, "ratings": ratings,
            "attention_checks": checks_frame}


def _participant_id(p: int) -> str:
    return f"SIM{p + 1:04d}"


def _item_rows(items: pd.DataFrame) -> pd.DataFrame:
    """The items table: texts that say they are simulated, truth in meta_json."""
    rows = []
    for rec in items.to_dict("records"):
        pid, opt = rec["portrait_id"], int(rec["option_id"])
        advice = pid[0] in "12"
        leaning = ("no particular value" if rec["kind"] == "none"
                   else "a faint value leaning" if rec["kind"] == "weak"
                   else rec["intended_value"].replace("_", " ") if rec["kind"] == "single"
                   else f"{rec['intended_value']} and {rec['second_value']}".replace("_", " "))
        meta = {
            "simulated": True,
            "true_loadings": {v: round(float(rec[f"L_{v}"]), 6) for v in VALUES},
            "intended_value": rec["intended_value"],
            "intended_values": [v for v in (rec["intended_value"], rec["second_value"]) if v],
            "kind": rec["kind"],
            "angle_deg": None if np.isnan(rec["angle_deg"]) else round(float(rec["angle_deg"]), 3),
            "amplitude": round(float(rec["amplitude"]), 6),
            "difficulty": round(float(rec["difficulty"]), 6),
            "style_weight": round(float(rec["style_weight"]), 6),
        }
        if "rho_angle_deg" in rec:
            meta["population_rho_angle_deg"] = round(float(rec["rho_angle_deg"]), 3)
        rows.append({
            "portrait_id": pid, "option_id": opt, "group_id": rec["group_id"],
            "source": "advice" if advice else "chat",
            "title": f"Simulated advice thread {pid}" if advice else None,
            "query_text": f"Simulated query {pid}: a placeholder for a real {'advice request' if advice else 'chatbot conversation'}.",
            "response": f"Simulated response {opt} to query {pid}, written to express {leaning}.",
            "meta_json": json.dumps(meta, allow_nan=False),
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Writing to the study database
# --------------------------------------------------------------------------------------
_STUDY_TABLES = ("attention_checks", "ratings", "instrument_answers", "scores", "participations", "participants",
                 "items", "item_groups", "llm_answers", "studies")


def write_to_db(sim: Simulation, db, study_id: str = "demo", *, project: str | None = None,
                title: str | None = None) -> None:
    """Write a simulation into the study database, in one transaction, as the app would.

    `db` is a path or an open `valueportrait.storage.StudyDB`. A simulation already stored
    under `study_id` is replaced (its rows are deleted first, so nothing of an earlier seed
    survives); a study of another source under that id is refused. The groups are those of
    ``sim.items`` in order, each with its participations as target. `project` (the waves of
    a two-stage study share one; default the study id) goes in the studies table and in
    ``config_json``.
    """
    from valueportrait.storage import StudyDB, open_db

    own = not isinstance(db, StudyDB)
    store = open_db(db) if own else db
    try:
        existing = store.query("SELECT source FROM studies WHERE study_id = ?", (study_id,))
        if existing and existing[0]["source"] != "simulation":
            raise InputError(f"{store.path or ':memory:'}: study_id: {study_id!r} holds a {existing[0]['source']!r} study; "
                             "choose another study id for the simulation")
        c = sim.config
        start = datetime.fromisoformat(c.start).astimezone(timezone.utc)
        with store.transaction():
            for table in _STUDY_TABLES:
                store.conn.execute(f"DELETE FROM {table} WHERE study_id = ?", (study_id,))
            config = {**asdict(c), **({"project": project} if project else {})}
            store.upsert("studies", [{
                "study_id": study_id, "title": title or f"Simulated study (seed {c.seed})", "source": "simulation",
                "config_json": json.dumps(config), "created_at": _iso(start), "project": project or study_id,
            }])
            per_group = sim.participations.groupby("group_id").size()
            store.upsert("item_groups", [{"study_id": study_id, "group_id": gid, "position": i + 1,
                                          "target_n": int(per_group.get(gid, 0))}
                                         for i, gid in enumerate(dict.fromkeys(sim.items["group_id"]))])
            for table in ("items", "participants", "participations", "instrument_answers", "ratings", "attention_checks"):
                frame = getattr(sim, table)
                frame = frame.astype(object).where(frame.notna(), None)
                store.upsert(table, ({"study_id": study_id, **row} for row in frame.to_dict("records")))
    finally:
        if own:
            store.close()
