from __future__ import annotations

import numpy as np
import pytest
import torch

from models.ae_scorer import BatchedAEScorer
from models.bundle import load_bundle
from models.lstm_ae import resolve_device, score_windows
from tests.model_fixtures import raw_windows


def _scorer(model, normalizer, calibrator, n, **kw):
    return BatchedAEScorer(model, normalizer, calibrator, n_assets=n, device="cpu", **kw)


def _fill(scorer: BatchedAEScorer, windows: np.ndarray, idx: np.ndarray) -> None:
    for t in range(windows.shape[1]):
        scorer.push(idx, windows[:, t, :])


def test_shapes_and_window_fill(model, normalizer, calibrator) -> None:
    sc = _scorer(model, normalizer, calibrator, 5)
    w = raw_windows(5, 8)
    idx = np.arange(5)
    _fill(sc, w[:, :7], idx)
    assert len(sc.score()) == 0  # window not yet full
    sc.push(idx, w[:, 7])
    out = sc.score()
    assert out.idx.tolist() == [0, 1, 2, 3, 4]
    assert out.raw.shape == (5,) and out.score.shape == (5,) and out.shares.shape == (5, 3)
    assert np.isfinite(out.score).all() and (out.score >= 0).all()
    np.testing.assert_allclose(out.shares.sum(axis=1), 1.0, rtol=1e-6)


def test_ring_buffer_matches_stateless_windows(model, normalizer, calibrator) -> None:
    # 20 rows through a window of 8: wraps twice; the scored window is the last 8 rows in order
    series = raw_windows(3, 20, seed=3)
    sc = _scorer(model, normalizer, calibrator, 3)
    _fill(sc, series, np.arange(3))
    out = sc.score()
    raw, _err = score_windows(model, normalizer, series[:, -8:])
    np.testing.assert_allclose(out.raw, raw, rtol=1e-5)
    np.testing.assert_allclose(out.score, calibrator.surprise(raw), rtol=1e-5)


def test_batched_equals_one_asset_at_a_time(model, normalizer, calibrator) -> None:
    n = 12
    series = raw_windows(n, 11, seed=5)
    series[2, -1, 0] = np.nan
    series[7, :, 1] = np.nan
    batched = _scorer(model, normalizer, calibrator, n)
    _fill(batched, series, np.arange(n))
    out = batched.score()
    for a in range(n):
        single = _scorer(model, normalizer, calibrator, 1)
        _fill(single, series[a : a + 1], np.array([0]))
        one = single.score()
        np.testing.assert_allclose(one.raw, out.raw[a : a + 1], rtol=1e-5)
        np.testing.assert_allclose(one.shares, out.shares[a : a + 1], rtol=1e-5, atol=1e-7)


def test_nan_sensor_gets_no_share(model, normalizer, calibrator) -> None:
    sc = _scorer(model, normalizer, calibrator, 2)
    w = raw_windows(2, 8)
    w[0, :, 2] = np.nan
    _fill(sc, w, np.arange(2))
    out = sc.score()
    assert np.isnan(out.shares[0, 2])
    np.testing.assert_allclose(np.nansum(out.shares[0]), 1.0, rtol=1e-6)
    assert np.isfinite(out.raw).all()


def test_push_subset_and_stride(model, normalizer, calibrator) -> None:
    sc = _scorer(model, normalizer, calibrator, 4, stride=3)
    w = raw_windows(4, 8)
    _fill(sc, w, np.arange(4))
    assert sc.score().idx.tolist() == [0, 1, 2, 3]
    sc.push(np.array([1, 3]), w[[1, 3], 0])
    sc.push(np.array([1, 3]), w[[1, 3], 1])
    assert sc.score().idx.size == 0
    sc.push(np.array([3]), w[[3], 2])
    assert sc.score().idx.tolist() == [3]
    assert sc.score(np.array([1]), force=True).idx.tolist() == [1]


def test_push_rejects_bad_input(model, normalizer, calibrator) -> None:
    sc = _scorer(model, normalizer, calibrator, 2)
    with pytest.raises(ValueError, match="rows shape"):
        sc.push(np.array([0]), np.zeros((1, 4)))
    with pytest.raises(IndexError, match="resize"):
        sc.push(np.array([2]), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="twice"):
        sc.push(np.array([1, 1]), np.zeros((2, 3)))


