"""How the UNet calls of a dual-direction step are laid out, and which layout `auto` picks.

batched: one UNet call holds forward and backward chunks; each rotating layer
    consumes the forward maps it just computed, so no map outlives a layer call.
sequential: a forward call (capturing the maps of every rotating layer) then a
    backward call; half the activation batch, plus the maps held in between.
lowvram: one video per UNet call (forward cond, backward cond, forward uncond,
    backward uncond), and inside each call feed-forwards, spatial res-block layers and
    the rotating attention run over pieces of rows (attention_patch/chunking.py); one
    video's maps are held between a forward call and its partner. Same values as
    sequential, twice its UNet calls, the same FLOPs.

auto picks the fastest layout (batched, then sequential, then lowvram) whose estimated
peak fits the memory ComfyUI can give once it has loaded the model (its model patcher's
free memory where the host has one: 0.33+ also counts weights it can offload on demand).
Weights ComfyUI left offloaded (its lowvram mode) take no room; their per-layer copies do,
and are added. The estimate comes from the pack's meta-device tracer (bench/fullsize.py)
through a fit checked by tests/test_lowvram.py. SVD_INBETWEEN_MEMORY_BUDGET_MB caps what
auto treats as free (in MiB), e.g. to keep head-room on a shared GPU.

ComfyUI's calc_cond_batch splits a call whose generic estimate (memory_required, about 2x
the traced peak for SVD) times 1.5 exceeds free memory, which would quietly turn batched
into sequential on 16-24 GB cards. The guider makes its calls inside `calibrated_call`, where
the inbetween clone's memory_required (attention_patch/memory.py) answers with the pack's
estimate, and with ComfyUI's own everywhere else.
"""
from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING

from ..attention_patch import chunking, feedforward
from ..attention_patch.run_state import BACKWARD_COND, BACKWARD_UNCOND, FORWARD_COND, FORWARD_UNCOND, is_backward

if TYPE_CHECKING:
    from collections.abc import Collection

    import torch
    from comfy.model_patcher import ModelPatcher

log = logging.getLogger(__name__)

EXECUTIONS = ("auto", "batched", "sequential", "lowvram")
# Fastest first: what auto tries in order.
BY_SPEED = ("batched", "sequential", "lowvram")
BUDGET_ENV = "SVD_INBETWEEN_MEMORY_BUDGET_MB"
# Allocator rounding/fragmentation and kernel workspaces, which the tracer does not see.
HEADROOM_FACTOR = 1.10
HEADROOM_BYTES = 256 * 2**20
# Offloaded layers in flight at once while ComfyUI streams a partially loaded model.
STREAMED_LAYERS = 2


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


def call_groups(execution: str, present: list[int]) -> list[list[int]]:
    """Cond indices of each UNet call of one step, in call order (forward before its backward partner)."""
    if execution == "batched":
        groups = [list(present)]
    elif execution == "sequential":
        groups = [[i for i in present if not is_backward(i)], [i for i in present if is_backward(i)]]
    elif execution == "lowvram":
        order = (FORWARD_COND, BACKWARD_COND, FORWARD_UNCOND, BACKWARD_UNCOND)
        groups = [[i] for i in order if i in present]
    else:
        raise ValueError(f"execution must be one of {BY_SPEED} here, got {execution!r}")
    return [g for g in groups if g]


def needed_bytes(estimate: float) -> float:
    """What an execution needs free: its traced peak plus allocator and workspace head-room."""
    return estimate * HEADROOM_FACTOR + HEADROOM_BYTES


def choose_execution(requested: str, free_bytes: float, estimates: dict[str, float]) -> str:
    """`requested` unless it is auto; auto is the fastest execution whose needed_bytes fit
    min(free, budget), or lowvram when none does (logged with the numbers either way)."""
    if requested != "auto":
        return requested
    budget = memory_budget_bytes()
    available = free_bytes if budget is None else min(free_bytes, budget)
    limit = "free" if budget is None or budget >= free_bytes else f"allowed by {BUDGET_ENV}"
    need = {e: needed_bytes(estimates[e]) for e in BY_SPEED}
    fits = [e for e in BY_SPEED if need[e] <= available]
    picked = fits[0] if fits else BY_SPEED[-1]
    needs = ", ".join(f"{e} ~{need[e] / 2**20:.0f}" for e in BY_SPEED)
    if fits:
        log.info("SVD inbetween: auto execution runs %s (needs in MiB: %s; %.0f MiB %s)",
                 picked, needs, available / 2**20, limit)
    else:
        log.warning("SVD inbetween: auto execution runs %s although no execution fits (needs in MiB: %s; "
                    "%.0f MiB %s); it may run out of memory: lower the resolution or frames", picked, needs,
                    available / 2**20, limit)
    return picked


