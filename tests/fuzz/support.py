"""Shared pieces of the fuzz targets: example budgets, counting, the invariants every decoder
output must satisfy, and strategies for mostly-valid inputs with one thing wrong."""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

from edge_agent.assets import AssetRegistry
from edge_agent.bad_input import Reject
from edge_agent.batch import SampleBatch
from models.catalog import CENTRIFUGAL_PUMP

F = TypeVar("F", bound=Callable[..., Any])

NOW = 1_764_000_000_000_000_000  # the decoders' clock in every fuzz target
MAX_FUTURE_S = 300.0
MAX_PAST_S = 7 * 86400.0
SCHEMA = CENTRIFUGAL_PUMP
SENSORS = SCHEMA.sensor_names
ASSETS = ("pump-1", "pump-2")
COUNTS: Counter[str] = Counter()
_REPORT: dict[str, Any] = {"path": os.environ.get("GEARWATCH_FUZZ_REPORT", ""), "at": 0.0}

# every reason a decoder may give (the metric label vocabulary); a new one must be added here
REASONS = frozenset({
    "oversized", "malformed_json", "bad_structure", "unknown_asset", "bad_timestamp",
    "timestamp_out_of_bounds", "unknown_sensor", "non_numeric", "non_finite", "out_of_range",
    "topic_mismatch", "malformed_value", "malformed_protobuf", "seq_gap", "not_born",
    "unknown_alias", "bad_encoding", "binary_noise", "bad_line", "wrong_count",
})


def fuzz_examples() -> int:
    n = os.environ.get("GEARWATCH_FUZZ_EXAMPLES")
    if n:
        return int(n)
    return 20_000 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 0


def fuzzing() -> bool:
    return fuzz_examples() > 0


def budget(ci: int, weight: float = 1.0) -> settings:
    """`ci` examples in the normal suite; about `weight` x GEARWATCH_FUZZ_EXAMPLES when fuzzing
    (heavy targets, e.g. a real console over HTTP, get a weight below 1)."""
    n = fuzz_examples()
    return settings(max_examples=max(ci, int(n * weight)) if n else ci)


def counted(fn: F) -> F:
    """Counts the examples a target ran (under `@given`, over the test function)."""
    name = f"{fn.__module__.rsplit('.', 1)[-1]}::{fn.__name__}"

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        COUNTS[name] += 1
        if _REPORT["path"] and time.monotonic() - float(_REPORT["at"]) > 5:
            write_report()  # every few seconds: a run stopped by a time limit still reports
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def write_report() -> None:
    _REPORT["at"] = time.monotonic()
    with open(str(_REPORT["path"]), "w") as f:
        json.dump(dict(sorted(COUNTS.items())), f, indent=1)
        f.write("\n")


def registry() -> AssetRegistry:
    return AssetRegistry([(a, SCHEMA) for a in ASSETS])


def in_bounds(ts: int) -> bool:
    return NOW - MAX_PAST_S * 1e9 <= ts <= NOW + MAX_FUTURE_S * 1e9


def check_rejects(rejects: list[Reject]) -> None:
    for r in rejects:
        assert r.reason in REASONS, f"unknown reject reason {r.reason!r}"
        assert r.detail, f"reject {r.reason} without a detail"
        assert isinstance(r.raw, bytes) and isinstance(r.where, str)


def check_batch(batch: SampleBatch, reg: AssetRegistry, bounded: bool = True) -> None:
    """What every decoded sample must be: a known asset and sensor, finite, within the sensor's
    valid range, and (for sources that read the time from the input) within the time bounds."""
    n = len(batch)
    for arr, dt in ((batch.asset, np.int32), (batch.sensor, np.int32),
                    (batch.ts_ns, np.int64), (batch.value, np.float64)):
        assert arr.shape == (n,) and arr.dtype == dt
    assert np.isfinite(batch.value).all()
    for a, s, t, v in zip(batch.asset.tolist(), batch.sensor.tolist(), batch.ts_ns.tolist(),
                          batch.value.tolist(), strict=True):
        assert 0 <= a < len(reg)
        schema = reg.infos[a].schema
        assert 0 <= s < schema.n_sensors
        spec = schema.sensors[s]
        assert spec.low <= v <= spec.high
        if bounded:
            assert in_bounds(t), f"timestamp {t} out of bounds"


def check(decoded: tuple[SampleBatch, list[Reject]], reg: AssetRegistry,
          bounded: bool = True) -> tuple[SampleBatch, list[Reject]]:
    batch, rejects = decoded
    check_batch(batch, reg, bounded)
    check_rejects(rejects)
    return batch, rejects


def samples(batch: SampleBatch) -> list[tuple[int, int, int, float]]:
    return sorted(zip(batch.asset.tolist(), batch.sensor.tolist(), batch.ts_ns.tolist(),
                      batch.value.tolist(), strict=True))


# -- strategies --------------------------------------------------------------------------------
def good_value(sensor: str) -> st.SearchStrategy[float]:
    spec = SCHEMA.sensors[SCHEMA.index_of(sensor) or 0]
    return st.floats(max(spec.low, -1e6), min(spec.high, 1e6), allow_nan=False)


# JSON values that are not a valid sample value (for any sensor)
bad_json_value: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), st.text(max_size=5), st.just([]), st.just({}),
    st.lists(st.integers(0, 9), max_size=2),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: abs(f) > 1e6),
    st.integers(min_value=10**6, max_value=2**63 - 1), st.integers(-(2**63), -(10**6)),
)

# raw tokens that are not JSON but that devices send, or that overflow
odd_tokens = st.sampled_from([b"NaN", b"nan", b"Infinity", b"-inf", b"1e999", b"-1e999",
                              b"1" * 30, b"0x10", b"1_000", b"\xff", b"", b"null", b"true"])


def finite(x: float) -> bool:
    return math.isfinite(x)
