"""The online T^2 detector: learns correlations, blames the sensor that breaks them."""

from __future__ import annotations

import numpy as np

from edge_agent.scoring.mahalanobis import MahalanobisScorer
from models.schema import AssetSchema, SensorSpec

SCHEMA = AssetSchema("x", tuple(SensorSpec(n) for n in ("speed", "flow", "temp")))


def correlated(n: int, rng: np.random.Generator) -> np.ndarray:
    speed = rng.uniform(1000, 1800, n)
    return np.column_stack([speed, speed * 0.06 + rng.normal(0, 1, n),
                            40 + speed * 0.01 + rng.normal(0, 0.3, n)])


def trained(n_assets: int = 2) -> MahalanobisScorer:
    rng = np.random.default_rng(0)
    m = MahalanobisScorer(SCHEMA, n_assets, warmup_rows=300, calibration_rows=300)
    for _ in range(3):
        rows = correlated(300 * n_assets, rng)
        asset = np.repeat(np.arange(n_assets, dtype=np.int32), 300)
        sc = m.score(asset, rows)
        m.learn(asset, rows, np.ones(len(rows), bool), sc)
    return m


def test_broken_correlation_scores_high_and_blames_its_sensor() -> None:
    m = trained()
    normal = np.array([[1500.0, 90.0, 55.0]])
    broken = np.array([[1500.0, 60.0, 55.0]])  # flow far below what the speed implies
    s_norm = m.score(np.array([0], np.int32), normal)
    s_bad = m.score(np.array([0], np.int32), broken)
    assert s_norm.score[0] < 3 < s_bad.score[0]
    assert int(np.nanargmax(s_bad.shares[0])) == 1
    # an operating point never seen at this exact speed but on the learned line is normal
    s_new = m.score(np.array([0], np.int32), np.array([[1750.0, 105.0, 57.5]]))
    assert s_new.score[0] < 3


def test_missing_sensor_is_masked_not_zero_filled() -> None:
    m = trained()
    s = m.score(np.array([0], np.int32), np.array([[1500.0, np.nan, 55.0]]))
    assert s.score[0] < 3
    assert s.shares[0, 1] == 0 or np.isnan(s.shares[0, 1])


def test_no_verdict_while_warming_up() -> None:
    m = MahalanobisScorer(SCHEMA, 1, warmup_rows=100, calibration_rows=100)
    s = m.score(np.zeros(1, np.int32), np.array([[1500.0, 90.0, 55.0]]))
    assert np.isnan(s.score[0])


def test_rows_of_one_asset_repeated_in_a_batch_are_all_learned() -> None:
    m = MahalanobisScorer(SCHEMA, 2, warmup_rows=10, calibration_rows=20)
    rows = correlated(40, np.random.default_rng(3))
    asset = np.array([0] * 30 + [1] * 10, np.int32)
    m.learn(asset, rows, np.ones(40, bool), m.score(asset, rows))
    assert m.n_learned.tolist() == [30, 10]
    np.testing.assert_allclose(m.mean[1], rows[30:].mean(axis=0), rtol=1e-9)
