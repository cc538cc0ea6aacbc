"""InfluxDB sink: batched line-protocol writes to 1.x (`/write`) or 2.x/3.x (influxdb-client).

With the spool (the default) every line is made durable first (edge_agent/sinks/spool.py:
group commit, then the MQTT acks run); the sink sends the newest records from memory and
replays the backlog from disk, oldest first, through a token bucket so a long catch-up never
starves live data; a segment is deleted once all its points are delivered.  Without the spool
the acks run after the InfluxDB write (the broker holds the backlog).

InfluxDB's answers are handled as Telegraf does: 413 splits the batch in halves (and later
writes stay at the size that passed); 429 and 503 wait for Retry-After; other 5xx, 408, auth
errors and connection errors are retried forever with capped, jittered backoff (404: the
database is created again first); any other 4xx means bad points: the batch is bisected until
each bad line is alone, which goes to the SQLite dead-letter table (counted, logged), and the
rest goes through (1.x has already written the good points of a "partial write": rewriting
them is harmless, points are keyed by series and time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx

from edge_agent.batch import Ack
from edge_agent.config import InfluxSection
from edge_agent.metrics import AgentMetrics
from edge_agent.sinks.spool import Pos, Record, Spool

log = logging.getLogger("gearwatch.influx")


class InfluxWriteError(Exception):
    def __init__(self, status: int, text: str, retry_after: float | None = None) -> None:
        super().__init__(f"InfluxDB answered {status}: {text[:300]}")
        self.status = status
        self.text = text
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Worth retrying as it is: the server, the network or the credentials are at fault."""
        return self.status in (0, 401, 403, 404, 408, 429) or self.status >= 500

    @property
    def bad_points(self) -> bool:
        """A 4xx about the content: some line of the batch is at fault (413: its size)."""
        return not self.retryable


class InfluxWriter(Protocol):
    name: str

    async def prepare(self) -> None: ...

    async def write(self, body: bytes) -> None: ...

    async def close(self) -> None: ...


MAX_RETRY_AFTER_S = 300.0


