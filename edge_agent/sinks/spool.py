"""The durable spool: a segment-file write-ahead log between the agent and a sink that can fail.

Layout: `<dir>/000001.seg`, `000002.seg`, ... Each segment starts with the 8-byte magic
`GWSPOOL1`, then records:

    u32 length | u32 crc32 | u32 points | u64 written_at_ms | length bytes of line protocol

(little endian; the CRC covers points, written_at_ms and the payload, so a torn or rotted
header is caught as well as a torn payload).

Durability (ack after persist): the event loop hands each processing batch's lines and MQTT
acks to `append`; one writer thread writes whatever has accumulated (group commit), calls
`fdatasync` once for the group (and fsyncs the directory when it created a segment, so the
file itself survives a power cut), and only then posts the group's acks back to the loop, in
order.  So an acknowledged message is on disk; one that is not is still the broker's to
redeliver.  File I/O and fsync never run on the event loop, which also scores.

Recovery: `open` scans every segment, verifies each record's CRC, truncates a torn tail (a
power cut mid-write), quarantines a segment without the magic as `*.corrupt`, and returns the
whole surviving content as backlog to replay.  Delivered-but-not-yet-deleted records are sent
again: harmless, InfluxDB points are keyed by series and time.

Bounded: `max_bytes` over all segments.  When a write would pass it, `on_full` acts:
`drop_oldest` deletes the oldest segment nobody is reading, `drop_newest` discards the new
points (and acks them: they are given up, counted), `block` writes nothing and acks nothing
until space frees (the broker holds and then stops sending: MQTT flow control).  Every drop is
counted by reason, logged once per episode (an episode ends when the spool is back under half
full), and alerted through `on_alert`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge_agent.batch import Ack
from edge_agent.metrics import AgentMetrics

log = logging.getLogger("gearwatch.spool")

MAGIC = b"GWSPOOL1"
HEADER = struct.Struct("<IIIQ")  # length, crc32, points, written_at_ms
_CRC_PREFIX = struct.Struct("<IQ")  # points, written_at_ms: covered by the CRC
MAX_RECORD = 256 << 20
# with `block`, sources without acks (Modbus, serial) cannot be held back: past this many
# points waiting in memory the newest are dropped (counted as block_overflow)
BLOCK_PENDING_LIMIT = 500_000

Pos = tuple[int, int]  # (segment number, byte offset)
Policy = Literal["drop_oldest", "drop_newest", "block"]


# -- framing (pure) -----------------------------------------------------------------------------
def encode_record(body: bytes, points: int, written_at_ms: int) -> bytes:
    crc = zlib.crc32(body, zlib.crc32(_CRC_PREFIX.pack(points, written_at_ms)))
    return HEADER.pack(len(body), crc, points, written_at_ms) + body


@dataclass(slots=True)
class Decoded:
    offset: int
    end: int
    points: int
    written_at_ms: int
    body: bytes


def decode_at(buf: bytes | memoryview, offset: int) -> Decoded | str:
    """The record at `offset`, or why there is none (torn, bad CRC, absurd length)."""
    if offset + HEADER.size > len(buf):
        return "torn header"
    length, crc, points, written = HEADER.unpack_from(buf, offset)
    if length > MAX_RECORD:
        return f"implausible record length {length}"
    start, end = offset + HEADER.size, offset + HEADER.size + length
    if end > len(buf):
        return "torn record"
    body = bytes(buf[start:end])
    if zlib.crc32(body, zlib.crc32(_CRC_PREFIX.pack(points, written))) != crc:
        return "CRC mismatch"
    return Decoded(offset, end, points, written, body)


@dataclass(slots=True)
class Scan:
    points: int
    records: int
    good_end: int  # bytes up to the end of the last good record
    first_ms: int
    error: str | None  # why the scan stopped before the end of the file


def scan_segment(data: bytes) -> Scan:
    if not data.startswith(MAGIC):
        return Scan(0, 0, 0, 0, "no spool magic")
    off, points, records, first = len(MAGIC), 0, 0, 0
    while off < len(data):
        d = decode_at(data, off)
        if isinstance(d, str):
            return Scan(points, records, off, first, d)
        points += d.points
        records += 1
        first = first or d.written_at_ms
        off = d.end
    return Scan(points, records, off, first, None)


# -- the spool ----------------------------------------------------------------------------------
@dataclass(slots=True)
class Record:
    """A committed record (or, without a spool, a batch held in memory with its acks)."""

    seg: int
    offset: int
    end: int
    points: int
    body: bytes
    written_at_ms: int = 0
    acks: list[Ack] = field(default_factory=list)


@dataclass(slots=True)
class Segment:
    no: int
    path: Path
    size: int = 0  # committed (fsync'd) bytes: what readers may read
    written: int = 0  # bytes written, committed or not: what counts against max_bytes
    points: int = 0
    delivered: int = 0
    pins: int = 0  # records of it in memory or being read/sent
    sealed: bool = False
    first_ms: int = 0

    @property
    def undelivered(self) -> int:
        return self.points - self.delivered


def seg_name(no: int) -> str:
    return f"{no:06d}.seg"


class Spool:
    def __init__(
        self, dir: str | Path, metrics: AgentMetrics, max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20, on_full: Policy = "drop_oldest", fsync: bool = True,
        record_points: int = 5000, on_alert: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dir = Path(dir)
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.on_full = on_full
        self.fsync = fsync
        self.record_points = max(1, record_points)
        self.on_alert = on_alert
        self.clock = clock
        self.segments: dict[int, Segment] = {}  # by number, ascending insertion
        self._lock = threading.RLock()  # reentrant: alerts and episodes run under it too
        self._cond = threading.Condition(self._lock)
        self._queue: deque[tuple[Sequence[str], list[Ack]]] = deque()
        self._queued_points = 0
        self._unlink: list[Path] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_commit: Callable[[list[Record], list[Ack]], None] | None = None
        self._active: Segment | None = None
        self._fd: int | None = None
        self._next_no = 1
        self._full = False
        self._episode_dropped = 0
        self._blocked = False
        self.dropped: dict[str, int] = {}
        self.points_appended = 0
        metrics.spool_max_bytes.set(max_bytes)

    # -- recovery -------------------------------------------------------------------------
    def open(self) -> tuple[Pos, Pos] | None:
        """Scan the segments left by the last run; the backlog range to replay, or None."""
        self.dir.mkdir(parents=True, exist_ok=True)
        names = sorted(p for p in self.dir.glob("*.seg") if p.stem.isdigit())
        for p in names:
            no = int(p.stem)
            self._next_no = max(self._next_no, no + 1)
            data = p.read_bytes()
            sc = scan_segment(data)
            if sc.error == "no spool magic" and len(data) >= len(MAGIC):
                log.error("spool segment %s is not a spool file; moved aside to %s.corrupt",
                          p, p.name)
                p.rename(p.with_name(p.name + ".corrupt"))
                continue
            if sc.error is not None:
                lost = len(data) - sc.good_end
                last = p == names[-1]
                (log.warning if last else log.error)(
                    "spool segment %s: %s at byte %d; %d bytes after it discarded (%s)",
                    p.name, sc.error, sc.good_end, lost,
                    "a write cut short by a crash or power loss" if last else
                    "damaged in the middle of the spool: points in it are lost")
                if not last:
                    self._count_drop("corrupt", 0)
                with open(p, "r+b") as f:
                    f.truncate(sc.good_end)
                    f.flush()
                    os.fsync(f.fileno())
            if sc.records == 0:
                p.unlink()
                continue
            self.segments[no] = Segment(no, p, sc.good_end, sc.good_end, sc.points, 0, 0,
                                        True, sc.first_ms)
        self._fsync_dir()
        self._refresh_gauges()
        if not self.segments:
            return None
        pts = sum(s.points for s in self.segments.values())
        log.info("spool %s: %d points in %d segments from the last run to replay", self.dir,
                 pts, len(self.segments))
        first = min(self.segments)
        return (first, 0), (self._next_no, 0)

    # -- the writer ---------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop,
              on_commit: Callable[[list[Record], list[Ack]], None]) -> None:
        self._loop = loop
        self._on_commit = on_commit
        self.dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()

    def append(self, lines: Sequence[str], acks: Sequence[Ack] = ()) -> None:
        """Queue lines (and the acks to run once they are durable); called on the loop."""
        with self._cond:
            if (self.on_full == "block" and self._blocked
                    and self._queued_points + len(lines) > BLOCK_PENDING_LIMIT and lines):
                self._count_drop("block_overflow", len(lines))
                drop_acks = list(acks)
            else:
                self._queue.append((lines, list(acks)))
                self._queued_points += len(lines)
                self._cond.notify()
                return
        self._post([], drop_acks)

    def close(self, timeout: float = 30.0) -> None:
        """Write and fsync what is queued (unless blocked), then stop the writer."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with self._lock:
            if self._active is not None:  # sealed: deleted once the last live points are sent
                seg, self._active = self._active, None
                seg.size, seg.sealed = seg.written, True
                self._maybe_delete(seg)
            unlink, self._unlink = self._unlink, []
        self._do_unlink(unlink)  # delivered segments the writer had no turn to delete

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._unlink and not self._closing:
                    self._cond.wait()
                items = list(self._queue)
                self._queue.clear()
                self._queued_points = 0
                unlink, self._unlink = self._unlink, []
                closing = self._closing
            self._do_unlink(unlink)
            if items:
                try:
                    self._write_group(items)
                except _ClosedWhileBlocked:
                    log.warning("agent stopped while the full spool blocked: the waiting "
                                "messages stay unacknowledged (the broker redelivers them)")
                    return
                except Exception:  # a full disk, an I/O error: loud, and the acks withheld
                    log.exception("spool write failed; %d batches not acknowledged "
                                  "(the broker will redeliver them)", len(items))
            if closing:
                with self._cond:
                    if not self._queue:
                        return

    def _do_unlink(self, paths: list[Path]) -> None:
        for p in paths:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.error("cannot delete delivered spool segment %s: %s", p, e)

    def _write_group(self, items: list[tuple[Sequence[str], list[Ack]]]) -> None:
        """Write the items as records of up to `record_points` lines, one fsync, then acks."""
        t0 = time.perf_counter()
        touched: dict[int, Segment] = {}
        records: list[Record] = []
        ready: list[Ack] = []
        dir_dirty = False
        buf: list[str] = []
        buf_acks: list[Ack] = []  # acks of items with lines in buf: released once it is written
        buf_bytes = 0
        max_record = max(4096, self.segment_bytes // 4)  # records stay well inside a segment
        for lines, acks in items:
            for line in lines:
                buf.append(line)
                buf_bytes += len(line) + 1
                if len(buf) >= self.record_points or buf_bytes >= max_record:
                    dir_dirty |= self._write_record(buf, touched, records, ready)
                    ready.extend(buf_acks)
                    buf, buf_acks, buf_bytes = [], [], 0
            (buf_acks if buf else ready).extend(acks)
        if buf:
            dir_dirty |= self._write_record(buf, touched, records, ready)
            ready.extend(buf_acks)
        self._commit(touched, records, ready, dir_dirty, t0)

    def _write_record(self, lines: list[str], touched: dict[int, Segment],
                      records: list[Record], ready: list[Ack]) -> bool:
        body = "\n".join(lines).encode()
        now_ms = int(self.clock() * 1000)
        frame = encode_record(body, len(lines), now_ms)
        if len(frame) + len(MAGIC) > self.max_bytes:
            self._count_drop("too_large", len(lines))
            self.points_appended += len(lines)
            return False
        if not self._make_room(len(frame), touched, records, ready):
            self._count_drop("drop_newest", len(lines))  # what was given up, whatever the policy
            self.points_appended += len(lines)
            return False
        dir_dirty = False
        seg = self._active
        if seg is None or (seg.written + len(frame) > self.segment_bytes and seg.points):
            dir_dirty = self._roll(touched)
            seg = self._active
            assert seg is not None
        assert self._fd is not None
        _write_all(self._fd, frame)
        rec = Record(seg.no, seg.written, seg.written + len(frame), len(lines), body, now_ms)
        with self._lock:
            seg.written += len(frame)
            seg.points += len(lines)
            seg.pins += 1  # in the sink's memory until it delivers or evicts it
            seg.first_ms = seg.first_ms or now_ms
        self.points_appended += len(lines)  # counted once it is in the books (tests wait on it)
        touched[seg.no] = seg
        records.append(rec)
        return dir_dirty

    def _roll(self, touched: dict[int, Segment]) -> bool:
        """Close the active segment (fdatasync'd at the commit) and start the next one."""
        if self._fd is not None:
            if self.fsync:
                os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = None
        old = self._active
        no = self._next_no
        self._next_no += 1
        path = self.dir / seg_name(no)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o640)
        _write_all(self._fd, MAGIC)
        seg = Segment(no, path, 0, len(MAGIC))
        with self._lock:
            if old is not None:
                old.size = old.written
                old.sealed = True
                self._maybe_delete(old)
            self.segments[no] = seg
            self._active = seg
        touched[no] = seg
        return True

    def _used(self) -> int:
        return sum(s.written for s in self.segments.values())

    def _make_room(self, need: int, touched: dict[int, Segment], records: list[Record],
                   ready: list[Ack]) -> bool:
        """True once `need` more bytes fit under max_bytes (per policy), False to drop it."""
        headroom = need + len(MAGIC)  # a new segment may be needed
        with self._lock:
            if self._used() + headroom <= self.max_bytes:
                self._maybe_end_episode()
                return True
        if self.on_full == "drop_newest":
            self._start_episode()
            return False
        if self.on_full == "drop_oldest":
            self._start_episode()
            while True:
                # records of this group are not in anyone's hands yet: they may go too
                mine: dict[int, int] = {}
                for r in records:
                    mine[r.seg] = mine.get(r.seg, 0) + 1
                with self._lock:
                    if self._used() + headroom <= self.max_bytes:
                        return True
                    victim = next((s for s in self.segments.values() if s.sealed
                                   and s.pins == mine.get(s.no, 0) and s is not self._active),
                                  None)
                    if victim is None:
                        return False  # everything is being read or sent: drop the new points
                    del self.segments[victim.no]
                    lost = victim.undelivered
                records[:] = [r for r in records if r.seg != victim.no]
                touched.pop(victim.no, None)
                self._count_drop("drop_oldest", lost)
                self._do_unlink([victim.path])
        # block: commit what this group wrote, then wait for deliveries to free space
        self._commit(dict(touched), list(records), list(ready), True, time.perf_counter())
        touched.clear()
        records.clear()
        ready.clear()
        self._start_episode()
        with self._cond:
            self._blocked = True
            while self._used() + headroom > self.max_bytes and not self._closing:
                unlink, self._unlink = self._unlink, []
                if unlink:
                    self._cond.release()
                    try:
                        self._do_unlink(unlink)
                    finally:
                        self._cond.acquire()
                    continue
                self._cond.wait(1.0)
            self._blocked = False
            if self._closing and self._used() + headroom > self.max_bytes:
                raise _ClosedWhileBlocked
        return True

    def _commit(self, touched: dict[int, Segment], records: list[Record], acks: list[Ack],
                dir_dirty: bool, t0: float) -> None:
        if self.fsync:
            if self._fd is not None and self._active is not None and \
                    self._active.no in touched:
                os.fdatasync(self._fd)
            if dir_dirty:
                self._fsync_dir()
        with self._lock:
            for seg in touched.values():
                seg.size = seg.written
        if records or acks:
            self.metrics.spool_commit.observe(time.perf_counter() - t0)
        self._refresh_gauges()
        self._post(records, acks)

    def _post(self, records: list[Record], acks: list[Ack]) -> None:
        if not records and not acks:
            return
        loop, cb = self._loop, self._on_commit
        if loop is None or cb is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(cb, records, acks)

    def _fsync_dir(self) -> None:
        if not self.fsync:
            return
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- policy: episodes, counts, alerts ---------------------------------------------------
    def _count_drop(self, reason: str, points: int) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + points
            self._episode_dropped += points
        self.metrics.spool_dropped.labels(reason).inc(points)

    def _start_episode(self) -> None:
        with self._lock:
            if self._full:
                return
            self._full = True
            self._episode_dropped = 0
            used = self._used()
        self.metrics.spool_full.set(1)
        what = {"drop_oldest": "dropping the oldest segments",
                "drop_newest": "dropping new points",
                "block": "blocking: nothing more is acknowledged, the broker holds new data"}
        log.error("spool %s is full (%d of %d bytes; the sink has not taken the backlog): "
                  "on_full = %s, %s; counted in gearwatch_spool_dropped_points_total",
                  self.dir, used, self.max_bytes, self.on_full, what[self.on_full])
        self._alert("spool_full")

    def _maybe_end_episode(self) -> None:
        """Called with the lock held; the episode ends below half full (hysteresis)."""
        if self._full and self._used() <= self.max_bytes // 2:
            self._full = False
            self.metrics.spool_full.set(0)
            log.warning("spool %s has room again (%d of %d bytes); %d points were given up "
                        "while it was full (on_full = %s)", self.dir, self._used(),
                        self.max_bytes, self._episode_dropped, self.on_full)
            self._alert("spool_ok")

    def _alert(self, kind: str) -> None:
        if self.on_alert is None:
            return
        with self._lock:
            used = self._used()
        doc = {"kind": kind, "policy": self.on_full, "spool_bytes": used,
               "max_bytes": self.max_bytes, "dropped_points": self._episode_dropped,
               "dropped_total": dict(self.dropped), "dir": str(self.dir),
               "ts_ns": time.time_ns()}
        try:
            self.on_alert(doc)
        except Exception:
            log.exception("spool alert could not be sent")

    # -- reading and delivery (called on the loop; `read` in a worker thread) ---------------
    def read(self, pos: Pos, end: Pos, max_points: int) -> tuple[list[Record], Pos]:
        """Committed records from `pos` (before `end`), up to about `max_points`, pinned.

        Segments dropped meanwhile are skipped; the returned position is where to go on.
        """
        out: list[Record] = []
        points = 0
        while pos < end and points < max_points:
            with self._lock:
                seg = self.segments.get(pos[0])
                if seg is None:
                    nxt = [n for n in self.segments if n > pos[0]]
                    pos = (min(nxt), 0) if nxt else end
                    continue
                start = max(pos[1], len(MAGIC))
                limit = seg.size if seg.no != end[0] else min(seg.size, end[1])
                if start >= limit:
                    if seg.sealed or seg.no < end[0]:
                        pos = (seg.no + 1, 0)
                        continue
                    return out, (seg.no, start)
                seg.pins += 1  # held while the file is read
            try:
                recs = _read_file(seg.path, start, limit, max_points - points)
            except OSError as e:
                log.error("cannot read spool segment %s: %s", seg.path, e)
                recs = []
            with self._lock:
                seg.pins -= 1
                good = [r for r in recs if isinstance(r, Decoded)]
                for d in good:
                    out.append(Record(seg.no, d.offset, d.end, d.points, d.body,
                                      d.written_at_ms))
                    points += d.points
                    seg.pins += 1
                bad = next((r for r in recs if isinstance(r, str)), None)
                # rotted after it was written: give up the rest of it
                if bad is not None and seg is not self._active:
                    lost = seg.undelivered - sum(d.points for d in good)
                    log.error("spool segment %s: %s while replaying; the rest of it is lost",
                              seg.path.name, bad)
                    seg.points -= lost
                    self._count_drop("corrupt", lost)
                    seg.size = seg.written = good[-1].end if good else start
                    pos = (seg.no + 1, 0) if seg.sealed else (seg.no, seg.size)
                    self._maybe_delete(seg)
                    continue
                if not good:
                    pos = (seg.no, limit)
                    continue
                pos = (seg.no, good[-1].end)
        return out, pos

    def release(self, rec: Record, delivered: bool) -> None:
        """The sink is done with a record: delivered (counts toward deleting its segment) or
        dropped from memory (it stays on disk as backlog)."""
        with self._cond:
            seg = self.segments.get(rec.seg)
            if seg is None:
                return
            seg.pins -= 1
            if delivered:
                seg.delivered += rec.points
            if self._maybe_delete(seg):
                self._cond.notify_all()

    def _maybe_delete(self, seg: Segment) -> bool:
        """Under the lock: a sealed segment whose every point is delivered goes."""
        if seg.sealed and seg.pins == 0 and seg.delivered >= seg.points and \
                seg is not self._active:
            del self.segments[seg.no]
            if self._thread is not None and self._thread.is_alive():
                self._unlink.append(seg.path)  # the writer deletes it, off the loop
            else:
                self._do_unlink([seg.path])
            self._maybe_end_episode()
            return True
        return False

    # -- what it holds ------------------------------------------------------------------------
    @property
    def undelivered_points(self) -> int:
        with self._lock:
            return sum(s.undelivered for s in self.segments.values()) + self._queued_points

    def _refresh_gauges(self) -> None:
        m = self.metrics
        with self._lock:
            segs = list(self.segments.values())
        m.spool_bytes.set(sum(s.written for s in segs))
        m.spool_points.set(sum(s.undelivered for s in segs))
        m.spool_segments.set(len(segs))
        oldest = next((s.first_ms for s in segs if s.undelivered > 0 and s.first_ms), 0)
        m.spool_oldest_age.set(max(0.0, self.clock() - oldest / 1000) if oldest else 0.0)

    def status(self) -> dict[str, Any]:
        self._refresh_gauges()
        with self._lock:
            segs = list(self.segments.values())
            queued = self._queued_points
        oldest = next((s.first_ms for s in segs if s.undelivered > 0 and s.first_ms), 0)
        return {
            "dir": str(self.dir), "bytes": sum(s.written for s in segs),
            "max_bytes": self.max_bytes, "segments": len(segs),
            "points": sum(s.undelivered for s in segs), "queued_points": queued,
            "oldest_age_s": round(self.clock() - oldest / 1000, 1) if oldest else None,
            "on_full": self.on_full, "full": self._full, "blocked": self._blocked,
            "dropped_points": dict(self.dropped),
        }


class _ClosedWhileBlocked(Exception):
    """Shutdown while `block` waits for room: the waiting points stay unacknowledged."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_file(path: Path, start: int, limit: int, max_points: int) -> list[Decoded | str]:
    out: list[Decoded | str] = []
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(limit - start)
    off, points = 0, 0
    while off < len(data) and points < max_points:
        d = decode_at(data, off)
        if isinstance(d, str):
            out.append(d)
            break
        out.append(Decoded(start + d.offset, start + d.end, d.points, d.written_at_ms, d.body))
        points += d.points
        off = d.end
    return out
