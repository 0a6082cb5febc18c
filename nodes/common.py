"""Shared schema pieces for the pack's nodes."""
from __future__ import annotations

CATEGORY = "SVD Inbetween"
MODEL_FOLDER = "svd_inbetween"
