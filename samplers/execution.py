"""Choosing between batched and sequential execution of a dual-direction step.

batched: one UNet call holds forward and backward chunks; each rotating layer
    consumes the forward maps it just computed, so no map outlives a layer call.
sequential: a forward call (capturing the maps of every rotating layer) then a
    backward call; half the activation batch, plus the maps held in between.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import comfy.model_management
import comfy.utils

from ..attention_patch.rotation import map_bytes

log = logging.getLogger(__name__)

EXECUTIONS = ("auto", "batched", "sequential")
# ComfyUI's own head-room factor when it decides how many conds to batch.
MEMORY_MARGIN = 1.5


@dataclass(frozen=True)
class MemoryEstimate:
    batched: float      # bytes for one call of 4 chunks
    sequential: float   # bytes for one call of 2 chunks plus the maps held between calls
    maps: int           # bytes of maps captured in sequential execution


def choose_execution(requested: str, free_bytes: float, estimate: MemoryEstimate) -> str:
    if requested != "auto":
        return requested
    if estimate.batched * MEMORY_MARGIN < free_bytes:
        return "batched"
    log.info("SVD inbetween: batched execution needs ~%.0f MiB, %.0f MiB free; running sequentially",
             estimate.batched * MEMORY_MARGIN / 2**20, free_bytes / 2**20)
    return "sequential"


def spatial_factors(unet, paths: list[str]) -> dict[str, int]:
    """Downsampling factor of the activations each layer sees, from the UNet's own blocks."""
    factors: dict[str, int] = {}
    factor = 1
    for i, block in enumerate(unet.input_blocks):
        if any(type(m).__name__ == "Downsample" for m in block.modules()):
            factor *= 2
        for p in paths:
            if p.startswith(f"input_blocks.{i}."):
                factors[p] = factor
    for p in paths:
        if p.startswith("middle_block."):
            factors[p] = factor
    for i, block in enumerate(unet.output_blocks):
        for p in paths:
            if p.startswith(f"output_blocks.{i}."):
                factors[p] = factor
        if any(type(m).__name__ == "Upsample" for m in block.modules()):
            factor //= 2
    return factors


def estimate_memory(base_model, paths: list[str], rotating: frozenset[str], x) -> MemoryEstimate:
    frames, channels, height, width = x.shape[0], x.shape[1], x.shape[-2], x.shape[-1]
    unet = base_model.diffusion_model
    dtype = base_model.manual_cast_dtype or base_model.get_dtype()
    element = comfy.model_management.dtype_size(dtype)
    factors = spatial_factors(unet, paths)
    maps = 0
    for p in rotating:
        f = factors[p]
        rows = -(-height // f) * -(-width // f)
        maps += 2 * map_bytes(rows, comfy.utils.get_attr(unet, p).heads, frames, element)
    shape = [channels, height, width]
    return MemoryEstimate(batched=base_model.memory_required([4 * frames, *shape]),
                          sequential=base_model.memory_required([2 * frames, *shape]) + maps,
                          maps=maps)
