"""The sample batch: the one shape in which samples travel from sources to the framer.

Struct of arrays (never one object per sample) so the middle of the agent stays numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

Ack = Callable[[], None]


@dataclass(slots=True)
class SampleBatch:
    """Samples of any number of assets.

    `asset` is the agent-wide asset index (see `AssetRegistry`), `sensor` the index of the
    sensor in that asset's schema, `ts_ns` UTC nanoseconds, `value` float64.
    `acks` are called once the samples are durable (ack-after-persist for MQTT QoS 1).
    """

    asset: np.ndarray  # int32
    sensor: np.ndarray  # int32
    ts_ns: np.ndarray  # int64
    value: np.ndarray  # float64
    acks: list[Ack] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])

    @classmethod
    def empty(cls, source: str = "") -> SampleBatch:
        return cls(
            np.empty(0, np.int32),
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            np.empty(0, np.float64),
            source=source,
        )

    @classmethod
    def concat(cls, batches: Sequence[SampleBatch]) -> SampleBatch:
        if len(batches) == 1:
            return batches[0]
        acks: list[Ack] = []
        for b in batches:
            acks.extend(b.acks)
        if not batches:
            return cls.empty()
        return cls(
            np.concatenate([b.asset for b in batches]),
            np.concatenate([b.sensor for b in batches]),
            np.concatenate([b.ts_ns for b in batches]),
            np.concatenate([b.value for b in batches]),
            acks=acks,
            source=batches[0].source,
        )

    def take(self, mask: np.ndarray) -> SampleBatch:
        """The samples where `mask` holds (acks stay with the original batch)."""
        return SampleBatch(
            self.asset[mask], self.sensor[mask], self.ts_ns[mask], self.value[mask],
            source=self.source,
        )

    def ack(self) -> None:
        for a in self.acks:
            a()
        self.acks.clear()
