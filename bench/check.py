"""Checking the accounting against a real run: measured peak memory next to the traced prediction.

Each of the pack's executions samples once on the real model (ComfyUI, random weights) while
PeakMemory records the peak above the memory held before (CPU: process RSS above the loaded
model; CUDA: torch.cuda.max_memory_allocated, weights included, so the loaded weights are
subtracted). The same execution is traced on the meta device at the same size and dtype
(fullsize.trace_execution, plus workflow.SAMPLER_LATENTS latent-sized fp32 tensors). The ratio
measured / traced says how far the accounting is from what the allocator really needed.

Run with ComfyUI's PyTorch attention (`prepare(...)` sets it before ComfyUI loads): the trace
counts spatial attention as a fused kernel that holds no scores, which is what PyTorch's SDPA
runs on CPU and GPU; ComfyUI's CPU default (sub-quadratic attention) holds score slices instead.
On a CPU `prepare` also fixes glibc's mmap threshold at 128 KiB: by default glibc raises it
after every large free, keeps later multi-MiB blocks in its heap and RSS then records the
heap's high-water mark, not live memory (tiny UNet at 512x288x14: 1.8-3.1x the live peak with
the default, within 2-4% with the fixed threshold).
"""
from __future__ import annotations

import logging
from dataclasses import replace

import torch

from ..attention_patch.layers import with_proxies
from .fullsize import OURS, inbetween_patches, trace_execution
from .models import random_backward_weights, random_conds, svd_base_model, svd_patcher
from .runner import DTYPES, NODE, Settings, run_ours

log = logging.getLogger(__name__)
# A measured peak counts as agreeing with the accounting within this relative distance (the 20%).
AGREEMENT = 0.20


MMAP_THRESHOLD = 128 * 1024
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def prepare(default_malloc: bool = False) -> bool:
    """Before ComfyUI's model_management loads: PyTorch (SDPA) attention, as the trace assumes, and
    (unless `default_malloc`) a fixed glibc mmap threshold. Returns whether the threshold was set."""
    import comfy.cli_args
    comfy.cli_args.args.use_pytorch_cross_attention = True
    return False if default_malloc else fix_mmap_threshold()


def fix_mmap_threshold() -> bool:
    """glibc: serve blocks from 128 KiB up by mmap and return them on free (no dynamic threshold)."""
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    except (OSError, AttributeError):
        return False


def predicted_bytes(s: Settings, executions: tuple[str, ...]) -> dict[str, int]:
    """Traced peak of one fused evaluation per execution at the settings' size, plus the sampler's latents."""
    from .workflow import SAMPLER_LATENTS
    dtype = DTYPES[s.dtype]
    unet = svd_base_model(s.arch, dtype, "meta").diffusion_model
    latents = SAMPLER_LATENTS * s.frames * 4 * (s.height // 8) * (s.width // 8) * 4
    with inbetween_patches(unet):
        return {e: trace_execution(unet, s.arch, e, s.frames, s.height, s.width, dtype)["peak"] + latents
                for e in executions}


def check_accounting(s: Settings, executions: tuple[str, ...] = OURS, model=None) -> dict[str, dict]:
    """Per execution: measured peak, predicted peak, their ratio, and max|diff| of the latent against the
    first execution's (gi mode). A short warm-up of every execution at 128x128 comes first."""
    import comfy.model_management

    unknown = [e for e in executions if e not in OURS]
    if not executions or unknown:
        raise ValueError(f"{NODE}: --check-accounting compares {', '.join(OURS)}; got {list(executions)}")
    device = comfy.model_management.get_torch_device()
    model = model if model is not None else svd_patcher(s.arch, DTYPES[s.dtype])
    model_gi = with_proxies(model, random_backward_weights(model))
    warm = replace(s, width=128, height=128, frames=min(s.frames, 4), steps=1, recurrence=0)
    warm_inputs = random_conds(s.arch, warm.width, warm.height, warm.frames, seed=s.seed + 1)
    for e in executions:
        run_ours(model_gi, e, "gi", warm_inputs, warm, device)
    inputs = random_conds(s.arch, s.width, s.height, s.frames, seed=s.seed + 1)
    weights = 0
    if torch.device(device).type == "cuda":
        weights = torch.cuda.memory_allocated(device)  # the loaded model, counted in max_memory_allocated
    runs = {}
    for e in executions:
        runs[e] = run_ours(model_gi, e, "gi", inputs, s, device)
        log.info("%s: %s measured %.1f MiB", NODE, e, (runs[e].peak_bytes - weights) / 2**20)
    predicted = predicted_bytes(s, executions)
    first = runs[executions[0]].samples.float()
    out = {}
    for e, r in runs.items():
        measured = r.peak_bytes - weights
        ratio = measured / predicted[e]
        out[e] = {"measured_bytes": measured, "predicted_bytes": predicted[e], "ratio": round(ratio, 4),
                  "agrees": abs(ratio - 1) <= AGREEMENT, "unet_calls": r.unet_calls, "wall_s": round(r.wall_s, 2),
                  "max_abs_diff_vs_first": (r.samples.float() - first).abs().max().item()}
    return out


def format_check(s: Settings, results: dict[str, dict], device_text: str) -> list[str]:
    peak = "peak alloc above weights" if "NVIDIA" in device_text or "CUDA" in device_text else "peak RSS above model"
    lines = [f"accounting check on {device_text}: {s.arch} SVD UNet, {s.dtype}, {s.width}x{s.height}x{s.frames}, "
             f"{s.steps} step(s), recurrence {s.recurrence}, gi",
             f"{'execution':<11} {'UNet calls':>10} {'wall s':>8} {peak + ' MiB':>30} {'accounted MiB':>14} "
             f"{'ratio':>6} {'max|diff|':>10} agrees"]
    for e, r in results.items():
        lines.append(f"{e:<11} {r['unet_calls']:>10} {r['wall_s']:>8.1f} {r['measured_bytes'] / 2**20:>30.1f} "
                     f"{r['predicted_bytes'] / 2**20:>14.1f} {r['ratio']:>6.3f} {r['max_abs_diff_vs_first']:>10.2e} "
                     f"{'yes' if r['agrees'] else 'NO'}")
    lines.append(f"(accounted = traced live-tensor peak of one fused evaluation + sampler latents; agrees: within "
                 f"{AGREEMENT:.0%}; max|diff| against {next(iter(results))})")
    return lines
