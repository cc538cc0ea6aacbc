"""A fleet of centrifugal pumps driven by induction motors, simulated together as arrays.

Physics, simply but coupled: the affinity laws set head and power from speed; the operating
point is where the pump curve meets the system curve of a valve that demand moves; motor
current follows shaft power; bearing and winding temperatures are first-order lags towards
loss-driven steady states; vibration grows with speed squared.  Demand changes the speed and
valve every few minutes and now and then stops a pump, so normal is never a constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.catalog import CENTRIFUGAL_PUMP
from simulators.faults import Fault

SENSORS = CENTRIFUGAL_PUMP.sensor_names
_IDX = {n: i for i, n in enumerate(SENSORS)}

RATED_RPM = 1780.0
AMBIENT_C = 25.0
RHO_G = 9810.0  # water, N/m^3
VOLTAGE = 400.0
POWER_FACTOR = 0.87
NO_LOAD_A = 12.0


@dataclass
class PumpParams:
    head0_m: float = 62.0  # shut-off head at rated speed
    a: float = 0.0012  # pump curve droop, m per (m3/h)^2
    static_head_m: float = 12.0
    c0: float = 0.0016  # system resistance with the valve fully open
    efficiency: float = 0.74
    suction_bar: float = 2.0


class PumpFleet:
    """N pumps stepped together; `step()` returns an (N, 9) array in the schema's sensor order."""

    def __init__(
        self,
        asset_ids: list[str],
        seed: int = 0,
        dt_s: float = 1.0,
        faults: list[Fault] | None = None,
        stop_probability: float = 0.06,
        change_every_s: tuple[float, float] = (90.0, 300.0),
    ) -> None:
        self.ids = list(asset_ids)
        self.n = len(self.ids)
        self.dt = dt_s
        self.t = 0.0
        self.rng = np.random.default_rng(seed)
        self.p = PumpParams()
        self.faults = list(faults or [])
        for f in self.faults:
            if f.asset not in self.ids:
                raise ValueError(f"fault on unknown asset {f.asset!r}; assets are {self.ids}")
        self._fault_idx = [self.ids.index(f.asset) for f in self.faults]
        self.stop_probability = stop_probability
        self.change_every = change_every_s
        n = self.n
        r = self.rng
        # per-pump manufacturing spread, so pumps are alike but not identical
        self.spread = 1.0 + 0.03 * r.standard_normal((n, 4))
        self.speed = r.uniform(1400, RATED_RPM, n)
        self.target = self.speed.copy()
        self.valve = r.uniform(0.55, 1.0, n)
        self.valve_target = self.valve.copy()
        self.next_change = r.uniform(*self.change_every, n)
        self.stop_until = np.full(n, -1.0)
        self.stuck: dict[int, float] = {}
        out = self._physics(np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n))
        self.bearing_c = out["bearing_ss"]
        self.winding_c = out["winding_ss"]

    def _levels(self, kind: str) -> np.ndarray:
        lv = np.zeros(self.n)
        for f, i in zip(self.faults, self._fault_idx, strict=True):
            if f.kind == kind:
                lv[i] = max(lv[i], f.level(self.t))
        return lv

    def _physics(
        self, bearing: np.ndarray, cav: np.ndarray, imb: np.ndarray, noise_scale: np.ndarray
    ) -> dict[str, np.ndarray]:
        p = self.p
        ratio = np.clip(self.speed / RATED_RPM, 0.0, 1.2)
        head_avail = p.head0_m * self.spread[:, 0] * ratio**2 - p.static_head_m
        resistance = p.a + p.c0 / np.maximum(self.valve, 0.05) ** 2
        flow = np.sqrt(np.maximum(head_avail, 0.0) / resistance)  # m3/h
        flow = flow * (1.0 - 0.18 * cav)
        head = p.head0_m * self.spread[:, 0] * ratio**2 - p.a * flow**2
        head = np.maximum(head, 0.0) * (1.0 - 0.12 * cav)
        suction = p.suction_bar * self.spread[:, 1] - 2e-5 * flow**2 - 1.1 * cav
        discharge = suction + RHO_G * head / 1e5
        hyd_kw = RHO_G * (flow / 3600.0) * head / 1000.0
        shaft_kw = hyd_kw / (p.efficiency * self.spread[:, 2]) + 1.5 * ratio**3
        shaft_kw = shaft_kw * (1.0 + 0.04 * bearing + 0.03 * imb)
        running = self.speed > 50
        current = np.where(
            running, NO_LOAD_A * ratio + shaft_kw * 1000 / (np.sqrt(3) * VOLTAGE * POWER_FACTOR), 0
        )
        bearing_ss = AMBIENT_C + 22.0 * ratio**2 * self.spread[:, 3] + 28.0 * bearing + 6.0 * imb
        winding_ss = AMBIENT_C + 55.0 * (current / 45.0) ** 2
        vib_base = 1.1 * ratio**2
        vib_x = vib_base * self.spread[:, 3] + 2.8 * bearing + 4.5 * imb * ratio**2
        vib_y = 0.85 * vib_base + 2.2 * bearing + 1.6 * imb * ratio**2
        return {
            "flow": flow, "suction": suction, "discharge": discharge, "current": current,
            "bearing_ss": bearing_ss, "winding_ss": winding_ss, "vib_x": vib_x, "vib_y": vib_y,
        }

    def _demand(self) -> None:
        r = self.rng
        due = self.t >= self.next_change
        if due.any():
            k = int(due.sum())
            stop = r.random(k) < self.stop_probability
            idx = np.flatnonzero(due)
            self.target[idx] = np.where(stop, 0.0, r.uniform(1300, RATED_RPM, k))
            self.stop_until[idx] = np.where(stop, self.t + r.uniform(40, 120, k), -1.0)
            self.valve_target[idx] = r.uniform(0.5, 1.0, k)
            self.next_change[idx] = self.t + r.uniform(*self.change_every, k)
        restart = (self.stop_until > 0) & (self.t >= self.stop_until)
        if restart.any():
            k = int(restart.sum())
            self.target[restart] = r.uniform(1300, RATED_RPM, k)
            self.stop_until[restart] = -1.0
        # speed ramps at 250 rpm/s, the valve actuator at 5 %/s
        self.speed += np.clip(self.target - self.speed, -250 * self.dt, 250 * self.dt)
        self.valve += np.clip(self.valve_target - self.valve, -0.05 * self.dt, 0.05 * self.dt)

    def step(self) -> np.ndarray:
        """Advance one `dt` and return the sensor readings (N, 9)."""
        self.t += self.dt
        self._demand()
        bearing, cav, imb = (self._levels(k) for k in ("bearing_wear", "cavitation", "imbalance"))
        ph = self._physics(bearing, cav, imb, np.ones(self.n))
        a_b = 1.0 - np.exp(-self.dt / 150.0)
        a_w = 1.0 - np.exp(-self.dt / 400.0)
        self.bearing_c += a_b * (ph["bearing_ss"] - self.bearing_c)
        self.winding_c += a_w * (ph["winding_ss"] - self.winding_c)
        r = self.rng
        n = self.n
        cav_noise = cav * np.abs(r.standard_normal(n))
        out = np.empty((n, len(SENSORS)))
        # an encoder reads a stopped shaft as 0, never negative
        out[:, _IDX["speed_rpm"]] = np.maximum(self.speed + r.normal(0, 2.0, n), 0.0)
        out[:, _IDX["motor_current_a"]] = ph["current"] * (1 + r.normal(0, 0.006, n))
        out[:, _IDX["suction_pressure_bar"]] = (
            ph["suction"] + r.normal(0, 0.02, n) - 0.3 * cav_noise
        )
        out[:, _IDX["discharge_pressure_bar"]] = (
            ph["discharge"] + r.normal(0, 0.04, n) - 0.6 * cav_noise
        )
        out[:, _IDX["flow_m3h"]] = np.maximum(
            ph["flow"] * (1 + r.normal(0, 0.008, n)) - 6.0 * cav_noise, 0.0
        )
        out[:, _IDX["bearing_temp_c"]] = self.bearing_c + r.normal(0, 0.15, n)
        out[:, _IDX["vibration_x_mm_s"]] = np.abs(
            ph["vib_x"] + r.normal(0, 0.06, n) * (1 + bearing) + 1.5 * cav_noise
        )
        out[:, _IDX["vibration_y_mm_s"]] = np.abs(
            ph["vib_y"] + r.normal(0, 0.05, n) * (1 + bearing) + 1.0 * cav_noise
        )
        out[:, _IDX["winding_temp_c"]] = self.winding_c + r.normal(0, 0.2, n)
        self._sensor_faults(out)
        return out

    def _sensor_faults(self, out: np.ndarray) -> None:
        for k, (f, i) in enumerate(zip(self.faults, self._fault_idx, strict=True)):
            lv = f.level(self.t)
            col = _IDX[f.sensor] if f.sensor else -1
            if f.kind == "sensor_drift" and lv > 0:
                # severity 1 = a drift of 15 % of the sensor's reading
                out[i, col] *= 1.0 + 0.15 * lv
            elif f.kind == "stuck_sensor":
                if lv > 0:
                    out[i, col] = self.stuck.setdefault(k, float(out[i, col]))
                else:
                    self.stuck.pop(k, None)
