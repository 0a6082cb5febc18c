"""Keyframe chains: N keyframes -> one video of N-1 inbetween segments, sampled together.

Layout: segment k spans chain frames [start_k, stop_k) with its keyframes at both ends;
neighbours share the keyframe frame, so the chain has sum(frames) - (N - 2) frames and
keyframe k sits at chain frame boundaries[k].

All segments are windows on one chain latent, denoised in lockstep by one sampler loop
(SVDInbetweenChainGuider): one seed, one noise tensor, one progress bar, and at every
model call the shared keyframe frames get the mean of both neighbours' predictions.

The maths here is plain torch; ComfyUI is imported inside the functions that need it.
"""
from __future__ import annotations

import torch

from .keyframes import FRAMES_KEY
from .validation import MIN_FRAMES, fail


def parse_frame_counts(node: str, text, segments: int) -> list[int]:
    """'25' (every segment) or '25, 14, 25' (one per segment) -> [frames of each segment]."""
    parts = [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]
    try:
        counts = [int(p) for p in parts]
    except ValueError:
        fail(node, "frames", f"expected whole numbers separated by commas, got {text!r}")
    if len(counts) == 1:
        counts = counts * segments
    if len(counts) != segments:
        fail(node, "frames", f"gives {len(counts)} frame counts for {segments} segments ({segments + 1} keyframes); "
             "give one count for all segments or one per segment")
    for i, n in enumerate(counts):
        if n < MIN_FRAMES:
            fail(node, "frames", f"segment {i + 1} has {n} frames; each segment needs at least {MIN_FRAMES} "
                 "(its two keyframes included)")
    return counts


def chain_windows(counts: list[int]) -> list[tuple[int, int]]:
    """[start, stop) of each segment in the chain; neighbours overlap in their shared keyframe."""
    windows, start = [], 0
    for n in counts:
        windows.append((start, start + n))
        start += n - 1
    return windows


def boundaries(windows: list[tuple[int, int]]) -> list[int]:
    """Chain frame of each keyframe."""
    return [windows[0][0]] + [stop - 1 for _, stop in windows]


def fuse_windows(parts: list[torch.Tensor], windows: list[tuple[int, int]]) -> torch.Tensor:
    """Per-window predictions -> one chain tensor; frames covered twice get the mean.

    A single window returns its tensor itself; frames covered once are copied exactly.
    """
    if len(parts) == 1:
        return parts[0]
    total = max(stop for _, stop in windows)
    out = parts[0].new_zeros((total, *parts[0].shape[1:]))
    count = torch.zeros(total, dtype=out.dtype, device=out.device)
    for part, (start, stop) in zip(parts, windows):
        out[start:stop] += part
        count[start:stop] += 1
    return out / count.reshape(-1, *([1] * (out.ndim - 1)))


def with_frames(cond: list, frames: int) -> list:
    """A CONDITIONING list whose frame-count tag says `frames` (tensors shared, dicts copied)."""
    return [[t, dict(extra, **{FRAMES_KEY: frames})] for t, extra in cond]


def check_images(node: str, images) -> None:
    if not torch.is_tensor(images) or images.ndim != 4:
        fail(node, "images", "expected an IMAGE batch of keyframes")
    if images.shape[0] < 2:
        fail(node, "images", f"got {images.shape[0]} image; a chain needs at least 2 keyframes (e.g. batch them "
             "with ImageBatch; a loop is A, B, A)")
    if not torch.isfinite(images).all():
        fail(node, "images", "contains NaN or Inf")


def sample_chain(node: str, model, clip_vision, vae, images: torch.Tensor, width: int, height: int, frames,
                 motion_bucket_id: int, fps: int, augmentation_level: float, resize: str, seed: int, steps: int,
                 cfg: float, mode: str, recurrence: int = 5, recurrence_ratio: float = 0.5,
                 forward_weight: float = 0.5, execution: str = "auto", scheduler: str = "karras",
                 cfg_pp: bool = True, dds: bool = True, callback=None) -> tuple[torch.Tensor, dict]:
    """The whole chain -> (IMAGE frames with each keyframe exactly at its boundary, LATENT).

    Keyframe conditioning is SVDInbetweenConditioning's (noise_seed = seed, one augmentation
    noise for every keyframe), so with two keyframes this is SVDInbetweenConditioning +
    SVDInbetweenSampler with the same seed, frame for frame.
    """
    from ..attention_patch.layers import MODES, with_proxies
    from .guider import SVDInbetweenChainGuider, SVDInbetweenGuider
    from .keyframes import empty_video_latent, encode_keyframes
    from .recurrent_euler import recurrent_euler_for
    from .run import check_forward_weight, run_guider
    from .validation import check_inputs, check_model, check_size
    from .vibid import SEQUENTIAL_MODES, vibid_sampler

    check_images(node, images)
    check_size(node, width, height)
    if mode not in MODES:
        fail(node, "mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    counts = parse_frame_counts(node, frames, images.shape[0] - 1)
    check_model(node, model, mode)
    if mode in SEQUENTIAL_MODES:
        sampler = vibid_sampler(cfg_pp, dds)
    else:
        check_forward_weight(node, forward_weight)
        sampler = recurrent_euler_for(node, recurrence, recurrence_ratio)

    keys, conds = encode_keyframes(clip_vision, vae, [images[i:i + 1] for i in range(images.shape[0])], width, height,
                                   resize, seed, motion_bucket_id, fps, augmentation_level, counts[0])
    windows = chain_windows(counts)
    latent = empty_video_latent(windows[-1][1], width, height)
    m = with_proxies(model)
    guiders = []
    for k, ((start, stop), n) in enumerate(zip(windows, counts)):
        (ps, ns), (pe, ne) = conds[k], conds[k + 1]
        seg = [with_frames(c, n) for c in (ps, ns, pe, ne)]
        check_inputs(node, dict(zip(("positive_start", "negative_start", "positive_end", "negative_end"), seg)),
                     latent[start:stop], steps=steps, cfg=cfg)
        g = SVDInbetweenGuider(m, mode=mode, forward_weight=forward_weight, execution=execution)
        g.set_conds(*seg)
        g.set_cfg(cfg)
        guiders.append(g)
    chain = SVDInbetweenChainGuider(guiders, windows)
    out = run_guider(node, chain, {"samples": latent}, seed, steps, scheduler, sampler, callback)
    return decode_with_keyframes(vae, out["samples"], torch.cat(keys), boundaries(windows)), out


def decode_with_keyframes(vae, samples: torch.Tensor, keys: torch.Tensor, at: list[int]) -> torch.Tensor:
    """VAE-decoded frames (as VAEDecode gives them) with frame at[k] replaced by keyframe k itself."""
    pixels = vae.decode(samples)
    if pixels.ndim == 5:
        pixels = pixels.reshape(-1, *pixels.shape[-3:])
    pixels = pixels.clone()
    for k, index in enumerate(at):
        pixels[index] = keys[k].to(pixels)
    return pixels
