"""The sampler schedules side by side: what one clip costs in each mode.

Cost (`schedule_costs`): UNet calls, videos evaluated, wall and CPU time of one clip on a
model (tiny by default), each mode at its own steps and cfg (the mode table, attention_patch/modes.py;
the fused modes with the paper's recurrence 5 x 0.5), ratios against
vibid. Memory (`schedule_memory`): the live-tensor peak of each mode's largest UNet call in
every execution, traced at full size on the meta device through the pack's own patches
(bench/fullsize.py), plus the weights the sampler holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import median

import torch

from ..attention_patch.layers import with_proxies
from ..attention_patch.modes import MODES, mode_of, rotate_layers
from ..samplers.guider import request_chunks
from ..samplers.mpd import unet_requests
from ..samplers.protocol import BACKWARD, FORWARD, FUSED
from ..samplers.schedule import fused_evaluations
from ..samplers.settings import GenerationSettings, KeyframeConds
from .measure import Stopwatch, UnetCounter
from .workflow import CARD_RESERVE_GIB, CARDS_GB
from .models import random_backward_weights, random_conds, svd_base_model, svd_patcher

NODE = "svd-inbetween bench"
# What `bench --schedules` runs by default: the training-free samplers against the paper's method.
COST_MODES = ("vibid", "mpd", "mpd_trf", "gi")


def requests(mode: str, steps: int) -> list[str]:
    """The request of every UNet-call group of one clip, in order (FUSED for a plain fused step)."""
    spec, defaults = mode_of(mode), GenerationSettings()
    if spec.fused:
        return [FUSED] * fused_evaluations(steps, defaults.recurrence, defaults.recurrence_ratio)
    if spec.alternating:
        return [FORWARD, BACKWARD] * steps
    constants = defaults.mpd if spec.schedule == "mpd" else defaults.mpd_trf
    return [r for step in unet_requests(spec.schedule, steps, constants) for r in step]


def chunk_sets(mode: str, cfg: float) -> set[tuple[int, ...]]:
    """The distinct chunk layouts of the mode's model calls (what the guider runs, request_chunks)."""
    spec = mode_of(mode)
    cfg1 = abs(cfg - 1.0) < 1e-9
    use_uncond = not cfg1 or not spec.fused  # the request samplers' CFG++ asks for the uncond at cfg 1
    rotating = spec.rotation != "none"
    return {request_chunks(r, rotating, use_uncond, cfg1, not spec.fused)
            for r in set(requests(mode, spec.steps))}


@dataclass
class Cost:
    mode: str
    steps: int
    cfg: float
    unet_calls: int
    videos: int
    wall_s: float
    cpu_s: float


def schedule_costs(arch: str = "tiny", width: int = 64, height: int = 64, frames: int = 5, repeats: int = 1,
                   seed: int = 0, modes: tuple[str, ...] = COST_MODES) -> dict[str, Cost]:
    """One clip per mode (median of `repeats`), batched execution, random conds and backward weights."""
    import comfy.model_management

    from ..samplers.run import sample_inbetween
    device = comfy.model_management.get_torch_device()
    model = svd_patcher(arch, torch.float32)
    model_gi = with_proxies(model, random_backward_weights(model))
    ps, ns, pe, ne, latent = random_conds(arch, width, height, frames, seed=seed + 1)
    out = {}
    for mode in modes:  # lazy initialisation would otherwise land on whichever mode runs first
        sample_inbetween(NODE, model_gi if mode_of(mode).finetuned else model, KeyframeConds(ps, ns, pe, ne), latent,
                         GenerationSettings(seed=seed, steps=1, cfg=1.0, mode=mode, execution="batched",
                                            recurrence=0), callback=lambda *a: None)
    for mode in modes:
        steps, cfg = mode_of(mode).steps, mode_of(mode).cfg
        walls, cpus = [], []
        for _ in range(repeats):
            counter = UnetCounter(frames)
            m = (model_gi if mode_of(mode).finetuned else model).clone()
            m.set_model_unet_function_wrapper(counter)
            settings = GenerationSettings(seed=seed, steps=steps, cfg=cfg, mode=mode, execution="batched")
            with Stopwatch(device) as sw:
                sample_inbetween(NODE, m, KeyframeConds(ps, ns, pe, ne), latent, settings,
                                 callback=lambda *a: None)
            walls.append(sw.seconds)
            cpus.append(sw.cpu_seconds)
        out[mode] = Cost(mode, steps, cfg, counter.calls, counter.videos, median(walls), median(cpus))
    return out


