"""The spool's framing, recovery after a crash or power cut, ordering, full policies; the
sink's replay rate limit and its splitting of rejected batches (fake writer; the real InfluxDB
answers are in tests/integration/test_spool_influx.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import ConfigError, parse_config
from edge_agent.metrics import AgentMetrics
from edge_agent.sinks.influx import InfluxSink, InfluxWriteError, TokenBucket, parse_retry_after
from edge_agent.sinks.spool import (
    HEADER,
    MAGIC,
    Record,
    Spool,
    decode_at,
    encode_record,
    scan_segment,
)


def lines(a: int, b: int) -> list[str]:
    return [f"m,k=v f={i} {i}" for i in range(a, b)]


def bodies(recs: list[Record]) -> list[str]:
    return [ln for r in recs for ln in r.body.decode().split("\n")]


class Harness:
    """A spool on a real event loop: collects committed records and acks in order."""

    def __init__(self, spool: Spool, release: str | None = "evict") -> None:
        self.spool = spool
        self.records: list[Record] = []
        self.acked: list[int] = []
        self.release = release

    def on_commit(self, records: list[Record], acks: list[Any]) -> None:
        for a in acks:
            a()
        self.records.extend(records)
        for r in records:
            if self.release == "evict":  # the sink kept it on disk only (backlog)
                self.spool.release(r, delivered=False)
            elif self.release == "deliver":
                self.spool.release(r, delivered=True)

    def ack(self, i: int) -> Any:
        return lambda: self.acked.append(i)


async def run_spool(spool: Spool, h: Harness, batches: list[list[str]],
                    keep_open: bool = False) -> None:
    spool.start(asyncio.get_running_loop(), h.on_commit)
    for i, b in enumerate(batches):
        spool.append(b, [h.ack(i)])
    if not keep_open:
        await asyncio.to_thread(spool.close)
        await asyncio.sleep(0.01)


def make(tmp: Path, **kw: Any) -> Spool:
    kw.setdefault("segment_bytes", 4096)
    kw.setdefault("max_bytes", 1 << 20)
    kw.setdefault("record_points", 50)
    return Spool(tmp / "spool", AgentMetrics(), **kw)


def read_all(spool: Spool, rng: tuple[tuple[int, int], tuple[int, int]]) -> list[Record]:
    out: list[Record] = []
    pos, end = rng
    while pos < end:
        recs, pos = spool.read(pos, end, 100)
        if not recs:
            break
        out.extend(recs)
    return out


# -- framing -----------------------------------------------------------------------------------
def test_record_round_trip_and_crc() -> None:
    body = b"m f=1 1\nm f=2 2"
    frame = encode_record(body, 2, 123)
    assert len(frame) == HEADER.size + len(body)
    d = decode_at(frame, 0)
    assert not isinstance(d, str) and (d.body, d.points, d.written_at_ms) == (body, 2, 123)
    flipped = bytearray(frame)
    flipped[-1] ^= 1
    assert decode_at(bytes(flipped), 0) == "CRC mismatch"
    flipped = bytearray(frame)
    flipped[8] ^= 1  # the point count is covered too
    assert decode_at(bytes(flipped), 0) == "CRC mismatch"
    assert decode_at(frame[:-1], 0) == "torn record"
    assert decode_at(frame[:5], 0) == "torn header"
    sc = scan_segment(MAGIC + frame + frame[:7])
    assert (sc.records, sc.points, sc.good_end, sc.error) == (1, 2, 8 + len(frame),
                                                               "torn header")


# -- durability, recovery, ordering ------------------------------------------------------------
def test_acks_follow_the_commit_in_order_and_everything_is_replayed(tmp_path: Path) -> None:
    s = make(tmp_path)
    h = Harness(s)
    batches = [lines(i * 30, i * 30 + 30) for i in range(20)]  # 600 lines, several segments
    asyncio.run(run_spool(s, h, batches))
    assert h.acked == list(range(20))
    assert bodies(h.records) == [ln for b in batches for ln in b]
    assert len(list((tmp_path / "spool").glob("*.seg"))) >= 3
    # a restart finds all of it, in order
    s2 = make(tmp_path)
    rng = s2.open()
    assert rng is not None
    assert bodies(read_all(s2, rng)) == [ln for b in batches for ln in b]
    assert s2.status()["points"] == 600


def test_torn_tail_is_truncated_and_the_rest_survives(tmp_path: Path) -> None:
    s = make(tmp_path, segment_bytes=1 << 20)
    h = Harness(s)
    asyncio.run(run_spool(s, h, [lines(0, 40), lines(40, 80)]))
    seg = sorted((tmp_path / "spool").glob("*.seg"))[-1]
    good = seg.stat().st_size
    # power cut in the middle of the next record: a header and half a payload
    frame = encode_record(b"\n".join(x.encode() for x in lines(80, 120)), 40, 1)
    with seg.open("ab") as f:
        f.write(frame[: len(frame) // 2])
    s2 = make(tmp_path, segment_bytes=1 << 20)
    rng = s2.open()
    assert rng is not None
    assert seg.stat().st_size == good
    assert bodies(read_all(s2, rng)) == lines(0, 80)


def test_garbage_segment_is_moved_aside(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    d.mkdir()
    (d / "000001.seg").write_bytes(b"queued but not a spool file")
    s = make(tmp_path)
    assert s.open() is None
    assert (d / "000001.seg.corrupt").exists()


def test_delivered_segments_are_deleted(tmp_path: Path) -> None:
    s = make(tmp_path)
    h = Harness(s, release="deliver")
    asyncio.run(run_spool(s, h, [lines(i * 30, i * 30 + 30) for i in range(20)]))
    segs = list((tmp_path / "spool").glob("*.seg"))
    assert segs == []  # all delivered: even the last one, sealed at close
    assert s.undelivered_points == 0


# -- full policies ---------------------------------------------------------------------------
def test_drop_oldest_keeps_the_newest_and_says_so(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    alerts: list[dict[str, Any]] = []
    s = make(tmp_path, max_bytes=16384, on_full="drop_oldest", on_alert=alerts.append)
    h = Harness(s)
    batches = [lines(i * 30, i * 30 + 30) for i in range(60)]  # ~100 KB: 6x the limit
    asyncio.run(run_spool(s, h, batches))
    assert h.acked == list(range(60))  # given up points are acknowledged, not stuck
    st = s.status()
    assert st["bytes"] <= 16384 and st["full"]
    dropped = s.dropped["drop_oldest"]
    assert dropped > 0 and dropped + st["points"] == 1800
    assert s.metrics.spool_dropped.labels("drop_oldest")._value.get() == dropped
    assert [a["kind"] for a in alerts] == ["spool_full"]  # once per episode, not per batch
    full_logs = [r for r in caplog.records if "is full" in r.getMessage()]
    assert len(full_logs) == 1
    s2 = make(tmp_path, max_bytes=16384)
    rng = s2.open()
    assert rng is not None
    kept = bodies(read_all(s2, rng))
    assert kept == [ln for b in batches for ln in b][-len(kept):]  # a suffix: the newest


def test_drop_newest_keeps_the_oldest(tmp_path: Path) -> None:
    alerts: list[dict[str, Any]] = []
    s = make(tmp_path, max_bytes=16384, on_full="drop_newest", on_alert=alerts.append)
    h = Harness(s)
    batches = [lines(i * 30, i * 30 + 30) for i in range(60)]
    asyncio.run(run_spool(s, h, batches))
    assert h.acked == list(range(60))
    dropped = s.dropped["drop_newest"]
    assert dropped > 0 and dropped + s.status()["points"] == 1800
    assert [a["kind"] for a in alerts] == ["spool_full"]
    s2 = make(tmp_path, max_bytes=16384)
    rng = s2.open()
    assert rng is not None
    kept = bodies(read_all(s2, rng))
    assert kept == [ln for b in batches for ln in b][:len(kept)]  # a prefix: the oldest


def test_block_withholds_acks_until_deliveries_free_space(tmp_path: Path) -> None:
    alerts: list[dict[str, Any]] = []
    s = make(tmp_path, max_bytes=16384, on_full="block", on_alert=alerts.append)
    h = Harness(s, release=None)  # the sink holds every record until "InfluxDB is back"

    async def main() -> None:
        await run_spool(s, h, [lines(i * 30, i * 30 + 30) for i in range(60)], keep_open=True)
        for _ in range(200):  # until the writer blocks
            await asyncio.sleep(0.01)
            if s.status()["blocked"]:
                break
        assert s.status()["blocked"]
        assert len(h.acked) < 60  # nothing past the limit is acknowledged
        # InfluxDB takes everything: deliveries free segments, the writer goes on
        while len(h.acked) < 60:
            recs, h.records = h.records, []
            for r in recs:
                s.release(r, delivered=True)
            await asyncio.sleep(0.01)
        await asyncio.to_thread(s.close)

    asyncio.run(main())
    assert h.acked == list(range(60))
    assert not s.dropped  # block gives nothing up
    assert alerts and alerts[0]["kind"] == "spool_full"


def test_block_stop_leaves_waiting_points_unacknowledged(tmp_path: Path) -> None:
    s = make(tmp_path, max_bytes=16384, on_full="block")
    h = Harness(s, release=None)

    async def main() -> None:
        await run_spool(s, h, [lines(i * 30, i * 30 + 30) for i in range(60)], keep_open=True)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if s.status()["blocked"]:
                break
        t = threading.Thread(target=s.close)
        t.start()
        await asyncio.to_thread(t.join, 10)
        await asyncio.sleep(0.01)

    asyncio.run(main())
    assert 0 < len(h.acked) < 60 and h.acked == list(range(len(h.acked)))


# -- the sink: rate limit, splitting, dead letters ---------------------------------------------
def test_token_bucket() -> None:
    now = [0.0]
    b = TokenBucket(1000, 500, clock=lambda: now[0])
    assert b.wait_s(500) == 0
    b.take(500)
    assert b.wait_s(500) == pytest.approx(0.5)
    now[0] = 0.25
    assert b.wait_s(500) == pytest.approx(0.25)
    now[0] = 10.0
    assert b.wait_s(10_000) == 0  # capped at a burst
    b.take(500)
    b.take(500)
    assert b.wait_s(100) == pytest.approx(0.6)


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT",
                             now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after("99999") == 300.0


class FakeWriter:
    """413 above `max_body` bytes; 400 for a batch holding a line with "bad" in it."""

    name = "fake"

    def __init__(self, max_body: int = 1 << 30) -> None:
        self.max_body = max_body
        self.stored: list[bytes] = []
        self.requests = 0

    async def prepare(self) -> None:
        return None

    async def write(self, body: bytes) -> None:
        self.requests += 1
        if len(body) > self.max_body:
            raise InfluxWriteError(413, "Request Entity Too Large")
        ls = body.split(b"\n")
        if any(b"bad" in ln for ln in ls):
            self.stored.extend(ln for ln in ls if b"bad" not in ln)  # 1.x: partial write
            raise InfluxWriteError(400, 'partial write: field type conflict dropped=1')
        self.stored.extend(ls)

    async def close(self) -> None:
        return None


def test_bad_points_are_bisected_out_and_dead_lettered() -> None:
    w = FakeWriter(max_body=2000)
    dl: list[tuple[str, bytes, str]] = []
    sink = InfluxSink(w, AgentMetrics(), batch_points=500, flush_interval_s=0.01,
                      dead_letter=lambda *a: dl.append(a))
    good = lines(0, 300)
    batch = [*good[:100], 'm,k=v f="bad" 5', *good[100:250], 'm,k=v f="bad" 7', *good[250:]]

    async def main() -> None:
        task = asyncio.create_task(sink.run())
        sink.submit(batch)
        while sink.points_written + sink.points_dead_lettered < len(good) + 2:
            await asyncio.sleep(0.01)
        await sink.close()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert set(w.stored) >= {g.encode() for g in good}
    assert [d[1] for d in dl] == [b'm,k=v f="bad" 5', b'm,k=v f="bad" 7']
    assert all(d[0] == "fake" and d[2].startswith("400") for d in dl)
    assert sink._write_cap < 500  # the 413s taught it a request size that passes


def test_replay_is_rate_limited_and_live_is_not(tmp_path: Path) -> None:
    """A backlog on disk drains at replay_points_per_s while live lines keep going out."""
    s = make(tmp_path, segment_bytes=1 << 16)
    h = Harness(s)
    asyncio.run(run_spool(s, h, [lines(i * 50, i * 50 + 50) for i in range(40)]))  # 2000
    w = FakeWriter()
    spool = make(tmp_path, segment_bytes=1 << 16)
    sink = InfluxSink(w, AgentMetrics(), batch_points=100, flush_interval_s=0.01,
                      spool=spool, replay_points_per_s=1000, memory_points=1000)
    live = [f"live f={i} {i}" for i in range(200)]

    async def main() -> tuple[int, float]:
        await sink.start()
        t0 = time.monotonic()
        task = asyncio.create_task(sink.run())
        sink.submit(live)
        while sum(ln.startswith(b"live") for ln in w.stored) < 200:
            await asyncio.sleep(0.01)
        replayed_when_live_done = sink.points_replayed
        while sink.points_replayed < 2000 or spool.undelivered_points:
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - t0
        await sink.close()
        await asyncio.wait_for(task, 5)
        return replayed_when_live_done, elapsed

    replayed_early, elapsed = asyncio.run(main())
    assert replayed_early < 2000  # live did not wait for the backlog
    assert sink.points_replayed == 2000
    assert {ln.encode() for ln in lines(0, 2000)} <= set(w.stored)
    # the bucket set the pace: 2000 points at 1000/s after a burst of 1000 take >= 1 s
    assert elapsed >= 0.95
    assert len(list((tmp_path / "spool").glob("*.seg"))) <= 1  # delivered segments deleted


# -- config ----------------------------------------------------------------------------------
ASSETS = {"assets": [{"id": "p1", "class": "centrifugal_pump"}]}


def test_spool_config_sizes_and_errors() -> None:
    cfg = parse_config({**ASSETS, "spool": {"max_bytes": "2GiB", "segment_bytes": "32 MiB"}})
    assert cfg.spool.max_bytes == 2 << 30 and cfg.spool.segment_bytes == 32 << 20
    assert str(cfg.spool.path("/var/lib/gearwatch")) == "/var/lib/gearwatch/spool"
    with pytest.raises(ConfigError) as e:
        parse_config({**ASSETS, "spool": {"max_bytes": "8MiB", "segment_bytes": "4MiB"}})
    assert "spool" in str(e.value) and "4 x segment_bytes" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config({**ASSETS, "spool": {"on_full": "drop"}})
    assert "spool.on_full" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config({**ASSETS, "spool": {"max_bytes": "lots"}})
    assert "spool.max_bytes" in str(e.value) and "2GiB" in str(e.value)


def test_agent_status_shows_spool_depth() -> None:
    from edge_agent.status import format_spool

    line = format_spool({"dir": "/var/lib/gearwatch/spool", "bytes": 250_000_000,
                         "max_bytes": 1_000_000_000, "segments": 15, "points": 1_200_000,
                         "oldest_age_s": 3600.0, "on_full": "drop_oldest", "full": False,
                         "blocked": False, "dropped_points": {}})
    assert "1200000 points waiting in 15 segments" in line
    assert "250.0 MB of 1000.0 MB (25%)" in line and "oldest 3600 s" in line
    assert "dropped: none" in line
