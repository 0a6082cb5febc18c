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


def choose_execution(requested: str, free_bytes: float, batched_bytes: float) -> str:
    """`requested` unless it is auto; auto is batched if it fits min(free, budget), else sequential (logged)."""
    if requested != "auto":
        return requested
    budget = memory_budget_bytes()
    available = free_bytes if budget is None else min(free_bytes, budget)
    if batched_bytes * MEMORY_MARGIN < available:
        return "batched"
    limit = "free" if budget is None or budget >= free_bytes else f"allowed by {BUDGET_ENV}"
    log.info("SVD inbetween: batched execution needs ~%.1f MiB, %.1f MiB %s; running sequentially",
             batched_bytes * MEMORY_MARGIN / 2**20, available / 2**20, limit)
    return "sequential"


def batched_memory(base_model, x) -> float:
    """ComfyUI's own estimate for one UNet call of the 4 videos of a step (what calc_cond_batch
    tests before it batches the four conds in one call)."""
    return base_model.memory_required([4 * x.shape[0], *x.shape[1:]])
