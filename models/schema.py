"""Asset schema: the ordered sensors a model sees, so that trainer and agent agree on columns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SensorSpec:
    """One channel of an asset class. `low`/`high` bound physically valid values."""

    name: str
    unit: str = ""
    low: float = -math.inf
    high: float = math.inf
    # A sensor with no fresh value for this many seconds is NaN in the row.
    stale_after_s: float | None = None


@dataclass(frozen=True)
class OffCondition:
    """Rows where `sensor < below` are 'machine off': never learned from, never alerted on.

    `grace_s` extends "off" past each restart: a machine coming back from a stop is cold, and
    its temperatures lag its speed for minutes, which is normal, not a fault.
    """

    sensor: str
    below: float
    grace_s: float = 0.0

    def mask(self, rows: np.ndarray, sensors: tuple[str, ...]) -> np.ndarray:
        col = rows[:, sensors.index(self.sensor)]
        with np.errstate(invalid="ignore"):
            return np.asarray(col < self.below)


@dataclass(frozen=True)
class AssetSchema:
    """An asset class: ordered sensors, tick period and scoring window length."""

    asset_class: str
    sensors: tuple[SensorSpec, ...]
    sample_period_s: float = 1.0
    window: int = 30
    off_condition: OffCondition | None = None
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [s.name for s in self.sensors]
        if len(set(names)) != len(names):
            raise ValueError(f"asset class {self.asset_class!r}: duplicate sensor names")
        self._index.update({n: i for i, n in enumerate(names)})

    @property
    def sensor_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sensors)

    @property
    def n_sensors(self) -> int:
        return len(self.sensors)

    def index_of(self, sensor: str) -> int | None:
        return self._index.get(sensor)

    @property
    def lows(self) -> np.ndarray:
        return np.array([s.low for s in self.sensors], dtype=np.float64)

    @property
    def highs(self) -> np.ndarray:
        return np.array([s.high for s in self.sensors], dtype=np.float64)

    @property
    def period_ns(self) -> int:
        return round(self.sample_period_s * 1e9)

    def stale_after_ns(self) -> np.ndarray:
        """Per-sensor staleness limit; default three periods."""
        default = 3 * self.sample_period_s
        return np.array(
            [round((s.stale_after_s or default) * 1e9) for s in self.sensors], dtype=np.int64
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "asset_class": self.asset_class,
            "sample_period_s": self.sample_period_s,
            "window": self.window,
            "off_condition": (
                {
                    "sensor": self.off_condition.sensor,
                    "below": self.off_condition.below,
                    "grace_s": self.off_condition.grace_s,
                }
                if self.off_condition
                else None
            ),
            "sensors": [
                {
                    "name": s.name,
                    "unit": s.unit,
                    "low": None if math.isinf(s.low) else s.low,
                    "high": None if math.isinf(s.high) else s.high,
                    "stale_after_s": s.stale_after_s,
                }
                for s in self.sensors
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AssetSchema:
        off = d.get("off_condition")
        return cls(
            asset_class=d["asset_class"],
            sample_period_s=float(d.get("sample_period_s", 1.0)),
            window=int(d.get("window", 30)),
            off_condition=(
                OffCondition(off["sensor"], float(off["below"]), float(off.get("grace_s", 0.0)))
                if off
                else None
            ),
            sensors=tuple(
                SensorSpec(
                    name=s["name"],
                    unit=s.get("unit", ""),
                    low=-math.inf if s.get("low") is None else float(s["low"]),
                    high=math.inf if s.get("high") is None else float(s["high"]),
                    stale_after_s=s.get("stale_after_s"),
                )
                for s in d["sensors"]
            ),
        )
