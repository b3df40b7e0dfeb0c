"""Vectorized Gymnasium environments and their presets (imports gymnasium and numpy only)."""
