"""Choosing between batched and sequential execution of a dual-direction step.

batched: one UNet call holds forward and backward chunks; each rotating layer
    consumes the forward maps it just computed, so no map outlives a layer call.
sequential: a forward call (capturing the maps of every rotating layer) then a
    backward call; half the activation batch, plus the maps held in between.

auto picks batched when its estimate (times ComfyUI's head-room factor) fits the
device's free memory. The environment variable SVD_INBETWEEN_MEMORY_BUDGET_MB
caps what auto treats as free (in MiB), e.g. to keep head-room on a shared GPU
or to exercise the sequential fall-back on a CPU.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import comfy.model_management
import comfy.utils

from ..attention_patch.rotation import map_bytes

log = logging.getLogger(__name__)

EXECUTIONS = ("auto", "batched", "sequential")
# ComfyUI's own head-room factor when it decides how many conds to batch.
MEMORY_MARGIN = 1.5
BUDGET_ENV = "SVD_INBETWEEN_MEMORY_BUDGET_MB"


class MemoryBudgetError(ValueError):
    pass


def memory_budget_bytes() -> float | None:
    """The cap from SVD_INBETWEEN_MEMORY_BUDGET_MB in bytes, or None when it is unset or empty."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    if not raw:
        return None
    try:
        mib = float(raw)
    except ValueError:
        mib = math.nan
    if not (math.isfinite(mib) and mib >= 0):
        raise MemoryBudgetError(f"{BUDGET_ENV}={raw!r}: expected a number of MiB >= 0 (e.g. 8000), or unset it")
    return mib * 2**20


@dataclass(frozen=True)
class MemoryEstimate:
    batched: float      # bytes for one call of 4 chunks
    sequential: float   # bytes for one call of 2 chunks plus the maps held between calls
    maps: int           # bytes of maps captured in sequential execution


def choose_execution(requested: str, free_bytes: float, estimate: MemoryEstimate) -> str:
    """`requested` unless it is auto; auto is batched if it fits min(free, budget), else sequential (logged)."""
    if requested != "auto":
        return requested
    budget = memory_budget_bytes()
    available = free_bytes if budget is None else min(free_bytes, budget)
    if estimate.batched * MEMORY_MARGIN < available:
        return "batched"
    limit = "free" if budget is None or budget >= free_bytes else f"allowed by {BUDGET_ENV}"
    log.info("SVD inbetween: batched execution needs ~%.1f MiB, %.1f MiB %s; running sequentially",
             estimate.batched * MEMORY_MARGIN / 2**20, available / 2**20, limit)
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
