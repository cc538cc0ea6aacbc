"""Signed, versioned model bundles: what the trainer publishes and the agent hot-swaps in.

Format (`.gwb`): an uncompressed POSIX tar holding exactly these regular files

    manifest.json        format, version, created, asset class + schema, model config,
                         normalizer, training data range, quality summary, metrics,
                         library versions, and `files`: {name: {sha256, size}} of every
                         other member except the signature
    signature.json       {"alg": "ed25519", "key_id": ..., "sig": base64} over the exact
                         bytes of manifest.json
    weights.safetensors  LSTM-AE state dict (safetensors: no code on load)
    calibration.json     `TailCalibrator.to_dict()` of held-back normal scores
    river_state.pkl      optional pickled river detector (warm start)

`load_bundle(blob, trusted_keys, expected_schema)` checks, in this order and before any
member is deserialised: size, archive structure (only known names, regular files, no
duplicates), the signature of the manifest with a trusted key, the SHA-256 and size of each
listed member (and that nothing unlisted is present); only then parses the manifest, checks
the schema, and loads weights/calibration.  Each refusal is a `BundleError` subclass whose
message names the problem; the agent keeps the model it had.

Keys: `generate_key()`, `save_keypair(dir)`, `load_private_key(path)`,
`load_public_key(path)`, `load_trusted_keys(paths)` -> {key_id: key}; `key_id(pub)` is the
first 16 hex digits of the SHA-256 of the raw public key.

Registry folder: `<root>/<asset_class>/<version>.gwb` (`write_to_registry`, `list_versions`,
`latest_version_path`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import platform
import re
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from models.calibration import TailCalibrator
from models.lstm_ae import AEConfig, LSTMAutoencoder, Normalizer
from models.schema import AssetSchema

FORMAT = "gearwatch-bundle/1"
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
WEIGHTS = "weights.safetensors"
CALIBRATION = "calibration.json"
RIVER_STATE = "river_state.pkl"
KNOWN_MEMBERS = frozenset({MANIFEST, SIGNATURE, WEIGHTS, CALIBRATION, RIVER_STATE})
REQUIRED_MEMBERS = frozenset({MANIFEST, SIGNATURE, WEIGHTS, CALIBRATION})
MAX_BUNDLE_BYTES = 256 * 1024 * 1024
# what parsing a member may raise; RecursionError: JSON nested deeper than Python recurses
_MALFORMED = (ValueError, KeyError, TypeError, AttributeError, RecursionError)
SUFFIX = ".gwb"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BundleError(Exception):
    """A bundle was refused; the message says why and what to do."""


class OversizedBundle(BundleError):
    pass


class CorruptBundle(BundleError):
    pass


class UnknownKey(BundleError):
    pass


class BadSignature(BundleError):
    pass


class HashMismatch(BundleError):
    pass


class SchemaMismatch(BundleError):
    pass


# ---------------------------------------------------------------- keys


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def key_id(pub: Ed25519PublicKey) -> str:
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def save_keypair(directory: str | Path, name: str = "gearwatch",
                 key: Ed25519PrivateKey | None = None) -> tuple[Path, Path]:
    """Write `<name>.key` (PKCS8 PEM, mode 0600) and `<name>.pub` (SubjectPublicKeyInfo PEM)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = key or generate_key()
    priv, pub = d / f"{name}.key", d / f"{name}.pub"
    if priv.exists():
        raise FileExistsError(f"{priv} exists; refusing to overwrite a signing key")
    priv.touch(mode=0o600)
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise BundleError(f"{path}: not an unencrypted PEM private key ({e})") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path}: not an Ed25519 key; make one with `gearwatch train keygen`")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except ValueError as e:
        raise BundleError(f"{path}: not a PEM public key ({e})") from e
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{path}: not an Ed25519 public key")
    return key


