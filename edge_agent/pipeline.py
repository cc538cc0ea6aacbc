"""The agent's middle, free of I/O: samples -> framer -> scorers -> fusion -> events.

Sources feed `ingest`; the service calls `advance` on a timer and hands the output to sinks.
Everything here works on arrays of one asset class at a time.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.assets import AssetRegistry
from edge_agent.batch import SampleBatch
from edge_agent.config import AgentConfig
from edge_agent.events import EventTracker, Transition
from edge_agent.framer import NO_TS, ClassFramer, Rows
from edge_agent.rules import Suppression
from edge_agent.scoring.base import Scores
from edge_agent.scoring.mahalanobis import MahalanobisScorer
from edge_agent.scoring.river_scorer import RiverScorer
from models.schema import AssetSchema

if TYPE_CHECKING:
    from models.ae_scorer import BatchedAEScorer
    from models.bundle import Bundle

# Fusion: both detectors give a calibrated surprise s = -log10 P(normal >= x).  The fused score
# is the larger one, less log10(2) when both have a verdict: by Bonferroni P(max >= s) <= 2 *
# 10**-s, so the fused score is itself a (conservative) surprise on the same scale, and one
# threshold keeps meaning "this rare under normal operation" with one detector or two.  The
# sensors to blame come from whichever detector scored higher.
LOG10_2 = math.log10(2.0)


def fuse(online: np.ndarray, online_shares: np.ndarray, ae: np.ndarray, ae_shares: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray]:
    """(fused score, shares) per row; NaN only where neither detector has a verdict yet."""
    both = np.isfinite(online) & np.isfinite(ae)
    with np.errstate(invalid="ignore"):
        fused = np.fmax(online, ae)
        fused = np.where(both, np.maximum(fused - LOG10_2, 0.0), fused)
        use_ae = np.isfinite(ae) & ~(online > ae)
    shares = np.where(use_ae[:, None], ae_shares, online_shares)
    return fused, shares


@dataclass(slots=True)
class ClassOutput:
    asset_class: str
    rows: Rows
    scores: dict[str, Scores]  # by scorer name
    fused: np.ndarray
    shares: np.ndarray
    transitions: list[Transition]
    off: np.ndarray | None = None  # off, in maintenance or with a lost source


@dataclass(slots=True)
class Scored:
    """One class's framed and scored rows, before events and learning."""

    rows: Rows
    scores: dict[str, Scores]
    fused: np.ndarray
    shares: np.ndarray
    off: np.ndarray


