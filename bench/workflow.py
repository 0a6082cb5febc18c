"""Memory of every phase of the GI workflow, per card size, on the meta device (no weights, no GPU).

The phases of the shipped workflow, in order: CLIP vision encodes each keyframe (ViT-H),
the VAE encodes each keyframe, the UNet samples (one fused evaluation at a time, laid out
by the execution), the VAE decodes the frames in the batches ComfyUI picks. Each phase is
traced with bench/fullsize.py's LiveBytes through ComfyUI's own modules built on the meta
device (CLIP vision from ComfyUI's ViT-H config, the temporal VAE from comfy.sd.VAE's own
SVD branch); attention runs flash-style (no scores held), as on a GPU.

A phase's total is every model's weights (fp16 UNet + W_v'/W_o', fp16 CLIP vision, VAE in
bf16 as ComfyUI picks on Ampere and newer) plus its live-tensor peak: conservative, since
ComfyUI evicts the encoders before sampling when it needs the room. A card of N GB leaves
N - CARD_RESERVE_GIB GiB to PyTorch (CUDA context, display, ComfyUI's own reserve); so an
8 GB card gives 7.0 GiB.
"""
from __future__ import annotations

import json
import logging
import os
from functools import lru_cache

import torch

from .fullsize import OURS, LiveBytes, _temporal_paths, inbetween_patches, trace_execution
from .models import svd_base_model

CARDS_GB = (8, 12, 16, 24, 40, 80)
CARD_RESERVE_GIB = 1.0
SIZES = ((1024, 576, 25), (768, 432, 25))
# Latent-sized fp32 tensors the sampler and guider hold next to a UNet call: x, noise, the
# latent, 4 cond predictions, 2 guided directions, the fused x0, the step's output, slack.
SAMPLER_LATENTS = 12
GIB = 2**30


def _flash_vae(q, k, v):
    return torch.empty_like(q)


@lru_cache(maxsize=None)
def vae(dtype: torch.dtype = torch.bfloat16):
    """ComfyUI's SVD temporal VAE (comfy.sd.VAE picks it from a decoder mix_factor key) on the meta device."""
    import comfy.sd
    from comfy.ldm.modules.diffusionmodules.model import AttnBlock

    sd = {"decoder.mid.block_1.mix_factor": torch.zeros(1)}
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the missing-keys list of an empty state dict
    try:
        with torch.device("meta"):
            v = comfy.sd.VAE(sd=sd)
    finally:
        logging.disable(previous)
    v.first_stage_model.to(dtype)
    for mod in v.first_stage_model.modules():
        if isinstance(mod, AttnBlock):
            mod.optimized_attention = _flash_vae
    return v


@lru_cache(maxsize=None)
def clip_vision(dtype: torch.dtype = torch.float16):
    """ComfyUI's CLIP ViT-H vision tower (what SVD's checkpoints carry) on the meta device."""
    import comfy.clip_model
    import comfy.clip_vision
    import comfy.ops

    with open(os.path.join(os.path.dirname(comfy.clip_vision.__file__), "clip_vision_config_h.json")) as f:
        config = json.load(f)
    return comfy.clip_model.CLIPVisionModelProjection(config, dtype, "meta", comfy.ops.manual_cast), config


def _params_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


@torch.no_grad()
def encoder_phases(width: int, height: int, vae_dtype=torch.bfloat16, clip_dtype=torch.float16) -> dict:
    """Weights and peaks of the encoders: CLIP vision and VAE encode of one keyframe (the nodes
    encode the keyframes one at a time), and the VAE decode peak per frame of a decode batch."""
    model, config = clip_vision(clip_dtype)
    size = config.get("image_size", 224)
    with LiveBytes() as live:
        image = torch.empty(1, height, width, 3, device="meta")  # the keyframe on the device, then resized
        model(pixel_values=torch.empty(1, 3, size, size, device="meta"), intermediate_output=-2)
        del image
    clip_peak = live.peak
    v = vae(vae_dtype)
    with LiveBytes() as live:
        v.first_stage_model.encode(torch.empty(1, 3, height, width, device="meta", dtype=vae_dtype))
    return {"clip_vision_weights": _params_bytes(model), "clip_vision_peak": clip_peak,
            "vae_weights": _params_bytes(v.first_stage_model), "vae_encode_peak": live.peak}


