"""Scorers: rows in, calibrated scores (common scale) and per-sensor shares out."""
