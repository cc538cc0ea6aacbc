"""Event logic: minimum duration, hysteresis, off rows, blame, and the learn mask."""

from __future__ import annotations

import numpy as np

from edge_agent.events import EventTracker

SENSORS = ("a", "b", "c")


def run(tr: EventTracker, scores: list[float], asset: int = 0, off: list[bool] | None = None,
        shares: np.ndarray | None = None) -> tuple[list[tuple[str, int, int | None]], np.ndarray]:
    n = len(scores)
    sh = np.tile([0.1, 0.7, 0.2], (n, 1)) if shares is None else shares
    trans, normal = tr.step(np.full(n, asset, np.int32), np.arange(n, dtype=np.int64),
                            np.array(scores, float), sh,
                            np.array(off if off else [False] * n))
    # the event object lives on (its end is set when it closes): report it per transition
    return [(t.kind, t.event.start_ns, t.event.end_ns if t.kind == "close" else None)
            for t in trans], normal


def tracker(**kw: float) -> EventTracker:
    args = {"open_threshold": 4.0, "close_threshold": 2.0, "min_duration_ticks": 3,
            "min_clear_ticks": 2, **kw}
    return EventTracker(["p1", "p2"], "cls", SENSORS, **args)  # type: ignore[arg-type]


def test_short_spike_opens_nothing() -> None:
    tr, (ev, normal) = tracker(), run(tracker(), [1, 5, 5, 1, 1])
    assert ev == []
    assert normal.tolist() == [True, False, False, True, True]
    assert tr.open_events == {}


def test_open_after_min_duration_and_close_with_hysteresis() -> None:
    ev, normal = run(tr := tracker(), [1, 5, 5, 5, 3, 3, 1, 3, 1, 1, 1])
    assert ev == [("open", 1, None), ("close", 1, 8)]
    # 3 is above close_threshold: the event stays open; a single dip does not close it
    assert normal.tolist() == [True] + [False] * 8 + [True, True]
    assert tr.state.tolist() == [0, 0]


def test_off_rows_and_nan_neither_count_nor_reset() -> None:
    ev, _ = run(tracker(), [5, 9, np.nan, 5, 5], off=[False, True, False, False, False])
    assert ev == [("open", 0, None)]


def test_top_sensors_are_the_score_weighted_shares() -> None:
    tr = tracker()
    sh = np.array([[0.8, 0.1, 0.1]] * 3 + [[0.1, 0.1, 0.8]] * 3)
    run(tr, [5, 5, 5, 5, 5, 5], shares=sh)
    ev = tr.open_events[0]
    assert [s for s, _ in ev.top_sensors[:2]] == ["a", "c"]
    assert abs(sum(w for _, w in ev.top_sensors) - 1.0) < 1e-9


def test_assets_are_independent() -> None:
    tr = tracker()
    n = 6
    asset = np.array([0, 1] * n, np.int32)
    score = np.array([5.0, 1.0] * n)
    trans, normal = tr.step(asset, np.repeat(np.arange(n), 2).astype(np.int64), score,
                            np.full((2 * n, 3), 1 / 3), np.zeros(2 * n, bool))
    assert [t.event.asset for t in trans] == ["p1"]
    assert normal[asset == 1].all() and not normal[asset == 0].any()