def schedule_memory(arch: str = "full", width: int = 1024, height: int = 576, frames: int = 25,
                    dtype: torch.dtype = torch.float16, modes: tuple[str, ...] = MODES) -> dict:
    """{mode: {execution: {"call_peak", "weights", "total"} bytes}}: the largest call of each mode."""
    from .fullsize import OURS, inbetween_patches, trace_execution
    unet = svd_base_model(arch, dtype, "meta").diffusion_model
    element = torch.finfo(dtype).bits // 8
    weights = sum(p.numel() for p in unet.parameters()) * element
    out = {}
    with inbetween_patches(unet) as paths:
        paths = sorted(paths)
        w_prime = sum(2 * unet.get_submodule(p).to_v.weight.numel() for p in paths) * element
        for mode in modes:
            spec = mode_of(mode)
            rotate = rotate_layers(paths, mode)
            held = weights + (w_prime if spec.finetuned else 0)
            out[mode] = {}
            for execution in OURS:
                peak = max(trace_execution(unet, arch, execution, frames, height, width, dtype, rotate=rotate,
                                           present=chunks)["peak"] for chunks in chunk_sets(mode, spec.cfg))
                out[mode][execution] = {"call_peak": peak, "weights": held, "total": held + peak}
    return out


def format_schedules(costs: dict[str, Cost], memory: dict | None, device_text: str, size: str) -> list[str]:
    base = costs.get("vibid")
    lines = [f"Schedules side by side on {device_text} ({size}; batched; random weights)",
             f"  {'mode':<8} {'steps':>5} {'cfg':>4} {'UNet calls':>10} {'videos':>6} {'x vibid':>7} {'wall s':>8} "
             f"{'x vibid':>7} {'CPU s':>8} {'x vibid':>7}"]
    for c in costs.values():
        ratio = (lambda a, b: f"{a / b:>7.2f}" if base and b else f"{'n/a':>7}")
        lines.append(f"  {c.mode:<8} {c.steps:>5} {c.cfg:>4g} {c.unet_calls:>10} {c.videos:>6} "
                     f"{ratio(c.videos, base.videos if base else 0)} {c.wall_s:>8.3f} "
                     f"{ratio(c.wall_s, base.wall_s if base else 0)} {c.cpu_s:>8.3f} "
                     f"{ratio(c.cpu_s, base.cpu_s if base else 0)}")
    lines.append("  (videos = UNet evaluations of one video; the MPD modes' fused calls at cfg 1 skip the backward "
                 "unconditional video their authors compute and never use)")
    if memory:
        gib = 2 ** 30
        lines.append(f"  full-size memory of each mode's largest UNet call (SVD-XT 1024x576x25 fp16, meta trace; "
                     f"total = weights the sampler holds + call peak; an 8 GB card leaves ~"
                     f"{CARDS_GB[0] - CARD_RESERVE_GIB:g} GiB):")
        lines.append(f"  {'mode':<8} " + " ".join(f"{e + ' GiB':>15}" for e in next(iter(memory.values()))))
        for mode, per in memory.items():
            lines.append(f"  {mode:<8} " + " ".join(f"{m['call_peak'] / gib:>6.2f} / {m['total'] / gib:>6.2f}"
                                                    for m in per.values()))
        lines.append("  (each cell: call peak / total)")
    return lines
