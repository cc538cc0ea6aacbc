"""The agent's middle, free of I/O: samples -> framer -> scorers -> fusion -> events.

Sources feed `ingest`; the service calls `advance` on a timer and hands the output to sinks.
Everything here works on arrays of one asset class at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
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

if TYPE_CHECKING:  # torch is imported only where a bundle is loaded
    from models.ae_scorer import BatchedAEScorer


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
    ae: BatchedAEScorer | None = None  # the class's LSTM-AE, when a bundle is loaded

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
        """Frame and score (no event state is touched: this half may run off the loop)."""
        rows = self.framer.advance(wall_ns)
        if len(rows) == 0:
            return None
        machine_off = self._off(rows)
        off = machine_off
        if self.suppression is not None:  # planned work, lost source: like "off"
            off = off | self.suppression.mask(self.events.ids, rows.asset, rows.ts_ns,
                                              rows.values)
        sc = self.river.score(rows.asset, rows.values)
        scores = {"river": sc}
        fused, shares = sc.score, sc.shares
        if self.ae is not None:
            # every row of the burst through one batched forward; off rows are not pushed
            a = self.ae.score_rows(rows.asset, rows.values, skip=machine_off)
            ae = Scores(a.raw, a.score, a.shares)
            scores["ae"] = ae
            # both scores are on one calibrated scale: the more surprised detector speaks
            with np.errstate(invalid="ignore"):
                by_ae = (ae.score > sc.score) | (np.isnan(sc.score) & ~np.isnan(ae.score))
            fused = np.where(by_ae, ae.score, sc.score)
            shares = np.where(by_ae[:, None], ae.shares, sc.shares)
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

    def attach_ae(self, asset_class: str, scorer: BatchedAEScorer, version: str,
                  cpu_threads: int | None = 1) -> None:
        """Score `asset_class` with an LSTM-AE too (one scorer for all its assets, local order);
        the hook the model registry uses once a verified bundle is loaded.

        On the CPU the forward pass gets `cpu_threads` intra-op threads (process-wide; None
        leaves torch's default, one per core): the agent's MQTT and event-loop threads need a
        core too, and OpenMP's barriers collapse when a sibling core is busy (measured on 2
        cores under load: 2 threads 765 windows/s at batch 64, 1 thread 7,300).
        """
        cp = self.classes[asset_class]
        if cpu_threads is not None and scorer.device.type == "cpu":
            import torch

            torch.set_num_threads(cpu_threads)
        if scorer.cfg.n_sensors != cp.schema.n_sensors:
            raise ValueError(f"model has {scorer.cfg.n_sensors} sensors, class "
                             f"{asset_class} has {cp.schema.n_sensors}")
        if scorer.n_assets != len(cp.members):
            scorer.resize(len(cp.members))
        if cp.ae is not None and (cp.ae.cfg.window, cp.ae.cfg.n_sensors) == (
                scorer.cfg.window, scorer.cfg.n_sensors):
            scorer.copy_windows_from(cp.ae)
        cp.ae = scorer
        cp.events.model_version = version

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
