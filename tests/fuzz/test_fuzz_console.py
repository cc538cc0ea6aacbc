"""The console's HTTP inputs and MQTT feedback messages, against a real agent (no broker, no
InfluxDB): hypothesis-generated bodies, query strings, ids and tokens over HTTP must give JSON
answers, a JSON error with a message for anything refused, and never a 500; feedback messages
are applied or dead-lettered with a reason, never an internal error."""

from __future__ import annotations

import hashlib
import tempfile
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.bad_input import Reject
from edge_agent.config import parse_config
from edge_agent.console.server import Console, hash_token
from edge_agent.events import Event
from edge_agent.feedback import MqttFeedback
from edge_agent.runner import AgentThread
from edge_agent.service import Agent
from edge_agent.store import LABELS
from gearwatch.localservers import free_port
from tests.fuzz.support import NOW, budget, counted

TOKEN = "fuzz-t0ken"
EVENT = "ev-fuzz-1"


@pytest.fixture(scope="module")
def agent() -> Iterator[Agent]:
    cfg = parse_config({
        "agent": {"site": "s1", "state_dir": tempfile.mkdtemp(prefix="gearwatch-fuzz-")},
        "mqtt": {"enabled": False}, "influx": {"enabled": False},
        "metrics": {"enabled": False},
        "console": {"port": free_port(), "tokens": [
            {"name": "alice", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]},
        "assets": [{"id": "pump-1", "class": "centrifugal_pump"}],
    })
    with AgentThread(cfg) as at:
        assert at.agent is not None
        at.agent.store.save_event(Event(EVENT, "pump-1", "centrifugal_pump", NOW))
        yield at.agent


@pytest.fixture(scope="module")
def client(agent: Agent) -> Iterator[httpx.Client]:
    assert agent.console is not None
    with httpx.Client(base_url=f"http://127.0.0.1:{agent.console.port}", timeout=10) as c:
        yield c


json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8)
label_body = st.fixed_dictionaries({}, optional={
    "label": st.one_of(st.sampled_from(LABELS), json_value),
    "note": st.one_of(st.text(max_size=30), json_value),
    "fault_code": st.one_of(st.from_regex(r"\A[A-Za-z0-9_.:/-]{1,64}\Z"), json_value),
    "event_id": json_value, "channel": json_value,
})
window_body = st.fixed_dictionaries({}, optional={
    "assets": st.one_of(st.just(["pump-1"]), json_value),
    "start": st.one_of(st.just("2026-01-01T00:00:00Z"), st.text(max_size=25), json_value),
    "end": st.one_of(st.just("2026-01-02T00:00:00+01:00"), st.text(max_size=25), json_value),
    "weekly": st.one_of(st.fixed_dictionaries({
        "days": st.lists(st.sampled_from(["mon", "sun", "xyz"]), max_size=2),
        "start": st.sampled_from(["22:00", "24:00", "9:0"]),
        "end": st.sampled_from(["06:00", "24:00", "x"])}), json_value),
    "reason": json_value,
})
# field-value bytes HTTP allows (control characters are refused by aiohttp's parser, 400)
header_text = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c >= 32 and c != 127))
auth = st.one_of(st.just(b"Bearer " + TOKEN.encode()), st.just(b"Bearer " + TOKEN.encode()),
                 st.none(), header_text, header_text.map(lambda b: b"Bearer " + b)).map(
    lambda b: b if b is None else b.strip(b" \t"))  # (h11 sends no edge whitespace)
ident = st.one_of(st.just(EVENT), st.just("pump-1"), st.text(max_size=20), st.integers().map(str))


