"""The operator console: a small aiohttp app on the agent's own event loop.

Plain HTML + vanilla JS polling a JSON API; no CDN, since plants have no internet.  Reading
is open (bind it to 127.0.0.1 or a plant network); changing anything (labels, threshold undo,
maintenance windows, resending dead letters) needs a bearer token.  Tokens are configured as
name + sha256 of the token (`gearwatch console hash-token`), never in plain text.  Event plots
are rendered server-side with matplotlib from the agent's in-memory recent rows, in a worker
thread so the loop keeps scoring.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from aiohttp import web

from edge_agent.desk import DeskError

if TYPE_CHECKING:
    from edge_agent.service import Agent

log = logging.getLogger("gearwatch.console")

MAX_BODY = 64 * 1024
STATIC = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def hash_token(token: str) -> str:
    # a header's non-UTF-8 bytes arrive as surrogates: hashed as the bytes they were
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
                        status=status, content_type="application/json")


def error(status: int, message: str) -> web.Response:
    resp = json_response({"error": message, "status": status}, status)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="gearwatch"'
    return resp


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is JSON with a message, also aiohttp's own (413, 404, 405)."""
    try:
        return await handler(request)
    except DeskError as e:
        return error(e.status, e.message)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return error(e.status, e.text or e.reason)


