"""The agent service: wires sources, the pipeline and sinks together on one asyncio loop.

Data flows one way.  Sources (threads or tasks) emit batches into one queue; a single
processing task drains it, frames, scores and tracks events, and hands the results to sinks,
which never call back upstream.  A timer also advances the framer so quiet assets keep ticking.

Under systemd (`Type=notify`) the agent says READY=1 once running, and the processing task
pings the watchdog from its own iteration, so a hung or dead processing loop gets the agent
restarted.  `stop()` (SIGTERM) stops the inputs, flushes what is queued to the sinks and
returns within `agent.shutdown_timeout_s`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from edge_agent.assets import AssetRegistry
from edge_agent.bad_input import BadInputReporter
from edge_agent.batch import SampleBatch
from edge_agent.config import AgentConfig
from edge_agent.desk import EventDesk
from edge_agent.events import Event, Transition
from edge_agent.feedback import MqttFeedback
from edge_agent.metrics import AgentMetrics
from edge_agent.model_manager import ModelManager
from edge_agent.pipeline import ClassOutput, Pipeline, Scored
from edge_agent.sinks import line_protocol as lp
from edge_agent.sinks.alerts import MqttAlertChannel
from edge_agent.sinks.channels import make_channels
from edge_agent.sinks.influx import InfluxSink, make_writer
from edge_agent.sinks.spool import Spool
from edge_agent.sources.modbus import ModbusSource
from edge_agent.sources.mqtt import MqttSource
from edge_agent.sources.mqtt_connection import MqttConnection
from edge_agent.sources.payloads import DecodeContext
from edge_agent.store import Store
from edge_agent.systemd_notify import Notifier, Watchdog

if TYPE_CHECKING:
    from edge_agent.console.server import Console
from edge_agent.sources.serial_port import SerialSource
from edge_agent.sources.sparkplug import SparkplugDecoder
from edge_agent.status import SCHEMA_VERSION, status_path, write_status

log = logging.getLogger("gearwatch.agent")


@dataclass
class AgentState:
    """What the agent has done, for tests, the console and `agent status`."""

    samples: int = 0
    rows: int = 0
    events: list[Event] = field(default_factory=list)
    # polled devices / serial ports / Sparkplug nodes: "lost" or "ok" (the on_state hooks)
    source_states: dict[str, str] = field(default_factory=dict)


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.registry = AssetRegistry(cfg.asset_list())
        self.metrics = AgentMetrics()
        self.pipeline = Pipeline.from_config(cfg, self.registry)
        self.state = AgentState()
        self.queue: asyncio.Queue[SampleBatch] = asyncio.Queue()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.mqtt: MqttConnection | None = None
        self.alerts: list[MqttAlertChannel] = []
        dead_letter = None
        if cfg.mqtt.enabled:
            self.mqtt = MqttConnection(cfg.mqtt)
            if cfg.mqtt.dead_letter_topic:
                dl_topic = cfg.mqtt.dead_letter_topic.format(site=cfg.agent.site)
                conn = self.mqtt

                def dead_letter(payload: bytes) -> None:
                    conn.publish(dl_topic, payload, qos=1)

            self.alerts.append(MqttAlertChannel(self.mqtt, cfg.mqtt.alerts_topic,
                                                cfg.agent.site, self.metrics))
        self.reporter = BadInputReporter(self.metrics, dead_letter)
        self.sources: list[MqttSource] = []
        if self.mqtt is not None:
            ctx = DecodeContext(
                self.registry, cfg.mqtt.topic_template, cfg.mqtt.timestamp,
                cfg.mqtt.max_payload_bytes, cfg.framer.max_future_s, cfg.framer.max_past_s,
            )
            decoder = (SparkplugDecoder(cfg.sparkplug) if cfg.mqtt.format == "sparkplug_b"
                       else None)  # stateful: one per source, with the configured naming
            self.sources.append(MqttSource(self.mqtt, ctx, self.reporter, self.metrics,
                                           decoder=decoder, on_state=self.on_source_state))
        # polled and serial inputs run as tasks that emit into the same queue
        self.inputs: list[ModbusSource | SerialSource] = [
            ModbusSource(d, self.registry, self.reporter, self.metrics, self.on_source_state)
            for d in cfg.modbus
        ] + [
            SerialSource(p, self.registry, self.reporter, self.metrics, self.on_source_state)
            for p in cfg.serial
        ]
        self.influx: InfluxSink | None = None
        self.spool: Spool | None = None  # durable store-and-forward in front of InfluxDB
        if cfg.influx.enabled:
            sp = cfg.spool
            if sp.enabled:
                self.spool = Spool(sp.path(cfg.agent.state_dir), self.metrics, sp.max_bytes,
                                   sp.segment_bytes, sp.on_full, sp.fsync,
                                   cfg.influx.batch_points, self._agent_alert)
            self.influx = InfluxSink(make_writer(cfg.influx), self.metrics,
                                     cfg.influx.batch_points, cfg.influx.flush_interval_s,
                                     cfg.influx.max_backoff_s, spool=self.spool,
                                     replay_points_per_s=sp.replay_points_per_s,
                                     memory_points=sp.memory_points)
        # line-protocol prefixes per asset, computed once
        self._series = [
            f"telemetry,asset={lp.tag(i.asset_id)},asset_class={lp.tag(i.schema.asset_class)}"
            for i in self.registry.infos
        ]
        self._sensor_names = [i.schema.sensor_names for i in self.registry.infos]
        self._class_ids = {
            name: [self.registry.infos[i].asset_id for i in members]
            for name, members in self.registry.members.items()
        }
        # events desk: rules, persistence, alert channels, labels, console (issue 5)
        self.store = Store(cfg.agent.state_dir)
        influx = self.influx
        if influx is not None:
            influx.dead_letter = self.store.sink_dead_letter
        self.desk = EventDesk(cfg, self.pipeline, self.registry, self.metrics, self.store,
                              influx.submit if influx is not None else None)
        self.desk.channels = make_channels(cfg.alerts, self.store, self.metrics)
        self.state.events.extend(self.desk.open_events())
        # learned models: signed bundles from the registry folder or MQTT, hot-swapped (issue 4)
        self.models = ModelManager(cfg, self.pipeline, self.metrics, self.store.audit)
        self.desk.extra_models.append(self.models.describe)
        self.console: Console | None = None
        self.feedback: MqttFeedback | None = None
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = asyncio.Event()
        self.started_at = time.time()
        self._last_rx = np.zeros(len(self.registry))  # wall-clock s of each asset's last sample
        # framing, scoring and raw line protocol run here, off the event loop (see _process)
        self._scoring = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="scoring")
        self.notifier = Notifier()
        self.watchdog = Watchdog(self.notifier)

    # -- hooks for sources that know when they lose a device (Modbus, serial) ---------------------
    def source_lost(self, asset_ids: list[str]) -> None:
        """No alerts for these assets until `source_recovered`: a blind machine is not a fault."""
        log.warning("source lost for %s: alerts suppressed", ", ".join(asset_ids))
        self.pipeline.suppression.source_lost(asset_ids)

    def source_recovered(self, asset_ids: list[str]) -> None:
        log.info("source recovered for %s", ", ".join(asset_ids))
        self.pipeline.suppression.source_recovered(asset_ids)

    # -- sources -> queue (thread-safe) ---------------------------------------------------
    def emit(self, batch: SampleBatch) -> None:
        loop = self.loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self.queue.put_nowait, batch)

    # -- lifecycle --------------------------------------------------------------------------
    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        cfg = self.cfg
        if cfg.metrics.enabled:
            self.metrics.serve(cfg.metrics.port, cfg.metrics.bind)
        if self.influx is not None:
            await self.influx.start()  # the spool recovers the last run's backlog first
            self._tasks.append(asyncio.create_task(self.influx.run(), name="influx"))
        for src in self.sources:
            src.attach(self.emit)
        for ch in self.desk.channels:
            self._tasks.append(asyncio.create_task(ch.run(), name=f"alerts-{ch.name}"))
        self._tasks.append(asyncio.create_task(self._refresh_offsets(), name="offsets"))
        self.models.load_initial()
        if self.models.enabled:
            self._tasks.append(asyncio.create_task(self._watch_models(), name="models"))
            if self.mqtt is not None and cfg.models.mqtt_topic:
                self._subscribe_models(cfg.models.mqtt_topic)
        if self.mqtt is not None and cfg.feedback.enabled:
            topic = cfg.feedback.topic.format(site=cfg.agent.site)
            self.feedback = MqttFeedback(self.mqtt, topic, self.desk, self.reporter, self.loop)
        if cfg.console.enabled:
            from edge_agent.console.server import Console

            console = Console(self)
            await console.start()
            self.console = console
        for inp in self.inputs:
            self._tasks.append(asyncio.create_task(inp.run(self.emit), name=inp.name))
        if self.mqtt is not None:
            self.mqtt.start()
        self._tasks.append(asyncio.create_task(self._process(), name="process"))
        self.metrics.start_time.set(self.started_at)
        for name in self.registry.classes:
            self.metrics.model_info.labels(name, cfg.scoring.online_detector, "online").set(1)
        if cfg.agent.status_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._report_status(), name="status"))
        log.info("agent running: %d assets in %d classes", len(self.registry),
                 len(self.registry.classes))
        self.ready.set()
        if self.notifier.ready(f"running: {len(self.registry)} assets"):
            log.info("told systemd READY=1 (watchdog ping every %s s from the processing loop)",
                     self.watchdog.interval)
        await self._stopping.wait()
        await self._shutdown()

    def stop(self) -> None:
        self._stopping.set()

    def _agent_alert(self, doc: dict[str, object]) -> None:
        """An alert about the agent itself (the spool is full / has room again), on MQTT;
        called from the spool's writer thread (paho's publish is thread-safe)."""
        topic = self.cfg.spool.alert_topic
        if self.mqtt is None or not topic:
            return
        doc = {"site": self.cfg.agent.site, **doc}
        self.mqtt.publish(topic.format(site=self.cfg.agent.site), orjson.dumps(doc), qos=1)
        self.metrics.alerts_sent.labels("mqtt_agent", str(doc.get("kind"))).inc()

    def on_source_state(self, device: str, state: str) -> None:
        """A polled device, serial port or Sparkplug node went "lost" or is back ("ok").

        Its sensors simply stop arriving, so the framer marks them NaN after their staleness
        limit; this records and logs the cause.  Called from source threads too.
        """
        self.state.source_states[device] = state
        log.log(logging.WARNING if state == "lost" else logging.INFO,
                "input %s is %s", device, state)
        # no alerts for the assets a lost device feeds (issue 5's suppression hook)
        assets = [a for inp in self.inputs for key, h in inp.health().items() if key == device
                  for a in h.get("assets", [])]
        if assets:
            (self.source_lost if state == "lost" else self.source_recovered)(assets)

    async def _shutdown(self) -> None:
        """Inputs off, queue processed, sinks flushed (acks sent), within the bound."""
        t0 = time.monotonic()
        bound = self.cfg.agent.shutdown_timeout_s
        self.notifier.stopping("stopping: flushing sinks")
        log.info("stopping: inputs off, flushing what is queued (at most %.0f s)", bound)
        # 1. no new input; what arrives from now on is not acknowledged, so it is redelivered
        for src in self.sources:
            src.detach()
        inputs = {inp.name for inp in self.inputs}
        stop_first = [t for t in self._tasks if t.get_name() in inputs | {"process"}]
        for t in stop_first:
            t.cancel()
        await asyncio.gather(*stop_first, return_exceptions=True)
        # 2. what is already queued is processed, so its samples are written before we exit
        self._drain_queue()
        # 3. flush the sinks; their acks go out while the MQTT connection is still up
        self._scoring.shutdown(wait=False)
        if self.influx is not None:
            await self.influx.close()  # the spool writes and fsyncs what is pending, then acks
            influx_tasks = [t for t in self._tasks if t.get_name() == "influx"]
            left = max(bound - (time.monotonic() - t0), 0.1)
            try:  # with the spool the data is on disk already: only a short wait for sends
                await asyncio.wait_for(asyncio.gather(*influx_tasks),
                                       timeout=min(left, self.influx.close_grace_s))
            except TimeoutError:
                if self.spool is None:
                    log.warning("shutdown bound of %.0f s reached with %d points not written to "
                                "InfluxDB (%s); their MQTT messages stay unacknowledged, so the "
                                "broker redelivers them on the next start", bound,
                                self.influx.backlog_points, "failing" if not self.influx.healthy
                                else "slow")
            if self.spool is not None and self.influx.backlog_points:
                log.info("%d points not yet in InfluxDB stay in the spool on disk (acknowledged "
                         "to the broker); they are sent at the next start",
                         self.influx.backlog_points)
            await self.influx.aclose_writer()
        if self.mqtt is not None:
            self.mqtt.stop()
        for t in self._tasks:
            t.cancel()
        await self._close_desk()
        self.notifier.close()
        log.info("agent stopped in %.1f s (%d samples received)", time.monotonic() - t0,
                 self.state.samples)

    async def _close_desk(self) -> None:
        if self.console is not None:
            await self.console.stop()
        for ch in self.desk.channels:
            # alerts still queued are kept, not lost: resend them with `gearwatch events resend`
            while not ch.queue.empty():
                ch._give_up(ch.queue.get_nowait(), "agent stopped before delivery", 0)
            await ch.aclose()
        self.store.close()

    def _subscribe_models(self, topic: str) -> None:
        """Retained bundles on the model topic: verified in paho's thread, installed on the loop."""
        assert self.mqtt is not None and self.loop is not None
        conn, loop, models = self.mqtt, self.loop, self.models

        def on_message(client: Any, userdata: object, msg: Any) -> None:
            blob, source = bytes(msg.payload), f"mqtt {msg.topic}"
            if blob:  # an empty retained message clears the topic: nothing to install
                loop.call_soon_threadsafe(models.offer_blob, blob, source)
            if msg.qos > 0 and conn.cfg.qos == 1:
                client.ack(msg.mid, msg.qos)  # the bundle is idempotent: a resend changes nothing

        def subscribe(client: Any) -> None:
            client.subscribe(topic, qos=1)

        conn.client.message_callback_add(topic, on_message)
        conn.add_on_connect(subscribe)
        if conn.connected.is_set():
            conn.client.subscribe(topic, qos=1)

    async def _watch_models(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.models.watch_interval_s)
            try:
                self.models.poll()
            except Exception:
                log.exception("reading the model registry failed")

    async def _refresh_offsets(self) -> None:
        while True:
            await asyncio.sleep(60)
            try:
                self.desk.refresh_offsets()
            except Exception:
                log.exception("threshold refresh failed")

    def _drain_queue(self) -> None:
        batches = []
        while not self.queue.empty():
            batches.append(self.queue.get_nowait())
        if batches:
            self._handle(SampleBatch.concat(batches))

    # -- the processing loop ------------------------------------------------------------------
    async def _process(self) -> None:
        tick = min(s.sample_period_s for s in self.registry.classes.values()) / 4
        tick = min(max(tick, 0.01), 0.25)
        while True:
            batches: list[SampleBatch] = []
            with contextlib.suppress(TimeoutError):
                batches.append(await asyncio.wait_for(self.queue.get(), timeout=tick))
            while not self.queue.empty() and len(batches) < 10_000:
                batches.append(self.queue.get_nowait())
            self.metrics.queue_depth.set(self.queue.qsize())
            try:
                await self._handle_async(SampleBatch.concat(batches) if batches else None)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("processing failed; the batch's acks are withheld")
            # from this loop and nowhere else: if it hangs or dies, systemd restarts the agent
            self.watchdog.beat()

    async def _handle_async(self, batch: SampleBatch | None) -> None:
        """`_handle` with its CPU-heavy half in the scoring thread: the event loop stays free
        for InfluxDB writes and alerts, and the MQTT thread decodes meanwhile (torch and large
        numpy operations release the GIL).  One batch at a time, so the pipeline is never
        touched by two threads at once; on cancellation the batch in flight is still delivered.
        """
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._scoring, self._compute, batch)
        try:
            lines, scored = await asyncio.shield(fut)
        except asyncio.CancelledError:
            lines, scored = await fut
            self._deliver(batch, lines, scored)
            raise
        self._deliver(batch, lines, scored)

    def _handle(self, batch: SampleBatch | None) -> None:
        self._deliver(batch, *self._compute(batch))

    def _compute(self, batch: SampleBatch | None) -> tuple[list[str] | None,
                                                            list[tuple[str, Scored]]]:
        """Ingest, frame, score, and the raw samples' line protocol; no sink, no event state."""
        lines = None
        if batch is not None:
            self.pipeline.ingest(batch)
            if self.influx is not None and self.cfg.influx.write_raw:
                lines = lp.telemetry_lines(batch.asset, batch.sensor, batch.ts_ns, batch.value,
                                           self._series, self._sensor_names)
        return lines, self.pipeline.score()

    def _deliver(self, batch: SampleBatch | None, lines: list[str] | None,
                 scored: list[tuple[str, Scored]]) -> None:
        """On the loop: raw samples to the sink with their acks (ack-after-persist), then
        events, scores and alerts."""
        if batch is not None:
            self.state.samples += len(batch)
            self._last_rx[batch.asset] = time.time()
            if lines is not None and self.influx is not None:
                self.influx.submit(lines, batch.acks)
            else:
                batch.ack()  # nothing durable to wait for
        for out in self.pipeline.finish(scored):
            self._sink_output(out)

    def _sink_output(self, out: ClassOutput) -> None:
        n = len(out.rows)
        self.state.rows += n
        m = self.metrics
        m.rows_framed.labels(out.asset_class).inc(n)
        if out.rows.stale:
            m.stale_values.labels(out.asset_class).inc(out.rows.stale)
        scored = np.isfinite(out.fused)
        m.rows_scored.labels(out.asset_class, "fused").inc(int(scored.sum()))
        now = time.monotonic_ns()
        lat = (now - out.rows.newest_arrival_ns[scored]) / 1e9
        for v in lat[lat >= 0].tolist()[:1000]:
            m.score_latency.observe(v)
        ids = self._class_ids[out.asset_class]
        if self.influx is not None:
            asset_ids = [ids[a] for a in out.rows.asset.tolist()]
            self.influx.submit(lp.score_lines(
                asset_ids, out.asset_class, out.rows.ts_ns, out.fused,
                {k: s.score for k, s in out.scores.items()},
                self.pipeline.classes[out.asset_class].events.open_thr[out.rows.asset],
            ))
        self.desk.observe(out)
        for tr in out.transitions:
            self._on_transition(tr)

    def _on_transition(self, tr: Transition) -> None:
        ev = tr.event
        if tr.kind == "open":
            self.state.events.append(ev)
            self.metrics.events_opened.labels(ev.asset_class).inc()
        self.desk.on_transition(tr)
        open_now = sum(len(cp.events.open_events) for cp in self.pipeline.classes.values())
        self.metrics.events_open.set(open_now)
        log.warning(
            "event %s %s on %s: peak %.1f, top sensors %s", ev.id, tr.kind, ev.asset,
            ev.peak_score, ", ".join(f"{s} {w:.0%}" for s, w in ev.top_sensors),
            extra={"asset": ev.asset, "event_id": ev.id},
        )
        if self.influx is not None:
            self.influx.submit([lp.event_line(ev)])
        for ch in self.alerts:
            ch.send(tr.kind, ev)

    # -- status: Prometheus health gauges and status.json ---------------------------------
    def _model_version(self, asset_class: str) -> str:
        cp = self.pipeline.classes.get(asset_class)
        return str(getattr(getattr(cp, "events", None), "model_version", "online"))

    def _source_states(self) -> list[dict[str, str]]:
        out = []
        for src in self.sources:
            up = self.mqtt is not None and self.mqtt.connected.is_set()
            detail = (f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}"
                      if self.mqtt is not None else "")
            out.append({"name": src.name, "state": "connected" if up else "lost",
                        "detail": detail})
            self.metrics.source_connected.labels(src.name).set(1 if up else 0)
        for name, st in getattr(self.state, "source_states", {}).items():
            out.append({"name": str(name), "state": str(st), "detail": ""})
        return out

    def status_doc(self) -> dict[str, object]:
        """What `gearwatch agent status` prints; also refreshes the health gauges."""
        m = self.metrics
        sinks = []
        if self.influx is not None:
            name = self.influx.writer.name
            up = self.influx.healthy
            m.sink_up.labels(name).set(1 if up else 0)
            m.sink_backlog.labels(name).set(self.influx.backlog_points)
            sinks.append({"name": name, "state": "ok" if up else "failing",
                          "url": self.cfg.influx.url, "backlog_points": self.influx.backlog_points,
                          "points_written": self.influx.points_written})
        open_by_asset: dict[str, str] = {}
        open_events = []
        for cp in self.pipeline.classes.values():
            for ev in cp.events.open_events.values():
                open_by_asset[ev.asset] = ev.id
                open_events.append(ev.to_dict())
        assets = []
        for i, info in enumerate(self.registry.infos):
            last = float(self._last_rx[i]) or None
            if last:
                m.asset_last_sample.labels(info.asset_id).set(last)
            assets.append({"id": info.asset_id, "class": info.schema.asset_class,
                           "last_sample_at": last, "open_event": open_by_asset.get(info.asset_id)})
        doc: dict[str, object] = {
            "schema": SCHEMA_VERSION,
            "pid": os.getpid(),
            "host": os.uname().nodename,
            "site": self.cfg.agent.site,
            "started_at": self.started_at,
            "written_at": time.time(),
            "interval_s": self.cfg.agent.status_interval_s,
            "sources": self._source_states(),
            "sinks": sinks,
            "models": [{"asset_class": name, "scorer": self.cfg.scoring.online_detector,
                        "version": self._model_version(name)}
                       for name in self.registry.classes],
            "assets": assets,
            "open_events": open_events,
            "counters": {"samples": self.state.samples, "rows": self.state.rows,
                         "events_opened": len(self.state.events),
                         "queue_batches": self.queue.qsize()},
        }
        spool = getattr(self, "spool", None)
        if spool is not None and hasattr(spool, "status"):
            doc["spool"] = spool.status()
        return doc

    def _notify_status(self, doc: dict[str, object]) -> None:
        """One line for `systemctl status gearwatch-agent`."""
        if not self.notifier.enabled:
            return
        srcs = doc.get("sources")
        sinks = doc.get("sinks")
        parts = [f"{self.state.samples} samples, {len(self.state.events)} events"]
        parts += [f"{s['name']} {s['state']}" for s in srcs if isinstance(s, dict)] \
            if isinstance(srcs, list) else []
        parts += [f"{s['name']} {s['state']} (backlog {s['backlog_points']})"
                  for s in sinks if isinstance(s, dict)] if isinstance(sinks, list) else []
        self.notifier.status(", ".join(parts))

    async def _report_status(self) -> None:
        path = status_path(self.cfg.agent.state_dir)
        warned = False
        while True:
            try:
                doc = self.status_doc()
                self._notify_status(doc)
                await asyncio.to_thread(write_status, path, doc)
                warned = False
            except OSError as e:
                if not warned:
                    log.warning("cannot write %s: %s (gearwatch agent status will say stale)",
                                path, e)
                warned = True
            except Exception:
                log.exception("building the status failed")
            await asyncio.sleep(self.cfg.agent.status_interval_s)
