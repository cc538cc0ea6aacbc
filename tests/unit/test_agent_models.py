"""The learned model inside the agent: fusion, batched AE scoring in the pipeline, hot swap,
registry, refusal of bad bundles and rollback (real bundles trained by the trainer)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edge_agent.assets import AssetRegistry
from edge_agent.batch import SampleBatch
from edge_agent.config import AgentConfig, ConfigError, parse_config
from edge_agent.metrics import AgentMetrics
from edge_agent.model_manager import ModelManager, rollback_files
from edge_agent.pipeline import Pipeline, fuse
from models.bundle import BundleError, generate_key, save_keypair, write_to_registry
from simulators.faults import Fault
from simulators.pump import PumpFleet
from tests.pump_models import pump_bundle

S = 1_000_000_000
T0 = 1_700_000_000 * S
IDS = ["pump-1", "pump-2", "pump-3"]


def test_fuse_is_one_scale() -> None:
    nan = np.nan
    online = np.array([5.0, nan, 2.0, nan, 6.0])
    ae = np.array([1.0, 7.0, 3.0, nan, 6.0])
    sh_o = np.tile([[1.0, 0.0]], (5, 1))
    sh_a = np.tile([[0.0, 1.0]], (5, 1))
    fused, shares = fuse(online, sh_o, ae, sh_a)
    l2 = math.log10(2)
    # both present: the larger less log10(2) (Bonferroni); one present: that one
    np.testing.assert_allclose(fused[[0, 2, 4]], [5.0 - l2, 3.0 - l2, 6.0 - l2])
    assert fused[1] == 7.0 and np.isnan(fused[3])
    # blame from the detector that scored higher (the AE on ties)
    assert shares[0].tolist() == [1.0, 0.0] and shares[1].tolist() == [0.0, 1.0]
    assert shares[2].tolist() == [0.0, 1.0] and shares[4].tolist() == [0.0, 1.0]


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    d = tmp_path_factory.mktemp("keys")
    key = generate_key()
    save_keypair(d, key=key)
    return d, key


@pytest.fixture(scope="module")
def bundles(key_dir: tuple[Path, object]) -> list[bytes]:
    _, key = key_dir
    return [pump_bundle(key, seed=s, created=1_800_000_000.0 + s) for s in (0, 1)]


def _cfg(tmp_path: Path, keys: Path, **models: object) -> AgentConfig:
    return parse_config({
        "agent": {"state_dir": str(tmp_path / "state")},
        "models": {"trusted_keys": [str(keys)], **models},
        "scoring": {"warmup_rows": 200, "calibration_rows": 200},
        "assets": [{"id": i, "class": "centrifugal_pump"} for i in IDS],
    })


def _feed(p: Pipeline, fleet: PumpFleet, k0: int, steps: int) -> list:
    outs = []
    n, s = len(IDS), 9
    for k in range(k0, k0 + steps):
        ts = T0 + (k + 1) * S
        p.ingest(SampleBatch(np.repeat(np.arange(n, dtype=np.int32), s),
                             np.tile(np.arange(s, dtype=np.int32), n),
                             np.full(n * s, ts, np.int64), fleet.step().ravel()), wall_ns=k + 1)
        outs.extend(p.advance(wall_ns=k + 1))
    return outs


def test_pipeline_scores_every_running_row_with_the_model_and_swaps_between_ticks(
        tmp_path: Path, key_dir: tuple[Path, object], bundles: list[bytes]) -> None:
    keys, _ = key_dir
    cfg = _cfg(tmp_path, keys)
    p = Pipeline.from_config(cfg, AssetRegistry(cfg.asset_list()))
    mm = ModelManager(cfg, p, AgentMetrics())
    write_to_registry(mm.root, bundles[0])
    mm.load_initial()
    cp = p.classes["centrifugal_pump"]
    v0 = mm.installed["centrifugal_pump"].version
    assert cp.ae is not None and cp.events.model_version == v0
    fleet = PumpFleet(IDS, seed=5, stop_probability=0.0)
    outs = _feed(p, fleet, 0, 40)
    ae = np.concatenate([o.scores["ae"].score for o in outs])
    # window 10: the first 9 rows of each asset fill it, every row after is scored
    assert np.isnan(ae[: 9 * 3]).all() and np.isfinite(ae[10 * 3 :]).all()
    fused = np.concatenate([o.fused for o in outs])
    assert np.isfinite(fused[10 * 3 :]).all()
    # hot swap: the next row is already scored by the new model (windows carried over)
    mm.offer_blob(bundles[1], "test")
    v1 = mm.installed["centrifugal_pump"].version
    assert v1 != v0 and mm.previous["centrifugal_pump"] == v0
    after = _feed(p, fleet, 40, 1)
    assert len(after[0].rows) == 3 and np.isfinite(after[0].scores["ae"].score).all()
    assert cp.events.model_version == v1
    # the registry remembers it: ACTIVE is the new one, PREVIOUS the old
    d = mm.root / "centrifugal_pump"
    assert (d / "ACTIVE").read_text().strip() == v1
    assert (d / "PREVIOUS").read_text().strip() == v0


def test_tampered_and_foreign_bundles_are_refused_and_the_model_stays(
        tmp_path: Path, key_dir: tuple[Path, object], bundles: list[bytes]) -> None:
    keys, _ = key_dir
    cfg = _cfg(tmp_path, keys)
    p = Pipeline.from_config(cfg, AssetRegistry(cfg.asset_list()))
    metrics = AgentMetrics()
    mm = ModelManager(cfg, p, metrics)
    mm.offer_blob(bundles[0], "test")
    v0 = mm.installed["centrifugal_pump"].version
    bad = bytearray(bundles[1])
    bad[len(bad) // 2] ^= 0xFF  # a flipped byte in the weights
    mm.offer_blob(bytes(bad), "mqtt gearwatch/models/centrifugal_pump")
    other = pump_bundle(generate_key(), seed=3)  # signed by a key nobody trusts
    mm.offer_blob(other, "mqtt gearwatch/models/centrifugal_pump")
    assert mm.installed["centrifugal_pump"].version == v0
    refused = {s.labels["reason"]: s.value
               for mf in metrics.registry.collect() if mf.name == "gearwatch_model_bundles_refused"
               for s in mf.samples if s.name.endswith("_total")}
    assert refused.get("HashMismatch") == 1 and refused.get("UnknownKey") == 1


def test_rollback_through_the_files_is_followed_by_the_agent(
        tmp_path: Path, key_dir: tuple[Path, object], bundles: list[bytes]) -> None:
    keys, _ = key_dir
    cfg = _cfg(tmp_path, keys)
    p = Pipeline.from_config(cfg, AssetRegistry(cfg.asset_list()))
    audit: list[tuple[str, str, str, dict]] = []
    mm = ModelManager(cfg, p, AgentMetrics(),
                      lambda *a: audit.append(a))
    for b in bundles:
        write_to_registry(mm.root, b)
    mm.load_initial()  # no ACTIVE yet: the newest that verifies
    v0, v1 = sorted(p.name for p in (mm.root / "centrifugal_pump").glob("*.gwb"))
    assert mm.installed["centrifugal_pump"].version == v1.removesuffix(".gwb")
    old, new = rollback_files(mm.root, "centrifugal_pump")  # what `gearwatch agent rollback` does
    assert (old, new) == (v1.removesuffix(".gwb"), v0.removesuffix(".gwb"))
    mm.poll()
    assert mm.installed["centrifugal_pump"].version == new
    assert audit[-1][:3] == ("cli", "model_rollback", "centrifugal_pump")
    # and back again through the console's path
    assert mm.rollback("centrifugal_pump", "alice") == old
    assert audit[-1][0] == "alice" and audit[-1][1] == "model_rollback"
    with pytest.raises(BundleError, match="unknown asset class"):
        mm.rollback("nope", "alice")


def test_newly_published_version_in_the_folder_goes_live(
        tmp_path: Path, key_dir: tuple[Path, object], bundles: list[bytes]) -> None:
    keys, _ = key_dir
    cfg = _cfg(tmp_path, keys)
    p = Pipeline.from_config(cfg, AssetRegistry(cfg.asset_list()))
    mm = ModelManager(cfg, p, AgentMetrics())
    mm.load_initial()
    assert mm.installed == {} and p.classes["centrifugal_pump"].ae is None
    write_to_registry(mm.root, bundles[0])  # `gearwatch train publish --registry`
    mm.poll()
    assert "centrifugal_pump" in mm.installed


def test_bad_trusted_keys_are_a_config_error(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, tmp_path / "nokeys")
    p = Pipeline.from_config(cfg, AssetRegistry(cfg.asset_list()))
    with pytest.raises(ConfigError, match=r"models\.trusted_keys: .*nokeys does not exist"):
        ModelManager(cfg, p, AgentMetrics())
    (tmp_path / "nokeys").mkdir()  # a fresh install: the folder exists, no key yet
    (tmp_path / "nokeys" / "junk.pub").write_text("not a key")
    with pytest.raises(ConfigError, match=r"models\.trusted_keys: cannot read"):
        ModelManager(cfg, p, AgentMetrics())
    (tmp_path / "nokeys" / "junk.pub").unlink()
    assert not ModelManager(cfg, p, AgentMetrics()).enabled
    with pytest.raises(ConfigError, match=r"models\.device"):
        parse_config({"models": {"device": "gpu"}, "assets": [{"id": "a",
                                                               "class": "centrifugal_pump"}]})


def test_fused_detector_finds_a_bearing_fault_with_the_model(
        tmp_path: Path, key_dir: tuple[Path, object], bundles: list[bytes]) -> None:
    """The event on the faulty pump carries both scores and the model version."""
    keys, _ = key_dir
    cfg = _cfg(tmp_path, keys)
    p = Pipeline.from_config(cfg, AssetRegistry(cfg.asset_list()))
    mm = ModelManager(cfg, p, AgentMetrics())
    mm.offer_blob(bundles[0], "test")
    fleet = PumpFleet(IDS, seed=4, stop_probability=0.0,
                      faults=[Fault("pump-2", "bearing_wear", 900, 1.0, 60)])
    outs = _feed(p, fleet, 0, 1200)
    opened = [tr.event for o in outs for tr in o.transitions if tr.kind == "open"]
    assert opened and {e.asset for e in opened} == {"pump-2"}
    ev = opened[0]
    assert ev.model_version == mm.installed["centrifugal_pump"].version
    assert set(ev.scores_at_peak) == {"river", "ae"}
    assert (ev.start_ns - T0) / S >= 900