@st.composite
def request(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    kind = draw(st.sampled_from(["label", "events", "event", "plot", "add_window",
                                 "remove_window", "undo", "resend", "whoami", "static"]))
    i = urllib.parse.quote(draw(ident), safe="")
    body: dict[str, Any] = {}
    raw = draw(st.one_of(label_body.map(orjson.dumps), window_body.map(orjson.dumps),
                         json_value.map(orjson.dumps), st.binary(max_size=60)))
    method, path = {
        "label": ("POST", f"/api/events/{i}/label"), "events": ("GET", "/api/events"),
        "event": ("GET", f"/api/events/{i}"), "plot": ("GET", f"/api/events/{i}/plot.png"),
        "add_window": ("POST", "/api/maintenance"),
        "remove_window": ("DELETE", f"/api/maintenance/{i}"),
        "undo": ("POST", f"/api/thresholds/{i}/undo"),
        "resend": ("POST", "/api/deadletters/resend"), "whoami": ("GET", "/api/whoami"),
        "static": ("GET", f"/static/{i}"),
    }[kind]
    if method != "GET":
        body["content"] = raw
    if kind == "events":
        body["params"] = draw(st.dictionaries(st.sampled_from(["state", "limit", "asset"]),
                                              st.one_of(st.sampled_from(["open", "all", "5",
                                                                         "-1", "1e9"]),
                                                        st.text(max_size=8)), max_size=3))
    a = draw(auth)
    if a is not None:
        body["headers"] = {"Authorization": a}
    return method, path, body


@given(req=request())
@budget(150, 0.05)
@counted
def test_console_answers_every_request_with_json(client: httpx.Client,
                                                 req: tuple[str, str, dict[str, Any]]) -> None:
    method, path, kw = req
    r = client.request(method, path, **kw)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        doc = r.json()
        assert doc["status"] == r.status_code and isinstance(doc["error"], str) and doc["error"]
    elif not path.endswith(".png") and not path.startswith("/static"):
        r.json()


@given(header=st.one_of(st.text(max_size=40), st.text(max_size=40).map(lambda t: "Bearer " + t)),
       raw=st.binary(max_size=30))
@budget(300)
@counted
def test_token_check_takes_any_header(agent: Agent, header: str, raw: bytes) -> None:
    console = agent.console
    assert console is not None
    try:
        req = make_mocked_request("GET", "/api/whoami", headers={"Authorization": header})
    except UnicodeEncodeError:  # (the test helper cannot send it; aiohttp's parser can)
        return
    assert console.who(req) in (None, "alice")
    # what aiohttp makes of a non-UTF-8 header: surrogates, hashed without raising
    assert len(hash_token(raw.decode("utf-8", "surrogateescape"))) == 64


FEEDBACK_REASONS = {"oversized", "malformed_json", "asset_mismatch", "unknown_event",
                    "oversized_note", "bad_label"}


@given(raw=st.one_of(label_body.map(lambda d: orjson.dumps({"event_id": EVENT, **d})),
                     label_body.map(orjson.dumps), json_value.map(orjson.dumps),
                     st.binary(max_size=80)),
       topic=st.sampled_from(["plant/s1/pump-1/feedback", "plant/s1/pump-2/feedback",
                              "feedback", ""]))
@budget(300)
@counted
def test_feedback_messages_are_applied_or_rejected_with_a_reason(
        agent: Agent, raw: bytes, topic: str) -> None:
    got: list[Reject] = []

    class Reporter:
        def report(self, source: str, rej: Reject) -> None:
            got.append(rej)

    fb = MqttFeedback.__new__(MqttFeedback)
    fb.desk, fb.reporter, fb.applied = agent.desk, Reporter(), 0  # type: ignore[assignment]
    acked: list[bool] = []
    fb._apply(raw, topic, lambda: acked.append(True))
    assert acked == [True]
    assert fb.applied + len(got) == 1
    for r in got:
        assert r.reason in FEEDBACK_REASONS, r
        assert r.raw == raw and r.detail


def test_regression_console_inputs_of_the_wrong_type(client: httpx.Client) -> None:
    """A non-UTF-8 token and a `channel` that is not a string answered 500 (plain text)."""
    for headers, content in (({b"Authorization": b"Bearer \xff\xfe"}, b"{}"),
                             ({b"Authorization": b"Bearer " + TOKEN.encode()},
                              b'{"channel": ["a"]}')):
        r = client.post("/api/deadletters/resend", headers=headers, content=content)
        assert r.status_code in (400, 401) and r.json()["error"]


def test_console_module_is_the_one_served(agent: Agent) -> None:
    assert isinstance(agent.console, Console)
