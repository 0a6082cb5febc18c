"""Backward-motion weights: the pack's compact format, loading and validation."""
