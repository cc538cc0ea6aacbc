"""Learned models in the agent: signed bundles verified, installed between ticks, rolled back.

Bundles arrive three ways: already in the registry folder at start, dropped into it later
(`gearwatch train publish --registry`), or as retained MQTT messages on `models.mqtt_topic`.
Every one is verified (signature, hashes, schema) before anything in it is deserialised; a
refused bundle is logged once with the reason, counted, and the running model stays.

Which version runs is written in `<registry>/<class>/ACTIVE` and the one before it in
`PREVIOUS`, so the choice survives restarts and `gearwatch agent rollback` (which swaps the
two files while the agent runs or not) needs no connection to the agent: the agent re-reads
the folder every `models.watch_interval_s` and installs whatever ACTIVE names.

Installing happens on the event loop and takes the class's scoring lock (rows are scored in
the agent's scoring thread under that lock), so a swap falls between two ticks; the new
scorer takes over the old one's windows (same window and sensors), so it scores from the
next row on and no row goes unscored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.config import AgentConfig, ConfigError
from edge_agent.metrics import AgentMetrics
from edge_agent.pipeline import Pipeline
from models.bundle import (
    SUFFIX,
    Bundle,
    BundleError,
    list_versions,
    load_bundle,
    load_trusted_keys,
    registry_path,
    write_to_registry,
)

log = logging.getLogger("gearwatch.models")

ACTIVE = "ACTIVE"
PREVIOUS = "PREVIOUS"


@dataclass
class Installed:
    version: str
    source: str
    key_id: str
    manifest: dict[str, Any]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def rollback_files(root: str | Path, asset_class: str, to: str | None = None) -> tuple[str, str]:
    """Point ACTIVE at the previous version (or `to`); returns (from, to).  Used by the CLI."""
    d = Path(root) / asset_class
    versions = list_versions(root, asset_class)
    current = _read(d / ACTIVE) or (versions[-1] if versions else None)
    if current is None:
        raise BundleError(f"no bundles for {asset_class!r} in {root}")
    target = to or _read(d / PREVIOUS)
    if target is None:
        older = [v for v in versions if v < current]
        if not older:
            raise BundleError(f"{asset_class}: no previous version to roll back to "
                              f"(installed: {current})")
        target = older[-1]
    if target not in versions:
        raise BundleError(f"{asset_class}: version {target!r} is not in {d}; "
                          f"available: {', '.join(versions) or 'none'}")
    _write_atomic(d / PREVIOUS, current)
    _write_atomic(d / ACTIVE, target)
    return current, target


class ModelManager:
    """Owns the learned scorer of each asset class in the pipeline."""

    def __init__(self, cfg: AgentConfig, pipeline: Pipeline, metrics: AgentMetrics,
                 audit: Callable[[str, str, str, dict[str, Any]], Any] | None = None) -> None:
        self.cfg = cfg.models
        self.pipeline = pipeline
        self.metrics = metrics
        self.audit = audit
        self.root = Path(self.cfg.registry(cfg.agent.state_dir))
        self.installed: dict[str, Installed] = {}
        self.previous: dict[str, str] = {}
        self._refused_logged: set[tuple[str, str]] = set()
        self._active_seen: dict[str, str | None] = {}
        self._known: dict[str, set[str]] = {}
        self.keys: dict[str, Any] = {}
        if self.cfg.trusted_keys and self.cfg.enabled:
            missing = [p for p in self.cfg.trusted_keys if not Path(p).exists()]
            if missing:
                raise ConfigError(
                    f"models.trusted_keys: {', '.join(missing)} does not exist -> point it at "
                    "the .pub files (or their folder) written by `gearwatch train keygen`")
            try:
                self.keys = load_trusted_keys(self.cfg.trusted_keys)
            except (OSError, ValueError, BundleError) as e:
                raise ConfigError(
                    f"models.trusted_keys: cannot read {self.cfg.trusted_keys}: {e} -> point it "
                    "at the .pub files written by `gearwatch train keygen`") from None
            if not self.keys:  # a fresh install: the folder is there, the key comes later
                log.warning("models.trusted_keys: no *.pub in %s yet; learned models stay off "
                            "until the signing key's .pub is put there and the agent restarts",
                            ", ".join(self.cfg.trusted_keys))

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled and bool(self.keys)

    # -- verification (thread-safe: no shared state) --------------------------------------
    def verify(self, blob: bytes) -> Bundle:
        """Verify and deserialise a bundle for one of our classes, or raise BundleError."""
        from models.bundle import peek_manifest

        cls = str(peek_manifest(blob).get("asset_class", ""))
        cp = self.pipeline.classes.get(cls)
        if cp is None:
            raise BundleError(f"bundle is for asset class {cls!r}, which this agent does not "
                              f"watch ({', '.join(self.pipeline.classes)})")
        return load_bundle(blob, self.keys, expected_schema=cp.base_schema,
                           max_bytes=self.cfg.max_bundle_mb << 20)

    def refused(self, source: str, err: Exception, asset_class: str = "unknown") -> None:
        reason = type(err).__name__
        self.metrics.models_refused.labels(asset_class, reason).inc()
        key = (source, str(err))
        if key not in self._refused_logged:  # once per distinct problem, not per retry
            self._refused_logged.add(key)
            log.error("model bundle from %s refused (%s): %s; the running model stays",
                      source, reason, err, extra={"source": source})

    # -- start and the folder watch -------------------------------------------------------
    def load_initial(self) -> None:
        if not self.cfg.enabled:
            log.info("learned models disabled (models.enabled = false)")
            return
        if not self.keys:
            log.info("no models.trusted_keys configured: scoring with the online detector only")
            return
        for name in self.pipeline.classes:
            self._known[name] = set(list_versions(self.root, name))
            self._sync_class(name, initial=True)

    def poll(self, who: str = "cli") -> None:
        """Install what ACTIVE names (a rollback) or a version new in the folder (a publish)."""
        if not self.enabled:
            return
        for name in self.pipeline.classes:
            self._sync_class(name, initial=False, who=who)

    def _sync_class(self, name: str, initial: bool, who: str = "cli") -> None:
        d = self.root / name
        versions = list_versions(self.root, name)
        known = self._known.setdefault(name, set())
        new = [v for v in versions if v not in known]
        known.update(versions)
        active = _read(d / ACTIVE)
        changed = active != self._active_seen.get(name)
        self._active_seen[name] = active
        current = self.installed.get(name)
        want: list[str] = []
        if active is not None and (initial or changed):
            want.append(active)
        if not initial and new and (current is None or max(new) > current.version):
            want.append(max(new))  # a newly published version goes live
        if initial and active is None:
            want.extend(reversed(versions))  # newest that verifies
        for v in want:
            if current is not None and v == current.version:
                return
            try:
                blob = registry_path(self.root, name, v).read_bytes()
            except OSError as e:
                self.refused(f"registry {d}", BundleError(f"cannot read version {v}: {e}"), name)
                continue
            try:
                bundle = self.verify(blob)
            except BundleError as e:
                self.refused(f"registry {d / (v + SUFFIX)}", e, name)
                continue
            by = who if active == v and changed and not initial else "system"
            self.install(bundle, f"registry {d}", who=by,
                         reason="ACTIVE" if active == v else "newest in registry")
            return

    # -- installing -----------------------------------------------------------------------
    def offer_blob(self, blob: bytes, source: str) -> None:
        """A bundle from the network (MQTT): verify, keep it in the registry, install it."""
        try:
            bundle = self.verify(blob)
        except BundleError as e:
            self.refused(source, e)
            return
        cur = self.installed.get(bundle.asset_class)
        if cur is not None and cur.version == bundle.version:
            return  # the retained message again, after a reconnect
        try:
            write_to_registry(self.root, blob)
            self._known.setdefault(bundle.asset_class, set()).add(bundle.version)
        except (OSError, BundleError) as e:
            log.warning("could not keep bundle %s in %s: %s (installed anyway)",
                        bundle.version, self.root, e)
        self.install(bundle, source, who="system", reason="published")

    def install(self, bundle: Bundle, source: str, who: str, reason: str) -> None:
        name = bundle.asset_class
        cp = self.pipeline.classes[name]
        old = self.installed.get(name)
        cp.install_model(bundle, self.cfg.device, self.cfg.stride)
        self.installed[name] = Installed(bundle.version, source, bundle.key_id, bundle.manifest)
        if old is not None:
            self.previous[name] = old.version
        self._write_pointers(name, bundle.version, old.version if old else None)
        m = self.metrics
        m.model_swaps.labels(name).inc()
        if old is not None:
            m.model_info.remove(name, "lstm_ae", old.version)
        m.model_info.labels(name, "lstm_ae", bundle.version).set(1)
        log.warning("model %s %s installed for %s (%s, from %s, key %s)%s", name, bundle.version,
                    f"{len(cp.members)} assets", reason, source, bundle.key_id,
                    f"; previous {old.version}" if old else "")
        if self.audit is not None:
            action = "model_rollback" if reason == "ACTIVE" and old is not None else "model_swap"
            self.audit(who, action, name, {"version": bundle.version, "source": source,
                                           "previous": old.version if old else None,
                                           "reason": reason})

    def _write_pointers(self, name: str, version: str, previous: str | None) -> None:
        d = self.root / name
        try:
            d.mkdir(parents=True, exist_ok=True)
            if previous is not None and _read(d / ACTIVE) != version:
                _write_atomic(d / PREVIOUS, previous)
            _write_atomic(d / ACTIVE, version)
            self._active_seen[name] = version
        except OSError as e:
            log.warning("cannot record the active model in %s: %s", d, e)

    def rollback(self, asset_class: str, who: str) -> str:
        """Return to the previous version now (the console's button)."""
        if asset_class not in self.pipeline.classes:
            raise BundleError(f"unknown asset class {asset_class!r}")
        _, target = rollback_files(self.root, asset_class)
        self.poll(who=who)
        inst = self.installed.get(asset_class)
        if inst is None or inst.version != target:
            raise BundleError(f"{asset_class}: could not install {target} (see the log)")
        return target

    # -- what the console and status show -------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        out = []
        for name, inst in self.installed.items():
            man = inst.manifest
            out.append({
                "asset_class": name, "kind": "lstm_ae", "version": inst.version,
                "previous": self.previous.get(name), "source": inst.source,
                "key_id": inst.key_id, "assets": len(self.pipeline.classes[name].members),
                "metrics": man.get("metrics", {}),
                "training_data": man.get("training_data", {}),
                "device": str(getattr(self.pipeline.classes[name].ae, "device", "")),
            })
        return out
