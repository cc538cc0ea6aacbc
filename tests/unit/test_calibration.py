"""Calibration: surprise = -log10 P(normal >= x), monotone, extrapolated, serialisable."""

from __future__ import annotations

import numpy as np

from models.calibration import MAX_SURPRISE, OnlineCalibrator, TailCalibrator


def test_surprise_matches_the_normal_tail() -> None:
    raw = np.random.default_rng(0).normal(size=200_000)
    c = TailCalibrator().fit(raw)
    # P(Z >= 1.2816) = 0.1, P(Z >= 2.3263) = 0.01
    s = c.surprise(np.array([1.2816, 2.3263]))
    assert abs(s[0] - 1.0) < 0.05
    assert abs(s[1] - 2.0) < 0.05


def test_monotone_and_growing_past_the_largest_normal_value() -> None:
    raw = np.random.default_rng(1).gamma(2.0, size=5000)
    c = TailCalibrator().fit(raw)
    x = np.linspace(0, raw.max() * 3, 200)
    s = c.surprise(x)
    assert (np.diff(s) >= -1e-12).all()
    assert s[-1] > c.surprise(np.array([raw.max()]))[0] + 1
    assert s.max() <= MAX_SURPRISE


def test_rare_transients_do_not_stretch_the_tail() -> None:
    rng = np.random.default_rng(2)
    clean = rng.normal(size=10_000)
    dirty = np.concatenate([clean, rng.uniform(50, 500, 50)])  # 0.5 % start-up spikes
    s_clean = TailCalibrator().fit(clean).surprise(np.array([8.0]))[0]
    s_dirty = TailCalibrator().fit(dirty).surprise(np.array([8.0]))[0]
    assert s_dirty > 6 and abs(s_dirty - s_clean) < 2


def test_nan_stays_nan_and_round_trip() -> None:
    c = TailCalibrator().fit(np.arange(1000.0))
    d = TailCalibrator.from_dict(c.to_dict())
    x = np.array([np.nan, 10.0, 990.0, 2000.0])
    a, b = c.surprise(x), d.surprise(x)
    assert np.isnan(a[0]) and np.isnan(b[0])
    np.testing.assert_allclose(a[1:], b[1:])


def test_online_calibrator_fits_after_min_rows() -> None:
    o = OnlineCalibrator(min_fit=100, refit_every=50)
    o.update(np.arange(99.0))
    assert not o.fitted
    o.update(np.array([99.0]))
    assert o.fitted
    assert o.surprise(np.array([50.0]))[0] < 1.0
