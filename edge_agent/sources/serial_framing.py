"""Serial lines: bytes -> lines -> fields -> samples.  Pure, no I/O, so it is fuzzed.

`LineSplitter` cuts a byte stream into lines (keeping a partial line for the next read,
dropping lines that overrun `max_line_bytes`); a `LineParser` turns one line into named
string fields (CSV with a header or fixed columns, key=value pairs, JSON lines, a regex with
named groups); `SerialDecoder` places fields as samples of an asset, rejecting what is not.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import orjson

from edge_agent.assets import AssetRegistry
from edge_agent.bad_input import Reject
from edge_agent.batch import SampleBatch
from edge_agent.sources.payloads import DecodeContext, _Builder, add_values
from edge_agent.sources.serial_config import SerialPortConfig

Fields = dict[str, Any]
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")


class LineSplitter:
    """Accumulates bytes and yields complete lines (without the ending).

    A line longer than `max_line` is dropped up to its ending and reported as `oversized`;
    NUL bytes and stray CR/LF of another convention are stripped at the line's edges.
    """

    def __init__(self, eol: bytes, max_line: int) -> None:
        self.eol = eol
        self.max_line = max_line
        self.buf = bytearray()
        self.skipping = False  # inside an oversized line, waiting for its end

    def feed(self, data: bytes) -> tuple[list[bytes], list[Reject]]:
        self.buf += data
        lines: list[bytes] = []
        rejects: list[Reject] = []
        while True:
            i = self.buf.find(self.eol)
            if i < 0:
                break
            line = bytes(self.buf[:i])
            del self.buf[: i + len(self.eol)]
            if self.skipping:
                self.skipping = False
                continue
            if len(line) > self.max_line:
                rejects.append(Reject("oversized", f"line of {len(line)} bytes > "
                                      f"max_line_bytes {self.max_line}", line[:256]))
                continue
            line = line.strip(b"\x00\r\n")
            if line:
                lines.append(line)
        # the start of a line ending (the CR of CRLF) may end the buffer: it is kept, so that
        # neither the line before it nor the one after depends on where the read was cut
        keep = next((k for k in range(len(self.eol) - 1, 0, -1)
                     if self.buf.endswith(self.eol[:k])), 0)
        if len(self.buf) - keep > self.max_line:
            if not self.skipping:
                rejects.append(Reject("oversized", f"no line ending within {self.max_line} "
                                      "bytes", bytes(self.buf[:256])))
            self.skipping = True
            del self.buf[: len(self.buf) - keep]
        return lines, rejects

    def pending(self) -> bytes:
        """The partial line held back (half a line when the port closed)."""
        return bytes(self.buf)


class LineParser:
    """One line -> fields, per the configured framing.  Stateful only for CSV headers."""

    def __init__(self, cfg: SerialPortConfig, known: frozenset[str] | None = None) -> None:
        self.cfg = cfg
        self.known = known  # field names a header must have one of (None: any)
        self.header: list[str] | None = list(cfg.columns) or None
        self.fixed = bool(cfg.columns)
        self.rx = re.compile(cfg.pattern) if cfg.pattern else None
        self.parse: Callable[[str], Fields | str | None] = {
            "csv": self._csv, "kv": self._kv, "json": self._json, "regex": self._regex,
        }[cfg.framing]

    def _csv(self, text: str) -> Fields | str | None:
        cells = [c.strip() for c in text.split(self.cfg.delimiter)]
        if not self.fixed and (self.header is None or not any(_is_number(c) for c in cells)):
            if len(set(cells)) != len(cells) or not all(_NAME.match(c) for c in cells):
                return "csv line before its header" if self.header is None else \
                    "a text line that is no valid header (names must be distinct identifiers)"
            if self.known is not None and not self.known.intersection(cells):
                # a status word ("ERR", "OVERLOAD") must not replace the header of good rows
                return f"a text line that names no known field: {text[:40]!r} is no header"
            self.header = cells  # a (new) header: the instrument (re)started
            return None
        if self.fixed and cells == self.header:
            return None
        assert self.header is not None
        if len(cells) != len(self.header):
            return f"{len(cells)} columns, the header has {len(self.header)}"
        return dict(zip(self.header, cells, strict=True))

    def _kv(self, text: str) -> Fields | str | None:
        out: Fields = {}
        sep = self.cfg.kv_separator
        for part in text.split(self.cfg.pair_separator):
            part = part.strip()
            if not part:
                continue
            k, eq, v = part.partition(sep)
            if not eq or not k.strip():
                return f"{part[:40]!r} is not key{sep}value"
            out[k.strip()] = v.strip()
        return out or "no key=value pairs"

    def _json(self, text: str) -> Fields | str | None:
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            return f"not JSON: {e}"
        if not isinstance(doc, dict):
            return "a JSON line must be an object"
        return doc

    def _regex(self, text: str) -> Fields | str | None:
        assert self.rx is not None
        m = self.rx.search(text)
        if m is None:
            return "line does not match `pattern`"
        return {k: v for k, v in m.groupdict().items() if v is not None}


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _number(v: Any) -> Any:
    """Field text -> float where it is a number; JSON numbers pass as they are."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