def parse_retry_after(v: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110)."""
    if v is None:
        return None
    v = v.strip()
    try:
        secs = float(v)
    except ValueError:
        try:
            when = parsedate_to_datetime(v).timestamp()
        except (TypeError, ValueError, IndexError):
            return None
        secs = when - (time.time() if now is None else now)
    return min(max(secs, 0.0), MAX_RETRY_AFTER_S)


def _retry_after(resp: httpx.Response) -> float | None:
    return parse_retry_after(resp.headers.get("Retry-After"))


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
                                   parse_retry_after(ra)) from e
        except (HTTPError, OSError) as e:
            raise InfluxWriteError(0, f"{type(e).__name__}: {e}") from e

    async def write(self, body: bytes) -> None:
        await asyncio.to_thread(self._write_sync, body)

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


def make_writer(cfg: InfluxSection) -> InfluxWriter:
    return InfluxV1Writer(cfg) if cfg.version == 1 else InfluxV2Writer(cfg)


class TokenBucket:
    """The replay budget: `rate` points per second, bursts of up to `burst` points."""

    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.clock = clock
        self.tokens = self.burst
        self.t = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now

    def wait_s(self, n: float) -> float:
        """How long until `n` points (at most a burst) may go."""
        self._refill()
        n = min(n, self.burst)
        return 0.0 if self.tokens >= n else (n - self.tokens) / self.rate

    def take(self, n: float) -> None:
        self._refill()
        self.tokens -= n  # may go below 0: the next chunk waits for it


DeadLetter = Callable[[str, bytes, str], None]


class InfluxSink:
    """Sends lines to InfluxDB in order of arrival (live) and the spool's backlog (replay)."""

    def __init__(
        self, writer: InfluxWriter, metrics: AgentMetrics, batch_points: int = 5000,
        flush_interval_s: float = 0.25, max_backoff_s: float = 30.0,
        spool: Spool | None = None, replay_points_per_s: float = 20_000.0,
        memory_points: int = 50_000, dead_letter: DeadLetter | None = None,
    ) -> None:
        self.writer = writer
        self.metrics = metrics
        self.batch_points = batch_points
        self.flush_interval = flush_interval_s
        self.max_backoff = max_backoff_s
        self.spool = spool
        self.memory_points = memory_points
        self.dead_letter = dead_letter
        self.bucket = TokenBucket(replay_points_per_s, max(batch_points, replay_points_per_s))
        self._live: deque[Record] = deque()
        self._live_points = 0
        self._live_since = 0.0
        self._backlog: deque[list[Pos]] = deque()  # [start, end) ranges on disk, oldest first
        self._wake = asyncio.Event()
        self._closing = False
        self._spool_closed = False
        self._prepared = False
        self._write_cap = batch_points  # lowered by a 413 to what InfluxDB accepts
        self._dl_logged = 0
        self.healthy = False
        self.points_submitted = 0
        self.points_written = 0
        self.points_replayed = 0
        self.points_dead_lettered = 0

    # -- input (on the loop) ------------------------------------------------------------------
    async def start(self) -> None:
        """Open the spool (recovering what the last run left) before anything is submitted."""
        if self.spool is None:
            return
        rng = await asyncio.to_thread(self.spool.open)
        if rng is not None:
            self._backlog.append([rng[0], rng[1]])
        self.spool.start(asyncio.get_running_loop(), self._on_commit)

    def submit(self, lines: Sequence[str], acks: Sequence[Ack] = ()) -> None:
        if not lines and not acks:
            return
        self.points_submitted += len(lines)
        if self.spool is not None:
            self.spool.append(lines, acks)
            return
        body = "\n".join(lines).encode() if lines else b""
        self._add_live(Record(-1, 0, 0, len(lines), body, acks=list(acks)))

    def _on_commit(self, records: list[Record], acks: list[Ack]) -> None:
        """The spool made these durable: acknowledge (in order), then send them from memory."""
        for ack in acks:
            try:
                ack()
            except Exception:
                log.exception("an acknowledgement failed")
        for r in records:
            self._add_live(r)

    def _add_live(self, r: Record) -> None:
        if not self._live:
            self._live_since = time.monotonic()
        self._live.append(r)
        self._live_points += r.points
        if self.spool is not None:  # bounded memory: the oldest stay on disk only
            while self._live_points > self.memory_points and len(self._live) > 1:
                old = self._live.popleft()
                self._live_points -= old.points
                self.spool.release(old, delivered=False)
                self._add_backlog(old)
        if self._live_points >= self.batch_points:
            self._wake.set()

    def _add_backlog(self, r: Record) -> None:
        if self._backlog and self._backlog[-1][1] == (r.seg, r.offset):
            self._backlog[-1][1] = (r.seg, r.end)
        else:
            self._backlog.append([(r.seg, r.offset), (r.seg, r.end)])

    @property
    def backlog_points(self) -> int:
        if self.spool is not None:
            return self.spool.undelivered_points
        return self._live_points

    # -- the sending task ---------------------------------------------------------------------
    async def _ensure_prepared(self) -> bool:
        failures = 0
        while not self._prepared:
            try:
                await self.writer.prepare()
                self._prepared = True
            except InfluxWriteError as e:
                if failures % 20 == 0:  # once, then now and then: no log flood
                    log.warning("InfluxDB not ready (%s); retrying", e)
                failures += 1
                if await self._pause(min(self.max_backoff, 0.5 * 2 ** min(failures, 6))):
                    return False
        return True

    async def run(self) -> None:
        while True:
            if self._closing and (self._spool_closed or self.spool is None) and (
                    not self._live or (self.spool is not None and not self.healthy)):
                return  # with the spool, what is left is on disk for the next start
            if not await self._ensure_prepared():
                return
            sent = False
            due = self._live_since + self.flush_interval - time.monotonic()
            if self._live and (due <= 0 or self._live_points >= self.batch_points
                               or self._closing):
                await self._send_live()
                sent = True
            replay_wait = self.flush_interval
            if self._backlog and not self._closing:
                replay_wait = self.bucket.wait_s(self.batch_points)
                if replay_wait <= 0:
                    await self._send_replay()
                    sent = True
            if sent:
                continue
            self._wake.clear()
            timeout = min(replay_wait, due if self._live else self.flush_interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(timeout, 0.001))

    async def _send_live(self) -> None:
        recs: list[Record] = []
        n = 0
        while self._live and (not recs or n + self._live[0].points <= self.batch_points):
            r = self._live.popleft()
            self._live_points -= r.points
            n += r.points
            recs.append(r)
        self._live_since = time.monotonic()
        await self._deliver(recs)

    async def _send_replay(self) -> None:
        assert self.spool is not None
        start, end = self._backlog[0]
        want = int(min(self.batch_points, self.bucket.burst))
        recs, pos = await asyncio.to_thread(self.spool.read, start, end, want)
        rng = self._backlog[0]
        rng[0] = pos
        if pos >= rng[1] or (not recs and pos == start):
            self._backlog.popleft()
        n = sum(r.points for r in recs)
        self.bucket.take(n)
        if await self._deliver(recs):
            self.points_replayed += n
            self.metrics.spool_replayed.inc(n)

    async def _deliver(self, recs: list[Record]) -> bool:
        bodies = [r.body for r in recs if r.points]
        ok = True
        if bodies:
            ok = await self._write_split(b"\n".join(bodies))
        for r in recs:
            if self.spool is not None and r.seg >= 0:
                self.spool.release(r, delivered=ok)
            if ok:
                for ack in r.acks:
                    ack()
        return ok

    async def _write_split(self, body: bytes) -> bool:
        """Write in pieces of at most the size InfluxDB last accepted; False: stopped."""
        lines = body.split(b"\n")
        cap = self._write_cap  # a 413 below may lower it meanwhile: these pieces are fixed
        if len(lines) <= cap:
            return await self._write(body, len(lines))
        for i in range(0, len(lines), cap):
            part = lines[i:i + cap]
            if not await self._write(b"\n".join(part), len(part)):
                return False
        return True

    async def _write(self, body: bytes, n: int) -> bool:
        """Until InfluxDB takes it (True), or the agent stops meanwhile with the spool (False)."""
        attempt = 0
        name = self.writer.name
        while True:
            if not await self._ensure_prepared():
                return False
            t0 = time.perf_counter()
            try:
                await self.writer.write(body)
            except InfluxWriteError as e:
                self.metrics.sink_errors.labels(name).inc()
                if e.bad_points:
                    return await self._bisect(body, n, e)
                if e.status == 404:
                    self._prepared = False  # database gone: create it again, then retry
                if self.healthy or attempt == 0:
                    log.warning("InfluxDB write failed, will retry: %s", e, extra={"sink": name})
                self.healthy = False
                attempt += 1
                backoff = min(self.max_backoff, 0.2 * 2 ** min(attempt, 10))
                delay = e.retry_after if e.retry_after is not None and e.status in (
                    429, 503) else random.uniform(backoff / 2, backoff)
                if await self._pause(delay):
                    return False
                continue
            self.metrics.sink_latency.labels(name).observe(time.perf_counter() - t0)
            self.metrics.sink_points.labels(name).inc(n)
            self.points_written += n
            if not self.healthy:
                log.info("InfluxDB writes succeed (%s)", name, extra={"sink": name})
            self.healthy = True
            return True

    async def _bisect(self, body: bytes, n: int, e: InfluxWriteError) -> bool:
        """413: halve (and remember the size); bad points: halve until each bad line is alone."""
        lines = body.split(b"\n")
        if len(lines) == 1:
            self._dead_letter_line(body, e)
            return True
        if e.status == 413 and 1 < len(lines) <= self._write_cap:  # not a piece cut earlier
            self._write_cap = max(1, len(lines) // 2)
            log.warning("InfluxDB: request too large (413) for %d points; writing at most %d "
                        "points per request from now on", len(lines), self._write_cap)
        mid = len(lines) // 2
        for part in (lines[:mid], lines[mid:]):
            if not await self._write_split(b"\n".join(part)):
                return False
        return True

    def _dead_letter_line(self, line: bytes, e: InfluxWriteError) -> None:
        name = self.writer.name
        self.points_dead_lettered += 1
        self.metrics.sink_dead_letters.labels(name).inc()
        if self._dl_logged < 20 or self._dl_logged % 1000 == 0:
            log.error("InfluxDB rejected a point (%d): %s; kept in the dead-letter table "
                      "(gearwatch.sqlite, sink_dead_letter): %.300s", e.status, e.text[:300],
                      line.decode(errors="replace"), extra={"sink": name})
        self._dl_logged += 1
        if self.dead_letter is not None:
            try:
                self.dead_letter(name, line, f"{e.status}: {e.text[:2000]}")
            except Exception:
                log.exception("cannot store a dead-lettered point")

    async def _pause(self, delay: float) -> bool:
        """Sleep `delay`; True when the agent is stopping and the spool keeps the data."""
        if self.spool is None:
            await asyncio.sleep(delay)
            return False
        deadline = time.monotonic() + delay
        while not self._closing:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=left)
        return True

    async def close(self) -> None:
        """Stop: with the spool, write what is queued to disk (acks follow), then stop sending."""
        self._closing = True
        self._wake.set()
        if self.spool is not None:
            await asyncio.to_thread(self.spool.close)
            await asyncio.sleep(0)  # the final commit's acks run before MQTT is stopped
            self._spool_closed = True
            self._wake.set()

    @property
    def close_grace_s(self) -> float:
        """How long the agent waits for the last writes: short with the spool (data is safe)."""
        return 3.0 if self.spool is not None else 10.0

    async def aclose_writer(self) -> None:
        await self.writer.close()
