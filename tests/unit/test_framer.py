"""Framing: zero-order hold on a tick grid, staleness as NaN, lateness, quiet assets, gaps."""

from __future__ import annotations

import numpy as np

from edge_agent.framer import ClassFramer
from models.schema import AssetSchema, SensorSpec

S = 1_000_000_000
SCHEMA = AssetSchema("x", (SensorSpec("a"), SensorSpec("b")), sample_period_s=1.0)


def feed(f: ClassFramer, asset: int, sensor: int, ts_s: list[float], vals: list[float],
         wall: int = 0) -> None:
    n = len(ts_s)
    f.ingest(np.full(n, asset, np.int32), np.full(n, sensor, np.int32),
             np.array([round(t * S) for t in ts_s], np.int64), np.array(vals, float), wall)


def test_hold_per_tick_with_the_newest_sample_at_or_before_it() -> None:
    f = ClassFramer(SCHEMA, 2, lateness_periods=0.5)
    feed(f, 0, 0, [0.2, 1.2, 2.2, 3.2, 4.2, 5.2], [0, 1, 2, 3, 4, 5])
    feed(f, 0, 1, [0.7, 2.7], [10, 12])
    r = f.advance(wall_ns=1)
    assert r.asset.tolist() == [0, 0, 0, 0]
    assert (r.ts_ns / S).tolist() == [1, 2, 3, 4]
    assert r.values.tolist() == [[0, 10], [1, 10], [2, 12], [3, 12]]
    assert r.stale == 0


def test_stale_sensor_becomes_nan_and_is_counted() -> None:
    f = ClassFramer(SCHEMA, 1, lateness_periods=0.5)  # stale after 3 periods
    feed(f, 0, 1, [0.5], [7.0])
    feed(f, 0, 0, [k + 0.5 for k in range(8)], list(range(8)))
    r = f.advance(wall_ns=1)
    b = r.values[:, 1]
    assert b[:3].tolist() == [7.0, 7.0, 7.0]  # ticks 1, 2, 3: age 0.5 .. 2.5
    assert np.isnan(b[3:]).all()
    assert r.stale == len(b) - 3


def test_samples_of_a_later_tick_wait_for_it() -> None:
    f = ClassFramer(SCHEMA, 1, lateness_periods=0.5)
    feed(f, 0, 0, [0.9, 1.1], [1.0, 2.0])
    r1 = f.advance(wall_ns=1)  # watermark 0.6: nothing due yet
    assert len(r1) == 0
    feed(f, 0, 0, [1.6], [3.0])
    r2 = f.advance(wall_ns=2)  # watermark 1.1: tick 1 due
    assert r2.values[:, 0].tolist() == [1.0]
    feed(f, 0, 0, [3.0], [4.0])
    r3 = f.advance(wall_ns=3)
    assert r3.values[:, 0].tolist() == [3.0]  # tick 2 holds the sample at 1.6


def test_out_of_order_sample_is_counted_not_used() -> None:
    f = ClassFramer(SCHEMA, 1, lateness_periods=0.0)
    feed(f, 0, 0, [1.0, 2.0], [1.0, 2.0])
    f.advance(wall_ns=1)
    feed(f, 0, 0, [1.5, 3.0], [99.0, 3.0])
    r = f.advance(wall_ns=2)
    assert r.values[:, 0].tolist() == [3.0]
    assert f.stats.out_of_order == 1


def test_quiet_asset_keeps_ticking_on_wall_clock_with_nan() -> None:
    f = ClassFramer(SCHEMA, 1, lateness_periods=0.0)
    feed(f, 0, 0, [10.0], [1.0], wall=S)
    f.advance(wall_ns=S)
    r = f.advance(wall_ns=11 * S)  # ten quiet seconds later
    assert len(r) >= 8
    assert np.isnan(r.values[-1, 0])  # stale by then


def test_long_gap_is_skipped_not_replayed() -> None:
    f = ClassFramer(SCHEMA, 1, lateness_periods=0.0, max_catchup_ticks=5)
    feed(f, 0, 0, [1.0], [1.0])
    f.advance(wall_ns=1)
    feed(f, 0, 0, [1000.0], [2.0])
    r = f.advance(wall_ns=2)
    assert len(r) == 5
    assert f.stats.gap_skipped_ticks == 1000 - 1 - 5


def test_many_assets_in_one_batch_are_framed_independently() -> None:
    f = ClassFramer(SCHEMA, 3, lateness_periods=0.0)
    n = 30
    a = np.repeat(np.arange(3, dtype=np.int32), n)
    t = np.tile(np.arange(1, n + 1, dtype=np.int64) * S, 3)
    v = a * 100.0 + np.tile(np.arange(n, dtype=float), 3)
    f.ingest(a, np.zeros(3 * n, np.int32), t, v, 0)
    f.ingest(a, np.ones(3 * n, np.int32), t, -v, 0)
    r = f.advance(wall_ns=0)
    for asset in range(3):
        m = r.asset == asset
        assert (r.ts_ns[m] / S).tolist() == list(range(1, n + 1))
        assert r.values[m, 0].tolist() == (asset * 100.0 + np.arange(n)).tolist()
        assert (r.values[m, 1] == -r.values[m, 0]).all()


def test_batched_payloads_are_not_ticked_ahead_of_their_data() -> None:
    # one message every 10 s carrying 10 rows (1 s apart): between messages the asset is
    # quiet for a whole batch, which is its normal rhythm, not a lost source
    f = ClassFramer(SCHEMA, 1, lateness_periods=0.0)
    rows: list[tuple[int, float]] = []
    for m in range(6):
        ts = [m * 10 + k + 1 for k in range(10)]
        wall = (m * 10 + 10) * S
        for s_ in (0, 1):
            feed(f, 0, s_, [float(t) for t in ts], [float(t) for t in ts], wall)
        for w in range(10):  # the processing loop wakes often between messages
            r = f.advance(wall_ns=wall + w * S + S // 2)
            rows.extend(zip((r.ts_ns // S).tolist(), r.values[:, 0].tolist(), strict=True))
    assert f.stats.out_of_order == 0
    assert [t for t, _ in rows] == list(range(1, 61))
    # each tick holds its own sample, none NaN or held over
    assert [v for _, v in rows] == [float(t) for t, _ in rows]
    # the source goes quiet: once a batch span has passed, wall time ticks it on
    assert len(f.advance(wall_ns=69 * S)) == 0
    r = f.advance(wall_ns=71 * S)
    assert (r.ts_ns // S).tolist() == [61]
