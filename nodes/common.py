"""Shared schema pieces for the pack's nodes."""
from __future__ import annotations

CATEGORY = "SVD Inbetween"
MODEL_FOLDER = "svd_inbetween"
LPIPS_FOLDER = "lpips"  # shared with other packs that read LPIPS backbones from ComfyUI/models/lpips