# Live-tensor peak of one fused evaluation (CFG, both directions) as the pack's tracer finds it
# (bench/fullsize.py: trace_execution), fitted per execution as a*U + b*M + c*min(PIECE, U):
#   U: bytes of one video's activations at the UNet's full resolution and model_channels;
#   M: bytes of one video's attention maps over the rotating layers;
#   PIECE: chunking.PIECE_BYTES (lowvram's pieces; never more than a video's tensor).
# Fitted on SVD-XT's architecture at 512x288x14 .. 1280x704x25 (fp16 and fp32; non-negative
# least squares on relative error): every traced point within 1.5%, the tiny test architecture
# within 4% (tests/test_bench.py checks two unfitted sizes against the tracer). Where a batch's
# feed-forward input is under feedforward.SPLIT_MIN_BYTES it runs whole, adding
# WHOLE_FEEDFORWARD*U per further video.
PEAK_FIT = {"batched": (63.79, 0.0, 0.0), "sequential": (39.77, 1.413, 0.0), "lowvram": (12.53, 0.688, 14.63)}
VIDEOS_PER_CALL = {"batched": 4, "sequential": 2, "lowvram": 1}
WHOLE_FEEDFORWARD = 16.0  # GEGLU intermediates (8x, 4x, 4x of its input)


def _levels(unet) -> dict[str, int]:
    """Resolution level (number of 2x down-samplings) of each input/middle/output block path."""
    out, level = {}, 0
    for i, block in enumerate(unet.input_blocks):
        if any(type(m).__name__ == "Downsample" for m in block.children()):
            level += 1
        out[f"input_blocks.{i}"] = level
    out["middle_block"] = level
    for j, block in enumerate(unet.output_blocks):
        out[f"output_blocks.{j}"] = level
        if any(type(m).__name__ == "Upsample" for m in block.children()):
            level -= 1
    return out


def activation_terms(unet, frames: int, height: int, width: int, element_size: int,
                     rotate_paths: Collection[str]) -> tuple[int, int]:
    """(U, M) of PEAK_FIT for a latent of `frames` x `height` x `width` (latent pixels)."""
    levels = _levels(unet)
    sizes = [(height, width)]
    for _ in range(max(levels.values(), default=0)):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))  # stride-2, padding-1 3x3 convolutions
    u = frames * height * width * unet.model_channels * element_size
    m = 0
    for path in rotate_paths:
        block = ".".join(path.split(".")[:2]) if not path.startswith("middle_block") else "middle_block"
        h, w = sizes[levels[block]]
        m += h * w * unet.get_submodule(path).heads * frames * frames * element_size
    return u, m


def estimate_bytes(execution: str, u: int, m: int) -> float:
    """Traced live-tensor peak of one fused evaluation under `execution`, from PEAK_FIT."""
    a, b, c = PEAK_FIT[execution]
    videos = VIDEOS_PER_CALL[execution]
    whole = WHOLE_FEEDFORWARD * u * (videos - 1) if videos * u < feedforward.SPLIT_MIN_BYTES else 0.0
    return a * u + b * m + c * min(chunking.PIECE_BYTES, u) + whole


def streamed_weight_bytes(model_patcher: ModelPatcher, device: torch.device | None = None) -> int:
    """Per-layer weight copies in flight when ComfyUI keeps part of the model offloaded (its
    lowvram mode), or may offload it on demand (0.33+: its patcher counts those weights as free);
    offloaded weights themselves take no device memory. 0 when the model is fully loaded."""
    import comfy.model_management
    try:
        offloaded = model_patcher.model_size() - model_patcher.loaded_size()
    except (AttributeError, TypeError):
        offloaded = 0
    if offloaded <= 0 and device is not None:
        offloaded = free_memory(model_patcher, device) - comfy.model_management.get_free_memory(device)
    if offloaded <= 0:
        return 0
    largest = max((p.numel() * p.element_size() for p in model_patcher.model.diffusion_model.parameters()), default=0)
    return STREAMED_LAYERS * largest


def execution_estimates(model_patcher: ModelPatcher, base_model, x: torch.Tensor,
                        rotate_paths: Collection[str]) -> dict[str, float]:
    """Bytes each execution needs beyond the loaded weights for the UNet calls of latent `x` [T, C, h, w]."""
    import comfy.model_management

    dtype = base_model.manual_cast_dtype or base_model.get_dtype()
    u, m = activation_terms(base_model.diffusion_model, x.shape[0], x.shape[-2], x.shape[-1],
                            comfy.model_management.dtype_size(dtype), rotate_paths)
    streamed = streamed_weight_bytes(model_patcher, x.device)
    return {e: estimate_bytes(e, u, m) + streamed for e in BY_SPEED}


def free_memory(model_patcher: ModelPatcher, device: torch.device) -> float:
    """What ComfyUI can give: its patcher's view where the host has one (0.33+: weights it can
    offload on demand included), else the device's free memory."""
    import comfy.model_management
    own = getattr(model_patcher, "get_free_memory", None)
    return own(device) if callable(own) else comfy.model_management.get_free_memory(device)
