"""LSTM autoencoder over sensor windows, plus the input normalisation and masked error it needs.

Shapes: windows are (batch, window, sensors) in the schema's sensor order, raw units, NaN for
a missing sensor.  `Normalizer` maps raw values to per-sensor z-units fitted on training data;
`prepare` turns a window into the model input (NaN -> 0, the normalised mean, plus a mask
channel so the model knows the value is absent) and `masked_sq_error` gives the squared
reconstruction error with masked entries *excluded* (0 there, and counted out of any mean) —
a missing sensor is never scored as if it read its mean.

Both the trainer and the agent's `BatchedAEScorer` go through `window_errors`, so training,
evaluation and live scoring compute exactly the same numbers.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class AEConfig:
    """Architecture and scoring choices; stored in the bundle manifest under `model`."""

    n_sensors: int
    window: int
    hidden: tuple[int, ...] = (64,)
    latent: int = 16
    # Steps at the end of the window whose error makes the score.  The newest rows are what
    # the agent decides about (lowest alarm latency); averaging a few of them damps the noise
    # of a single step.  See `window_errors`.
    score_steps: int = 5
    kind: str = field(default="lstm_ae_v1")

    def __post_init__(self) -> None:
        if self.n_sensors < 1 or self.window < 2 or self.latent < 1 or not self.hidden:
            raise ValueError(f"invalid AEConfig {self}")
        if not 1 <= self.score_steps <= self.window:
            raise ValueError(f"score_steps must be in 1..window ({self.window})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AEConfig:
        if d.get("kind", "lstm_ae_v1") != "lstm_ae_v1":
            raise ValueError(f"unknown model kind {d.get('kind')!r}")
        return cls(
            n_sensors=int(d["n_sensors"]),
            window=int(d["window"]),
            hidden=tuple(int(h) for h in d["hidden"]),
            latent=int(d["latent"]),
            score_steps=int(d.get("score_steps", 1)),
        )


@dataclass(frozen=True)
class Normalizer:
    """Per-sensor center/scale fitted on normal training rows (NaN-aware)."""

    center: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, rows: np.ndarray) -> Normalizer:
        rows = np.asarray(rows, np.float64)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(rows)
        if not ok.any(axis=0).all():
            bad = np.flatnonzero(~ok.any(axis=0)).tolist()
            raise ValueError(f"cannot normalise: sensor columns {bad} have no finite value")
        x = np.where(ok, rows, np.nan)
        center = np.nanmean(x, axis=0)
        scale = np.nanstd(x, axis=0)
        # a constant sensor gets unit scale so any change from its value is visible, not inf
        floor = 1e-6 * np.maximum(np.abs(center), 1.0)
        scale = np.where(scale > floor, scale, 1.0)
        return cls(center.astype(np.float32), scale.astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float32) - self.center) / self.scale).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"center": self.center.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        return cls(np.asarray(d["center"], np.float32), np.asarray(d["scale"], np.float32))


class LSTMAutoencoder(nn.Module):
    """Encoder LSTMs -> latent vector -> repeated over the window -> decoder LSTMs -> sensors.

    Input has 2*n_sensors channels: normalised values (0 where missing) and a present-mask.
    """

    def __init__(self, cfg: AEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n = cfg.n_sensors
        enc_sizes = [2 * n, *cfg.hidden]
        self.encoder = nn.ModuleList(
            nn.LSTM(a, b, batch_first=True) for a, b in itertools.pairwise(enc_sizes)
        )
        self.to_latent = nn.Linear(cfg.hidden[-1], cfg.latent)
        dec_sizes = [cfg.latent, *reversed(cfg.hidden)]
        self.decoder = nn.ModuleList(
            nn.LSTM(a, b, batch_first=True) for a, b in itertools.pairwise(dec_sizes)
        )
        self.head = nn.Linear(cfg.hidden[0], n)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        h = inp
        for lstm in self.encoder:
            h, _ = lstm(h)
        z = self.to_latent(h[:, -1, :])
        h = z.unsqueeze(1).expand(-1, inp.shape[1], -1)
        for lstm in self.decoder:
            h, _ = lstm(h)
        out: torch.Tensor = self.head(h)
        return out


def prepare(x_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised windows with NaN -> (model input, target with NaN->0, present-mask as float)."""
    mask = torch.isfinite(x_norm)
    target = torch.where(mask, x_norm, torch.zeros((), dtype=x_norm.dtype, device=x_norm.device))
    maskf = mask.to(x_norm.dtype)
    return torch.cat([target, maskf], dim=-1), target, maskf


