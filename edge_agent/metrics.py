"""Prometheus metrics of one agent (its own registry, so tests can run several agents)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class AgentMetrics:
    """Names follow Prometheus conventions: units in names, `_total` counters, bounded labels."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # health, for dashboards, alerting rules and `gearwatch agent status`
        self.source_connected = Gauge(
            "gearwatch_source_up", "1 while a source is connected, 0 while it is lost",
            ["source"], registry=r,
        )
        self.sink_up = Gauge(
            "gearwatch_sink_up", "1 while a sink's last write succeeded", ["sink"], registry=r
        )
        self.sink_backlog = Gauge(
            "gearwatch_sink_backlog_points", "Points accepted but not yet written by a sink",
            ["sink"], registry=r,
        )
        # one series per configured asset: bounded by the config, never by the input
        self.asset_last_sample = Gauge(
            "gearwatch_asset_last_sample_received_timestamp_seconds",
            "Wall-clock time (Unix s) the agent last received a sample of a configured asset",
            ["asset"], registry=r,
        )
        self.model_info = Gauge(
            "gearwatch_model_info", "1 for the model version each asset class is scored with",
            ["asset_class", "scorer", "version"], registry=r,
        )
        self.start_time = Gauge(
            "gearwatch_agent_start_time_seconds", "Unix time the agent started", registry=r
        )
        self.samples_in = Counter(
            "gearwatch_samples_received", "Samples decoded from sources", ["source"], registry=r
        )
        self.messages_in = Counter(
            "gearwatch_messages_received", "Messages/frames received", ["source"], registry=r
        )
        self.bad_input = Counter(
            "gearwatch_bad_input",
            "Rejected input, by source and reason (decode error, NaN, unknown sensor, ...)",
            ["source", "reason"],
            registry=r,
        )
        self.rows_framed = Counter(
            "gearwatch_rows_framed", "Asset rows produced by the framer", ["asset_class"],
            registry=r,
        )
        self.stale_values = Counter(
            "gearwatch_stale_values",
            "Row entries left NaN because the sensor had no fresh value",
            ["asset_class"],
            registry=r,
        )
        self.rows_scored = Counter(
            "gearwatch_rows_scored", "Rows scored", ["asset_class", "scorer"], registry=r
        )
        self.score_latency = Histogram(
            "gearwatch_score_latency_seconds",
            "Time from the newest sample of a row arriving to its score being computed",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.events_open = Gauge("gearwatch_events_open", "Anomaly events open now", registry=r)
        self.events_opened = Counter(
            "gearwatch_events_opened", "Anomaly events opened", ["asset_class"], registry=r
        )
        self.sink_points = Counter(
            "gearwatch_sink_points_written", "Points written by a sink", ["sink"], registry=r
        )
        self.sink_errors = Counter(
            "gearwatch_sink_errors", "Failed sink writes (retried)", ["sink"], registry=r
        )
        self.sink_latency = Histogram(
            "gearwatch_sink_write_seconds", "Duration of one sink write", ["sink"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.alerts_sent = Counter(
            "gearwatch_alerts_published", "Alerts published", ["channel", "kind"], registry=r
        )
        self.queue_depth = Gauge(
            "gearwatch_ingest_queue_batches", "Batches waiting between sources and framer",
            registry=r,
        )

        # alert channels, feedback (issue 5)
        self.alert_failures = Counter(
            "gearwatch_alert_failures", "Failed alert deliveries (retried)", ["channel"],
            registry=r,
        )
        self.alert_dead_letters = Counter(
            "gearwatch_alert_dead_letters",
            "Alerts given up on after the retry bound or a full queue (kept in SQLite)",
            ["channel"], registry=r,
        )
        self.alert_queue = Gauge(
            "gearwatch_alert_queue", "Alerts waiting in a channel's queue", ["channel"],
            registry=r,
        )
        self.labels = Counter(
            "gearwatch_event_labels", "Operator labels of events", ["label", "via"], registry=r
        )
        self.threshold_offset = Gauge(
            "gearwatch_threshold_offset", "Feedback raise of an asset's open threshold",
            ["asset"], registry=r,
        )
        # industrial inputs: labels are configured source/device names, never addresses
        self.source_up = Gauge(
            "gearwatch_source_device_up",
            "1 while a polled device (Modbus unit, serial port) answers, 0 while it is lost",
            ["source", "device"], registry=r,
        )
        self.source_lost = Counter(
            "gearwatch_source_device_lost",
            "Times a polled device stopped answering (its sensors go stale until it recovers)",
            ["source", "device"], registry=r,
        )
        self.modbus_requests = Counter(
            "gearwatch_modbus_requests", "Modbus read requests, by outcome",
            ["device", "outcome"], registry=r,
        )
        self.modbus_registers = Counter(
            "gearwatch_modbus_registers_read", "Registers and bits read from Modbus devices",
            ["device"], registry=r,
        )
        self.reconnects = Counter(
            "gearwatch_source_reconnects", "Connections (re)opened by a source", ["source"],
            registry=r,
        )
        self.model_swaps = Counter(
            "gearwatch_model_swaps", "Learned-model bundles installed (start, publish, rollback)",
            ["asset_class"], registry=r,
        )
        self.models_refused = Counter(
            "gearwatch_model_bundles_refused",
            "Bundles refused (bad signature, hash, schema, archive); the running model stays",
            ["asset_class", "reason"], registry=r,
        )
        self.sparkplug_rebirths = Counter(
            "gearwatch_sparkplug_rebirth_requests", "Sparkplug B rebirth requests sent",
            ["source"], registry=r,
        )

        # the durable spool between the agent and InfluxDB (issue 6)
        self.spool_bytes = Gauge("gearwatch_spool_bytes", "Bytes of spool segments on disk",
                                 registry=r)
        self.spool_max_bytes = Gauge("gearwatch_spool_max_bytes", "Configured spool.max_bytes",
                                     registry=r)
        self.spool_points = Gauge(
            "gearwatch_spool_points", "Points in the spool not yet delivered to the sink",
            registry=r)
        self.spool_segments = Gauge("gearwatch_spool_segments", "Spool segment files",
                                    registry=r)
        self.spool_oldest_age = Gauge(
            "gearwatch_spool_oldest_record_age_seconds",
            "Age of the oldest spool segment still holding undelivered points (0 = none)",
            registry=r)
        self.spool_full = Gauge(
            "gearwatch_spool_full", "1 while the spool is full and on_full acts", registry=r)
        self.spool_dropped = Counter(
            "gearwatch_spool_dropped_points",
            "Points given up by the spool: drop_oldest, drop_newest, block_overflow, corrupt",
            ["reason"], registry=r)
        self.spool_replayed = Counter(
            "gearwatch_spool_replayed_points",
            "Points read back from spool segments on disk and delivered", registry=r)
        self.spool_commit = Histogram(
            "gearwatch_spool_commit_seconds",
            "One group commit: write and fsync of a processing batch's points",
            buckets=LATENCY_BUCKETS, registry=r)
        self.sink_dead_letters = Counter(
            "gearwatch_sink_dead_letter_points",
            "Points a sink rejected as bad (4xx), kept in the SQLite dead-letter table",
            ["sink"], registry=r)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
