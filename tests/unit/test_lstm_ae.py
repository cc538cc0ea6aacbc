from __future__ import annotations

import numpy as np
import pytest
import torch

from models.lstm_ae import (
    AEConfig,
    LSTMAutoencoder,
    Normalizer,
    masked_loss,
    resolve_device,
    score_windows,
    sensor_shares,
)
from tests.model_fixtures import raw_windows


def test_config_round_trip_and_validation() -> None:
    cfg = AEConfig(n_sensors=4, window=10, hidden=(32, 16), latent=8, score_steps=3)
    assert AEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="score_steps"):
        AEConfig(n_sensors=4, window=10, score_steps=11)


def test_forward_shape_two_layers() -> None:
    m = LSTMAutoencoder(AEConfig(n_sensors=5, window=12, hidden=(16, 8), latent=4))
    assert m(torch.zeros(7, 12, 10)).shape == (7, 12, 5)


def test_normalizer_ignores_nan_and_constant_sensor() -> None:
    rows = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, 2.0], [np.nan, 5.0, 4.0]])
    n = Normalizer.fit(rows)
    np.testing.assert_allclose(n.center, [2.0, 5.0, 3.0])
    assert n.scale[1] == 1.0  # constant sensor: unit scale, not a division by zero
    assert Normalizer.from_dict(n.to_dict()).center.tolist() == n.center.tolist()
    with pytest.raises(ValueError, match="no finite value"):
        Normalizer.fit(np.array([[1.0, np.nan], [2.0, np.nan]]))


def test_masked_entries_never_enter_the_error(model, normalizer) -> None:
    w = raw_windows(4, 8)
    w[:, -1, 2] = np.nan  # vib missing on the newest step
    _raw1, err1 = score_windows(model, normalizer, w)
    # the sensor is still present on the other scored step, so it has an error ...
    assert np.isfinite(err1[:, 2]).all()
    # ... and a sensor missing on all scored steps gets NaN error, not the mean's error
    w2 = w.copy()
    w2[:, -2:, 2] = np.nan
    raw2, err2 = score_windows(model, normalizer, w2)
    assert np.isnan(err2[:, 2]).all()
    np.testing.assert_allclose(raw2, np.nanmean(err2, axis=1), rtol=1e-5)


def test_nan_is_masked_not_zero_filled(model, normalizer) -> None:
    w = raw_windows(3, 8)
    w_nan = w.copy()
    w_nan[:, 3, 1] = np.nan
    # the NaN entry is masked: scoring must not depend on what value it "would" have had
    w_zero = w.copy()
    w_zero[:, 3, 1] = 0.0  # a real zero reading is a huge excursion and does score
    _, e_nan = score_windows(model, normalizer, w_nan)
    _, e_zero = score_windows(model, normalizer, w_zero)
    assert not np.allclose(e_nan, e_zero)


def test_loss_counts_present_entries_only(model) -> None:
    x = torch.randn(2, 8, 3)
    x_nan = x.clone()
    x_nan[:, :, 0] = float("nan")
    loss = masked_loss(model, x_nan)
    assert torch.isfinite(loss)


def test_shares_sum_to_one_over_present() -> None:
    err = np.array([[1.0, 3.0, np.nan], [0.0, 0.0, 0.0], [2.0, 2.0, 4.0]])
    sh = sensor_shares(err)
    np.testing.assert_allclose(np.nansum(sh, axis=1), 1.0)
    assert np.isnan(sh[0, 2])
    np.testing.assert_allclose(sh[0, :2], [0.25, 0.75])
    np.testing.assert_allclose(sh[1], [1 / 3] * 3)


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
