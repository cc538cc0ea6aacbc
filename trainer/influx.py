"""Load telemetry history from InfluxDB in the layout the agent writes.

Layout: measurement `telemetry`, tags `asset` and `asset_class`, one field per sensor,
nanosecond timestamps.  v1 (InfluxQL over HTTP `/query`, chunked JSON, `epoch=ns`) and v2
(Flux through influxdb-client, pivoted to one column per field).  Both return the trainer
frame of `trainer.history` (label 0; apply a labels file afterwards).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from trainer.history import DataError

MEASUREMENT = "telemetry"


def _quote_ident(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def influxql_query(asset_class: str, sensors: Sequence[str], start: str, end: str,
                   assets: Sequence[str] = ()) -> str:
    fields = ", ".join(_quote_ident(s) for s in sensors)
    where = [f'"asset_class" = {_quote_str(asset_class)}',
             f"time >= {_quote_str(start)}", f"time < {_quote_str(end)}"]
    if assets:
        where.append("(" + " OR ".join(f'"asset" = {_quote_str(a)}' for a in assets) + ")")
    return (f'SELECT {fields} FROM "{MEASUREMENT}" WHERE ' + " AND ".join(where)
            + ' GROUP BY "asset"')


def frame_from_influxql(chunks: Iterable[dict[str, Any]], sensors: Sequence[str]
                        ) -> pd.DataFrame:
    """InfluxQL JSON responses (one per chunk) -> trainer frame."""
    parts = []
    for doc in chunks:
        for res in doc.get("results", []):
            if "error" in res:
                raise DataError(f"InfluxDB query failed: {res['error']}")
            for series in res.get("series", []):
                cols = series["columns"]
                df = pd.DataFrame(series["values"], columns=cols)
                df["asset"] = series.get("tags", {}).get("asset", "")
                parts.append(df)
        if "error" in doc:
            raise DataError(f"InfluxDB query failed: {doc['error']}")
    if not parts:
        raise DataError("InfluxDB returned no telemetry for that asset class and time range")
    df = pd.concat(parts, ignore_index=True)
    out = pd.DataFrame({"asset": df["asset"].astype(str),
                        "ts": pd.to_datetime(df["time"].astype("int64"), unit="ns", utc=True)})
    for s in sensors:
        out[s] = pd.to_numeric(df[s], errors="coerce") if s in df else np.nan
    out["label"] = np.int8(0)
    return out


def load_influx_v1(url: str, database: str, asset_class: str, sensors: Sequence[str],
                   start: str, end: str, assets: Sequence[str] = (),
                   username: str | None = None, password: str | None = None,
                   timeout_s: float = 120.0) -> pd.DataFrame:
    import httpx

    params = {"db": database, "q": influxql_query(asset_class, sensors, start, end, assets),
              "epoch": "ns", "chunked": "true", "chunk_size": "10000"}
    auth = (username, password or "") if username else None
    try:
        with httpx.stream("GET", url.rstrip("/") + "/query", params=params, auth=auth,
                          timeout=timeout_s) as r:
            if r.status_code != 200:
                r.read()
                raise DataError(f"InfluxDB {url} answered {r.status_code}: {r.text[:200]}")
            chunks = [json.loads(line) for line in r.iter_lines() if line.strip()]
    except httpx.HTTPError as e:
        raise DataError(f"cannot query InfluxDB at {url} ({e})") from e
    return frame_from_influxql(chunks, sensors)


def flux_query(bucket: str, asset_class: str, start: str, end: str,
               assets: Sequence[str] = ()) -> str:
    def q(s: str) -> str:
        return json.dumps(s)

    flt = f"r._measurement == {q(MEASUREMENT)} and r.asset_class == {q(asset_class)}"
    if assets:
        flt += " and (" + " or ".join(f"r.asset == {q(a)}" for a in assets) + ")"
    return (f"from(bucket: {q(bucket)})\n"
            f"  |> range(start: time(v: {q(start)}), stop: time(v: {q(end)}))\n"
            f"  |> filter(fn: (r) => {flt})\n"
            '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
            '  |> group(columns: ["asset"])')


def load_influx_v2(url: str, token: str, org: str, bucket: str, asset_class: str,
                   sensors: Sequence[str], start: str, end: str,
                   assets: Sequence[str] = ()) -> pd.DataFrame:
    from influxdb_client import InfluxDBClient

    with InfluxDBClient(url=url, token=token, org=org, timeout=120_000) as client:
        got = client.query_api().query_data_frame(flux_query(bucket, asset_class, start, end,
                                                             assets))
    frames = got if isinstance(got, list) else [got]
    df = pd.concat([f for f in frames if len(f)], ignore_index=True) if frames else None
    if df is None or df.empty:
        raise DataError("InfluxDB returned no telemetry for that asset class and time range")
    out = pd.DataFrame({"asset": df["asset"].astype(str),
                        "ts": pd.to_datetime(df["_time"], utc=True)})
    for s in sensors:
        out[s] = pd.to_numeric(df[s], errors="coerce") if s in df else np.nan
    out["label"] = np.int8(0)
    return out
