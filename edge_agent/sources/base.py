"""What every source is: a long-running task that emits sample batches and reports bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from edge_agent.batch import SampleBatch

# Emit is thread-safe and non-blocking: sources running in threads (paho, pyserial) may call it.
Emit = Callable[[SampleBatch], None]


class Source(Protocol):
    name: str

    async def run(self, emit: Emit) -> None:
        """Read until cancelled; reconnect by itself; never raise for bad input."""
        ...