def load_trusted_keys(paths: Iterable[str | Path]) -> dict[str, Ed25519PublicKey]:
    """Public keys from files, or every `*.pub` in a directory, keyed by `key_id`."""
    keys: dict[str, Ed25519PublicKey] = {}
    for p in map(Path, paths):
        files = sorted(p.glob("*.pub")) if p.is_dir() else [p]
        for f in files:
            k = load_public_key(f)
            keys[key_id(k)] = k
    return keys


def _as_key_map(keys: Any) -> dict[str, Ed25519PublicKey]:
    if isinstance(keys, dict):
        return keys
    if isinstance(keys, Ed25519PublicKey):
        return {key_id(keys): keys}
    return {key_id(k): k for k in keys}


# ---------------------------------------------------------------- build


def sign(manifest_bytes: bytes, key: Ed25519PrivateKey) -> bytes:
    """signature.json bytes for these exact manifest bytes."""
    doc = {"alg": "ed25519", "key_id": key_id(key.public_key()),
           "sig": base64.b64encode(key.sign(manifest_bytes)).decode()}
    return json.dumps(doc, sort_keys=True).encode()


def library_versions() -> dict[str, str]:
    import cryptography
    import safetensors

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__, "safetensors": safetensors.__version__,
           "cryptography": cryptography.__version__}
    try:
        import river

        out["river"] = river.__version__
    except ImportError:  # pragma: no cover - river is a dependency
        pass
    return out


def make_version(created: float, digest: str) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created)) + "-" + digest[:8]


def build_bundle(
    schema: AssetSchema,
    config: AEConfig,
    normalizer: Normalizer,
    state_dict: dict[str, torch.Tensor],
    calibrator: TailCalibrator,
    signing_key: Ed25519PrivateKey,
    *,
    river_state: bytes | None = None,
    info: dict[str, Any] | None = None,
    version: str | None = None,
    created: float | None = None,
) -> bytes:
    """Assemble and sign a bundle.  `info` adds manifest keys such as `training_data`
    (range, rows), `data_quality` (summary) and `metrics`."""
    if config.n_sensors != schema.n_sensors or config.window != schema.window:
        raise ValueError("model config does not match the schema's sensors/window")
    members: dict[str, bytes] = {
        WEIGHTS: st_save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}),
        CALIBRATION: json.dumps(calibrator.to_dict()).encode(),
    }
    if river_state is not None:
        members[RIVER_STATE] = river_state
    files = {n: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
             for n, b in sorted(members.items())}
    created = time.time() if created is None else created
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    version = version or make_version(created, digest)
    if not _SAFE_NAME.match(version) or not _SAFE_NAME.match(schema.asset_class):
        raise ValueError("version and asset class must be [A-Za-z0-9._-], for registry paths")
    manifest = {
        **(info or {}),
        "format": FORMAT,
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
        "asset_class": schema.asset_class,
        "schema": schema.to_dict(),
        "sample_period_s": schema.sample_period_s,
        "window": schema.window,
        "off_condition": schema.to_dict()["off_condition"],
        "model": config.to_dict(),
        "normalizer": normalizer.to_dict(),
        "libraries": library_versions(),
        "files": files,
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, indent=1).encode()
    members[MANIFEST] = manifest_bytes
    members[SIGNATURE] = sign(manifest_bytes, signing_key)
    return pack(members)


