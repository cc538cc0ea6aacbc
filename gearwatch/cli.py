"""`gearwatch agent|train|sim|demo ...`: each package registers its own subcommand.

Convention: a package's `cli.py` has `register(subparsers)`, which adds one subcommand whose
parser sets `func=callable(args) -> int`.  Imports are lazy so `gearwatch sim` does not
pay for torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "agent": "edge_agent.cli",
    "train": "trainer.cli",
    "sim": "simulators.cli",
    "demo": "gearwatch.demo",
    "events": "edge_agent.events_cli",
    "console": "edge_agent.console.cli",
    "doctor": "edge_agent.doctor",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gearwatch", description="Streaming anomaly monitor for industrial equipment."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=f"(see gearwatch {name} --help)")
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is None or not module.startswith(e.name):
                raise
            continue  # that part is not installed
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)