def masked_sq_error(recon: torch.Tensor, target: torch.Tensor, maskf: torch.Tensor) -> torch.Tensor:
    """Squared error per entry; exactly 0 on masked entries (callers divide by the mask count)."""
    return (recon - target).pow(2) * maskf


def masked_loss(model: LSTMAutoencoder, x_norm: torch.Tensor) -> torch.Tensor:
    """Training loss: mean squared error over present entries only."""
    inp, target, maskf = prepare(x_norm)
    err = masked_sq_error(model(inp), target, maskf)
    return err.sum() / maskf.sum().clamp_min(1.0)


def window_errors(
    model: LSTMAutoencoder, x_norm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window raw score and per-sensor error over the last `score_steps` steps.

    Returns (raw (B,), sensor_err (B, S)).  sensor_err is the mean squared error of each
    sensor over its present entries in the scored steps (NaN when the sensor is absent in all
    of them); raw is the mean of sensor_err over present sensors, so a missing sensor neither
    adds nor dilutes error.  Shares are sensor_err / sum(sensor_err).
    """
    k = model.cfg.score_steps
    inp, target, maskf = prepare(x_norm)
    recon = model(inp)
    err = masked_sq_error(recon[:, -k:], target[:, -k:], maskf[:, -k:])
    count = maskf[:, -k:].sum(dim=1)
    sensor_err = err.sum(dim=1) / count.clamp_min(1.0)
    present = count > 0
    sensor_err = torch.where(present, sensor_err, torch.full_like(sensor_err, float("nan")))
    n_present = present.sum(dim=1)
    raw = torch.nan_to_num(sensor_err, nan=0.0).sum(dim=1) / n_present.clamp_min(1)
    raw = torch.where(n_present > 0, raw, torch.full_like(raw, float("nan")))
    return raw, sensor_err


def sensor_shares(sensor_err: np.ndarray) -> np.ndarray:
    """Each present sensor's share of the error (rows sum to 1); NaN for absent sensors."""
    total = np.nansum(sensor_err, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = sensor_err / total
    # all-zero error (a perfect reconstruction): split evenly over present sensors
    even = np.where(np.isnan(sensor_err), np.nan, 1.0) / np.sum(~np.isnan(sensor_err), -1,
                                                                keepdims=True).clip(1)
    return np.where(total > 0, shares, even)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cpu"/"cuda"/"cuda:N" as given."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    return dev


def score_windows(
    model: LSTMAutoencoder,
    normalizer: Normalizer,
    windows: np.ndarray,
    device: str | torch.device = "cpu",
    batch_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Stateless scoring of raw-unit windows (B, W, S) -> (raw (B,), sensor_err (B, S))."""
    dev = resolve_device(device)
    raws, errs = [], []
    model = model.to(dev).eval()
    with torch.inference_mode():
        for i in range(0, len(windows), batch_size):
            x = torch.from_numpy(normalizer.apply(windows[i : i + batch_size])).to(dev)
            r, e = window_errors(model, x)
            raws.append(r.cpu().numpy())
            errs.append(e.cpu().numpy())
    if not raws:
        return np.empty(0), np.empty((0, normalizer.center.size))
    return np.concatenate(raws).astype(np.float64), np.concatenate(errs).astype(np.float64)
