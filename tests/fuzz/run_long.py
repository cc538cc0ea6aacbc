"""Long fuzzing: every target of tests/fuzz in turn, each for up to `--seconds` (or until it
has run `--examples`), at low priority; prints the examples run per target.

    .venv/bin/python tests/fuzz/run_long.py --seconds 60 [--examples 200000] [-k sparkplug]

(`make fuzz` runs it.)  A failure is reported with hypothesis' reproduction and kept in
`.hypothesis/`, so the normal suite replays it first from then on.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def targets(select: str | None) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
         "tests/fuzz", *(["-k", select] if select else [])],
        cwd=ROOT, capture_output=True, text=True).stdout
    # the property tests (counted ones run under @given); plain regressions need no long run
    return [ln for ln in out.splitlines() if "::test_" in ln and "regression" not in ln]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="per target")
    ap.add_argument("--examples", type=int, default=200_000, help="per target, at most")
    ap.add_argument("-k", dest="select", help="pytest -k expression")
    args = ap.parse_args()
    counts: dict[str, int] = {}
    failed: list[str] = []
    for node in targets(args.select):
        with tempfile.NamedTemporaryFile(suffix=".json") as rep:
            env = {**os.environ, "GEARWATCH_FUZZ_EXAMPLES": str(args.examples),
                   "GEARWATCH_FUZZ_REPORT": rep.name}
            proc = subprocess.Popen(
                ["nice", "-n", "10", sys.executable, "-m", "pytest", "-q", "-p",
                 "no:cacheprovider", "-o", "timeout=0", node], cwd=ROOT, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                log, _ = proc.communicate(timeout=args.seconds)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)  # time is up: stop it, keep what it counted
                try:
                    log, _ = proc.communicate(timeout=10)
                except subprocess.TimeoutExpired:  # (a shrink or a C call may ignore SIGINT)
                    proc.kill()
                    log, _ = proc.communicate()
                log = log.replace("KeyboardInterrupt", "stopped at the time limit")
            text = Path(rep.name).read_text()
            n = sum(json.loads(text).values()) if text.strip() else 0
        counts[node] = n
        bad = "Falsifying example" in log or "\nFAILED " in log
        if bad:
            failed.append(node)
            print(log[-4000:])
        print(f"{n:>9}  {node}{'  FAILED' if bad else ''}", flush=True)
    print(f"{sum(counts.values()):>9}  total over {len(counts)} targets")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