@torch.no_grad()
def vae_decode_peak(frames: int, width: int, height: int, vae_dtype=torch.bfloat16) -> int:
    """Live-tensor peak of one VAE decode call of `frames` latent frames (the temporal decoder mixes them)."""
    v = vae(vae_dtype)
    with LiveBytes() as live:
        v.first_stage_model.decode(torch.empty(frames, 4, height // 8, width // 8, device="meta", dtype=vae_dtype))
    return live.peak


def decode_batch(free_bytes: float, frames: int, width: int, height: int, vae_dtype=torch.bfloat16) -> int:
    """Frames per VAE decode call as ComfyUI picks them: free memory / its own per-frame estimate."""
    est = vae(vae_dtype).memory_used_decode((frames, 4, height // 8, width // 8), vae_dtype)
    return max(1, min(frames, int(free_bytes / est)))


@torch.no_grad()
def workflow_accounting(width: int = 1024, height: int = 576, frames: int = 25, dtype=torch.float16,
                        executions: tuple[str, ...] = OURS) -> dict:
    """Weights, encoder peaks and, per execution, the traced sampling peak, estimate, calls, ops and FLOPs."""
    from ..samplers.execution import activation_terms, estimate_bytes

    base = svd_base_model("full", dtype, "meta")
    unet = base.diffusion_model
    element = torch.finfo(dtype).bits // 8
    paths = _temporal_paths(unet)
    w_prime = sum(2 * unet.get_submodule(p).to_v.weight.numel() for p in paths) * element
    u, m = activation_terms(unet, frames, height // 8, width // 8, element, paths)
    with inbetween_patches(unet):
        traced = {e: trace_execution(unet, "full", e, frames, height, width, dtype, flops=True) for e in executions}
    sampler = SAMPLER_LATENTS * frames * 4 * (height // 8) * (width // 8) * 4
    return {
        "width": width, "height": height, "frames": frames, "dtype": str(dtype).replace("torch.", ""),
        "unet_weights": _params_bytes(unet), "w_prime": w_prime, "sampler_latents": sampler,
        **encoder_phases(width, height),
        "estimates": {e: estimate_bytes(e, u, m) for e in OURS},
        "executions": {e: {**t, "estimate": estimate_bytes(e, u, m), "sampling_peak": t["peak"] + sampler}
                       for e, t in traced.items()},
    }


def weights_total(acc: dict) -> int:
    return acc["unet_weights"] + acc["w_prime"] + acc["clip_vision_weights"] + acc["vae_weights"]


def _auto(acc: dict, free: float) -> str:
    """What the pack's auto picks with `free` bytes left for sampling (its log silenced)."""
    from ..samplers import execution as ex

    logger = logging.getLogger(ex.__name__)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return ex.choose_execution("auto", free, acc["estimates"])
    finally:
        logger.setLevel(level)


def phase_peaks(acc: dict, execution: str, decode_frames: int) -> dict[str, int]:
    """Live-tensor peak of each workflow phase with `execution` sampling and `decode_frames` per VAE call."""
    w, h = acc["width"], acc["height"]
    return {"clip_vision": acc["clip_vision_peak"], "vae_encode": acc["vae_encode_peak"],
            "sampling": acc["executions"][execution]["sampling_peak"],
            "vae_decode": vae_decode_peak(decode_frames, w, h)}


def card_plan(acc: dict, card_gb: float) -> dict:
    """What auto runs on a card of `card_gb` GB and the accounted peak of every phase there.

    auto: with every model kept loaded (the least ComfyUI leaves for sampling); auto_evicted:
    with CLIP vision and the VAE evicted before sampling, as ComfyUI does when its own (generic,
    about 2x the traced) estimate asks for the room. Phase totals keep every model loaded."""
    usable = (card_gb - CARD_RESERVE_GIB) * GIB
    weights = weights_total(acc)
    free = usable - weights
    picked = _auto(acc, free)
    evicted = _auto(acc, usable - acc["unet_weights"] - acc["w_prime"])
    k = decode_batch(free, acc["frames"], acc["width"], acc["height"])
    phases = phase_peaks(acc, picked, k)
    total = weights + max(phases.values())
    return {"card_gb": card_gb, "usable": usable, "weights": weights, "auto": picked, "auto_evicted": evicted,
            "decode_frames": k, "phases": phases, "total": total, "fits": total <= usable}


def format_cards(accs: list[dict]) -> list[str]:
    """A markdown table per size: per card, auto's pick and every phase's accounted peak."""
    lines = []
    for acc in accs:
        ex = acc["executions"]
        lines += [
            f"{acc['width']}x{acc['height']}x{acc['frames']}, {acc['dtype']}: "
            f"weights {weights_total(acc) / GIB:.2f} GiB "
            f"(UNet {acc['unet_weights'] / GIB:.2f} + W' {acc['w_prime'] / GIB:.2f}, CLIP vision "
            f"{acc['clip_vision_weights'] / GIB:.2f}, VAE {acc['vae_weights'] / GIB:.2f}).",
            "",
            "| execution | sampling peak GiB (traced) | auto's estimate GiB | UNet calls per evaluation | "
            "aten ops per evaluation | vs batched | TFLOP per evaluation |",
            "|---|---|---|---|---|---|---|",
        ]
        for e, x in ex.items():
            lines.append(f"| {e} | {x['sampling_peak'] / GIB:.2f} | {x['estimate'] / GIB:.2f} | {x['calls']} | "
                         f"{x['ops']} | {x['ops'] / ex['batched']['ops']:.2f}x | {x['flops'] / 1e12:.1f} |")
        lines += [
            "",
            "| card | usable GiB | auto runs | CLIP vision | VAE encode | sampling | VAE decode (frames/call) "
            "| all weights + largest phase GiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for gb in CARDS_GB:
            p = card_plan(acc, gb)
            ph = {k: v / GIB for k, v in p["phases"].items()}
            auto = p["auto"] if p["auto"] == p["auto_evicted"] else f"{p['auto']} ({p['auto_evicted']} once CLIP " \
                                                                      f"vision and VAE are evicted)"
            lines.append(
                f"| {gb} GB | {p['usable'] / GIB:.1f} | {auto} | {ph['clip_vision']:.2f} | {ph['vae_encode']:.2f} "
                f"| {ph['sampling']:.2f} | {ph['vae_decode']:.2f} ({p['decode_frames']}) | {p['total'] / GIB:.2f}"
                f"{'' if p['fits'] else ' (over)'} |")
        lines.append("")
    return lines
