"""Shared helpers of the industrial-input tests: a pump registry, a collecting emit, free ports."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_agent.assets import AssetRegistry
from edge_agent.bad_input import BadInputReporter
from edge_agent.batch import SampleBatch
from edge_agent.metrics import AgentMetrics
from models.catalog import CENTRIFUGAL_PUMP

ROOT = Path(__file__).resolve().parents[1]


def pump_registry(n: int = 2) -> AssetRegistry:
    return AssetRegistry([(f"pump-{i + 1}", CENTRIFUGAL_PUMP) for i in range(n)])


def free_port() -> int:
    from gearwatch.localservers import free_port as below_ephemeral

    return below_ephemeral()


class Collector:
    """A thread-safe emit that keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []
        self._lock = threading.Lock()

    def __call__(self, batch: SampleBatch) -> None:
        with self._lock:
            self.batches.append(batch)

    def all(self) -> SampleBatch:
        with self._lock:
            return SampleBatch.concat(list(self.batches)) if self.batches else SampleBatch.empty()

    def clear(self) -> None:
        with self._lock:
            self.batches.clear()

    def latest(self) -> dict[tuple[int, int], float]:
        """(asset index, sensor index) -> latest value."""
        b = self.all()
        return {(int(a), int(s)): float(v)
                for a, s, v in zip(b.asset, b.sensor, b.value, strict=True)}

    async def wait_for(self, n_samples: int, timeout: float = 5.0) -> SampleBatch:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(self.all()) < n_samples and loop.time() < end:
            await asyncio.sleep(0.02)
        return self.all()


def metrics_and_reporter() -> tuple[AgentMetrics, BadInputReporter]:
    m = AgentMetrics()
    return m, BadInputReporter(m)


def counter(metrics: AgentMetrics, name: str, **labels: str) -> float:
    v = metrics.registry.get_sample_value(name, labels)
    return float(v or 0.0)


def pump_modbus_config(**overrides: object) -> dict:
    """The example deploy/examples/modbus-pump.toml as a dict, with top-level overrides."""
    doc = tomllib.loads((ROOT / "deploy/examples/modbus-pump.toml").read_text())
    dev = doc["modbus"][0]
    dev.update(overrides)
    return dict(dev)


def rows_close(values: dict[tuple[int, int], float], rows: np.ndarray, tol: np.ndarray) -> bool:
    for a in range(rows.shape[0]):
        for s in range(rows.shape[1]):
            got = values.get((a, s))
            if got is None or abs(got - rows[a, s]) > max(tol[s], 1e-6 * abs(rows[a, s])):
                return False
    return True


@contextlib.contextmanager
def mosquitto() -> Iterator[int]:
    """A real Mosquitto broker on a free loopback port, for one test."""
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        conf = Path(d) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.02)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=5)
