"""Hypothesis profiles of the fuzz suite, and the per-target example counts it reports.

- default (`gearwatch`): each target runs its CI budget (see `support.budget`), no deadline,
  examples kept in `.hypothesis/` (gitignored) so a failure found once is replayed first.
- `GEARWATCH_FUZZ_EXAMPLES=N` (or `HYPOTHESIS_PROFILE=fuzz`, N = 20000): every target runs
  about N examples times its weight; `make fuzz` does this and prints the counts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.fuzz import support

ROOT = Path(__file__).resolve().parents[2]

settings.register_profile(
    "gearwatch",
    deadline=None,
    derandomize=False,
    database=DirectoryBasedExampleDatabase(str(ROOT / ".hypothesis" / "examples")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("fuzz", parent=settings.get_profile("gearwatch"))
settings.load_profile("fuzz" if support.fuzzing() else "gearwatch")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts = support.COUNTS
    if not counts:
        return
    mode = f"fuzz, {support.fuzz_examples()} examples x weight" if support.fuzzing() else "ci"
    terminalreporter.section(f"fuzz targets: examples run ({mode})")
    for name, n in sorted(counts.items()):
        terminalreporter.write_line(f"{n:>9}  {name}")
    terminalreporter.write_line(f"{sum(counts.values()):>9}  total")
    if os.environ.get("GEARWATCH_FUZZ_REPORT"):
        support.write_report()
