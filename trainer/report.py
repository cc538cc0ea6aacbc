"""HTML evaluation report: one self-contained file, plots embedded as base64 PNG.

Per asset: calibrated score over time against the open/close thresholds, labelled spans
shaded, predicted events marked.  For the top events (highest peak score): each sensor's
mean share of the reconstruction error over the event — what an operator would look at.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from trainer.evaluate import AssetScores, EventRule


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _hours(a: AssetScores) -> np.ndarray:
    return (a.ts - a.ts[0]) / 3.6e12 if a.ts.size else a.ts.astype(float)


def score_plot(a: AssetScores, rule: EventRule) -> str:
    fig, ax = plt.subplots(figsize=(10, 2.4))
    h = _hours(a)
    d = np.diff(np.concatenate([[0], a.label.astype(np.int8), [0]]))
    for s, e in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True):
        ax.axvspan(h[s], h[e - 1], color="tab:red", alpha=0.15, lw=0)
    for s, e in a.events:
        ax.axvspan(h[s], h[e - 1], ymin=0.95, ymax=1.0, color="tab:orange", lw=0)
    ax.plot(h, a.score, lw=0.8, color="tab:blue")
    ax.axhline(rule.open_at, color="tab:red", ls="--", lw=0.8)
    ax.axhline(rule.close_below, color="tab:gray", ls=":", lw=0.8)
    ax.set_xlabel("hours from start")
    ax.set_ylabel("surprise")
    ax.set_title(f"asset {a.asset}: score (blue), labelled fault (shaded), events (orange)")
    return _png(fig)


def top_events(assets: list[AssetScores], n: int) -> list[tuple[float, AssetScores, int, int]]:
    found = []
    for a in assets:
        for s, e in a.events:
            found.append((float(np.nanmax(a.score[s:e])), a, int(s), int(e)))
    return sorted(found, key=lambda t: -t[0])[:n]


def contribution_plot(a: AssetScores, s: int, e: int, sensors: list[str], k: int = 10) -> str:
    share = np.nanmean(a.shares[s:e], axis=0)
    order = np.argsort(-np.nan_to_num(share, nan=-1))[:k]
    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.barh([sensors[i] for i in order][::-1], share[order][::-1], color="tab:purple")
    ax.set_xlabel("mean share of reconstruction error")
    return _png(fig)


def render_html(metrics: dict[str, Any], assets: list[AssetScores], sensors: list[str],
                rule: EventRule, title: str, max_assets: int = 40, n_events: int = 5) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             "</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "td,th{padding:2px 8px;text-align:right}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    rows = []
    for name, m in metrics["per_asset"].items():
        def f(x: Any) -> str:
            return "–" if x is None else f"{x:.3f}"
        ev = m["events"]
        rows.append(f"<tr><th>{html.escape(name)}</th><td>{f(m['f1'])}</td>"
                    f"<td>{f(m['precision'])}</td><td>{f(m['recall'])}</td>"
                    f"<td>{f(m['false_alarm_rate'])}</td><td>{f(m['missed_alarm_rate'])}</td>"
                    f"<td>{ev['found']}/{ev['labelled_events']}</td><td>{ev['false_events']}</td>"
                    "</tr>")
    parts.append("<h2>Per asset</h2><table><tr><th>asset</th><th>F1</th><th>precision</th>"
                 "<th>recall</th><th>false-alarm</th><th>missed-alarm</th><th>found</th>"
                 "<th>false events</th></tr>" + "".join(rows) + "</table>")
    overall = {k: v for k, v in metrics.items() if k.startswith("overall")}
    parts.append("<h2>Overall</h2><pre>" + html.escape(json.dumps(overall, indent=1)) + "</pre>")
    parts.append("<h2>Scores</h2>")
    for a in assets[:max_assets]:
        parts.append(f"<img alt='score {html.escape(a.asset)}' "
                     f"src='data:image/png;base64,{score_plot(a, rule)}'>")
    parts.append("<h2>Top events: sensor contributions</h2>")
    for peak, a, s, e in top_events(assets, n_events):
        parts.append(f"<h3>asset {html.escape(a.asset)}, rows {s}..{e - 1}, peak {peak:.1f}</h3>"
                     f"<img alt='contributions' src='data:image/png;base64,"
                     f"{contribution_plot(a, s, e, sensors)}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