def test_resize_keeps_windows_and_reset_forgets(model, normalizer, calibrator) -> None:
    sc = _scorer(model, normalizer, calibrator, 2)
    w = raw_windows(2, 8)
    _fill(sc, w, np.arange(2))
    before = sc.score(force=True)
    sc.resize(5)
    assert sc.n_assets == 5
    after = sc.score(force=True)
    assert after.idx.tolist() == [0, 1]
    np.testing.assert_allclose(after.raw, before.raw, rtol=1e-6)
    sc.reset(np.array([0]))
    assert sc.score(force=True).idx.tolist() == [1]


def test_from_bundle_and_hot_swap_carry(blob, signing_key, model, normalizer, calibrator) -> None:
    bundle = load_bundle(blob, signing_key.public_key())
    new = BatchedAEScorer.from_bundle(bundle, n_assets=3, device="cpu")
    old = _scorer(model, normalizer, calibrator, 3)
    w = raw_windows(3, 8)
    _fill(old, w, np.arange(3))
    new.copy_windows_from(old)
    np.testing.assert_allclose(new.score().raw, old.score(force=True).raw, rtol=1e-5)


def test_device_path_on_cpu_torch_device(model, normalizer, calibrator) -> None:
    # the CUDA code path: an explicit torch.device, tensors created on it, results moved back
    sc = BatchedAEScorer(model, normalizer, calibrator, 2, device=torch.device("cpu"))
    _fill(sc, raw_windows(2, 8), np.arange(2))
    assert sc._buf.device.type == "cpu"
    assert isinstance(sc.score().raw, np.ndarray)


def test_auto_device_picks_cuda_when_available_mock_cuda(monkeypatch) -> None:
    # MOCK CUDA: only torch.cuda.is_available is faked, to check the choice, not a GPU run
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda")


@pytest.mark.parametrize("stride", [1, 3])
def test_score_rows_matches_one_tick_at_a_time(model, normalizer, calibrator, stride) -> None:
    # bursts of several ticks per asset, interleaved, some assets skipped some ticks
    series = raw_windows(4, 30, seed=5)
    ref = _scorer(model, normalizer, calibrator, 4, stride=stride)
    got = _scorer(model, normalizer, calibrator, 4, stride=stride)
    want_raw: dict[tuple[int, int], float] = {}
    got_raw: dict[tuple[int, int], float] = {}
    t = 0
    for burst in (3, 1, 7, 5, 9, 5):
        ts = list(range(t, t + burst))
        t += burst
        assets = [a for a in range(4) if not (a == 2 and burst == 1)]
        for k in ts:
            ref.push(np.array(assets), series[assets, k])
            out = ref.score(np.array(assets))
            for a, r in zip(out.idx.tolist(), out.raw.tolist(), strict=True):
                want_raw[(a, k)] = r
        idx = np.array([a for k in ts for a in assets])
        rows = np.stack([series[a, k] for k in ts for a in assets])
        res = got.score_rows(idx, rows)
        keys = [(a, k) for k in ts for a in assets]
        for key, r in zip(keys, res.raw.tolist(), strict=True):
            if np.isfinite(r):
                got_raw[key] = r
        assert res.score.shape == (idx.size,) and res.shares.shape == (idx.size, 3)
    assert got_raw.keys() == want_raw.keys() and len(got_raw) > 20
    np.testing.assert_allclose([got_raw[k] for k in want_raw], list(want_raw.values()),
                               rtol=1e-4, atol=1e-6)


def test_score_rows_skips_rows_of_a_machine_that_is_off(model, normalizer, calibrator) -> None:
    sc = _scorer(model, normalizer, calibrator, 2)
    series = raw_windows(2, 10, seed=1)
    idx = np.repeat(np.arange(2)[None], 10, 0).ravel()
    rows = series.transpose(1, 0, 2).reshape(-1, 3)
    skip = idx == 1
    out = sc.score_rows(idx, rows, skip=skip)
    assert np.isnan(out.raw[skip]).all()
    assert np.isfinite(out.raw[~skip][-3:]).all()  # window 8: rows 8..10 of asset 0 scored
    assert sc._count.tolist() == [8, 0]
