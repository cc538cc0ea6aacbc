"""Signed model bundles: every single-byte change, truncation or extension of a valid bundle,
archives of any shape, and manifests that are signed but malformed are refused with the
bundle's own error (`BundleError`), and nothing is ever unpickled on the way."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import pickle
import tarfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from models.bundle import (
    CALIBRATION,
    KNOWN_MEMBERS,
    MANIFEST,
    SIGNATURE,
    WEIGHTS,
    BundleError,
    build_bundle,
    generate_key,
    key_id,
    load_bundle,
    pack,
    peek_manifest,
    read_members,
    sign,
)
from models.calibration import TailCalibrator
from models.lstm_ae import AEConfig, LSTMAutoencoder, Normalizer
from models.schema import AssetSchema, OffCondition, SensorSpec
from tests.fuzz.support import budget, counted

KEY = generate_key()
TRUSTED = {key_id(KEY.public_key()): KEY.public_key()}
SCHEMA = AssetSchema("tiny_pump", (SensorSpec("speed", "rpm", 0, 4000),
                                   SensorSpec("temp", "degC", -40, 200)),
                     1.0, 8, OffCondition("speed", 100.0))


@functools.cache
def blob() -> bytes:
    torch.manual_seed(0)
    cfg = AEConfig(n_sensors=2, window=8, hidden=(4,), latent=2, score_steps=2)
    rows = np.random.default_rng(0).normal([1500, 60], [50, 2], size=(200, 2))
    calib = TailCalibrator(n_ref=40).fit(np.random.default_rng(1).gamma(2.0, 0.5, 300))
    return build_bundle(SCHEMA, cfg, Normalizer.fit(rows), LSTMAutoencoder(cfg).state_dict(),
                        calib, KEY, river_state=b"\x80\x04not-a-pickle.", created=1.7e9)


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Loading a bundle must never unpickle anything, valid or not."""
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the bundle loader unpickled something")

    for mod, name in ((pickle, "loads"), (pickle, "load"), (torch, "load")):
        monkeypatch.setattr(mod, name, refuse)
    yield


def test_the_valid_bundle_loads() -> None:
    b = load_bundle(blob(), TRUSTED, SCHEMA)
    assert b.river_state == b"\x80\x04not-a-pickle."


def refused(data: bytes, keys: Any = TRUSTED) -> None:
    with pytest.raises(BundleError):
        load_bundle(data, keys, SCHEMA)


@given(data=st.data())
@budget(300)
@counted
def test_any_byte_change_truncation_or_extension_is_refused(data: st.DataObject) -> None:
    b = bytearray(blob())
    op = data.draw(st.sampled_from(["flip", "flip", "truncate", "extend", "many"]))
    if op == "flip":
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] ^= data.draw(st.integers(1, 255))
    elif op == "truncate":
        del b[data.draw(st.integers(0, len(b) - 1)):]
    elif op == "extend":
        b += data.draw(st.binary(min_size=1, max_size=1024))
    else:
        for i in data.draw(st.lists(st.integers(0, len(b) - 1), min_size=2, max_size=8,
                                    unique=True)):
            b[i] ^= 0xFF
    refused(bytes(b))


@st.composite
def archive(draw: st.DrawFn) -> bytes:
    """A tar of any shape: known and unknown names, links, directories, duplicates, formats."""
    fmt = draw(st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for _ in range(draw(st.integers(0, 6))):
            name = draw(st.one_of(st.sampled_from(sorted(KNOWN_MEMBERS)),
                                  st.sampled_from(["../manifest.json", "/etc/passwd", "a/b",
                                                   "x" * 99]),
                                  st.text(st.characters(min_codepoint=33, max_codepoint=126),
                                          min_size=1, max_size=10)))
            ti = tarfile.TarInfo(name)
            ti.type = draw(st.sampled_from([tarfile.REGTYPE] * 4 + [
                tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE]))
            if ti.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                ti.linkname = draw(st.sampled_from(["/etc/passwd", "manifest.json"]))
            body = draw(st.binary(max_size=64)) if ti.isfile() else b""
            ti.size = len(body)
            ti.mtime = draw(st.integers(0, 2**33 - 1))
            tar.addfile(ti, io.BytesIO(body) if body else None)
    return out.getvalue()


@given(raw=st.one_of(archive(), st.binary(max_size=2048)))
@budget(300)
@counted
def test_archives_of_any_shape_are_refused(raw: bytes) -> None:
    refused(raw)
    with pytest.raises(BundleError):
        peek_manifest(raw)


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=10)