def pack(members: dict[str, bytes]) -> bytes:
    """The one canonical archive of these members (fixed order, mtime 0, ustar), so that
    `read_members` can demand byte-identity and no header or padding byte goes unchecked."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in (MANIFEST, SIGNATURE, *sorted(set(members) - {MANIFEST, SIGNATURE})):
            ti = tarfile.TarInfo(name)
            ti.size = len(members[name])
            ti.mtime = 0
            ti.mode = 0o644
            tar.addfile(ti, io.BytesIO(members[name]))
    return out.getvalue()


# ---------------------------------------------------------------- load


@dataclass
class Bundle:
    """A verified bundle.  `river_state` is verified bytes; `river_detector()` unpickles them."""

    manifest: dict[str, Any]
    schema: AssetSchema
    config: AEConfig
    normalizer: Normalizer
    calibrator: TailCalibrator
    state_dict: dict[str, torch.Tensor]
    key_id: str
    river_state: bytes | None = None

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def asset_class(self) -> str:
        return self.schema.asset_class

    def build_model(self) -> LSTMAutoencoder:
        model = LSTMAutoencoder(self.config)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def river_detector(self) -> Any:
        if self.river_state is None:
            return None
        from models.river_state import loads_detector

        return loads_detector(self.river_state)


def read_members(blob: bytes, max_bytes: int = MAX_BUNDLE_BYTES) -> dict[str, bytes]:
    """Archive -> {name: bytes}, refusing anything but the known regular files."""
    if len(blob) > max_bytes:
        raise OversizedBundle(f"bundle is {len(blob)} bytes, over the {max_bytes}-byte limit")
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
            for ti in tar:
                if ti.name not in KNOWN_MEMBERS:
                    raise CorruptBundle(f"unexpected member {ti.name!r} in bundle")
                if not ti.isfile():
                    raise CorruptBundle(f"member {ti.name!r} is not a regular file")
                if ti.name in members:
                    raise CorruptBundle(f"member {ti.name!r} appears twice")
                f = tar.extractfile(ti)
                if f is None:  # pragma: no cover - isfile() above
                    raise CorruptBundle(f"member {ti.name!r} unreadable")
                members[ti.name] = f.read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CorruptBundle(f"not a readable bundle archive ({e}); re-download or re-export it"
                            ) from e
    missing = REQUIRED_MEMBERS - members.keys()
    if missing:
        raise CorruptBundle(f"bundle lacks {sorted(missing)}")
    if pack(members) != blob:
        raise CorruptBundle("archive headers or padding differ from the canonical form; "
                            "the bundle was altered or not written by gearwatch")
    return members


def verify_members(members: dict[str, bytes], trusted_keys: Any) -> str:
    """Signature over the manifest, then each listed member's hash.  Returns the key id."""
    keys = _as_key_map(trusted_keys)
    try:
        sig = json.loads(members[SIGNATURE])
        kid, raw_sig = str(sig["key_id"]), base64.b64decode(sig["sig"], validate=True)
        if sig.get("alg") != "ed25519":
            raise ValueError(f"algorithm {sig.get('alg')!r}")
    except _MALFORMED as e:
        raise CorruptBundle(f"unreadable signature.json ({e})") from e
    if kid not in keys:
        raise UnknownKey(
            f"bundle signed by key {kid}, which is not among the trusted keys "
            f"{sorted(keys)}; add its .pub file to the trusted keys if you trust it"
        )
    try:
        keys[kid].verify(raw_sig, members[MANIFEST])
    except InvalidSignature as e:
        raise BadSignature(f"manifest signature does not verify with key {kid}; "
                           "the bundle was altered or signed by someone else") from e
    try:
        files = json.loads(members[MANIFEST])["files"]
        if not isinstance(files, dict) or not all(isinstance(m, dict) for m in files.values()):
            raise TypeError("'files' must map member names to {sha256, size}")
    except _MALFORMED as e:  # signed but malformed: trainer bug
        raise CorruptBundle(f"signed manifest has no file list ({e})") from e
    extra = members.keys() - files.keys() - {MANIFEST, SIGNATURE}
    if extra:
        raise HashMismatch(f"members {sorted(extra)} are not listed in the signed manifest")
    for name, meta in files.items():
        data = members.get(name)
        if data is None:
            raise HashMismatch(f"member {name!r} listed in the manifest is missing")
        if len(data) != meta.get("size") or \
                hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise HashMismatch(f"member {name!r} does not match its signed SHA-256")
    return kid


