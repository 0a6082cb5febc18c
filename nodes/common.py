"""Shared schema pieces for the pack's nodes."""
from __future__ import annotations

# The pack's menu: one folder per model family (a node that is not SVD's does not sit under SVD)
CATEGORY = "Inbetween/SVD"
WAN_CATEGORY = "Inbetween/Wan"
MODEL_FOLDER = "svd_inbetween"
LPIPS_FOLDER = "lpips"  # shared with other packs that read LPIPS backbones from ComfyUI/models/lpips
