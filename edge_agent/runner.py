"""Run a real agent on its own event loop in a background thread (the demo and tests use it)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from edge_agent.config import AgentConfig
from edge_agent.service import Agent


def wait_until(cond: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class AgentThread:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.agent: Agent | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="agent")
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # surfaced by stop()
            self.error = e

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.agent = Agent(self.cfg)
        await self.agent.run()

    def start(self, timeout: float = 20.0) -> AgentThread:
        self.thread.start()
        wait_until(lambda: self.error is not None or (
            self.agent is not None and self.agent.ready.is_set()), timeout, "agent start")
        if self.error is not None:
            raise self.error
        assert self.agent is not None
        if self.agent.mqtt is not None and not self.agent.mqtt.connected.wait(timeout):
            raise TimeoutError("agent did not connect to the MQTT broker")
        return self

    def stop(self) -> None:
        if self.loop is not None and self.agent is not None:
            self.loop.call_soon_threadsafe(self.agent.stop)
        self.thread.join(timeout=30)
        if self.error is not None:
            raise self.error
        if self.thread.is_alive():  # seen now and then in tests: a stop that hangs (open bug)
            logging.getLogger("gearwatch.agent").error("the agent did not stop within 30 s")

    def __enter__(self) -> AgentThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