class SerialDecoder:
    """Lines of one port -> a `SampleBatch` and rejects."""

    def __init__(
        self, cfg: SerialPortConfig, registry: AssetRegistry,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.cfg = cfg
        self.splitter = LineSplitter(cfg.eol, cfg.max_line_bytes)
        known = {n for schema in registry.classes.values() for n in schema.sensor_names}
        known |= {*cfg.sensor_map, *cfg.ignore_fields,
                  *(f for f in (cfg.asset_field, cfg.timestamp_field) if f)}
        self.parser = LineParser(cfg, frozenset(known))
        unit = cfg.timestamp if cfg.timestamp_field else "receive"
        self.ctx = DecodeContext(registry, timestamp=unit, now_ns=now_ns)
        self.skip = {*cfg.ignore_fields, *(f for f in (cfg.asset_field, cfg.timestamp_field) if f)}
        self.name = f"serial:{cfg.name}"
        self.lines = 0
        for asset in filter(None, [cfg.asset]):
            if registry.get(asset) is None:
                raise ValueError(f"serial port {cfg.name!r}: asset {asset!r} is not configured")

    def feed(self, data: bytes) -> tuple[SampleBatch, list[Reject]]:
        lines, rejects = self.splitter.feed(data)
        b = _Builder()
        b.rejects.extend(self._where(r) for r in rejects)
        now = self.ctx.now_ns()
        for line in lines:
            self.decode_line(b, line, now)
        return b.batch(self.name)[0], b.rejects

    def _where(self, r: Reject) -> Reject:
        return Reject(r.reason, r.detail, r.raw, r.where or self.cfg.port)

    def decode_line(self, b: _Builder, line: bytes, received_ns: int) -> None:
        self.lines += 1
        port = self.cfg.port
        try:
            text = line.decode(self.cfg.encoding)
        except (UnicodeDecodeError, LookupError):
            b.rejects.append(Reject("bad_encoding", f"not {self.cfg.encoding} text", line, port))
            return
        if _CONTROL.search(text):
            b.rejects.append(Reject("binary_noise", "unprintable characters in line", line, port))
            return
        fields = self.parser.parse(text)
        if fields is None:
            return  # a header line
        if isinstance(fields, str):
            b.rejects.append(Reject("bad_line", fields, line, port))
            return
        asset = self.cfg.asset
        if self.cfg.asset_field:
            a = fields.get(self.cfg.asset_field)
            asset = a if isinstance(a, str) and a else asset
        ts = received_ns
        if self.cfg.timestamp_field:
            raw_ts = _number(fields.get(self.cfg.timestamp_field))
            if isinstance(raw_ts, float) and raw_ts.is_integer():
                raw_ts = int(raw_ts)
            parsed = self.ctx.parse_ts(raw_ts, received_ns)
            why = None if parsed is None else self.ctx.ts_reject(parsed, received_ns)
            if parsed is None or why:
                b.rejects.append(Reject("bad_timestamp", why or f"{self.cfg.timestamp_field} = "
                                        f"{str(raw_ts)[:40]!r}", line, port))
                return
            ts = parsed
        values = {self.cfg.sensor_map.get(k, k): _number(v)
                  for k, v in fields.items() if k not in self.skip}
        n = len(b.rejects)
        add_values(b, self.ctx, asset or "", ts, values, port)
        for i in range(n, len(b.rejects)):
            r = b.rejects[i]
            b.rejects[i] = Reject(r.reason, r.detail, line, r.where)
