"""Replay a recorded CSV over MQTT in the `json` payload format, at a chosen speed-up.

The CSV has a timestamp column (ns, ms or s since the epoch, or ISO 8601), one column per
sensor and optionally an asset column.  Messages are re-timed: the first row is published
now and later rows keep their spacing divided by the speed-up, so the agent's timestamp
bounds accept a recording of any age.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson


@dataclass(frozen=True)
class ReplayRow:
    ts_ns: int
    asset: str
    values: dict[str, float]


def parse_time(text: str) -> int:
    """Epoch ns from ns/ms/s numbers (told apart by size) or ISO 8601 with a zone."""
    text = text.strip()
    try:
        v = float(text)
    except ValueError:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            raise ValueError(f"timestamp {text!r} has no time zone") from None
        return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
    scale = 1 if v > 1e17 else 1_000_000 if v > 1e11 else 1_000_000_000
    if text.lstrip("-").isdigit():  # exact for integers: floats lose ns
        return int(text) * scale
    return round(v * scale)


TS_COLUMNS = ("ts", "timestamp", "time")
IGNORED_COLUMNS = ("label",)  # ground truth in `gearwatch sim history` files, not a sensor


def read_rows(
    path: Path, ts_column: str | None = None, asset_column: str = "asset",
    default_asset: str = "pump-1", ignore: tuple[str, ...] = IGNORED_COLUMNS,
) -> list[ReplayRow]:
    """Rows of a recording; the timestamp column is `ts_column` or the first of TS_COLUMNS."""
    rows: list[ReplayRow] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        names = list(reader.fieldnames or [])
        ts_column = ts_column or next((c for c in TS_COLUMNS if c in names), TS_COLUMNS[0])
        if ts_column not in names:
            raise ValueError(f"{path}: no timestamp column {ts_column!r} "
                             f"(columns: {names}); pass --timestamp-column")
        sensors = [c for c in names if c not in (ts_column, asset_column, *ignore)]
        for n, rec in enumerate(reader, start=2):
            try:
                ts = parse_time(rec[ts_column])
            except ValueError as e:
                raise ValueError(f"{path}:{n}: {e}") from None
            values = {}
            for s in sensors:
                cell = (rec.get(s) or "").strip()
                if cell:
                    v = float(cell)
                    if math.isfinite(v):
                        values[s] = v
            rows.append(ReplayRow(ts, rec.get(asset_column) or default_asset, values))
    rows.sort(key=lambda r: r.ts_ns)
    return rows


def messages(
    rows: list[ReplayRow], topic_template: str, site: str, speedup: float, start_ns: int
) -> Iterator[tuple[float, str, bytes]]:
    """(seconds after the start to publish, topic, payload) for each row, re-timed."""
    if not rows:
        return
    t0 = rows[0].ts_ns
    for r in rows:
        offset_ns = (r.ts_ns - t0) / speedup
        topic = topic_template.format(site=site, asset=r.asset)
        payload = orjson.dumps({"ts": start_ns + round(offset_ns), "values": r.values})
        yield offset_ns / 1e9, topic, payload


def publish(
    path: Path, host: str = "127.0.0.1", port: int = 1883,
    topic_template: str = "plant/{site}/{asset}/telemetry", site: str = "site1",
    speedup: float = 1.0, ts_column: str | None = None, asset_column: str = "asset",
    default_asset: str = "pump-1", qos: int = 1,
) -> int:
    """Publish the whole file; returns the number of messages sent."""
    import paho.mqtt.client as mqtt

    rows = read_rows(path, ts_column, asset_column, default_asset)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                    client_id=f"gearwatch-replay-{time.time_ns()}")
    c.connect(host, port)
    c.loop_start()
    sent = 0
    start = time.monotonic()
    try:
        for at, topic, payload in messages(rows, topic_template, site, speedup, time.time_ns()):
            delay = start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            c.publish(topic, payload, qos=qos).wait_for_publish(timeout=10)
            sent += 1
    finally:
        c.loop_stop()
        c.disconnect()
    return sent
