from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models.bundle import (
    BadSignature,
    BundleError,
    CorruptBundle,
    HashMismatch,
    OversizedBundle,
    SchemaMismatch,
    UnknownKey,
    build_bundle,
    generate_key,
    key_id,
    latest_version_path,
    list_versions,
    load_bundle,
    load_private_key,
    load_trusted_keys,
    pack,
    read_members,
    save_keypair,
    sign,
    write_to_registry,
)
from models.calibration import TailCalibrator
from models.schema import SensorSpec


def test_round_trip(blob, signing_key, schema, model, normalizer, calibrator) -> None:
    b = load_bundle(blob, signing_key.public_key(), expected_schema=schema)
    assert b.schema == schema and b.config == model.cfg
    assert b.key_id == key_id(signing_key.public_key())
    np.testing.assert_array_equal(b.normalizer.center, normalizer.center)
    np.testing.assert_allclose(b.calibrator.surprise(np.array([1.0, 5.0])),
                               calibrator.surprise(np.array([1.0, 5.0])))
    x = torch.randn(2, 8, 6)
    torch.testing.assert_close(b.build_model()(x), model(x))
    assert b.river_state == b"not-a-real-pickle"
    m = b.manifest
    assert m["metrics"] == {"f1": 0.5} and m["window"] == 8 and "torch" in m["libraries"]
    assert m["off_condition"] == {"sensor": "speed", "below": 100.0, "grace_s": 0.0}
    assert b.version.startswith("20231114T")


def test_any_changed_byte_is_refused(schema, model, normalizer, signing_key) -> None:
    calib = TailCalibrator(n_ref=40).fit(np.random.default_rng(0).gamma(2.0, 0.5, 500))
    blob = build_bundle(schema, model.cfg, normalizer, model.state_dict(), calib, signing_key,
                        river_state=b"state")
    keys = {key_id(signing_key.public_key()): signing_key.public_key()}
    assert len(blob) <= 20_480  # tiny model: every byte is tried
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(BundleError):
            load_bundle(bytes(bad), keys)


def test_truncated_and_appended_refused(blob, signing_key) -> None:
    pub = signing_key.public_key()
    with pytest.raises(CorruptBundle):
        load_bundle(blob[:-1024], pub)
    with pytest.raises(CorruptBundle):
        load_bundle(blob + b"\0" * 512, pub)
    with pytest.raises(CorruptBundle, match="not a readable"):
        load_bundle(b"garbage", pub)


def test_wrong_key_refused(blob) -> None:
    with pytest.raises(UnknownKey, match="not among the trusted keys"):
        load_bundle(blob, generate_key().public_key())


def test_resigned_with_other_key_under_same_id_refused(blob, signing_key) -> None:
    members = read_members(blob)
    forged = json.loads(sign(members["manifest.json"], generate_key()))
    forged["key_id"] = key_id(signing_key.public_key())
    members["signature.json"] = json.dumps(forged, sort_keys=True).encode()
    with pytest.raises(BadSignature):
        load_bundle(pack(members), signing_key.public_key())


def test_swapped_member_refused_with_valid_archive(blob, signing_key) -> None:
    members = read_members(blob)
    members["river_state.pkl"] = b"malicious pickle"
    with pytest.raises(HashMismatch, match=r"river_state\.pkl"):
        load_bundle(pack(members), signing_key.public_key())


def test_unknown_member_refused(blob, signing_key) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(blob)) as src, tarfile.open(fileobj=out, mode="w") as t:
        for ti in src:
            t.addfile(ti, src.extractfile(ti))
        extra = tarfile.TarInfo("../evil")
        t.addfile(extra, io.BytesIO(b""))
    with pytest.raises(CorruptBundle, match="unexpected member"):
        load_bundle(out.getvalue(), signing_key.public_key())


def test_schema_mismatch_refused(blob, signing_key, schema) -> None:
    other = replace(schema, sensors=(*schema.sensors[:2], SensorSpec("vibration")), _index={})
    with pytest.raises(SchemaMismatch, match="sensors"):
        load_bundle(blob, signing_key.public_key(), expected_schema=other)
    with pytest.raises(SchemaMismatch, match="sample period"):
        load_bundle(blob, signing_key.public_key(),
                    expected_schema=replace(schema, sample_period_s=2.0, _index={}))


def test_oversized_refused(blob, signing_key) -> None:
    with pytest.raises(OversizedBundle):
        load_bundle(blob, signing_key.public_key(), max_bytes=1000)


def test_build_rejects_config_schema_disagreement(schema, model, normalizer, calibrator) -> None:
    with pytest.raises(ValueError, match="does not match"):
        build_bundle(replace(schema, window=9, _index={}), model.cfg, normalizer,
                     model.state_dict(), calibrator, generate_key())


def test_keys_on_disk_and_registry(tmp_path: Path, schema, model, normalizer, calibrator) -> None:
    priv, pub = save_keypair(tmp_path / "keys")
    assert priv.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        save_keypair(tmp_path / "keys")
    key = load_private_key(priv)
    trusted = load_trusted_keys([tmp_path / "keys"])
    assert list(trusted) == [key_id(key.public_key())]
    with pytest.raises(BundleError, match="not an unencrypted PEM"):
        load_private_key(pub)
    reg = tmp_path / "registry"
    paths = []
    for created in (1_700_000_000.0, 1_700_000_100.0):
        b = build_bundle(schema, model.cfg, normalizer, model.state_dict(), calibrator, key,
                         created=created)
        paths.append(write_to_registry(reg, b))
    assert paths[0].parent == reg / "tiny_pump" and paths[0].suffix == ".gwb"
    assert list_versions(reg, "tiny_pump") == [p.stem for p in paths]
    latest = latest_version_path(reg, "tiny_pump")
    assert latest == paths[1]
    assert load_bundle(latest.read_bytes(), trusted).version == paths[1].stem
    assert list_versions(reg, "nothing") == []
