"""Sinks: where samples, scores and events leave the agent (InfluxDB, MQTT alerts, ...)."""
