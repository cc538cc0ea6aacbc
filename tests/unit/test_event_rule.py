from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.event_rule import alarm_mask, hysteresis_events


def test_hysteresis_opens_high_closes_low() -> None:
    s = np.array([0, 5, 3.5, 3.2, 2.9, 0, 4.1, 4.2, np.nan, 4.0])
    ev = hysteresis_events(s, open_at=4, close_below=3)
    assert ev.tolist() == [[1, 4], [6, 8], [9, 10]]
    assert alarm_mask(ev, s.size).tolist() == [0, 1, 1, 1, 0, 0, 1, 1, 0, 1]


def test_min_len_and_no_events() -> None:
    s = np.array([5, 0, 5, 5, 5, 0])
    assert hysteresis_events(s, min_len=2).tolist() == [[2, 5]]
    assert hysteresis_events(np.zeros(10)).shape == (0, 2)
    with pytest.raises(ValueError):
        hysteresis_events(s, open_at=2, close_below=3)


def _reference(score: list[float], open_at: float, close_below: float, min_len: int
               ) -> list[list[int]]:
    """The rule as a per-sample state machine (how the agent applies it live)."""
    out, start = [], None
    for i, s in enumerate([*score, float("nan")]):  # the end closes like a NaN
        if start is None and s >= open_at:
            start = i
        elif start is not None and not s >= close_below:
            if i - start >= min_len:
                out.append([start, i])
            start = None  # s < close_below <= open_at: cannot reopen on this sample
    return out


@given(
    st.lists(st.one_of(st.floats(0, 8), st.just(float("nan"))), max_size=60),
    st.floats(1, 6),
    st.floats(0, 1),
    st.integers(1, 4),
)
def test_vectorised_rule_equals_state_machine(score: list[float], open_at: float, gap: float,
                                              min_len: int) -> None:
    close_below = open_at - gap
    got = hysteresis_events(np.array(score), open_at, close_below, min_len).tolist()
    assert got == _reference(score, open_at, close_below, min_len)
