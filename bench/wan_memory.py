"""Memory of one Wan2.1-I2V-14B model call at 832x480, fp16 and fp8 weights, and which cards run it.

The real 14B WanModel is built with ComfyUI's own classes (`comfy.supported_models.WAN21_I2V`) on the meta
device (shapes only: no memory, no download) and one diffusion-model call is traced with bench/fullsize.py's
LiveBytes (the live-tensor peak): 21 latent frames (native first-last frame, 81 frames), 22 (AFB's forward and
reverse passes, 82) and 23 (AFB's final pass, 83), cond and uncond in one call (batch 2) and one at a time
(batch 1). Attention runs as a flash-style op that never holds the N x N scores, as ComfyUI's sdpa / flash
attention does on a GPU. fp8: the weights are float8_e4m3fn (1 byte a parameter; ComfyUI keeps the patch
embedding in fp32) and ComfyUI's manual-cast layers run them in bf16, their per-layer weight casts traced too.
Not traced: the CUDA context, allocator caching and fragmentation, kernel workspaces, the text encoder, CLIP
vision and the VAE (ComfyUI evicts them to make room for the diffusion model when it must).
"""
from __future__ import annotations

import torch

from .fullsize import LiveBytes, _flash_like
from .workflow import CARD_RESERVE_GIB

GIB = 2**30
WIDTH, HEIGHT = 832, 480
TEXT_TOKENS = 512  # WanModel's text_len: umt5 context
CLIP_TOKENS = 514  # start and end images' ViT-H penultimate states side by side, 2 x 257
# The Wan2.1 I2V 14B checkpoint's shapes (wan2.1_i2v_480p_14B_*); ComfyUI's model_detection reads dim, ffn_dim,
# num_layers, in_dim and out_dim from them and sets num_heads = dim // 128, patch (1, 2, 2), freq_dim 256.
WAN21_I2V_14B = {
    "image_model": "wan2.1", "model_type": "i2v", "patch_size": (1, 2, 2), "in_dim": 36, "out_dim": 16,
    "dim": 5120, "ffn_dim": 13824, "freq_dim": 256, "text_dim": 4096, "num_heads": 40, "num_layers": 40,
    "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6,
}
LATENT_FRAMES = {"native": 21, "afb_82": 22, "afb_83": 23}
BATCHES = (2, 1)
WEIGHTS = {"fp16": (torch.float16, None), "fp8": (torch.float8_e4m3fn, torch.bfloat16)}
CARDS_GB = (12, 16, 24, 32, 48, 80)
STREAMED_BLOCKS = 2  # partial offload: the block running and the next one being copied in, in the compute dtype


def wan_meta_model(config: dict | None = None, weights: str = "fp16"):
    """ComfyUI's WanModel for `config` on the meta device; fp8 with ComfyUI's manual-cast layers (bf16 compute)."""
    import comfy.ops
    import comfy.supported_models

    dtype, compute = WEIGHTS[weights]
    mc = comfy.supported_models.WAN21_I2V(dict(config or WAN21_I2V_14B))
    mc.set_inference_dtype(dtype, compute)
    if compute is None:
        mc.custom_operations = comfy.ops.disable_weight_init
    return mc.get_model({}, device=torch.device("meta")).diffusion_model


def compute_dtype(weights: str) -> torch.dtype:
    dtype, compute = WEIGHTS[weights]
    return compute or dtype


