"""Offline trainer: history -> quality -> preprocess -> fit -> calibrate -> evaluate -> publish."""