class Console:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.desk = agent.desk
        self.cfg = agent.cfg.console
        self.tokens = [(t.name, t.sha256) for t in self.cfg.tokens]
        self.runner: web.AppRunner | None = None
        self.port = self.cfg.port
        app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY)
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/static/{name}", self.static)
        r.add_get("/api/status", self.status)
        r.add_get("/api/whoami", self.whoami)
        r.add_get("/api/assets", self.assets)
        r.add_get("/api/events", self.events)
        r.add_get("/api/events/{id}", self.event)
        r.add_get("/api/events/{id}/plot.png", self.plot)
        r.add_post("/api/events/{id}/label", self.label)
        r.add_get("/api/audit", self.audit)
        r.add_get("/api/models", self.models)
        r.add_post("/api/models/{asset_class}/rollback", self.rollback)
        r.add_get("/api/maintenance", self.maintenance)
        r.add_post("/api/maintenance", self.add_maintenance)
        r.add_delete("/api/maintenance/{id}", self.remove_maintenance)
        r.add_post("/api/thresholds/{asset}/undo", self.undo_threshold)
        r.add_get("/api/deadletters", self.deadletters)
        r.add_post("/api/deadletters/resend", self.resend)
        self.app = app

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.cfg.bind, self.cfg.port)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        log.info("console on http://%s:%d/", self.cfg.bind, self.port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # -- auth -----------------------------------------------------------------------------------
    def who(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        digest = hash_token(auth[7:].strip())
        found = None
        for name, h in self.tokens:  # compare with every hash, in constant time
            if hmac.compare_digest(digest, h):
                found = name
        return found

    def require(self, request: web.Request) -> str:
        name = self.who(request)
        if name is None:
            if not self.tokens:
                raise DeskError(401, "no console tokens are configured: add [[console.tokens]]"
                                     " (gearwatch console hash-token)")
            if "Authorization" in request.headers:
                raise DeskError(401, "wrong token")
            raise DeskError(401, "this needs a token: log in first")
        return name

    async def body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            doc = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError as e:
            raise DeskError(400, f"body is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise DeskError(400, "body must be a JSON object")
        return doc

    # -- pages ----------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.Response:
        return await self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise DeskError(404, f"no such file {name!r:.60}")
        return await self._file(name)

    async def _file(self, name: str) -> web.Response:
        data = resources.files("edge_agent.console").joinpath("static", name).read_bytes()
        return web.Response(body=data, content_type=STATIC[name],
                            headers={"Cache-Control": "no-cache"})

    # -- read-only API --------------------------------------------------------------------------
    async def status(self, request: web.Request) -> web.Response:
        a = self.agent
        return json_response({
            "site": a.cfg.agent.site, "assets": len(a.registry), "samples": a.state.samples,
            "rows": a.state.rows, "open_events": len(self.desk.open_events()),
            "tokens_configured": bool(self.tokens),
            "channels": [{"name": c.name, "queued": c.queue.qsize(), "delivered": c.delivered}
                         for c in self.desk.channels],
        })

    async def whoami(self, request: web.Request) -> web.Response:
        return json_response({"name": self.require(request)})

    async def assets(self, request: web.Request) -> web.Response:
        return json_response(self.desk.assets())

    async def events(self, request: web.Request) -> web.Response:
        q = request.query
        state = q.get("state")
        if state not in (None, "open", "closed", "all"):
            raise DeskError(400, "state must be open, closed or all")
        try:
            limit = min(max(int(q.get("limit", "50")), 1), 1000)
        except ValueError:
            raise DeskError(400, "limit must be a whole number") from None
        return json_response(self.desk.store.events(None if state == "all" else state,
                                                    q.get("asset"), limit))

    async def event(self, request: web.Request) -> web.Response:
        doc = self.desk.store.get_event(request.match_info["id"])
        if doc is None:
            raise DeskError(404, f"no event with id {request.match_info['id']!r:.80}")
        return json_response(doc)

    async def audit(self, request: web.Request) -> web.Response:
        return json_response(self.desk.store.audit_entries(200))

    async def models(self, request: web.Request) -> web.Response:
        return json_response(self.desk.models())

    async def maintenance(self, request: web.Request) -> web.Response:
        return json_response(self.desk.windows())

    async def deadletters(self, request: web.Request) -> web.Response:
        rows = self.desk.store.dead_letters()
        return json_response([{k: v for k, v in r.items() if k != "payload"} for r in rows])

    async def plot(self, request: web.Request) -> web.Response:
        doc = self.desk.store.get_event(request.match_info["id"])
        if doc is None:
            raise DeskError(404, f"no event with id {request.match_info['id']!r:.80}")
        png = await asyncio.get_running_loop().run_in_executor(None, self._render, doc)
        return web.Response(body=png, content_type="image/png",
                            headers={"Cache-Control": "no-cache"})

    def _render(self, doc: dict[str, Any]) -> bytes:
        from edge_agent.console.plot import event_plot

        tracker, a = self.desk.where[doc["asset"]]
        recent = self.desk.recent[doc["asset_class"]]
        end = doc.get("end_ns")
        span = max((end or recent.last(a)[0] or doc["start_ns"]) - doc["start_ns"], 60 * 10**9)
        t0 = doc["start_ns"] - max(span, 600 * 10**9)
        t1 = (end or np.iinfo(np.int64).max // 2) + span // 2
        ts, vals, score = recent.window(a, t0, t1)
        return event_plot(doc, tracker.sensors, ts, vals, score,
                          float(tracker.open_thr[a]), float(tracker.close_thr))

    # -- changes (token) ------------------------------------------------------------------------
    async def label(self, request: web.Request) -> web.Response:
        who = self.require(request)
        doc = await self.body(request)
        out = self.desk.label(request.match_info["id"], doc.get("label", ""), doc.get("note"),
                              doc.get("fault_code"), who=who, via="console")
        return json_response(out)

    async def add_maintenance(self, request: web.Request) -> web.Response:
        who = self.require(request)
        return json_response(self.desk.add_window(await self.body(request), who), 201)

    async def remove_maintenance(self, request: web.Request) -> web.Response:
        who = self.require(request)
        try:
            wid = int(request.match_info["id"])
        except ValueError:
            raise DeskError(400, "window id must be a whole number") from None
        self.desk.remove_window(wid, who)
        return json_response({"removed": wid})

    async def rollback(self, request: web.Request) -> web.Response:
        """Return an asset class to its previous model (token needed; audited)."""
        from models.bundle import BundleError

        who = self.require(request)
        name = request.match_info["asset_class"]
        try:
            version = self.agent.models.rollback(name, who)
        except BundleError as e:
            raise DeskError(404 if "unknown asset class" in str(e) else 409, str(e)) from None
        return json_response({"asset_class": name, "version": version})

    async def undo_threshold(self, request: web.Request) -> web.Response:
        who = self.require(request)
        return json_response(self.desk.undo_threshold(request.match_info["asset"], who))

    async def resend(self, request: web.Request) -> web.Response:
        """Put dead-lettered alerts back on their channels' queues."""
        from edge_agent.sinks.channels import Alert

        who = self.require(request)
        doc = await self.body(request)
        if not isinstance(doc.get("channel"), str | None):
            raise DeskError(400, "channel must be a channel's name (a string)")
        channels = {c.name: c for c in self.desk.channels}
        n = 0
        for r in self.desk.store.dead_letters(doc.get("channel")):
            ch = channels.get(r["channel"])
            if ch is not None:
                ch.offer(Alert(r["kind"], orjson.loads(r["payload"]), r["seq"]))
                n += 1
        self.desk.store.audit(who, "dead_letter_resend", doc.get("channel") or "*",
                              {"alerts": n})
        return json_response({"requeued": n})
