"""Structural summary method: exact recovery of cosine profiles, a hand case, noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.circumplex import CIRCLE, circumplex_table, structural_summary, value_angles


def profiles(e, a, delta_deg, angles=None):
    angles = value_angles() if angles is None else angles
    theta = np.deg2rad(angles.to_numpy())
    r = np.asarray(e)[:, None] + np.asarray(a)[:, None] * np.cos(theta[None, :] - np.deg2rad(delta_deg)[:, None])
    return pd.DataFrame(r, columns=angles.index)


def test_exact_recovery_of_known_cosines():
    rng = np.random.default_rng(0)
    e = rng.uniform(-0.2, 0.2, 200)
    a = rng.uniform(0.05, 0.6, 200)
    delta = rng.uniform(0, 360, 200)
    fit = structural_summary(profiles(e, a, delta).sample(frac=1, axis=1, random_state=1))  # column order free
    assert np.allclose(fit.elevation, e) and np.allclose(fit.amplitude, a)
    gap = np.abs((fit.displacement - delta + 180) % 360 - 180)
    assert gap.max() < 1e-8
    assert np.allclose(fit.r_squared, 1) and fit.prototypical.all()
    assert ((fit.displacement >= 0) & (fit.displacement < 360)).all()


def test_hand_case_single_value_spike():
    # r = 1 for Universalism, 0 elsewhere. With ten equally spaced angles the fit is the
    # Fourier fundamental: e = mean = 0.1, b1 = (2/10) * 1 * cos 0 = 0.2, b2 = 0, so
    # a = 0.2, delta = 0. SS_tot = 0.9^2 + 9 * 0.1^2 = 0.9; SS_fit = sum (0.2 cos t)^2 = 0.2,
    # so R^2 = 0.2 / 0.9.
    r = pd.DataFrame([[1.0] + [0.0] * 9], columns=CIRCLE, index=["spike"])
    fit = structural_summary(r).loc["spike"]
    assert fit.elevation == pytest.approx(0.1)
    assert fit.amplitude == pytest.approx(0.2)
    assert fit.displacement == pytest.approx(0.0, abs=1e-9)
    assert fit.r_squared == pytest.approx(0.2 / 0.9)
    assert fit.nearest_value == "Universalism" and not fit.prototypical


def test_hand_case_nearest_value_between_two():
    # delta 100 degrees lies between Tradition (72) and Conformity (108): Conformity is nearer.
    fit = structural_summary(profiles([0.0], [0.4], np.array([100.0]))).iloc[0]
    assert fit.nearest_value == "Conformity"
    assert structural_summary(profiles([0.0], [0.4], np.array([-1e-15]))).displacement.iloc[0] < 360
    fit = structural_summary(profiles([0.0], [0.4], np.array([350.0]))).iloc[0]
    assert fit.nearest_value == "Universalism"  # wraps round: 10 degrees from 0, 26 from 324


def test_noise_within_tolerance():
    rng = np.random.default_rng(3)
    n = 500
    delta = rng.uniform(0, 360, n)
    clean = profiles(np.zeros(n), np.full(n, 0.4), delta)
    noisy = clean + rng.normal(0, 0.05, clean.shape)
    fit = structural_summary(noisy)
    gap = np.abs((fit.displacement - delta + 180) % 360 - 180)
    # sd of the angle estimate ~ sigma / (a sqrt(k/2)) rad = .05 / (.4 * 2.24) = 3.2 degrees
    assert np.median(gap) < 5 and gap.max() < 20
    assert fit.amplitude.mean() == pytest.approx(0.4, abs=0.02)
    assert fit.r_squared.median() > 0.9


def test_shared_wedge_option():
    angles = value_angles(shared_wedge=True)
    assert angles["Tradition"] == angles["Conformity"] == 80.0
    assert angles["Self_Direction"] == 320.0
    fit = structural_summary(profiles([0.05], [0.3], np.array([160.0]), angles), shared_wedge=True).iloc[0]
    assert fit.displacement == pytest.approx(160.0) and fit.nearest_value == "Power"
    assert fit.r_squared == pytest.approx(1.0)


def test_missing_and_flat_rows_and_long_input():
    r = profiles([0.0, 0.0], [0.3, 0.0], np.array([36.0, 0.0]))
    r.iloc[0, 3] = np.nan
    fit = structural_summary(r)
    assert fit.iloc[0].isna()[["elevation", "amplitude", "displacement"]].all()
    assert np.isnan(fit.iloc[1].displacement) and fit.iloc[1].nearest_value is None
    wide = profiles([0.1], [0.3], np.array([216.0]))
    long = wide.assign(group_id="g1", portrait_id="1001", option_id=2).melt(
        id_vars=["group_id", "portrait_id", "option_id"], var_name="dimension", value_name="rho"
    ).assign(family="pvq")
    long = pd.concat([long, long.iloc[:1].assign(family="bfi", dimension="Openness", rho=0.9)])
    table = circumplex_table(long)
    assert len(table) == 1 and table.nearest_value.item() == "Achievement"
    assert table.displacement.item() == pytest.approx(216.0)


@pytest.mark.parametrize("level", [0.3, 1 / 3, 0.123, -0.2, 0.0])
def test_a_flat_profile_has_no_r_squared(level):
    # Nothing varies, so nothing is explained: R^2 does not exist. Before, 0.3 gave -0.60 and
    # 1/3 gave 0.40 (rounding noise read by an exact "> 0" test).
    fit = structural_summary(pd.DataFrame([[level] * 10], columns=CIRCLE)).iloc[0]
    assert np.isnan(fit.r_squared) and not fit.prototypical
    assert fit.elevation == pytest.approx(level) and fit.amplitude == pytest.approx(0, abs=1e-12)
    assert np.isnan(fit.displacement) and fit.nearest_value is None
    # A nearly flat but real profile keeps its R^2 (a perfect cosine of amplitude 1e-6).
    tiny = profiles([level], [1e-6], np.array([72.0]))
    assert structural_summary(tiny).r_squared.item() == pytest.approx(1.0)
