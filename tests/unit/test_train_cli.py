"""End to end through `gearwatch train` on a small slice of the real TEP data."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gearwatch.cli import main
from models.bundle import list_versions, load_bundle, load_trusted_keys

TEP_ARGS = ["--time-col", "sample", "--index-period", "180", "--asset-col", "fault",
            "--label-col", "label"]


@pytest.fixture(scope="module")
def tep_slice(tep_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tep")
    train = pd.read_csv(tep_dir / "tep_train.csv")
    train[train["fault"] == 0].to_csv(d / "train.csv", index=False)
    test = pd.read_csv(tep_dir / "tep_test.csv")
    test = test[test["fault"].isin([0, 1, 6]) & (test["sample"] < 400)]
    test.to_csv(d / "test.csv", index=False)
    return {"train": d / "train.csv", "test": d / "test.csv", "dir": d}


def test_keygen_fit_evaluate_publish(tep_slice: dict[str, Path], capsys) -> None:
    d = tep_slice["dir"]
    assert main(["train", "keygen", "--out", str(d / "keys")]) == 0
    schema_args = ["--schema-from-columns", "--asset-class", "tep", "--period", "180",
                   "--window", "10"]
    assert main(["train", "quality", "--data", str(tep_slice["train"]), *TEP_ARGS,
                 *schema_args, "--out", str(d / "q")]) == 0
    q = json.loads((d / "q" / "quality.json").read_text())
    assert len(q["sensors"]) == 52 and q["dataset"]["rows"] == 500
    assert main(["train", "fit", "--data", str(tep_slice["train"]), *TEP_ARGS, *schema_args,
                 "--signing-key", str(d / "keys" / "gearwatch.key"), "--out",
                 str(d / "tep.gwb"), "--registry", str(d / "reg"), "--hidden", "16",
                 "--latent", "4", "--epochs", "4", "--score-steps", "10", "--river",
                 "--quiet"]) == 0
    keys = load_trusted_keys([d / "keys"])
    b = load_bundle((d / "tep.gwb").read_bytes(), keys)
    assert b.schema.n_sensors == 52 and b.config.window == 10 and b.config.hidden == (16,)
    assert b.manifest["training_data"]["rows"] == 500
    assert b.manifest["data_quality"]["summary"]["ok"] == 52
    assert b.river_detector() is not None
    assert list_versions(d / "reg", "tep") == [b.version]
    assert main(["train", "evaluate", "--bundle", str(d / "tep.gwb"), "--trusted-key",
                 str(d / "keys"), "--data", str(tep_slice["test"]), *TEP_ARGS,
                 "--exclude-from-summary", "0", "--out", str(d / "eval")]) == 0
    m = json.loads((d / "eval" / "metrics.json").read_text())
    assert set(m["per_asset"]) == {"0", "1", "6"}
    assert m["per_asset"]["0"]["events"]["labelled_events"] == 0
    # fault 6 (a large step) is found even by this 4-epoch model
    assert m["per_asset"]["6"]["events"]["found"] == 1
    html = (d / "eval" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    out = capsys.readouterr().out
    assert "overall" in out
    assert main(["train", "publish", "--bundle", str(d / "tep.gwb"), "--trusted-key",
                 str(d / "keys" / "gearwatch.pub"), "--registry", str(d / "reg2")]) == 0
    assert list_versions(d / "reg2", "tep") == [b.version]


def test_cli_errors_are_one_clear_line(tep_slice: dict[str, Path], tmp_path: Path, blob: bytes,
                                      capsys) -> None:
    rc = main(["train", "quality", "--data", str(tep_slice["train"]), "--time-col", "when",
               "--asset-class", "centrifugal_pump"])
    err = capsys.readouterr().err
    assert rc == 2 and "missing columns ['when', 'speed_rpm'" in err and "Traceback" not in err
    rc = main(["train", "quality", "--data", str(tep_slice["train"]), "--asset-class", "nope"])
    assert rc == 2 and "unknown asset class 'nope'" in capsys.readouterr().err
    bad = tmp_path / "bad.gwb"
    bad.write_bytes(b"not a bundle")
    main(["train", "keygen", "--out", str(tmp_path / "k")])
    rc = main(["train", "publish", "--bundle", str(bad), "--trusted-key", str(tmp_path / "k"),
               "--registry", str(tmp_path / "r")])
    assert rc == 2 and "not a readable bundle archive" in capsys.readouterr().err
    other = tmp_path / "other.gwb"  # signed by a key that is not trusted here
    other.write_bytes(blob)
    rc = main(["train", "evaluate", "--bundle", str(other), "--trusted-key",
               str(tmp_path / "k"), "--data", str(tep_slice["test"]), *TEP_ARGS,
               "--out", str(tmp_path / "e")])
    assert rc == 2 and "not among the trusted keys" in capsys.readouterr().err
    nonnum = tmp_path / "nonnum.csv"
    nonnum.write_text("timestamp,a\n2026-01-01T00:00:00Z,1\n2026-01-01T00:00:01Z,x\n")
    rc = main(["train", "quality", "--data", str(nonnum), "--schema-from-columns"])
    assert rc == 2 and "column 'a' has 1 non-numeric values" in capsys.readouterr().err


def test_fit_evaluate_publish_on_simulator_history(tmp_path: Path, capsys) -> None:
    """The same three steps on `gearwatch sim history` output, as the README shows them."""
    d = tmp_path
    assert main(["sim", "history", "--assets", "1", "--duration", "5400", "--seed", "1",
                 "--out", str(d / "train")]) == 0
    assert main(["sim", "history", "--assets", "2", "--duration", "5400", "--seed", "2",
                 "--fault", "pump-2:bearing_wear@3000+300*1.0-5000", "--out",
                 str(d / "test")]) == 0
    assert main(["train", "keygen", "--out", str(d / "keys")]) == 0
    common = ["--asset-col", "asset", "--label-col", "label"]
    assert main(["train", "fit", "--data", str(d / "train" / "history.csv"), *common,
                 "--asset-class", "centrifugal_pump", "--window", "10", "--hidden", "16",
                 "--latent", "4", "--epochs", "4", "--signing-key",
                 str(d / "keys" / "gearwatch.key"), "--out", str(d / "pump.gwb"),
                 "--quiet"]) == 0
    assert main(["train", "evaluate", "--bundle", str(d / "pump.gwb"), "--trusted-key",
                 str(d / "keys"), "--data", str(d / "test" / "history.csv"), *common,
                 "--labels", str(d / "test" / "labels.csv"), "--min-duration", "10",
                 "--out", str(d / "eval")]) == 0
    m = json.loads((d / "eval" / "metrics.json").read_text())
    assert m["per_asset"]["pump-2"]["events"]["found"] == 1  # the worn bearing
    assert m["per_asset"]["pump-1"]["events"]["labelled_events"] == 0
    assert main(["train", "publish", "--bundle", str(d / "pump.gwb"), "--trusted-key",
                 str(d / "keys"), "--registry", str(d / "reg")]) == 0
    assert len(list((d / "reg" / "centrifugal_pump").glob("*.gwb"))) == 1
    capsys.readouterr()