@dataclass
class ClassPipeline:
    schema: AssetSchema
    members: np.ndarray  # agent-wide asset indices, in local order
    framer: ClassFramer
    river: RiverScorer | MahalanobisScorer
    events: EventTracker
    learn_below: float = 2.5
    last_off_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    suppression: Suppression | None = None
    ae: BatchedAEScorer | None = None  # the learned model, once a bundle is installed
    base_schema: AssetSchema | None = None  # the configured schema (a bundle may add off rules)
    # held while scoring (the agent scores in a worker thread): a model swap waits for it
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.base_schema is None:
            self.base_schema = self.schema

    def install_model(self, bundle: Bundle, device: str = "auto", stride: int = 1) -> None:
        """Swap in a verified bundle's model between two ticks, keeping the rows it needs."""
        import torch

        from models.ae_scorer import BatchedAEScorer

        scorer = BatchedAEScorer.from_bundle(bundle, n_assets=len(self.members), device=device,
                                             stride=stride)
        if scorer.device.type == "cpu":
            # one intra-op thread: the MQTT and event-loop threads need a core too, and
            # OpenMP's barriers collapse when a sibling core is busy (2 cores under load:
            # 2 threads 765 windows/s at batch 64, 1 thread 7,300)
            torch.set_num_threads(1)
        with self.lock:
            self._swap_in(scorer, bundle)

    def _swap_in(self, scorer: BatchedAEScorer, bundle: Bundle) -> None:
        if self.ae is not None:
            # another window or sensor set: the new model fills its own windows
            with contextlib.suppress(ValueError):
                scorer.copy_windows_from(self.ae)
        self.ae = scorer
        self.events.model_version = bundle.version
        base = self.base_schema or self.schema
        self.schema = replace(base, off_condition=bundle.schema.off_condition
                              or base.off_condition)

    def _score_ae(self, rows: Rows, off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Push the rows of running machines into the windows and score them: every row of
        the burst (several ticks per asset after a batched payload) in one batched forward."""
        ae = self.ae
        assert ae is not None
        if off.any():  # a stop or planned work: start a fresh window when the machine runs
            ae.reset(np.unique(rows.asset[off]))
        out = ae.score_rows(rows.asset, rows.values, skip=off)
        return out.score, out.shares

    def _off(self, rows: Rows) -> np.ndarray:
        """Rows where the machine is off, or within the grace period after a restart."""
        oc = self.schema.off_condition
        if oc is None:
            return np.zeros(len(rows), bool)
        off = oc.mask(rows.values, self.schema.sensor_names)
        if oc.grace_s <= 0:
            return off
        if self.last_off_ns.size != len(self.members):
            self.last_off_ns = np.full(len(self.members), NO_TS, np.int64)
        # newest off tick at or before each row, per asset (rows are in time order per asset)
        marks = np.where(off, rows.ts_ns, NO_TS)
        order = np.lexsort((rows.ts_ns, rows.asset))
        a_o, m_o = rows.asset[order], marks[order]
        prev = self.last_off_ns[a_o]
        seg_start = np.r_[True, a_o[1:] != a_o[:-1]]
        idx = np.where(seg_start | (m_o != NO_TS), np.arange(a_o.size), 0)
        np.maximum.accumulate(idx, out=idx)
        running = np.where(m_o[idx] != NO_TS, m_o[idx], prev)
        last_off = np.empty_like(running)
        last_off[order] = running
        np.maximum.at(self.last_off_ns, rows.asset, last_off)
        in_grace = (last_off != NO_TS) & (rows.ts_ns - last_off <= round(oc.grace_s * 1e9))
        return off | in_grace
    def step(self, wall_ns: int) -> ClassOutput | None:
        sc = self.score(wall_ns)
        return None if sc is None else self.finish(sc)

    def score(self, wall_ns: int) -> Scored | None:
        """Frame and score; no event state is touched, so this half may run off the loop
        (`install_model` waits for it: `lock`)."""
        with self.lock:
            rows = self.framer.advance(wall_ns)
            if len(rows) == 0:
                return None
            sc = self.river.score(rows.asset, rows.values)
            off = self._off(rows)
            if self.suppression is not None:  # planned work, lost source: like "off"
                off = off | self.suppression.mask(self.events.ids, rows.asset, rows.ts_ns,
                                                  rows.values)
            scores = {"river": sc}
            fused, shares = sc.score, sc.shares
            if self.ae is not None:
                ae_score, ae_shares = self._score_ae(rows, off)
                scores["ae"] = Scores(ae_score, ae_score, ae_shares)
                fused, shares = fuse(sc.score, sc.shares, ae_score, ae_shares)
            return Scored(rows, scores, fused, shares, off)

    def finish(self, s: Scored) -> ClassOutput:
        """Events, then learning from the rows that look normal (in order, after `score`)."""
        rows, fused = s.rows, s.fused
        transitions, normal = self.events.step(
            rows.asset, rows.ts_ns, fused, s.shares, s.off,
            {k: v.score for k, v in s.scores.items()})
        # learn only from rows that look normal: a slowly growing fault must not be absorbed
        with np.errstate(invalid="ignore"):
            normal &= ~(fused >= self.learn_below)
        self.river.learn(rows.asset, rows.values, normal, s.scores["river"])
        return ClassOutput(self.schema.asset_class, rows, s.scores, fused, s.shares,
                           transitions, s.off)


def make_online_scorer(
    cfg: AgentConfig, schema: AssetSchema, n: int
) -> RiverScorer | MahalanobisScorer:
    sc = cfg.scoring
    if sc.online_detector == "mahalanobis":
        return MahalanobisScorer(schema, n, sc.half_life_rows, sc.warmup_rows,
                                 sc.calibration_rows, seed=sc.seed)
    kind = "loda" if sc.online_detector == "river_loda" else "half_space_trees"
    return RiverScorer(schema, n, kind, sc.river_cuts, sc.river_trees, sc.river_height,
                       sc.river_window, sc.warmup_rows, sc.calibration_rows, sc.seed)


@dataclass
class Pipeline:
    registry: AssetRegistry
    classes: dict[str, ClassPipeline] = field(default_factory=dict)
    suppression: Suppression = field(default_factory=Suppression)

    @classmethod
    def from_config(cls, cfg: AgentConfig, registry: AssetRegistry) -> Pipeline:
        p = cls(registry)
        for name, schema in registry.classes.items():
            members = registry.members[name]
            ids = [registry.infos[i].asset_id for i in members]
            ev = cfg.events
            p.classes[name] = ClassPipeline(
                schema=schema,
                members=members,
                framer=ClassFramer(schema, len(members), cfg.framer.lateness_periods,
                                   cfg.framer.max_catchup_ticks),
                river=make_online_scorer(cfg, schema, len(members)),
                events=EventTracker(ids, name, schema.sensor_names, ev.open_threshold,
                                    ev.close_threshold, ev.min_duration_ticks,
                                    ev.min_clear_ticks, ev.top_sensors),
                learn_below=ev.close_threshold,
                suppression=p.suppression,
            )
        return p

    def ingest(self, batch: SampleBatch, wall_ns: int | None = None) -> None:
        if len(batch) == 0:
            return
        wall = time.monotonic_ns() if wall_ns is None else wall_ns
        if len(self.classes) == 1:
            cp = next(iter(self.classes.values()))
            local = self.registry.local_index[batch.asset]
            cp.framer.ingest(local, batch.sensor, batch.ts_ns, batch.value, wall)
            return
        class_of = np.array([self.registry.class_of[i] for i in range(len(self.registry))])
        cls_per_sample = class_of[batch.asset]
        for name, cp in self.classes.items():
            m = cls_per_sample == name
            if m.any():
                local = self.registry.local_index[batch.asset[m]]
                cp.framer.ingest(local, batch.sensor[m], batch.ts_ns[m], batch.value[m], wall)

    def advance(self, wall_ns: int | None = None) -> list[ClassOutput]:
        return self.finish(self.score(wall_ns))

    def score(self, wall_ns: int | None = None) -> list[tuple[str, Scored]]:
        """The framing and scoring half of `advance`: numpy and torch, no event state, so the
        agent runs it in a worker thread (torch and most numpy release the GIL) while the event
        loop writes and the MQTT thread decodes.  Call `finish` with the result, in order,
        before the next `ingest`/`score`."""
        wall = time.monotonic_ns() if wall_ns is None else wall_ns
        out = []
        for name, cp in self.classes.items():
            sc = cp.score(wall)
            if sc is not None:
                out.append((name, sc))
        return out

    def finish(self, scored: list[tuple[str, Scored]]) -> list[ClassOutput]:
        return [self.classes[name].finish(sc) for name, sc in scored]
