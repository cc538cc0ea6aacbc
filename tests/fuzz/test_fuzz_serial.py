"""Serial lines (CSV with header or fixed columns, key=value, JSON lines, regex): good lines
mixed with garbage, the byte stream cut into reads anywhere; every good line must come through,
whatever the garbage and however the stream was cut."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.sources.serial_config import LINE_ENDINGS, SerialPortConfig
from edge_agent.sources.serial_framing import LineSplitter, SerialDecoder
from tests.fuzz.support import (
    NOW,
    SCHEMA,
    SENSORS,
    budget,
    check,
    counted,
    good_value,
    registry,
    samples,
)

REG = registry()
FIELDS = SENSORS[:4]
PATTERN = "".join(f"{n}=(?P<{n}>[-+.eE0-9]+);" for n in FIELDS) + r" ts=(?P<ts>\d+)"


def port(framing: str, eol: str, **kw: Any) -> SerialPortConfig:
    extra: dict[str, Any] = {}
    if framing == "regex":
        extra["pattern"] = PATTERN
    if kw.pop("fixed", False):
        extra["columns"] = ["ts", *FIELDS]
        extra["csv_header"] = False
    return SerialPortConfig(name="p", port="/dev/null", framing=framing, line_ending=eol,
                            asset="pump-1", timestamp_field="ts", timestamp="ms", **extra, **kw)


def line(framing: str, ts_ms: int, vals: dict[str, float]) -> bytes:
    if framing == "csv":
        text = ",".join([str(ts_ms), *(repr(vals[n]) for n in FIELDS)])
    elif framing == "kv":
        text = " ".join([f"ts={ts_ms}", *(f"{n}={vals[n]!r}" for n in FIELDS)])
    elif framing == "json":
        text = orjson.dumps({"ts": ts_ms, **vals}).decode()
    else:
        text = "".join(f"{n}={vals[n]!r};" for n in FIELDS) + f" ts={ts_ms}"
    return text.encode()


@st.composite
def good_row(draw: st.DrawFn) -> tuple[int, dict[str, float]]:
    return NOW // 10**6 + draw(st.integers(-10**6, 10**5)), {n: draw(good_value(n))
                                                              for n in FIELDS}


def garbage(eol: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=30),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(str.encode),
        st.sampled_from([b"ERR", b"OVERLOAD,FAULT", b"foo,bar", b"a=b=c", b"{}", b"[1]",
                         b"\x00\x00\x00", b"nan,nan", b"   "]),
    ).map(lambda g: g.replace(eol, b"").replace(b"\n", b"").replace(b"\r", b""))


def cut(data: bytes, points: list[int]) -> list[bytes]:
    ps = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *ps], [*ps, len(data)], strict=True)]


@given(data=st.data(), framing=st.sampled_from(["csv", "csv_fixed", "kv", "json", "regex"]),
       eol=st.sampled_from(sorted(LINE_ENDINGS)))
@budget(300)
@counted
def test_good_lines_survive_garbage_and_any_cutting(data: st.DataObject, framing: str,
                                                    eol: str) -> None:
    fixed = framing == "csv_fixed"
    framing = framing.removesuffix("_fixed")
    cfg = port(framing, eol, fixed=fixed)
    e = cfg.eol
    rows = data.draw(st.lists(good_row(), min_size=1, max_size=6))
    lines: list[bytes] = []
    if framing == "csv" and not fixed:
        lines.append(",".join(["ts", *FIELDS]).encode())
    for ts_ms, vals in rows:
        lines += data.draw(st.lists(garbage(e), max_size=2))
        lines.append(line(framing, ts_ms, vals))
    stream = b"".join(x + e for x in lines)
    dec = SerialDecoder(cfg, REG, now_ns=lambda: NOW)
    out = []
    for chunk in cut(stream, data.draw(st.lists(st.integers(0, 10**6), max_size=8))):
        out.append(check(dec.feed(chunk), REG))
    got = [s for b, _ in out for s in samples(b)]
    want = [(0, SCHEMA.index_of(n) or 0, ts_ms * 10**6, vals[n])
            for ts_ms, vals in rows for n in FIELDS]
    missing = sorted(set(want) - set(got))
    assert not missing, (missing, [r for _, rej in out for r in rej])


@given(data=st.data(), eol=st.sampled_from(sorted(LINE_ENDINGS)), max_line=st.integers(16, 40))
@budget(300)
@counted
def test_splitter_gives_the_same_lines_however_the_stream_is_cut(
        data: st.DataObject, eol: str, max_line: int) -> None:
    e = LINE_ENDINGS[eol]
    body = st.binary(max_size=max_line + 4).map(lambda b: b.replace(e, b"")) | st.integers(
        max_line - 2, max_line + 2).map(lambda n: b"x" * n)
    lines = data.draw(st.lists(body, max_size=6))
    stream = b"".join(x + e for x in lines)
    whole = LineSplitter(e, max_line)
    want, want_rej = whole.feed(stream)
    sp = LineSplitter(e, max_line)
    got: list[bytes] = []
    n_rej = 0
    for chunk in cut(stream, data.draw(st.lists(st.integers(0, 10**6), max_size=10))):
        ls, rej = sp.feed(chunk)
        got += ls
        n_rej += len(rej)
        assert all(len(x) <= max_line for x in ls)
    assert got == want
    assert n_rej == len(want_rej)


@given(raw=st.binary(max_size=400), framing=st.sampled_from(["csv", "kv", "json", "regex"]),
       enc=st.sampled_from(["ascii", "utf-8", "latin-1", "no-such-codec"]))
@budget(300)
@counted
def test_raw_noise_never_raises(raw: bytes, framing: str, enc: str) -> None:
    dec = SerialDecoder(port(framing, "lf", encoding=enc), REG, now_ns=lambda: NOW)
    check(dec.feed(raw), REG)
    check(dec.feed(b"\n"), REG)


# -- regressions found by these targets ---------------------------------------------------------
def test_regression_status_word_does_not_replace_the_csv_header() -> None:
    """"ERR" (distinct identifiers, no number) was taken as the instrument's new header, and
    every good row after it was refused for its column count."""
    cfg = port("csv", "lf")
    dec = SerialDecoder(cfg, REG, now_ns=lambda: NOW)
    b, rej = check(dec.feed(b"ts,speed_rpm\nERR\n%d,1480\n" % (NOW // 10**6)), REG)
    assert b.value.tolist() == [1480.0]
    assert [r.reason for r in rej] == ["bad_line"] and "no known field" in rej[0].detail
    b, rej = check(dec.feed(b"ts,flow_m3h\n%d,12\n" % (NOW // 10**6)), REG)  # a real new header
    assert b.value.tolist() == [12.0] and rej == []


def test_regression_crlf_cut_after_an_overlong_line_keeps_the_next_line() -> None:
    """A read ending between the CR and LF of an overlong line dropped the line after it;
    a line of exactly max_line bytes cut the same way was refused."""
    sp = LineSplitter(b"\r\n", 16)
    assert sp.feed(b"x" * 20 + b"\r")[0] == []
    assert sp.feed(b"\ngood\r\n")[0] == [b"good"]
    assert sp.feed(b"y" * 16 + b"\r") == ([], [])
    assert sp.feed(b"\n") == ([b"y" * 16], [])
