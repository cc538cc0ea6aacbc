from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainer.history import (
    DataError,
    TableSpec,
    apply_labels,
    load_labels,
    load_table,
    parse_off_condition,
    ts_ns,
)


def _write(tmp_path: Path, text: str, name: str = "h.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_rfc3339_assets_and_labels(tmp_path: Path) -> None:
    p = _write(tmp_path, "timestamp,asset,a,b,lab\n"
               "2026-01-01T00:00:00Z,p1,1.0,2.0,0\n"
               "2026-01-01T00:00:01+00:00,p1,,3.0,1\n"
               "2026-01-01T01:00:00.5Z,p2,4.0,5.0,0\n")
    f = load_table(p, TableSpec(asset_col="asset", label_col="lab"), ["a", "b"])
    assert f["asset"].tolist() == ["p1", "p1", "p2"]
    assert np.isnan(f["a"][1]) and f["label"].tolist() == [0, 1, 0]
    assert ts_ns(f["ts"])[2] - ts_ns(f["ts"])[0] == 3600_500_000_000


@pytest.mark.parametrize(("values", "unit"), [
    ([1_767_225_600, 1_767_225_601], "auto"),
    ([1_767_225_600_000, 1_767_225_601_000], "auto"),
    ([1_767_225_600 * 10**9, 1_767_225_601 * 10**9], "auto"),
    ([1_767_225_600_000, 1_767_225_601_000], "ms"),
])
def test_epoch_units(tmp_path: Path, values: list[int], unit: str) -> None:
    p = _write(tmp_path, "t,x\n" + "\n".join(f"{v},1" for v in values) + "\n")
    f = load_table(p, TableSpec(time_col="t", time_unit=unit), ["x"])
    assert str(f["ts"][0]) == "2026-01-01 00:00:00+00:00"
    assert ts_ns(f["ts"])[1] - ts_ns(f["ts"])[0] == 10**9


def test_sample_index_times(tmp_path: Path) -> None:
    p = _write(tmp_path, "sample,x\n0,1\n1,2\n")
    f = load_table(p, TableSpec(time_col="sample", index_period_s=180), ["x"])
    assert ts_ns(f["ts"]).tolist() == [0, 180 * 10**9]


def test_parquet(tmp_path: Path) -> None:
    df = pd.DataFrame({"timestamp": ["2026-01-01T00:00:00Z"], "x": [1.5]})
    df.to_parquet(tmp_path / "h.parquet")
    assert load_table(tmp_path / "h.parquet", TableSpec(), ["x"])["x"].tolist() == [1.5]


def test_missing_column_error_names_it(tmp_path: Path) -> None:
    p = _write(tmp_path, "timestamp,a\n2026-01-01T00:00:00Z,1\n")
    with pytest.raises(DataError, match=r"missing columns \['b'\]"):
        load_table(p, TableSpec(), ["a", "b"])


def test_non_numeric_error_names_column_and_value(tmp_path: Path) -> None:
    p = _write(tmp_path, "timestamp,a\n2026-01-01T00:00:00Z,1\n2026-01-01T00:00:01Z,oops\n")
    with pytest.raises(DataError, match=r"column 'a' has 1 non-numeric values, e.g. \['oops'\]"):
        load_table(p, TableSpec(), ["a"])


def test_bad_timestamps(tmp_path: Path) -> None:
    p = _write(tmp_path, "timestamp,a\nyesterday,1\n")
    with pytest.raises(DataError, match="neither RFC 3339 nor epoch"):
        load_table(p, TableSpec(), ["a"])
    with pytest.raises(DataError, match="no such file"):
        load_table(tmp_path / "nope.csv", TableSpec(), ["a"])


def test_labels_file(tmp_path: Path) -> None:
    p = _write(tmp_path, "timestamp,asset,x\n" + "".join(
        f"2026-01-01T00:00:0{i}Z,{a},1\n" for a in ("p1", "p2") for i in range(5)))
    f = load_table(p, TableSpec(asset_col="asset"), ["x"])
    lab = _write(tmp_path, "asset,start,end,fault\np1,2026-01-01T00:00:01Z,"
                 "2026-01-01T00:00:03Z,bearing\n", "labels.csv")
    labels = load_labels(lab)
    assert labels["fault"].tolist() == ["bearing"]
    out = apply_labels(f, labels)
    assert out["label"].tolist() == [0, 1, 1, 1, 0] + [0] * 5
    bad = _write(tmp_path, "asset,begin,end\n", "bad.csv")
    with pytest.raises(DataError, match=r"lacks columns \['start'\]"):
        load_labels(bad)


def test_off_condition_parse() -> None:
    off = parse_off_condition("speed_rpm < 100")
    assert off is not None and (off.sensor, off.below) == ("speed_rpm", 100.0)
    assert parse_off_condition(None) is None
    with pytest.raises(DataError, match="speed_rpm<100"):
        parse_off_condition("speed_rpm > 100")
