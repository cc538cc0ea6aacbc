from __future__ import annotations

import numpy as np
import pytest

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