@torch.no_grad()
def trace_call(dm, latent_frames: int, batch: int, width: int = WIDTH, height: int = HEIGHT,
               dtype: torch.dtype = torch.float16, text_tokens: int = TEXT_TOKENS,
               clip_tokens: int = CLIP_TOKENS) -> dict:
    """{"peak": live-tensor bytes, "ops": aten ops} of one diffusion-model call (what apply_model runs) on the meta
    device: the noisy latent with its 20 conditioning channels, the text context and the CLIP tokens."""
    meta = dict(device="meta", dtype=dtype)
    x = torch.empty(batch, dm.patch_embedding.in_channels, latent_frames, height // 8, width // 8, **meta)
    t = torch.empty(batch, **meta)
    context = torch.empty(batch, text_tokens, dm.text_embedding[0].in_features, **meta)
    clip = torch.empty(batch, clip_tokens, 1280, **meta)
    with LiveBytes() as live:
        out = dm(x, t, context, clip_fea=clip, transformer_options={"optimized_attention_override": _flash_like})
        del out
    return {"peak": live.peak, "ops": live.ops}


def wan_memory(config: dict | None = None, width: int = WIDTH, height: int = HEIGHT,
               latent_frames: dict[str, int] | None = None, batches: tuple[int, ...] = BATCHES) -> dict:
    """Parameters, weight bytes, the bytes of one transformer block in the compute dtype, and the traced peak of
    every (latent frames, batch) call, per weight format."""
    frames = latent_frames or LATENT_FRAMES
    out = {"width": width, "height": height, "latent_frames": frames, "text_tokens": TEXT_TOKENS,
           "clip_tokens": CLIP_TOKENS, "formats": {}}
    for weights in WEIGHTS:
        dm = wan_meta_model(config, weights)
        element = torch.finfo(compute_dtype(weights)).bits // 8
        params = sum(p.numel() for p in dm.parameters())
        out["params"] = params
        out["formats"][weights] = {
            "weights": sum(p.numel() * p.element_size() for p in dm.parameters()),
            "block": sum(p.numel() for p in dm.blocks[0].parameters()) * element,
            "peaks": {f"{name}/b{b}": trace_call(dm, t, b, width, height, compute_dtype(weights))["peak"]
                      for name, t in frames.items() for b in batches},
        }
    return out


def card_verdict(fmt: dict, scheme: str, card_gb: float, reserve_gib: float = CARD_RESERVE_GIB) -> dict:
    """How `scheme` ("native": 21 latent frames; "afb": its largest call, 23) runs on a card of `card_gb` GB.

    The rule: a card leaves card_gb - reserve GiB to PyTorch. resident: weights + the call's peak fit (cond and uncond
    batched, b2, else one at a time, b1). offload: otherwise, ComfyUI's partial load streams the weights that do not
    fit, so the call's peak + STREAMED_BLOCKS blocks in the compute dtype must fit; the rest of the room holds weights.
    no: not even that."""
    frames = "native" if scheme == "native" else "afb_83"
    room = (card_gb - reserve_gib) * GIB
    peaks = fmt["peaks"]
    for b in (2, 1):
        if fmt["weights"] + peaks[f"{frames}/b{b}"] <= room:
            return {"mode": "resident", "batch": b, "streamed": 0}
    working = STREAMED_BLOCKS * fmt["block"]
    for b in (2, 1):
        peak = peaks[f"{frames}/b{b}"]
        if peak + working <= room:
            return {"mode": "offload", "batch": b, "streamed": fmt["weights"] - (room - peak - working)}
    return {"mode": "no", "batch": 0, "streamed": fmt["weights"]}


def cards(memory: dict, cards_gb: tuple[float, ...] = CARDS_GB) -> dict:
    return {f"{w}/{s}": {str(c): card_verdict(memory["formats"][w], s, c) for c in cards_gb}
            for w in WEIGHTS for s in ("native", "afb")}


def _cell(v: dict) -> str:
    if v["mode"] == "resident":
        return f"yes b{v['batch']}"
    if v["mode"] == "offload":
        return f"off {v['streamed'] / GIB:.1f} b{v['batch']}"
    return "no"


def format_memory(memory: dict, verdicts: dict) -> list[str]:
    f = memory["formats"]
    frames = memory["latent_frames"]
    lines = [f"Wan2.1-I2V-14B, one model call at {memory['width']}x{memory['height']} (meta device, no weights, no "
             f"GPU; text {memory['text_tokens']} tokens, CLIP {memory['clip_tokens']}): "
             f"{memory['params'] / 1e9:.3f} B params",
             f"  {'weights':<8} {'bytes GiB':>9} {'block GiB':>9} "
             + " ".join(f"{f'{t} lat b{b}':>11}" for t in frames.values() for b in BATCHES)]
    for w, fmt in f.items():
        lines.append(f"  {w:<8} {fmt['weights'] / GIB:>9.2f} {fmt['block'] / GIB:>9.3f} "
                     + " ".join(f"{fmt['peaks'][f'{n}/b{b}'] / GIB:>11.2f}" for n in frames for b in BATCHES))
    lines.append("  (call peaks, GiB: live tensors of one diffusion-model call, weights excluded; "
                 f"{frames['native']} latent frames = native 81 frames, {frames['afb_82']} = AFB's 82, "
                 f"{frames['afb_83']} = AFB's 83; b2 = cond + uncond in one call; block = one transformer block in the "
                 "compute dtype)")
    lines.append("  total = weights + call peak, GiB:")
    for w, fmt in f.items():
        lines.append(f"  {w:<8} " + " ".join(f"{(fmt['weights'] + fmt['peaks'][f'{n}/b{b}']) / GIB:>11.2f}"
                                            for n in frames for b in BATCHES))
    cards_gb = list(next(iter(verdicts.values())))
    lines.append(f"  Cards: a card of N GB leaves N - {CARD_RESERVE_GIB:g} GiB. 'yes bB': weights + the call's peak "
                 f"fit (b2: cond + uncond batched, b1: one at a time); 'off X bB': ComfyUI's partial offload, the "
                 f"call's peak + {STREAMED_BLOCKS} blocks (compute dtype) fit and X GiB of weights stream from RAM "
                 "every call; 'no': not even that. AFB's row is its largest call (83 frames).")
    lines.append(f"  {'weights/scheme':<14} " + " ".join(f"{c + ' GB':>13}" for c in cards_gb))
    for key, row in verdicts.items():
        lines.append(f"  {key:<14} " + " ".join(f"{_cell(v):>13}" for v in row.values()))
    return lines
