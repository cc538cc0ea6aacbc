"""`gearwatch agent run|check`: run the edge agent, or validate its config and say what to fix."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from edge_agent.config import ConfigError, load_config

DEFAULT_CONFIG = "/etc/gearwatch/gearwatch.toml"


def cmd_check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"{args.config}: {e}", file=sys.stderr)
        return 2
    print(f"{args.config}: OK ({len(cfg.assets)} assets, "
          f"{len(cfg.schemas())} asset classes known)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT, then stop within `agent.shutdown_timeout_s` and exit 0.

    A watchdog thread bounds the stop even if something in it hangs (exit 1 then), so
    systemd never has to SIGKILL the agent mid-flush.
    """
    import logging
    import os
    import threading

    from edge_agent.logs import setup_logging
    from edge_agent.service import Agent

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"{args.config}: {e}", file=sys.stderr)
        return 2
    setup_logging(cfg.agent.log_level, cfg.agent.log_json)
    log = logging.getLogger("gearwatch.agent")
    try:
        agent = Agent(cfg)
    except ConfigError as e:
        print(f"{args.config}: {e}", file=sys.stderr)
        return 2
    bound = cfg.agent.shutdown_timeout_s
    signals: list[int] = []

    def hard_exit() -> None:
        log.error("stop did not finish within %.0f s; exiting without a full flush "
                  "(unacknowledged MQTT messages are redelivered on the next start)", bound + 5)
        logging.shutdown()
        os._exit(1)

    def on_signal(sig: signal.Signals) -> None:
        signals.append(sig)
        if len(signals) > 1:
            log.warning("%s again: exiting now, without flushing", sig.name)
            logging.shutdown()
            os._exit(128 + sig)
        log.info("%s received: stopping within %.0f s", sig.name, bound)
        timer = threading.Timer(bound + 5, hard_exit)
        timer.daemon = True
        timer.start()
        agent.stop()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        await agent.run()

    asyncio.run(main())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print what the running agent is doing, from the status.json it keeps in its state dir."""
    from pathlib import Path

    from edge_agent.status import format_status, read_status, staleness, status_path

    if args.state_dir:
        state_dir = args.state_dir
    else:
        try:
            state_dir = load_config(args.config).agent.state_dir
        except ConfigError as e:
            print(f"{args.config}: {e}", file=sys.stderr)
            return 2
    path = status_path(state_dir)
    try:
        doc = read_status(Path(path))
    except FileNotFoundError:
        print(f"no {path}: the agent has not run with this state_dir (or cannot write it); "
              "start it (systemctl start gearwatch-agent) and look at its log "
              "(journalctl -u gearwatch-agent)", file=sys.stderr)
        return 3
    except (OSError, ValueError) as e:
        print(f"cannot read {path}: {e}", file=sys.stderr)
        return 3
    if args.json:
        import json

        print(json.dumps(doc, indent=1))
    else:
        print(format_status(doc))
    return 1 if staleness(doc)[1] else 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Point the class's ACTIVE model back at the previous version; the agent follows."""
    from edge_agent.model_manager import rollback_files
    from models.bundle import BundleError

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"{args.config}: {e}", file=sys.stderr)
        return 2
    root = cfg.models.registry(cfg.agent.state_dir)
    classes = args.asset_class or list(cfg.schemas())
    done = 0
    for name in classes:
        try:
            old, new = rollback_files(root, name, args.to)
        except BundleError as e:
            if args.asset_class:
                print(f"gearwatch agent rollback: {e}", file=sys.stderr)
                return 2
            continue
        print(f"{name}: {old} -> {new} (the running agent installs it within "
              f"{cfg.models.watch_interval_s:g} s; the next start uses it too)")
        done += 1
    if not done:
        print(f"gearwatch agent rollback: no asset class has a previous model in {root}",
              file=sys.stderr)
        return 2
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="run the edge agent")
    asub = p.add_subparsers(dest="agent_command", metavar="ACTION")
    r = asub.add_parser("run", help="run the agent in the foreground (systemd runs this)")
    r.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    r.set_defaults(func=cmd_run)
    c = asub.add_parser("check", help="validate a config file")
    c.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    c.set_defaults(func=cmd_check)
    s = asub.add_parser("status", help="what the running agent is doing now (from status.json)")
    s.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    s.add_argument("--state-dir", help="read STATE_DIR/status.json instead of the config's")
    s.add_argument("--json", action="store_true", help="print the raw status document")
    s.set_defaults(func=cmd_status)
    rb = asub.add_parser("rollback", help="return an asset class to its previous model version")
    rb.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    rb.add_argument("--class", dest="asset_class", action="append",
                    help="asset class (repeatable; default: every class with a previous model)")
    rb.add_argument("--to", help="a specific version from the registry instead of the previous")
    rb.set_defaults(func=cmd_rollback)
    p.set_defaults(func=lambda a: (p.print_help(file=sys.stderr), 2)[1])
