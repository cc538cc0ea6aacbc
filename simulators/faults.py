"""Fault schedules and their ground-truth labels."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

FAULT_KINDS = ("bearing_wear", "cavitation", "imbalance", "sensor_drift", "stuck_sensor")


@dataclass(frozen=True)
class Fault:
    """A fault on one asset: starts at `start_s` (sim seconds), grows to `severity` over `ramp_s`.

    `sensor` names the sensor for sensor_drift / stuck_sensor.  `end_s` None = until the end.
    """

    asset: str
    kind: str
    start_s: float
    severity: float = 1.0
    ramp_s: float = 60.0
    sensor: str | None = None
    end_s: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; choose one of {FAULT_KINDS}")
        if self.kind in ("sensor_drift", "stuck_sensor") and not self.sensor:
            raise ValueError(f"fault {self.kind} needs a sensor")

    def level(self, t_s: float) -> float:
        """0 before onset, ramps linearly to severity, 0 again after end_s."""
        if t_s < self.start_s or (self.end_s is not None and t_s >= self.end_s):
            return 0.0
        if self.ramp_s <= 0:
            return self.severity
        return self.severity * min(1.0, (t_s - self.start_s) / self.ramp_s)

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """`asset:kind@start_s[+ramp_s][*severity][-end_s][/sensor]`.

        Example: `pump-2:bearing_wear@300+120*1.5`.
        """
        try:
            asset, rest = spec.split(":", 1)
            kind, rest = rest.split("@", 1)
            sensor = None
            end = None
            if "/" in rest:
                rest, sensor = rest.split("/", 1)
            if "-" in rest:
                rest, end_s = rest.split("-", 1)
                end = float(end_s)
            severity = 1.0
            if "*" in rest:
                rest, sev = rest.split("*", 1)
                severity = float(sev)
            ramp = 60.0
            if "+" in rest:
                rest, ramp_s = rest.split("+", 1)
                ramp = float(ramp_s)
            return cls(asset, kind, float(rest), severity, ramp, sensor, end)
        except ValueError as e:
            raise ValueError(
                f"bad fault spec {spec!r} ({e}); expected "
                "asset:kind@start_s[+ramp_s][*severity][-end_s][/sensor], "
                "e.g. pump-2:bearing_wear@300+120*1.5"
            ) from None


@dataclass(frozen=True)
class Label:
    """Ground truth: asset had `fault` from start_ns to end_ns (UTC ns)."""

    asset: str
    fault: str
    start_ns: int
    end_ns: int


def labels_for(faults: list[Fault], t0_ns: int, duration_s: float) -> list[Label]:
    out = []
    for f in faults:
        if f.start_s >= duration_s:
            continue
        end_s = duration_s if f.end_s is None else min(f.end_s, duration_s)
        start = t0_ns + round(f.start_s * 1e9)
        out.append(Label(f.asset, f.kind, start, t0_ns + round(end_s * 1e9)))
    return out


def write_labels(path: Path, labels: list[Label]) -> None:
    """CSV `asset,start,end,fault` with ns timestamps: the labels file the trainer reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["asset", "start", "end", "fault"])
        w.writeheader()
        for lab in labels:
            d = asdict(lab)
            w.writerow({"asset": d["asset"], "start": d["start_ns"], "end": d["end_ns"],
                        "fault": d["fault"]})
