"""Publish gate of scheduled retraining: is the candidate model not worse than the running one?

Both are `metrics.json` files written by `gearwatch train evaluate` on the same history and
labelled events (`overall.f1`, `overall.events.found`, `overall.events.false_events`, ...).
Not worse means: no labelled event that the running model found is lost, the F1 score is no
lower than the running model's minus a tolerance, and, when there are no labelled events to
judge by, no more false events.  No running model: the candidate only needs to be sane
(it produced metrics).

    python -m gearwatch.retrain_gate candidate/metrics.json --running running/metrics.json

Exit status 0: publish; 1: keep the running model; 2: unreadable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Verdict:
    publish: bool
    reason: str


def _overall(m: dict[str, Any]) -> dict[str, Any]:
    o = m.get("overall")
    if not isinstance(o, dict):
        raise ValueError("no 'overall' section: is this a `gearwatch train evaluate` "
                         "metrics.json?")
    return o


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) else None


def decide(candidate: dict[str, Any], running: dict[str, Any] | None,
           tolerance: float = 0.0) -> Verdict:
    c = _overall(candidate)
    if running is None:
        return Verdict(True, "no running model: publishing the first one")
    r = _overall(running)
    ce, re_ = c.get("events", {}), r.get("events", {})
    labelled = int(ce.get("labelled_events") or 0)
    c_found, r_found = int(ce.get("found") or 0), int(re_.get("found") or 0)
    c_false, r_false = int(ce.get("false_events") or 0), int(re_.get("false_events") or 0)
    c_f1, r_f1 = _num(c.get("f1")), _num(r.get("f1"))
    facts = (f"events found {c_found} vs {r_found} of {labelled}, false events {c_false} vs "
             f"{r_false}, F1 {c_f1} vs {r_f1}")
    if c_found < r_found:
        return Verdict(False, f"candidate misses labelled events the running model finds ({facts})")
    if labelled > 0 and c_f1 is not None and r_f1 is not None:
        if c_f1 < r_f1 - tolerance:
            return Verdict(False, f"candidate F1 is lower by more than {tolerance:g} ({facts})")
        return Verdict(True, f"candidate is not worse ({facts})")
    if labelled > 0 and c_f1 is None and r_f1 is not None:
        return Verdict(False, f"candidate has no F1 where the running model has one ({facts})")
    if c_false > r_false:
        return Verdict(False, f"no labelled events to judge by and the candidate raises more "
                       f"false events ({facts})")
    return Verdict(True, f"candidate is not worse ({facts})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gearwatch.retrain_gate",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("candidate", help="the candidate's metrics.json")
    p.add_argument("--running", help="the running model's metrics.json (none: first model)")
    p.add_argument("--tolerance", type=float, default=0.0, help="allowed F1 drop")
    args = p.parse_args(argv)
    try:
        cand = json.loads(Path(args.candidate).read_text())
        run = json.loads(Path(args.running).read_text()) if args.running else None
        v = decide(cand, run, args.tolerance)
    except (OSError, ValueError) as e:
        print(f"retrain gate: cannot judge: {e}", file=sys.stderr)
        return 2
    print(("PUBLISH: " if v.publish else "KEEP: ") + v.reason)
    return 0 if v.publish else 1


if __name__ == "__main__":
    sys.exit(main())