def mutate_doc(doc: Any, path: list[str | int], value: Any, delete: bool) -> Any:
    """`doc` with the item at `path` replaced by `value` (or deleted)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict) and head in doc:
        out = dict(doc)
        if delete and not rest:
            del out[head]
        else:
            out[head] = mutate_doc(doc[head], rest, value, delete)
        return out
    if isinstance(doc, list) and isinstance(head, int) and 0 <= head < len(doc):
        new = list(doc)
        new[head] = mutate_doc(doc[head], rest, value, delete)
        return new
    return doc


def paths(doc: Any, prefix: list[str | int]) -> Iterator[list[str | int]]:
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, [*prefix, k])
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:3]):
            yield from paths(v, [*prefix, i])


MANIFEST_PATHS = list(paths(json.loads(read_members(blob())[MANIFEST]), []))


@given(path=st.sampled_from(MANIFEST_PATHS), value=json_value, delete=st.booleans(),
       member=st.sampled_from([MANIFEST, MANIFEST, CALIBRATION, WEIGHTS, SIGNATURE]),
       junk=st.binary(max_size=64))
@budget(100, 0.3)
@counted
def test_signed_but_malformed_bundles_give_a_bundle_error(
        path: list[str | int], value: Any, delete: bool, member: str, junk: bytes) -> None:
    """What only a trainer bug (or a stolen key) could produce: every member re-hashed and the
    manifest re-signed with the trusted key, so the loader gets past its checks of integrity
    and must still refuse malformed contents with its own error, or load them correctly."""
    members = read_members(blob())
    manifest = json.loads(members[MANIFEST])
    if member == MANIFEST:
        manifest = mutate_doc(manifest, path, value, delete)
    elif member == SIGNATURE:
        members[SIGNATURE] = json.dumps(value).encode() if delete else junk
    else:
        members[member] = junk if delete else json.dumps(value).encode()
        if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict):
            manifest["files"][member] = {"sha256": hashlib.sha256(members[member]).hexdigest(),
                                         "size": len(members[member])}
    members[MANIFEST] = json.dumps(manifest).encode()
    if member != SIGNATURE:
        members[SIGNATURE] = sign(members[MANIFEST], KEY)
    with contextlib.suppress(BundleError):  # or it loads: a harmless change
        load_bundle(pack(members), TRUSTED, SCHEMA)


def test_regression_deeply_nested_json_is_a_bundle_error() -> None:
    """A signature.json (or signed manifest) nested 100k deep raised RecursionError."""
    members = read_members(blob())
    members[SIGNATURE] = b"[" * 100_000 + b"]" * 100_000
    refused(pack(members))
    members = read_members(blob())
    members[MANIFEST] = b'{"files": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    members[SIGNATURE] = sign(members[MANIFEST], KEY)
    refused(pack(members))
    with pytest.raises(BundleError):
        peek_manifest(pack(members))


def test_regression_signed_junk_weights_or_null_manifest_is_a_bundle_error() -> None:
    """Signed junk weights raised safetensors' own error; a signed `null` manifest or a
    non-object `files` raised AttributeError."""
    members = read_members(blob())
    manifest = json.loads(members[MANIFEST])
    members[WEIGHTS] = b"\x00junk"
    manifest["files"][WEIGHTS] = {"sha256": hashlib.sha256(b"\x00junk").hexdigest(), "size": 5}
    members[MANIFEST] = json.dumps(manifest).encode()
    members[SIGNATURE] = sign(members[MANIFEST], KEY)
    refused(pack(members))
    for doc in (b"null", b'{"files": [1]}', b'{"files": {"weights.safetensors": 1}}'):
        members[MANIFEST] = doc
        members[SIGNATURE] = sign(doc, KEY)
        refused(pack(members))
    with pytest.raises(BundleError):  # (write_to_registry names the file from it)
        peek_manifest(pack({**members, MANIFEST: b"null", SIGNATURE: sign(b"null", KEY)}))
