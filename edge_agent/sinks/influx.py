"""InfluxDB sink: batched line-protocol writes to 1.x (`/write`) or 2.x/3.x (influxdb-client).

Writes are batched by size and time; on success the acks of the batched samples run
(ack-after-persist), so the broker redelivers whatever was not written when the agent died.
Errors are handled as Telegraf does: 5xx, 429 and connection errors are retried with capped,
jittered backoff (honouring Retry-After); a 400 means InfluxDB rejected some points (1.x writes
the rest, "partial write"), which is logged loudly and counted, not retried forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from edge_agent.batch import Ack
from edge_agent.config import InfluxSection
from edge_agent.metrics import AgentMetrics

log = logging.getLogger("gearwatch.influx")


class InfluxWriteError(Exception):
    def __init__(self, status: int, text: str, retry_after: float | None = None) -> None:
        super().__init__(f"InfluxDB answered {status}: {text[:300]}")
        self.status = status
        self.text = text
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status in (0, 408, 429) or self.status >= 500


class InfluxWriter(Protocol):
    name: str

    async def prepare(self) -> None: ...

    async def write(self, body: bytes) -> None: ...

    async def close(self) -> None: ...


def _retry_after(resp: httpx.Response) -> float | None:
    v = resp.headers.get("Retry-After")
    try:
        return float(v) if v is not None else None
    except ValueError:
        return None


class InfluxV1Writer:
    """InfluxDB 1.x: POST /write?db=..&precision=ns, user/password as query auth."""

    name = "influx_v1"

    def __init__(self, cfg: InfluxSection) -> None:
        self.cfg = cfg
        auth = None
        if cfg.username:
            auth = httpx.BasicAuth(cfg.username, cfg.password_secret() or "")
        self.http = httpx.AsyncClient(base_url=cfg.url, timeout=cfg.timeout_s, auth=auth)

    async def prepare(self) -> None:
        if self.cfg.create_database:
            q = f'CREATE DATABASE "{self.cfg.database}"'
            try:
                resp = await self.http.post("/query", data={"q": q})
            except httpx.HTTPError as e:
                raise InfluxWriteError(0, f"{type(e).__name__}: {e} ({self.cfg.url})") from e
            if resp.status_code >= 400:
                raise InfluxWriteError(resp.status_code, resp.text)

    async def write(self, body: bytes) -> None:
        try:
            resp = await self.http.post(
                "/write", params={"db": self.cfg.database, "precision": "ns"}, content=body
            )
        except httpx.HTTPError as e:
            raise InfluxWriteError(0, f"{type(e).__name__}: {e}") from e
        if resp.status_code >= 300:
            raise InfluxWriteError(resp.status_code, resp.text, _retry_after(resp))

    async def close(self) -> None:
        await self.http.aclose()


class InfluxV2Writer:
    """InfluxDB 2.x / 3.x (and anything speaking /api/v2/write) through influxdb-client.

    The client's synchronous write API runs in a worker thread: its async variant needs
    aiohttp, which nothing else here uses.
    """

    name = "influx_v2"

    def __init__(self, cfg: InfluxSection) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.cfg = cfg
        self.client = InfluxDBClient(
            url=cfg.url, token=cfg.token_secret() or "", org=cfg.org,
            timeout=int(cfg.timeout_s * 1000),
        )
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    async def prepare(self) -> None:
        return None

    def _write_sync(self, body: bytes) -> None:
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self.api.write(bucket=self.cfg.bucket, org=self.cfg.org, record=body,
                           write_precision=WritePrecision.NS)  # type: ignore[arg-type]
        except ApiException as e:
            ra = e.headers.get("Retry-After") if e.headers else None
            raise InfluxWriteError(int(e.status or 0), str(e.body or e.reason),
                                   float(ra) if ra else None) from e
        except (HTTPError, OSError) as e:
            raise InfluxWriteError(0, f"{type(e).__name__}: {e}") from e

    async def write(self, body: bytes) -> None:
        await asyncio.to_thread(self._write_sync, body)

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


def make_writer(cfg: InfluxSection) -> InfluxWriter:
    return InfluxV1Writer(cfg) if cfg.version == 1 else InfluxV2Writer(cfg)


@dataclass
class _Pending:
    lines: list[str] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    first_at: float = 0.0


class InfluxSink:
    """Batches lines from the pipeline and writes them in order, forever retrying transients."""

    def __init__(
        self, writer: InfluxWriter, metrics: AgentMetrics, batch_points: int = 5000,
        flush_interval_s: float = 0.25, max_backoff_s: float = 30.0,
    ) -> None:
        self.writer = writer
        self.metrics = metrics
        self.batch_points = batch_points
        self.flush_interval = flush_interval_s
        self.max_backoff = max_backoff_s
        self._pending = _Pending()
        self._wake = asyncio.Event()
        self._closing = False
        self.healthy = False
        self.points_written = 0

    def submit(self, lines: Sequence[str], acks: Sequence[Ack] = ()) -> None:
        if not lines and not acks:
            return
        if not self._pending.lines and not self._pending.acks:
            self._pending.first_at = time.monotonic()
        self._pending.lines.extend(lines)
        self._pending.acks.extend(acks)
        if len(self._pending.lines) >= self.batch_points:
            self._wake.set()

    @property
    def backlog_points(self) -> int:
        return len(self._pending.lines)

    async def run(self) -> None:
        prepared = False
        failures = 0
        while True:
            if not prepared:
                try:
                    await self.writer.prepare()
                    prepared = True
                except InfluxWriteError as e:
                    if failures % 20 == 0:  # once, then now and then: no log flood
                        log.warning("InfluxDB not ready (%s); retrying", e)
                    failures += 1
                    await asyncio.sleep(min(self.max_backoff, 0.5 * 2 ** min(failures, 6)))
                    continue
            due = self._pending.first_at + self.flush_interval - time.monotonic()
            if (self._pending.lines or self._pending.acks) and (
                due <= 0 or len(self._pending.lines) >= self.batch_points or self._closing
            ):
                await self._flush_one()
                continue
            if self._closing:
                return
            self._wake.clear()
            timeout = due if self._pending.lines or self._pending.acks else self.flush_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(timeout, 0.001))

    async def _flush_one(self) -> None:
        batch, self._pending = self._pending, _Pending(first_at=time.monotonic())
        # write in chunks of batch_points, in order; acks only after all chunks are written
        lines = batch.lines
        for i in range(0, max(len(lines), 1), self.batch_points):
            chunk = lines[i : i + self.batch_points]
            if chunk:
                await self._write_with_retry(("\n".join(chunk)).encode(), len(chunk))
        for ack in batch.acks:
            ack()

    async def _write_with_retry(self, body: bytes, n: int) -> None:
        attempt = 0
        while True:
            t0 = time.perf_counter()
            try:
                await self.writer.write(body)
                self.metrics.sink_latency.labels(self.writer.name).observe(
                    time.perf_counter() - t0)
                self.metrics.sink_points.labels(self.writer.name).inc(n)
                self.points_written += n
                if not self.healthy:
                    log.info("InfluxDB writes succeed (%s)", self.writer.name,
                             extra={"sink": self.writer.name})
                self.healthy = True
                return
            except InfluxWriteError as e:
                self.metrics.sink_errors.labels(self.writer.name).inc()
                if not e.retryable:
                    log.error("InfluxDB rejected points of a batch of %d (not retried): %s",
                              n, e, extra={"sink": self.writer.name})
                    return
                if self.healthy or attempt == 0:
                    log.warning("InfluxDB write failed, will retry: %s", e,
                                extra={"sink": self.writer.name})
                self.healthy = False
                attempt += 1
                backoff = min(self.max_backoff, 0.2 * 2 ** min(attempt, 10))
                delay = e.retry_after if e.retry_after is not None else random.uniform(
                    backoff / 2, backoff)
                await asyncio.sleep(delay)

    async def close(self, timeout_s: float = 10.0) -> None:
        self._closing = True
        self._wake.set()

    async def aclose_writer(self) -> None:
        await self.writer.close()
