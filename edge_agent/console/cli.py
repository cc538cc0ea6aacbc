"""`gearwatch console hash-token|maintenance` (the code lives with the events CLI)."""

from edge_agent.events_cli import register_console as register

__all__ = ["register"]
