"""Load sensor history into one frame shape the rest of the trainer works on.

The frame: columns `asset` (str), `ts` (datetime64[ns, UTC]), one float64 column per sensor
in schema order, and `label` (int8; 1 = a labelled fault, never trained on).  Rows keep the
file's order, so the quality report can still see duplicate and out-of-order timestamps.

Sources: CSV and Parquet (`load_table`), a labels file of time ranges (`load_labels`,
`apply_labels`), InfluxDB (`trainer.influx`).  Bad input raises `DataError` with the column,
the problem and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.schema import AssetSchema, OffCondition, SensorSpec


class DataError(ValueError):
    """Input data the trainer cannot use; the message says what and how to fix it."""


@dataclass(frozen=True)
class TableSpec:
    """How to read a history table.

    time_unit: "auto" (RFC 3339 strings, or epoch numbers whose unit is guessed from their
    magnitude), "iso", "s", "ms", "us", "ns".  index_period_s: the time column is a sample
    index; timestamps are index x period seconds from the epoch (e.g. TEP's `sample`).
    """

    time_col: str = "timestamp"
    time_unit: str = "auto"
    index_period_s: float | None = None
    asset_col: str | None = None
    label_col: str | None = None
    default_asset: str = "asset"


def read_raw(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(p)
        if suffix in (".csv", ".txt", ".gz"):
            return pd.read_csv(p, low_memory=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{p}: cannot read ({e})") from e
    raise DataError(f"{p}: unknown file type {suffix!r}; use .csv or .parquet")


def parse_times(col: pd.Series, unit: str = "auto", index_period_s: float | None = None,
                what: str = "time") -> pd.Series:
    """RFC 3339 strings or epoch numbers -> datetime64[ns, UTC]."""
    if index_period_s is not None:
        num = pd.to_numeric(col, errors="coerce")
        if num.isna().any():
            raise DataError(f"{what} column {col.name!r} has non-numeric sample indices")
        return pd.to_datetime((num * index_period_s * 1e9).round().astype("int64"), utc=True)
    num = pd.to_numeric(col, errors="coerce")
    if unit != "iso" and num.notna().all():
        if unit == "auto":
            mag = float(np.nanmedian(np.abs(num.to_numpy(np.float64)))) if len(num) else 0.0
            unit = "ns" if mag > 1e17 else "us" if mag > 1e14 else "ms" if mag > 1e11 else "s"
        if unit not in ("s", "ms", "us", "ns"):
            raise DataError(f"unknown time unit {unit!r}; use auto, iso, s, ms, us or ns")
        return pd.to_datetime(num, unit=unit, utc=True)  # type: ignore[call-overload]
    try:
        return pd.to_datetime(col, utc=True, format="ISO8601")
    except (ValueError, TypeError) as e:
        raise DataError(
            f"{what} column {col.name!r} is neither RFC 3339 nor epoch numbers ({e}); "
            "fix the values or pass --time-unit"
        ) from e


def numeric_sensors(raw: pd.DataFrame, spec: TableSpec, exclude: Sequence[str] = ()) -> list[str]:
    """Sensor columns for a schema built from the table: every column but time/asset/label."""
    skip = {spec.time_col, spec.asset_col, spec.label_col, *exclude}
    return [str(c) for c in raw.columns if c not in skip]


def to_frame(raw: pd.DataFrame, spec: TableSpec, sensors: Sequence[str],
             source: str = "table") -> pd.DataFrame:
    """Raw table -> the trainer frame (validated, file order kept)."""
    need = [spec.time_col, *sensors]
    need += [c for c in (spec.asset_col, spec.label_col) if c]
    missing = [c for c in need if c not in raw.columns]
    if missing:
        raise DataError(
            f"{source}: missing columns {missing}; present are {list(raw.columns)[:20]}. "
            "Fix the column names, --time-col/--asset-col/--label-col, or the schema."
        )
    out = pd.DataFrame(index=raw.index)
    out["asset"] = (raw[spec.asset_col].astype(str) if spec.asset_col
                    else pd.Series(spec.default_asset, index=raw.index))
    out["ts"] = parse_times(raw[spec.time_col], spec.time_unit, spec.index_period_s, source)
    for s in sensors:
        col = raw[s]
        num = pd.to_numeric(col, errors="coerce")
        bad = num.isna() & col.notna() & (col.astype(str).str.strip() != "")
        if bad.any():
            examples = col[bad].astype(str).unique()[:3].tolist()
            raise DataError(
                f"{source}: column {s!r} has {int(bad.sum())} non-numeric values, e.g. "
                f"{examples}; clean them (empty = missing) or leave the column out"
            )
        out[s] = num.astype(np.float64)
    if spec.label_col:
        lab = pd.to_numeric(raw[spec.label_col], errors="coerce")
        if lab.isna().any():
            raise DataError(f"{source}: label column {spec.label_col!r} must be 0/1 numbers")
        out["label"] = (lab > 0).astype(np.int8)
    else:
        out["label"] = np.int8(0)
    return out.reset_index(drop=True)


def ts_ns(ts: pd.Series) -> np.ndarray:
    """UTC timestamps -> int64 ns since the epoch (whatever pandas' stored resolution)."""
    return np.asarray((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ns"), np.int64)


def load_table(path: str | Path, spec: TableSpec, sensors: Sequence[str]) -> pd.DataFrame:
    return to_frame(read_raw(path), spec, sensors, source=str(path))


def load_labels(path: str | Path) -> pd.DataFrame:
    """Labels CSV `asset,start,end[,fault]` (RFC 3339 or epoch) -> frame of ranges."""
    raw = read_raw(path)
    missing = [c for c in ("asset", "start", "end") if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: labels file lacks columns {missing}; need asset,start,end")
    out = pd.DataFrame({
        "asset": raw["asset"].astype(str),
        "start": parse_times(raw["start"], what=f"{path} start"),
        "end": parse_times(raw["end"], what=f"{path} end"),
        "fault": raw["fault"].astype(str) if "fault" in raw.columns else "",
    })
    if (out["end"] < out["start"]).any():
        raise DataError(f"{path}: some label ranges end before they start")
    return out


def apply_labels(frame: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Set label=1 on rows inside any labelled range of their asset (ends inclusive)."""
    frame = frame.copy()
    ts = ts_ns(frame["ts"])
    asset = frame["asset"].to_numpy()
    label = frame["label"].to_numpy().copy()
    for a, start, end in zip(labels["asset"], ts_ns(labels["start"]), ts_ns(labels["end"]),
                             strict=True):
        label[(asset == a) & (ts >= start) & (ts <= end)] = 1
    frame["label"] = label.astype(np.int8)
    return frame


def schema_from_columns(asset_class: str, sensors: Sequence[str], sample_period_s: float,
                        window: int, off_condition: OffCondition | None = None) -> AssetSchema:
    """A schema with unbounded valid ranges, for data that comes without one (e.g. TEP)."""
    return AssetSchema(asset_class=asset_class, sample_period_s=sample_period_s, window=window,
                       off_condition=off_condition,
                       sensors=tuple(SensorSpec(s, "", -math.inf, math.inf) for s in sensors))


def parse_off_condition(text: str | None) -> OffCondition | None:
    """'speed_rpm<100' -> OffCondition('speed_rpm', 100)."""
    if not text:
        return None
    name, sep, value = text.partition("<")
    try:
        if not sep or not name.strip():
            raise ValueError(text)
        return OffCondition(name.strip(), float(value))
    except ValueError as e:
        raise DataError(f"off condition {text!r} must look like 'speed_rpm<100'") from e