def schema_differences(got: AssetSchema, expected: AssetSchema) -> list[str]:
    diffs = []
    if got.asset_class != expected.asset_class:
        diffs.append(f"asset class {got.asset_class!r} != {expected.asset_class!r}")
    if got.sensor_names != expected.sensor_names:
        diffs.append(f"sensors {list(got.sensor_names)} != {list(expected.sensor_names)}")
    if not np.isclose(got.sample_period_s, expected.sample_period_s):
        diffs.append(f"sample period {got.sample_period_s} s != {expected.sample_period_s} s")
    return diffs


def load_bundle(
    blob: bytes,
    trusted_keys: Any,
    expected_schema: AssetSchema | None = None,
    max_bytes: int = MAX_BUNDLE_BYTES,
) -> Bundle:
    """Verify then deserialise.  `trusted_keys`: {key_id: key}, a key, or a list of keys.

    The window length is the model's own choice and may differ from `expected_schema`'s;
    asset class, sensor order and sample period must match.
    """
    members = read_members(blob, max_bytes)
    kid = verify_members(members, trusted_keys)
    try:
        manifest = json.loads(members[MANIFEST])
        if manifest.get("format") != FORMAT:
            raise CorruptBundle(f"unsupported bundle format {manifest.get('format')!r}; "
                                f"this gearwatch reads {FORMAT}")
        schema = AssetSchema.from_dict(manifest["schema"])
        config = AEConfig.from_dict(manifest["model"])
        normalizer = Normalizer.from_dict(manifest["normalizer"])
    except _MALFORMED as e:
        raise CorruptBundle(f"manifest is signed but malformed ({e})") from e
    if expected_schema is not None:
        diffs = schema_differences(schema, expected_schema)
        if diffs:
            raise SchemaMismatch("bundle schema does not match the configured asset class: "
                                 + "; ".join(diffs) + ". Retrain for this schema.")
    try:
        calibrator = TailCalibrator.from_dict(json.loads(members[CALIBRATION]))
        state = st_load(members[WEIGHTS])
        model = LSTMAutoencoder(config)
        model.load_state_dict(state)
    except (*_MALFORMED, RuntimeError, SafetensorError) as e:
        raise CorruptBundle(f"weights or calibration do not fit the model config ({e})") from e
    return Bundle(manifest, schema, config, normalizer, calibrator, state, kid,
                  members.get(RIVER_STATE))


def peek_manifest(blob: bytes) -> dict[str, Any]:
    """UNVERIFIED manifest, for naming/listing only (never trust its contents)."""
    members = read_members(blob)
    try:
        out: dict[str, Any] = json.loads(members[MANIFEST])
    except (ValueError, RecursionError) as e:
        raise CorruptBundle(f"manifest.json is not JSON ({e})") from e
    if not isinstance(out, dict):
        raise CorruptBundle("manifest.json is not a JSON object")
    return out


# ---------------------------------------------------------------- registry folder


def registry_path(root: str | Path, asset_class: str, version: str) -> Path:
    if not _SAFE_NAME.match(asset_class) or not _SAFE_NAME.match(version):
        raise BundleError(f"unsafe asset class or version name {asset_class!r}/{version!r}")
    return Path(root) / asset_class / f"{version}{SUFFIX}"


def write_to_registry(root: str | Path, blob: bytes) -> Path:
    """Write to `<root>/<asset_class>/<version>.gwb` atomically (temp file + rename)."""
    m = peek_manifest(blob)
    path = registry_path(root, str(m.get("asset_class")), str(m.get("version")))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)
    return path


def list_versions(root: str | Path, asset_class: str) -> list[str]:
    """Versions in the registry, oldest first (versions start with a UTC timestamp)."""
    d = Path(root) / asset_class
    return sorted(p.stem for p in d.glob(f"*{SUFFIX}")) if d.is_dir() else []


def latest_version_path(root: str | Path, asset_class: str) -> Path | None:
    versions = list_versions(root, asset_class)
    return registry_path(root, asset_class, versions[-1]) if versions else None
